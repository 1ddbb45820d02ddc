"""Container logs rotated by size: the settings travel from the playbook to the file beside the log, and (lab, a
private containerd) a container writing all the time has its log copied and truncated by the node's rotation
step while `tail -F` (what `fleet logs -f` runs) follows it: the shim writes at the new end (no hole), the
follower goes on past each truncation, and at most `max_files` files are kept."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from local_containerd import Containerd, available, local_containerd

from fleet.config.spec import parse_playbook
from fleet.config.spec.imaging import LogsSpec
from fleet.core.errors import SpecError
from fleet.core.model import CommandResult, Resources
from fleet.engine.runspec import prepare_node_script, run_spec
from fleet.image.demo import build_demo
from fleet.node.logrotate import ROTATE_SH, rotate_env
from fleet.node.runtime.base import RunSpec
from fleet.node.runtime.ctr import CtrDriver
from fleet.node.runtime.nerdctl import NerdctlDriver
from fleet.plan.scheduler import Assignment


def test_logs_settings_resolve_hash_and_reach_the_run_spec():
    text = "services:\n  web:\n    image: r.io/web:v1\n"
    plain = parse_playbook(text, "pb.yaml").services[0]
    spec = parse_playbook(text + "    logs: {max_size: 1MiB, max_files: 5}\n", "pb.yaml").services[0]
    assert (plain.logs, spec.logs) == (LogsSpec(), LogsSpec(1 << 20, 5))
    assert "logs" not in plain.hash_input() and spec.spec_hash() != plain.spec_hash()
    run = run_spec(spec, 1, Assignment("web", 0, "n1", 20000, Resources(0.1, 1 << 20), "new"), None, now=0)
    assert (run.log_max_size, run.log_max_files) == (1 << 20, 5)
    script = CtrDriver().run(run).command
    assert script.env["LOG_SIZE"] == str(1 << 20) and script.env["LOG_FILES"] == "5"
    assert 'printf \'%s %s\\n\' "$LOG_SIZE" "$LOG_FILES" >"$LOG.rotate"' in script.text
    nerd = NerdctlDriver().run_argv(run)
    assert nerd[nerd.index("--log-opt"):nerd.index("--log-opt") + 4] == [
        "--log-opt", f"max-size={1 << 20}", "--log-opt", "max-file=5"]
    assert ROTATE_SH in prepare_node_script("").text  # every run's node preparation rotates
    for bad, fragment in (("{max_size: 1KiB}", "expected a size from 64KiB to 1TiB"),
                          ("{max_files: 0}", "max_files"), ("{max_sise: 1MiB}", "max_sise")):
        with pytest.raises(SpecError, match=fragment):
            parse_playbook(text + f"    logs: {bad}\n", "pb.yaml")


@pytest.fixture(scope="module")
def ctrd() -> Iterator[tuple[Containerd, CtrDriver, str]]:
    if reason := available():
        pytest.skip(reason)
    with local_containerd() as c:
        d = CtrDriver(namespace=c.namespace, address=c.address, log_dir=str(c.dir / "logs"),
                      logger=str(c.dir / "logger"))
        archive = build_demo("logs1", c.dir / "demo.tar")
        c.sh(d.image_import(archive.path).line(), stdin_path=archive.path)
        yield c, d, archive.name


def rotate(c: Containerd, logs_dir: str) -> None:
    proc = c.sh(ROTATE_SH, env=rotate_env(logs_dir))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.lab
def test_log_rotated_at_its_size_while_a_follower_reads_on(ctrd: tuple[Containerd, CtrDriver, str]):
    c, d, image = ctrd
    # A line every 10 ms (~60 bytes each): 4 KiB in well under a second.
    writer = 'i=0; while :; do echo "line $i $(printf "%040d" 0)"; i=$((i+1)); sleep 0.01; done'
    run = RunSpec(id="logs-1-aaaaaa", image=image, command=("sh", "-c", writer), log_max_size=4096, log_max_files=3)
    started = c.sh(d.run(run).line())
    assert started.returncode == 0, started.stderr
    log = Path(d.log_path(run.id))
    assert log.with_name(log.name + ".rotate").read_text() == "4096 3\n"
    follower = subprocess.Popen(d.logs_argv(run.id, tail=None, follow=True), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        for n in (1, 2, 3):
            wait_until(lambda: (log.exists() and log.stat().st_size > 4096) or None, 20, 0.05, "the log to grow")
            rotate(c, str(c.dir / "logs"))
            time.sleep(0.3)
            # Written at the start of the emptied file: no hole of NUL bytes where the old end was.
            head = log.read_bytes()[:64]
            assert head.startswith(b"line ") and b"\0" not in head, head
            kept = sorted(p.name for p in log.parent.glob(log.name + ".[0-9]"))
            assert kept == [f"{log.name}.{i}" for i in range(1, min(n, 2) + 1)]
        newest_rotated = max(int(m) for m in re.findall(r"^line (\d+) ", Path(f"{log}.1").read_text(), re.M))
        time.sleep(0.5)
    finally:
        follower.terminate()
        seen, _ = follower.communicate(timeout=10)
    numbers = [int(m) for m in re.findall(r"^line (\d+) ", seen, re.M)]
    # The follower read on past the last truncation, from the start of the new file.
    assert numbers and max(numbers) > newest_rotated + 5, (newest_rotated, numbers[-5:])
    removed = c.sh(d.remove(run.id).line())
    assert CommandResult("l", removed.returncode, removed.stdout, removed.stderr, 0).ok, removed.stderr
    assert sorted(log.parent.glob(log.name + "*")) == []


@pytest.mark.lab
def test_output_of_containers_that_exit_at_once_is_all_in_their_logs(ctrd: tuple[Containerd, CtrDriver, str]):
    """A job that fails at once prints why on stderr: ctr's own `file://` log lost that line about once in 20
    runs (containerd 1.6.20); fleet's logger (`LOGGER_SH`) keeps every line of both streams."""
    c, d, image = ctrd
    ids = [f"quick-{i}-cccccc" for i in range(40)]
    for i, cid in enumerate(ids):
        script = f'echo "out {i}"; echo "no such table {i}" >&2; exit 7'
        run = RunSpec(id=cid, image=image, command=("sh", "-c", script))
        started = c.sh(d.run(run).line())
        assert started.returncode == 0, started.stderr
    tasks = d.tasks()

    def all_stopped() -> bool | None:
        text = c.sh(tasks.line()).stdout
        return all(re.search(rf"^{cid}\s+\d+\s+STOPPED", text, re.M) for cid in ids) or None

    wait_until(all_stopped, 60, 0.2, "every container to exit")
    try:
        for cid in ids:
            stopped = c.sh(d.stop(cid, 0).line())
            assert stopped.returncode == 0, stopped.stderr
        lost = {cid: Path(d.log_path(cid)).read_text() for i, cid in enumerate(ids)
                if sorted(Path(d.log_path(cid)).read_text().splitlines()) != [f"no such table {i}", f"out {i}"]}
        assert lost == {}, f"{len(lost)} of {len(ids)} logs lack a line: {lost}"
    finally:
        for cid in ids:
            c.sh(d.remove(cid).line())
