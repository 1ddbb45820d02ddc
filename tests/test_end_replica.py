"""A replica's end in one round trip (fleet.engine.containers.end_call): the ctr stop script, then the container's
network namespace, secret files and sshfs mounts, run by sh against a stand-in `ctr` (it records its arguments;
the real stop runs against a private containerd in tests/test_runtime_ctr.py and on the lab in the rollout tests),
with the node's directories under a temporary one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fleet.core.errors import RuntimeCommandError
from fleet.core.model import CommandResult
from fleet.core.shell import Script
from fleet.engine.containers import end_call, finish_call
from fleet.node.runtime.ctr import CtrDriver

CID = "web-1-abc"
# `ctr`: every call logged (and the niceness it runs at); no task; `containers rm` answers as $RM says (empty:
# it succeeds).
STAND_IN_CTR = """#!/bin/sh
echo "$*" >>"$LOG"
cut -d' ' -f19 /proc/$$/stat >>"$LOG.nice"
case "$*" in
  *"containers rm"*) [ -z "$RM" ] || { echo "$RM" >&2; exit 1; } ;;
  *"tasks ls"*) echo "TASK PID STATUS" ;;
esac
exit 0
"""


def _end(tmp: Path, rm: str = "", remove: bool | None = True) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The end of CID: `end_call` (with `remove`), or `finish_call` (`remove` None)."""
    ctr = tmp / "ctr"
    ctr.write_text(STAND_IN_CTR)
    ctr.chmod(0o755)
    driver = CtrDriver(binary=str(ctr), state_dir=str(tmp / "state"))
    call = finish_call(driver, CID) if remove is None else end_call(driver, CID, 1.0, remove=remove)
    assert isinstance(call.command, Script)
    env = {**dict(call.command.env), "CACHE": str(tmp / "cni"), "NETNS_DIR": str(tmp / "netns"),
           "SECRETS": str(tmp / "secrets" / CID), "D": str(tmp / "mnt" / CID), "LOG": str(tmp / "log"),
           "RM": rm, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["/bin/sh", "-c", call.command.text], env=env, capture_output=True, text=True, timeout=20)
    return out, (tmp / "log").read_text().splitlines()


def _node(tmp: Path) -> None:
    (tmp / "secrets" / CID).mkdir(parents=True)
    (tmp / "secrets" / CID / "token").write_text("s3cret")
    (tmp / "mnt" / CID / "data").mkdir(parents=True)


def test_the_stop_then_the_containers_files_in_one_script_with_no_tasks_rm(tmp_path):
    _node(tmp_path)
    out, calls = _end(tmp_path)
    assert out.returncode == 0, out.stderr
    end_call(CtrDriver(), CID, 1.0).parse(CommandResult("n1", 0, out.stdout, out.stderr, 0.1))
    # The restart label cleared, then the container removed: no `tasks rm` (its warning only gave the exit code).
    assert [c.split(" ", 2)[-1] for c in calls if "tasks ls" not in c] == [
        f"containers label {CID} containerd.io/restart.status=", f"containers rm {CID}"]
    assert "@@cleanup 0" in out.stdout
    assert not (tmp_path / "secrets" / CID).exists() and not (tmp_path / "mnt" / CID).exists()
    # Waited for by the rollout: at the node's own priority (this test's niceness).
    assert set((tmp_path / "log.nice").read_text().split()) == {str(os.nice(0))}


def test_a_failed_stop_leaves_the_containers_files_and_raises(tmp_path):
    _node(tmp_path)
    out, _ = _end(tmp_path, rm="ctr: boom")
    assert out.returncode == 0, out.stderr
    with pytest.raises(RuntimeCommandError, match="boom"):
        end_call(CtrDriver(), CID, 1.0).parse(CommandResult("n1", 0, out.stdout, out.stderr, 0.1))
    assert "@@cleanup" not in out.stdout
    assert (tmp_path / "secrets" / CID / "token").exists() and (tmp_path / "mnt" / CID / "data").exists()


def test_a_failed_cleanup_is_raised():
    text = "@@found true\n@@containerrm\n@@rc 0\n@@cleanup 1\n"
    with pytest.raises(RuntimeCommandError, match="cleanup"):
        end_call(CtrDriver(), CID, 1.0).parse(CommandResult("n1", 0, text, "rm: cannot remove", 0.1))


def test_a_stop_in_two_keeps_the_container_and_its_files_until_finish_removes_them(tmp_path):
    _node(tmp_path)
    out, calls = _end(tmp_path, remove=False)
    assert out.returncode == 0, out.stderr
    end_call(CtrDriver(), CID, 1.0, remove=False).parse(CommandResult("n1", 0, out.stdout, out.stderr, 0.1))
    assert not [c for c in calls if "containers rm" in c] and "@@cleanup" not in out.stdout
    assert (tmp_path / "secrets" / CID / "token").exists() and (tmp_path / "mnt" / CID / "data").exists()
    assert set((tmp_path / "log.nice").read_text().split()) == {str(os.nice(0))}  # the rollout waits for it
    (tmp_path / "log.nice").unlink()
    out, calls = _end(tmp_path, remove=None)
    assert out.returncode == 0, out.stderr
    finish_call(CtrDriver(), CID).parse(CommandResult("n1", 0, out.stdout, out.stderr, 0.1))
    assert [c.split(" ", 2)[-1] for c in calls if "containers rm" in c] == [f"containers rm {CID}"]
    assert "@@cleanup 0" in out.stdout
    assert not (tmp_path / "secrets" / CID).exists() and not (tmp_path / "mnt" / CID).exists()
    # The removal runs behind the rollout: at a lower priority than the node's starts and stops, ten above this
    # test's own niceness (at most 19).
    assert set((tmp_path / "log.nice").read_text().split()) == {str(min(os.nice(0) + 10, 19))}
    with pytest.raises(RuntimeCommandError, match="boom"):
        out, _ = _end(tmp_path, rm="ctr: boom", remove=None)
        finish_call(CtrDriver(), CID).parse(CommandResult("n1", out.returncode, out.stdout, out.stderr, 0.1))
