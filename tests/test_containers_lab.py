"""Containers on the real lab: push, run, ps (fleet's and foreign), stop, rm, restart, OOM, logs, exec.

The CLI runs as a subprocess for the user-facing paths; the engine is called directly for the rest. Every
container a test starts is removed in `finally`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import run_fleet, wait_until_async

from fleet.api import Fleet, NodeReport
from fleet.core import labels as L
from fleet.engine import containers as C
from fleet.engine import images as I
from fleet.image.demo import build_demo
from fleet.image.oci import ImageArchive, ImageArchiveError
from fleet.node.runtime.base import RunSpec, Status
from fleet.transport import Pool

pytestmark = pytest.mark.lab


def cli(lab, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=lab.inventory_path, columns=200, timeout=60)


def ctr(lab, node: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return lab.lab.exec_in(node, ["ctr", "-n", "fleet", *argv], check=check)


def purge(lab, node: str, cid: str) -> None:
    """Remove a container however it was left (the test's own `finally`)."""
    ctr(lab, node, "containers", "label", cid, f"{L.RESTART_STATUS}=")
    ctr(lab, node, "tasks", "rm", "-f", cid)
    ctr(lab, node, "containers", "rm", cid)


@pytest.fixture(scope="module")
def demo(lab, tmp_path_factory) -> Iterator[ImageArchive]:
    """A demo image with a tag no other test uses, pushed to every worker once (by the first test)."""
    archive = build_demo(f"ct{L.random_suffix(6)}", tmp_path_factory.mktemp("img") / "demo.tar")
    yield archive


@pytest.fixture
async def fleet_pool(lab) -> AsyncIterator[tuple[Pool, list[NodeReport]]]:
    async with Pool() as pool:
        yield pool, await Fleet(lab.inventory, pool).reports()


def _report(reports: list[NodeReport], name: str) -> NodeReport:
    return C.report_of(reports, name)


async def _wait_http(url: str, timeout: float = 5.0) -> str:
    """The page at `url` once it answers (connection errors until then are "not yet")."""
    def get() -> str:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    return await wait_until_async(lambda: asyncio.to_thread(get), timeout, 0.1, f"{url} to answer", ignore=(OSError,))


async def _row(pool: Pool, reports: list[NodeReport], cid: str) -> C.PsRow | None:
    rows = [r for r in (await C.ps(pool, reports)).rows if r.info.id == cid]
    return rows[0] if rows else None


def test_push_sends_once_then_every_node_present(lab, demo):
    first = cli(lab, "image", "push", demo.path, "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    doc = json.loads(first.stdout)
    workers = lab.workers()
    assert [n["node"] for n in doc["nodes"]] == workers
    assert all(n["status"] == "sent" and n["bytes_sent"] == demo.size for n in doc["nodes"]), doc
    for node in workers:
        assert demo.digest in ctr(lab, node, "images", "ls", check=True).stdout
    second = cli(lab, "image", "push", demo.path, "--json")
    assert second.returncode == 0
    again = json.loads(second.stdout)["nodes"]
    assert [(n["status"], n["bytes_sent"]) for n in again] == [("present", 0)] * len(workers)


async def test_corrupt_archive_is_refused_and_nothing_changes(lab, tmp_path):
    built = build_demo("corrupt", tmp_path / "c.tar")
    data = bytearray(Path(built.path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the padded busybox layer blob
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    before = {n: ctr(lab, n, "images", "ls", "-q").stdout for n in lab.workers()}
    out = cli(lab, "image", "push", str(bad))
    assert out.returncode == 2
    assert "corrupt" in out.stderr and "nothing was sent" in out.stderr
    async with Pool() as pool:
        reports = await Fleet(lab.inventory, pool).reports()
        with pytest.raises(ImageArchiveError, match="corrupt"):
            await I.push(pool, reports, str(bad))
    after = {n: ctr(lab, n, "images", "ls", "-q").stdout for n in lab.workers()}
    assert after == before and all("corrupt" not in text for text in after.values())


async def test_run_serves_page_labels_in_ps_foreign_left_alone(lab, demo, fleet_pool):
    pool, reports = fleet_pool
    await I.push(pool, reports, demo.path)
    n1 = lab.inventory.node("n1")
    foreign = f"foreign-{L.random_suffix()}"
    cid = None
    try:
        out = cli(lab, "run", "n1", demo.name, "--name", "web", "--port", "18181", "--cpu", "250m",
                  "--memory", "64Mi", "-e", "GREETING=hi")
        assert out.returncode == 0, out.stdout + out.stderr
        cid = out.stdout.split(":")[0].split("/")[1]
        page = await _wait_http(f"http://{n1.address}:18181/")
        assert "fleet demo" in page and "host=n1 replica=1" in page
        ctr(lab, "n1", "run", "-d", "--null-io", "--net-host", "--env", "PORT=18182", demo.name, foreign, check=True)
        listing = cli(lab, "ps", "--json")
        assert listing.returncode == 0, listing.stderr
        rows = {r["id"]: r for r in json.loads(listing.stdout)["containers"]}
        web = rows[cid]
        assert (web["node"], web["service"], web["replica"], web["port"], web["foreign"]) == \
            ("n1", "web", 1, 18181, False)
        assert (web["cpu"], web["memory"], web["status"]) == (0.25, 64 * 1024**2, "running")
        assert rows[foreign]["foreign"] is True and rows[foreign]["service"] is None
        text = cli(lab, "ps").stdout
        line = next(ln for ln in text.splitlines() if foreign in ln)
        assert "(foreign)" in line
        assert any(cid in ln and "web" in ln and "250m" in ln and "64 MiB" in ln for ln in text.splitlines())
    finally:
        purge(lab, "n1", foreign)
        if cid:
            purge(lab, "n1", cid)


async def test_stop_waits_grace_then_kills_and_rm_leaves_nothing(lab, demo, fleet_pool):
    pool, reports = fleet_pool
    await I.push(pool, reports, demo.path, ["n2"])
    n2 = _report(reports, "n2")
    stubborn = RunSpec(id=L.container_id("stubborn", 1), image=demo.name,
                       env={"PORT": "18191", "DEMO_IGNORE_TERM": "1"}, labels=L.build_labels("stubborn", replica=1))
    polite = RunSpec(id=L.container_id("polite", 1), image=demo.name, env={"PORT": "18192"},
                     labels=L.build_labels("polite", replica=1))
    gone = RunSpec(id=L.container_id("gone", 1), image=demo.name, env={"PORT": "18193"},
                   labels=L.build_labels("gone", replica=1))
    try:
        for spec in (stubborn, polite, gone):
            await C.run_container(pool, n2, spec)
        await _wait_http(f"http://{n2.node.address}:18191/")
        await _wait_http(f"http://{n2.node.address}:18192/")
        t0 = time.monotonic()
        res = await C.stop_container(pool, n2, stubborn.id, grace=1.5)
        took = time.monotonic() - t0
        assert res.found and res.killed and res.exit_code == 137
        assert 1.5 <= took < 6, took
        t0 = time.monotonic()
        res = await C.stop_container(pool, n2, polite.id, grace=5)
        assert (res.killed, res.exit_code) == (False, 0) and time.monotonic() - t0 < 3
        await C.remove_container(pool, n2, gone.id)
        for what in ("containers", "tasks", "snapshots"):
            listed = ctr(lab, "n2", what, "ls", check=True).stdout
            assert all(s.id not in listed for s in (stubborn, polite, gone)), (what, listed)
        logs = lab.lab.exec_in("n2", ["ls", "/var/lib/fleet/logs/fleet"], check=False).stdout
        assert gone.id not in logs
        assert not (await C.stop_container(pool, n2, gone.id, grace=1)).found
    finally:
        for spec in (stubborn, polite, gone):
            purge(lab, "n2", spec.id)


async def test_crashed_container_is_restarted_by_containerd(lab, demo, fleet_pool):
    pool, reports = fleet_pool
    await I.push(pool, reports, demo.path, ["n3"])
    n3 = _report(reports, "n3")
    spec = RunSpec(id=L.container_id("crashy", 1), image=demo.name, restart="always",
                   env={"PORT": "18201", "DEMO_CRASH_AFTER": "1"}, labels=L.build_labels("crashy", replica=1))
    try:
        await C.run_container(pool, n3, spec)
        first = await _row(pool, reports, spec.id)
        assert first is not None and first.info.pid is not None
        deadline = time.monotonic() + 10
        pids = {first.info.pid}
        while len(pids) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            row = await _row(pool, reports, spec.id)
            if row is not None and row.info.status is Status.RUNNING and row.info.pid:
                pids.add(row.info.pid)
        assert len(pids) >= 2, "the restart monitor started the task again with a new PID"
        log = ctr(lab, "n3", "containers", "info", spec.id).stdout
        assert L.RESTART_STATUS in log
    finally:
        purge(lab, "n3", spec.id)


async def test_memory_limit_oom_kill_is_reported(lab, demo, fleet_pool):
    pool, reports = fleet_pool
    await I.push(pool, reports, demo.path, ["n1"])
    n1 = _report(reports, "n1")
    spec = RunSpec(id=L.container_id("hog", 1), image=demo.name, env={"PORT": "18211"}, memory=32 * 1024**2,
                   labels=L.build_labels("hog", replica=1, memory=32 * 1024**2))
    try:
        await C.run_container(pool, n1, spec)
        row = await _row(pool, reports, spec.id)
        assert row is not None and not row.info.oom_killed
        lines: list[str] = []
        code = await C.exec_in(pool, n1, spec.id, ["awk", 'BEGIN { s = "0123456789abcdef"; while (1) s = s s }'],
                               lines.append)
        assert code == 137, (code, lines)
        row = await _row(pool, reports, spec.id)
        assert row is not None and row.info.oom_killed
        text = cli(lab, "ps", "--all").stdout
        assert any(spec.id in ln and "(oom-killed)" in ln for ln in text.splitlines()), text
        out = cli(lab, "stop", spec.id, "--grace", "2")
        assert out.returncode == 0 and "OOM-killed" in out.stdout, out.stdout + out.stderr
    finally:
        purge(lab, "n1", spec.id)


async def test_logs_merge_replicas_follow_and_exec(lab, demo, fleet_pool):
    pool, reports = fleet_pool
    await I.push(pool, reports, demo.path, ["n1", "n2"])
    specs = [(name, RunSpec(id=L.container_id("lg", i), image=demo.name, env={"PORT": str(18220 + i)},
                            labels=L.build_labels("lg", replica=i)))
             for i, name in ((1, "n1"), (2, "n2"))]
    try:
        for node, spec in specs:
            await C.run_container(pool, _report(reports, node), spec)
        for node, _spec in specs:
            await _wait_http(f"http://{lab.inventory.node(node).address}:{18220 + (1 if node == 'n1' else 2)}/")
        out = cli(lab, "logs", "lg", "--tail", "5")
        assert out.returncode == 0, out.stderr
        for node, spec in specs:
            assert any(ln.startswith(f"{node}/{spec.id}") and "listening on" in ln for ln in out.stdout.splitlines())
        _dated_logs_and_describe(lab, [spec.id for _, spec in specs])
        rows = C.find(await C.ps(pool, reports), "lg")
        seen: list[tuple[str, str]] = []
        async with asyncio.timeout(15), C.logs(pool, C.targets(reports, rows), tail=1, follow=True) as stream:
            async for prefix, line in stream:
                seen.append((prefix, line))
                if len(seen) == 2:  # both tails arrived: now make n2's replica log a new line
                    ctr(lab, "n2", "tasks", "kill", specs[1][1].id, check=True)
                if "SIGTERM" in line:
                    break
        assert (f"n2/{specs[1][1].id}", "demo " + demo.name.split(":")[1] + ": SIGTERM: stopping") in seen
        assert {p for p, _ in seen} == {f"n1/{specs[0][1].id}", f"n2/{specs[1][1].id}"}
        ran = cli(lab, "exec", specs[0][1].id, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
        assert ran.returncode == 7, ran.stderr
        # stdout and stderr travel in separate SSH streams: both arrive, their interleaving is not fixed.
        assert sorted(ran.stdout.split()) == ["err", "out"]
        assert cli(lab, "exec", "no-such-thing", "--", "true").returncode == 2
        _exec_on_a_terminal(lab, specs[0][1].id)
    finally:
        for node, spec in specs:
            purge(lab, node, spec.id)


def _exec_on_a_terminal(lab, cid: str) -> None:
    """`fleet exec -it` from a terminal (a local pty): the command runs on a terminal in the container, reads
    what is typed, and its exit code is fleet's."""
    script = '[ -t 0 ] && [ -t 1 ] && echo on-a-tty; echo READY; read line; echo "got: $line"; exit 3'
    pid, fd = pty.fork()
    if pid == 0:  # the child: fleet on the pty, as from a terminal
        os.execv(sys.executable, [sys.executable, "-m", "fleet.cli.main", "exec", "-it", cid,
                                  "-i", lab.inventory_path, "--", "sh", "-c", script])
    out, typed = b"", False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            out += data
            if b"READY" in out and not typed:
                os.write(fd, b"typed line\r")
                typed = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert "on-a-tty" in text and "got: typed line" in text, text
    assert os.waitstatus_to_exitcode(status) == 3, text


def _dated_logs_and_describe(lab, ids: list[str]) -> None:
    """`fleet logs --timestamps/--since` on ctr's undated log files, and `fleet describe` of a service and a node."""
    stamped = cli(lab, "logs", "lg", "--timestamps", "--tail", "5")
    assert stamped.returncode == 0, stamped.stderr
    lines = [ln.split(" | ", 1)[1] for ln in stamped.stdout.splitlines()]
    assert lines and all(ln.startswith("<=20") and ln[2:22].endswith("Z") for ln in lines), lines  # <=...:SSZ
    assert any("listening on" in ln for ln in lines)
    # The files were created after this cutoff: every line is kept, and no warning is needed.
    hour = cli(lab, "logs", "lg", "--since", "1h")
    assert hour.returncode == 0 and "may be older" not in hour.stderr, hour.stderr
    assert sorted(hour.stdout.splitlines()) == sorted(cli(lab, "logs", "lg", "--tail", "-1").stdout.splitlines())
    on_n2 = cli(lab, "logs", "lg", "--node", "n2", "--tail", "-1")
    assert on_n2.returncode == 0 and "host=n2" in on_n2.stdout and "host=n1" not in on_n2.stdout, on_n2.stderr
    nowhere = cli(lab, "logs", "lg", "--node", "n3")
    assert nowhere.returncode == 2 and "none of n3/lg runs there" in nowhere.stderr, nowhere.stderr
    time.sleep(2.2)  # the files' last write (second granularity) is now before the cutoff: nothing is kept
    quiet = cli(lab, "logs", "lg", "--since", "1s")
    assert (quiet.returncode, quiet.stdout) == (0, ""), quiet.stderr
    described = cli(lab, "describe", "lg", "-o", "json")
    svc = json.loads(described.stdout)
    # No HAProxy runs on this lab's lb node until a deploy: exit 1 says what could not be read.
    assert described.returncode == (1 if svc["lb_errors"] or svc["errors"] else 0), described.stderr
    # Started by hand, not by a rollout: no record, not replicas `fleet status` counts, its containers all the same.
    assert (svc["kind"], svc["record"], svc["running"]) == ("service", None, 0)
    assert sorted(c["id"] for c in svc["containers"]) == sorted(ids)
    node = json.loads(cli(lab, "describe", "n1", "-o", "json").stdout)
    assert node["kind"] == "node" and ids[0] in [c["id"] for c in node["containers"]]
    assert node["facts"]["runtime"] == "ctr"
    text = cli(lab, "describe", "node/n1")
    assert "Containers" in text.stdout and ids[0] in text.stdout, text.stdout + text.stderr


async def test_hostile_values_survive_end_to_end(lab, demo, fleet_pool):
    pool, reports = fleet_pool
    await I.push(pool, reports, demo.path, ["n3"])
    n3 = _report(reports, "n3")
    hostile = "a b'c\"d $(touch /tmp/pwned) `id`; x\\y ☃ *"
    spec = RunSpec(id=L.container_id(hostile, 1), image=demo.name,
                   env={"PORT": "18231", "HOSTILE": hostile + "\nsecond line"},
                   labels={**L.build_labels(hostile, replica=1), "note": hostile})
    try:
        await C.run_container(pool, n3, spec)
        row = await _row(pool, reports, spec.id)
        assert row is not None and row.labels is not None
        assert row.labels.service == hostile and row.info.labels["note"] == hostile
        assert C.find(await C.ps(pool, reports), hostile) == [row]
        lines: list[str] = []
        code = await C.exec_in(pool, n3, spec.id, ["sh", "-c", 'printf "%s\\n" "$HOSTILE"'], lines.append)
        assert code == 0 and lines == [hostile, "second line"]
        text = cli(lab, "ps", "--json").stdout
        assert any(r["service"] == hostile for r in json.loads(text)["containers"])
        assert not os.path.exists("/tmp/pwned")
        assert lab.lab.exec_in("n3", ["test", "-e", "/tmp/pwned"], check=False).returncode != 0
    finally:
        purge(lab, "n3", spec.id)


async def test_container_main_process_over_its_memory_limit_is_oom_killed(lab, demo, fleet_pool):
    pool, reports = fleet_pool
    await I.push(pool, reports, demo.path, ["n2"])
    n2 = _report(reports, "n2")
    spec = RunSpec(id=L.container_id("oom", 1), image=demo.name, env={"PORT": "18212", "DEMO_MEMORY_MB": "64"},
                   memory=32 * 1024**2, labels=L.build_labels("oom", replica=1, memory=32 * 1024**2))
    try:
        await C.run_container(pool, n2, spec)
        deadline = time.monotonic() + 20
        row = await _row(pool, reports, spec.id)
        while row is not None and row.info.status is Status.RUNNING and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            row = await _row(pool, reports, spec.id)
        assert row is not None and row.info.status is Status.STOPPED and row.info.oom_killed, row
        out = cli(lab, "ps", "--all")
        assert any(spec.id in ln and "(oom-killed)" in ln for ln in out.stdout.splitlines()), out.stdout
        out = cli(lab, "stop", spec.id, "--grace", "1")
        assert out.returncode == 0 and "137" in out.stdout and "OOM-killed" in out.stdout, out.stdout + out.stderr
    finally:
        purge(lab, "n2", spec.id)
