"""Container logs rotated by size: the settings travel from the playbook to the logger's URI and the file beside the
log; fleet's logger (`LOGGER_SH`, run here as the containerd shim runs it) rotates its file at exactly its size
with `tail -F` (what `fleet logs -f` runs) following every byte across the renames; (lab, a private containerd) a
container whose logger only appends (an older fleet's) has its log copied and truncated by the rotation step of
fleet's runs while `tail -F` follows it: the shim writes at the new end (no hole), the follower goes on past each
truncation, and at most `max_files` files are kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from local_containerd import Containerd, available, local_containerd
from logger_shim import APPEND_ONLY_LOGGER, start_logger

from fleet.config.spec import parse_playbook
from fleet.config.spec.imaging import LogsSpec
from fleet.core.errors import SpecError
from fleet.core.model import CommandResult, Resources
from fleet.core.shell import Script
from fleet.engine.runspec import prepare_node_script, run_spec
from fleet.image.demo import build_demo
from fleet.node.logdates import Dater, dated_script
from fleet.node.logrotate import LOGGER_SH, ROTATE_SH, rotate_env
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
    assert CtrDriver(logger="/l").run_argv(run)[6].endswith(f".log&size={1 << 20}&files=5")  # the logger's limits
    assert 'printf \'%s %s\\n\' "$LOG_SIZE" "$LOG_FILES" >"$LOG.rotate"' in script.text
    nerd = NerdctlDriver().run_argv(run)
    assert nerd[nerd.index("--log-opt"):nerd.index("--log-opt") + 4] == [
        "--log-opt", f"max-size={1 << 20}", "--log-opt", "max-file=5"]
    assert ROTATE_SH in prepare_node_script("").text  # every run's node preparation rotates
    # Following: tail -F's notices of each rotation stay out of the stream (they would split a line).
    follow = CtrDriver().logs("web-1-x", None, follow=True).command
    assert isinstance(follow, Script) and follow.text == 'exec "$@" 2>/dev/null'
    assert follow.args == ("tail", "-n", "+1", "-F", "/var/lib/fleet/logs/fleet/web-1-x.log")
    assert "-F \"$F\" 2>/dev/null" in CtrDriver().logs_dated("web-1-x", 10, True, "tok").command.text
    for bad, fragment in (("{max_size: 1KiB}", "expected a size from 64KiB to 1TiB"),
                          ("{max_files: 0}", "max_files"), ("{max_sise: 1MiB}", "max_sise")):
        with pytest.raises(SpecError, match=fragment):
            parse_playbook(text + f"    logs: {bad}\n", "pb.yaml")


def logger_in(directory: Path) -> Path:
    script = directory / "logger"
    script.write_text(LOGGER_SH)
    script.chmod(0o755)
    return script


def test_logger_rotates_at_its_size_and_a_follower_reads_every_byte_across_the_renames(tmp_path: Path):
    log = tmp_path / "c.log"
    # The URI's query reaches the logger as `key value` pairs in no fixed order.
    proc, out, err = start_logger(logger_in(tmp_path), ["files", "3", "file", str(log), "size", "16384"])
    seen = tmp_path / "seen"
    with seen.open("wb") as sink:
        follower = subprocess.Popen(["tail", "-n", "+1", "-F", str(log)], stdout=sink, stderr=subprocess.DEVNULL)
    try:
        # A line is in the file as soon as it is written (not once a buffer fills), the stream still open.
        os.write(out, b"first\n")
        wait_until(lambda: log.read_bytes() == b"first\n" or None, 5, 0.01, "the first line in the log")
        data = b"".join(f"line {i} {'x' * 40}\n".encode() for i in range(4000))  # 212 KB: 12 rotations
        # tail -F follows the name: a follower more than a whole file behind would skip that file (a busy machine
        # can delay it that long). Each 4000 bytes are read before the next are written, so what is checked is
        # the rename itself, and a chunk on each side of it.
        for k in range(0, len(data), 4000):
            os.write(out, data[k:k + 4000])
            wait_until(lambda k=k: seen.read_bytes().endswith(data[k:k + 4000]) or None, 20, 0.005,
                       "the follower to read on")
        os.write(err, b"on stderr\n")
        os.close(out)
        os.close(err)
        assert proc.wait(timeout=10) == 0
        everything = b"first\n" + data + b"on stderr\n"
        wait_until(lambda: seen.read_bytes() == everything or None, 10, 0.05, "the follower to read every byte")
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert sorted(p.name for p in tmp_path.glob("c.log*")) == ["c.log", "c.log.1", "c.log.2"]
    rotated = [Path(f"{log}.{i}").read_bytes() for i in (2, 1)]
    assert [len(r) for r in rotated] == [16384, 16384]
    live = log.read_bytes()
    assert len(live) == len(everything) % 16384
    assert everything.endswith(rotated[0] + rotated[1] + live)  # the newest bytes, in order, none twice
    # The node's own rotation step leaves a file its logger rotates alone: it is never past its size.
    log.with_name("c.log.rotate").write_text("16384 3\n")
    proc_rotate = subprocess.run(["sh", "-c", ROTATE_SH], env=rotate_env(str(tmp_path.parent)), capture_output=True)
    assert proc_rotate.returncode == 0 and log.read_bytes() == live and Path(f"{log}.2").read_bytes() == rotated[0]


def test_fleet_logs_reads_the_rotated_files_too_joining_a_line_split_by_a_rotation(tmp_path: Path):
    d = CtrDriver(log_dir=str(tmp_path))
    log = Path(d.log_path("r"))
    log.parent.mkdir()
    # Rotated at exact sizes: "b1" and "c1" are each split between two files.
    for suffix, text in ((".2", "a1\na2\na3\nb"), (".1", "1\nb2\nb3\nc"), ("", "1\nc2\n")):
        Path(f"{log}{suffix}").write_text(text)
    every = ["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2"]

    def read(tail: int | None, cid: str = "r") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", d.logs(cid, tail).line()], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=10)

    for tail in (None, 0, 1, 2, 3, 5, 7, 8, 100):
        got = read(tail)
        want = every if tail is None else every[len(every) - min(tail, len(every)):]
        assert (got.returncode, got.stdout.splitlines()) == (0, want), tail
    missing = read(5, "gone")
    assert missing.returncode == 1 and "No such file" in missing.stderr


def test_dated_follower_of_a_log_rotated_as_it_starts_reads_the_rest_then_the_new_file(tmp_path: Path):
    """`fleet logs -f --timestamps` reads its backlog from the file it opened; a rotation between that and
    following (forced here: a `stat` that rotates the log once it has answered) loses and repeats nothing."""
    log = tmp_path / "c.log"
    log.write_text("old 1\nold 2\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "stat").write_text(f"""#!/bin/sh
{shutil.which("stat")} "$@"; rc=$?
if [ ! -e {tmp_path}/rotated ]; then
  : >{tmp_path}/rotated; printf 'old 3\\n' >>"$F"; mv "$F" "$F.1"; printf 'new 1\\n' >"$F"
