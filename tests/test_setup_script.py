"""scripts/setup.sh leaves no policy-rc.d of its own behind, whatever ends its apt step, and never touches one that
was there before it.

Each test runs a copy of the real script with fake `apt-get` and `dpkg-query` first on PATH (fakes: apt must not
really run here), and its policy-rc.d pointed into a temp dir (FLEET_POLICY_RC_D) so the machine's own
/usr/sbin/policy-rc.d is never involved. The fake apt-get writes down whether policy-rc.d was in force while it
installed, so a test also shows the file did its job before it was removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "#!/bin/sh\n# the administrator's own\nexit 0\n"


def fake_apt(tmp: Path, install: str) -> dict[str, str]:
    """A copy of setup.sh under tmp/repo and the environment that runs it with apt-get's `install` step replaced
    by the shell snippet `install` (after recording policy-rc.d's state in tmp/seen)."""
    (tmp / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp / "repo" / "scripts" / "setup.sh")
    bin_ = tmp / "bin"
    bin_.mkdir()
    policy = tmp / "policy-rc.d"
    scripts = {
        "dpkg-query": "exit 1\n",  # every package missing: the apt step runs
        "id": "echo 0\n",  # the script insists on root; these fakes need none
        "apt-get": (f'if [ "$1" = install ]; then\n'
                    f'  if [ -x {policy} ]; then {policy}; echo "policy exit $?" >{tmp}/seen; '
                    f'else echo none >{tmp}/seen; fi\n'
                    f"  {install}\nfi\n"),
    }
    for name, body in scripts.items():
        (bin_ / name).write_text("#!/bin/sh\n" + body)
        (bin_ / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "FLEET_POLICY_RC_D": str(policy),
            "PYTHON": "false"}


def group_commands(pgid: int) -> list[str]:
    """The command names of the processes in process group `pgid`."""
    names = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid:
                names.append(stat[stat.index("(") + 1:stat.rindex(")")])
    return names


def run_setup(tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(tmp / "repo" / "scripts" / "setup.sh")], env=env, capture_output=True,
                          text=True, timeout=30)


def test_failed_apt_install_leaves_no_policy_rc_d_behind(tmp_path: Path) -> None:
    env = fake_apt(tmp_path, "exit 100")
    out = run_setup(tmp_path, env)
    assert out.returncode == 100, out.stderr
    assert (tmp_path / "seen").read_text() == "policy exit 101\n"  # in force while apt installed
    assert not (tmp_path / "policy-rc.d").exists()


def test_successful_apt_install_removes_policy_rc_d_too(tmp_path: Path) -> None:
    env = fake_apt(tmp_path, "exit 0")
    out = run_setup(tmp_path, env)
    # PYTHON=false stops the script at the venv step, after apt: the apt step's own clean-up has run by then.
    assert out.returncode != 0
    assert (tmp_path / "seen").read_text() == "policy exit 101\n"
    assert not (tmp_path / "policy-rc.d").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_apt_install_leaves_no_policy_rc_d_behind(tmp_path: Path, sig: signal.Signals) -> None:
    env = fake_apt(tmp_path, "sleep 20")
    # Its own process group, signalled whole, as a terminal's Ctrl-C (SIGINT) or a service manager's stop does.
    proc = subprocess.Popen(["sh", str(tmp_path / "repo" / "scripts" / "setup.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: (tmp_path / "seen").exists(), 10, 0.02, "apt-get install to start")
        # And its `sleep` to run: the fake apt-get is a dash, which holds a SIGINT that lands between writing `seen`
        # and forking `sleep` until that child ends (dash defers it there), so a signal sent then waited out the 20 s
        # (reproduced under load, 14 runs in 150). A real apt gets the signal itself.
        wait_until(lambda: "sleep" in group_commands(proc.pid), 10, 0.02, "the fake apt-get's sleep to start")
        assert (tmp_path / "policy-rc.d").exists()
        started = time.monotonic()
        os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 128 + sig.value
    assert time.monotonic() - started < 5  # it stopped on the signal, not after the fake apt's 20 s
    assert not (tmp_path / "policy-rc.d").exists()


def test_a_policy_rc_d_that_was_there_before_is_left_as_it_is(tmp_path: Path) -> None:
    env = fake_apt(tmp_path, "exit 100")
    policy = tmp_path / "policy-rc.d"
    policy.write_text(BEFORE)
    policy.chmod(0o755)
    out = run_setup(tmp_path, env)
    assert out.returncode == 100, out.stderr
    assert (tmp_path / "seen").read_text() == "policy exit 0\n"  # the administrator's, not one of ours
    assert policy.read_text() == BEFORE
    assert policy.stat().st_mode & 0o777 == 0o755
