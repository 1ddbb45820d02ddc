"""The cost of fleet's container logger (fleet.node.logrotate.LOGGER_SH) against the append-only `cat` logger it
replaced: CPU (user + system, the logger and every process it starts) and wall time to take N MB of numbered
lines from a container's stdout, started as the containerd shim starts it (stdout on fd 3, stderr on fd 4, fd 5
closed when ready). Bulk: 64 KiB writes, as a chatty container gives them; lines: one write per line, so a
logger that spent a process per write (or per line) would show it.

    python bench/logger.py [--mb 50] [--lines 20000]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fleet.node.logrotate import LOGGER_SH

APPEND_ONLY = """#!/bin/sh
while [ "$#" -ge 2 ]; do if [ "$1" = file ]; then f=$2; fi; shift 2; done
trap '' TERM
cat <&3 >>"$f" 4<&- 5>&- &
cat <&4 >>"$f" 3<&- 5>&- &
exec 3<&- 4<&- 5>&-
wait
"""


def start(script: Path, args: Sequence[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    (r3, w3), (r4, w4), (r5, w5) = os.pipe(), os.pipe(), os.pipe()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (r3, r4, w5)]
    for fd in (r3, r4, w5):
        os.close(fd)

    def child() -> None:
        for fd, target in zip(high, (3, 4, 5), strict=True):
            os.dup2(fd, target)

    proc = subprocess.Popen(["sh", str(script), *args], close_fds=False, preexec_fn=child)
    for fd in high:
        os.close(fd)
    os.read(r5, 1)
    os.close(r5)
    return proc, w3, w4


def one(script_text: str, chunks: list[bytes], size: int, files: int) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "logger"
        script.write_text(script_text)
        log = Path(d) / "c.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc, out, err = start(script, ["file", str(log), "size", str(size), "files", str(files)])
        for chunk in chunks:
            os.write(out, chunk)
        os.close(out)
        os.close(err)
        proc.wait()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        kept = sorted(p.name for p in Path(d).glob("c.log*"))
        return {"cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3),
                "wall_s": round(wall, 3), "files": len(kept),
                "bytes_kept": sum((Path(d) / k).stat().st_size for k in kept)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    line = b"%08d " + b"x" * 90 + b"\n"
    data = b"".join(line % i for i in range(a.mb * 1024 * 1024 // len(line % 0)))
    bulk = [data[k:k + 65536] for k in range(0, len(data), 65536)]
    lines = [line % i for i in range(a.lines)]
    cases = [("cat (append only)", APPEND_ONLY, 10 << 20, 3), ("fleet logger 10 MiB x3", LOGGER_SH, 10 << 20, 3),
             ("fleet logger 64 KiB x2", LOGGER_SH, 64 << 10, 2)]
    results = []
    for what, chunks in ((f"{len(data) >> 20} MB in 64 KiB writes", bulk), (f"{a.lines} one-line writes", lines)):
        for name, text, size, files in cases:
            runs = [one(text, chunks, size, files) for _ in range(a.repeat)]
            best = min(runs, key=lambda r: r["cpu_s"])
            results.append({"input": what, "logger": name, **best,
                            "cpu_s_all": [r["cpu_s"] for r in runs]})
            print(f"{what:28} {name:24} cpu {best['cpu_s']:6.3f} s  wall {best['wall_s']:6.3f} s  "
                  f"files {best['files']}  kept {best['bytes_kept']} B", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