fi
exit $rc
""")
    (fake / "stat").chmod(0o755)
    script = dated_script(str(log), 10, True, "tok")
    with (tmp_path / "out").open("w") as sink:
        proc = subprocess.Popen(script.render(), shell=True, stdout=sink, start_new_session=True,
                                env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    try:
        wait_until(lambda: "new 1\n" in (tmp_path / "out").read_text() or None, 10, 0.02, "the new file's line")
        with log.open("a") as f:
            f.write("new 2\n")
        wait_until(lambda: "new 2\n" in (tmp_path / "out").read_text() or None, 10, 0.02, "a line after")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)
    dater = Dater("tok")
    got = [d for d in (dater.feed(ln, 0.0) for ln in (tmp_path / "out").read_text().splitlines()) if d is not None]
    assert [(d.text, d.live) for d in got] == [("old 1", False), ("old 2", False), ("old 3", True),
                                               ("new 1", True), ("new 2", True)]
    assert got[0].file.size == len("old 1\nold 2\n")


def test_logger_whose_log_directory_is_gone_reads_on_and_ends_never_blocking_the_container(tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    proc, out, err = start_logger(logger_in(tmp_path), ["file", str(logs / "c.log"), "size", "65536", "files", "2"])
    os.write(out, b"before\n")
    wait_until(lambda: (logs / "c.log").read_bytes() == b"before\n" or None, 5, 0.01, "the first line")
    shutil.rmtree(logs)
    os.set_blocking(out, False)
    sent, deadline = 0, time.monotonic() + 10
    while sent < 512 * 1024:  # 8 pipes' worth: a logger that stopped reading would leave the writer blocked
        assert time.monotonic() < deadline, f"the container would block after {sent} bytes"
        try:
            sent += os.write(out, b"x" * 4096)
        except BlockingIOError:
            time.sleep(0.01)
    os.close(out)
    os.close(err)
    assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("args", [("file", "/tmp/x.log"), ("file", "/tmp/x.log", "size", "0", "files", "2"),
                                  ("size", "100", "files", "2"), ("file", "/tmp/x.log", "size", "1k", "files", "2")])
def test_logger_refuses_missing_or_bad_limits(tmp_path: Path, args: tuple[str, ...]):
    script = tmp_path / "logger"
    script.write_text(LOGGER_SH)
    assert subprocess.run(["sh", str(script), *args], capture_output=True, timeout=10).returncode == 2


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
def test_append_only_log_rotated_at_its_size_by_fleets_runs_while_a_follower_reads_on(
        ctrd: tuple[Containerd, CtrDriver, str]):
    c, _, image = ctrd
    old = c.dir / "old-logger"
    old.write_text(APPEND_ONLY_LOGGER)
    old.chmod(0o755)
    d = CtrDriver(namespace=c.namespace, address=c.address, log_dir=str(c.dir / "logs"), logger=str(old))
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
