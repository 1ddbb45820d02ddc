"""Test helper: a container logger started as the containerd shim starts one (its binary logger protocol: the
container's stdout on fd 3, its stderr on fd 4, fd 5 closed once the logger is ready), and the logger of an older
fleet, which only appends. Used by tests/test_runtime_logs.py and bench/logger.py."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

# The logger of an older fleet, which only appends (its containers keep it until they are replaced): their logs are
# what the rotation step of fleet's runs is for.
APPEND_ONLY_LOGGER = """#!/bin/sh
while [ "$#" -ge 2 ]; do if [ "$1" = file ]; then f=$2; fi; shift 2; done
trap '' TERM
cat <&3 >>"$f" 4<&- 5>&- &
cat <&4 >>"$f" 3<&- 5>&- &
exec 3<&- 4<&- 5>&-
wait
"""


def start_logger(script: Path, args: Sequence[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    """`sh SCRIPT ARGS` with the shim's fds; returns once every copy of fd 5 is closed (the shim would go on), with
    the process and the write ends of the container's stdout and stderr (the caller closes them: the end)."""
    (r3, w3), (r4, w4), (r5, w5) = os.pipe(), os.pipe(), os.pipe()
    # Above 9 (close-on-exec, like every fd Python opens), so the child's dup2 onto 3-5 clobbers none of them.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (r3, r4, w5)]
    for fd in (r3, r4, w5):
        os.close(fd)

    def child() -> None:
        for fd, target in zip(high, (3, 4, 5), strict=True):
            os.dup2(fd, target)  # inheritable: the only fds the logger gets besides 0-2

    try:
        proc = subprocess.Popen(["sh", str(script), *args], close_fds=False, preexec_fn=child)
    finally:
        for fd in high:
            os.close(fd)
    try:
        assert os.read(r5, 1) == b""
    finally:
        os.close(r5)
    return proc, w3, w4
