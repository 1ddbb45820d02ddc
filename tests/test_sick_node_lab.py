"""One sick node degrades a run, never blocks it: a worker's containerd frozen on the real lab.

The frozen process is the node's own containerd, found through the node's network namespace (the process named
containerd there) and stopped alone (SIGSTOP); it is always resumed (SIGCONT) in `finally`. The CLI runs as the
user runs it (`.venv/bin/fleet`, a subprocess), the engine is called directly for calls made after the node
was reported ready.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import INSTALLED_CLI, run_fleet

from fleet.api import Fleet
from fleet.core import labels as L
from fleet.engine import containers as C
from fleet.engine import images as I
from fleet.image.demo import build_demo
from fleet.lab.render import node_dir
from fleet.node.runtime.base import RunSpec
from fleet.transport import Pool

pytestmark = pytest.mark.lab

SICK = "n2"


def fleet(lab, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the CLI against the lab; returns the process and its wall time."""
    start = time.monotonic()
    out = run_fleet(*args, inventory=lab.inventory_path, columns=200, timeout=120, cli=INSTALLED_CLI)
    return out, time.monotonic() - start


def containerd_pid(lab, name: str) -> int:
    """The node's own containerd: the one process named `containerd` in the node's network namespace."""
    ns = lab.lab.node(name).netns(lab.lab.cfg.prefix)
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "containerd":
                found.append(int(pid))
        except OSError:
            continue  # exited while we looked
    assert len(found) == 1, (name, found)
    return found[0]


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP this one process for the block (once the kernel shows it stopped); SIGCONT whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while state(pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
async def demo(lab, tmp_path_factory) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A demo image on every worker and one container of it on each: (image, {node: container id})."""
    archive = build_demo(f"sk{L.random_suffix(6)}", tmp_path_factory.mktemp("img") / "demo.tar")
    started: dict[str, str] = {}
    async with Pool() as pool:
        reports = await Fleet(lab.inventory, pool).reports()
        pushed = await I.push(pool, reports, archive.path)
        assert all(p.ok for p in pushed), pushed
        try:
            for i, name in enumerate(lab.workers(), start=1):
                spec = RunSpec(id=L.container_id("sick", i), image=archive.name, env={"PORT": str(18290 + i)},
                               labels=L.build_labels("sick", replica=i))
                await C.run_container(pool, C.report_of(reports, name), spec)
                started[name] = spec.id
            yield archive.name, started
        finally:
            for name, cid in started.items():
                await C.remove_container(pool, C.report_of(reports, name), cid)


def test_frozen_containerd_reported_not_answering_others_serve_then_ready_again(lab, demo):
    _, running = demo
    pid = containerd_pid(lab, SICK)
    others = [n for n in lab.inventory.names() if n != SICK]
    with stopped(pid):
        assert state(pid) == "T"
        out, took = fleet(lab, "nodes", "--json")
        assert took < 15, f"fleet nodes took {took:.1f}s"
        assert out.returncode == 1, out.stderr
        nodes = {n["name"]: n for n in json.loads(out.stdout)["nodes"]}
        assert nodes[SICK]["status"] == "runtime not answering"
        assert nodes[SICK]["reason"] == f"containerd (pid {pid}) is stopped (SIGSTOP): it cannot answer"
        assert {n: nodes[n]["status"] for n in others} == {n: "ready" for n in others}

        table, took = fleet(lab, "nodes")
        assert took < 15 and table.returncode == 1
        assert f"{SICK}: runtime not answering: containerd (pid {pid}) is stopped" in table.stderr
        assert f"{len(others)}/{len(others) + 1} nodes ready" in table.stdout + table.stderr

        ps, took = fleet(lab, "ps", "--json")
        assert took < 15, f"fleet ps took {took:.1f}s"
        assert ps.returncode == 1, ps.stderr
        doc = json.loads(ps.stdout)
        assert doc["errors"] == {SICK: f"runtime not answering: containerd (pid {pid}) is stopped (SIGSTOP): "
                                       "it cannot answer"}
        listed = {(r["node"], r["id"]) for r in doc["containers"] if r["service"] == "sick"}
        assert listed == {(n, cid) for n, cid in running.items() if n != SICK}

        ps_table, _ = fleet(lab, "ps")
        assert f"{SICK}: runtime not answering" in ps_table.stderr, "a node's reason goes to stderr"
        assert all(running[n] in ps_table.stdout for n in running if n != SICK)
    assert state(pid) != "T"
    out, _ = fleet(lab, "nodes", "--json")
    assert out.returncode == 0, out.stdout
    assert {n["name"]: n["status"] for n in json.loads(out.stdout)["nodes"]} == {
        n: "ready" for n in lab.inventory.names()}
    ps, _ = fleet(lab, "ps", "--json")
    assert ps.returncode == 0 and json.loads(ps.stdout)["errors"] == {}
    assert {(r["node"], r["id"]) for r in json.loads(ps.stdout)["containers"] if r["service"] == "sick"} == set(
        running.items())


async def test_node_frozen_after_its_report_fails_only_its_own_calls(lab, demo):
    """The node was ready when the run read its facts, then froze: listings name it after their deadline, the
    others are listed, and making an image present fails for that node alone (ImageUnavailable)."""
    image, running = demo
    pid = containerd_pid(lab, SICK)
    async with Pool() as pool:
        reports = await Fleet(lab.inventory, pool).nodes()
        assert all(r.ok for r in reports)
        with stopped(pid):
            start = time.monotonic()
            (listed, (images, image_errors)) = await asyncio.gather(
                C.ps(pool, reports, timeout=3), I.list_images(pool, reports))
            took = time.monotonic() - start
            with pytest.raises(I.ImageUnavailable) as raised:
                await I.ensure_image(pool, C.report_of(reports, SICK), image)
            present = await I.ensure_image(pool, C.report_of(reports, "n1"), image)
    assert listed.errors == {SICK: "list containers did not answer within 3s"}
    assert {(r.node, r.info.id) for r in listed.rows if r.service == "sick"} == {
        (n, cid) for n, cid in running.items() if n != SICK}
    assert image_errors == {SICK: "image list did not answer within 8s"}
    assert all(image in images[n] for n in running if n != SICK)
    assert took < 8 + 2, f"listings took {took:.1f}s"
    assert raised.value.node == SICK and raised.value.image == image
    assert str(raised.value) == f"{SICK}: image {image} not available: image list did not answer within 8s"
    assert present == "present"


def test_hung_containerd_found_by_the_probe_not_only_a_stopped_one(lab):
    """Frozen by the cgroup v1 freezer, containerd is alive (state D, not T) but cannot answer: the facts probe
    (`ctr version`, 3 s) finds it, and the node is reported within seconds."""
    freezer = Path("/sys/fs/cgroup/freezer")
    if not (freezer / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 freezer on this machine")
    pid = containerd_pid(lab, SICK)
    home = next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if line.split(":")[1] == "freezer")
    cell = freezer / f"{lab.lab.cfg.prefix}-sick-{L.random_suffix(6)}"
    cell.mkdir()
    try:
        (cell / "cgroup.procs").write_text(str(pid))
        (cell / "freezer.state").write_text("FROZEN")
        out, took = fleet(lab, "nodes", "--json")
        frozen_state = state(pid)
    finally:
        (cell / "freezer.state").write_text("THAWED")
        (freezer / home.lstrip("/") / "cgroup.procs").write_text(str(pid))
        cell.rmdir()
    assert frozen_state != "T"
    assert took < 15, f"fleet nodes took {took:.1f}s"
    assert out.returncode == 1
    nodes = {n["name"]: n for n in json.loads(out.stdout)["nodes"]}
    assert nodes[SICK]["status"] == "runtime not answering"
    assert nodes[SICK]["reason"] == (f"containerd (pid {pid}, state {frozen_state}) did not answer `ctr version` "
                                     "within 3s")
    again, _ = fleet(lab, "nodes", "--json")
    assert again.returncode == 0, again.stdout


def test_frozen_sshd_is_unreachable_after_one_connect_timeout(lab):
    """sshd not answering is `unreachable`, apart from a runtime problem, and costs one connect timeout."""
    pid = int((Path(node_dir(lab.lab.cfg, lab.lab.node(SICK))) / "sshd.pid").read_text())
    with stopped(pid):
        out, took = fleet(lab, "nodes", "--json", "--timeout", "2")
    assert out.returncode == 1
    nodes = {n["name"]: n for n in json.loads(out.stdout)["nodes"]}
    address = lab.inventory.node(SICK).address
    assert nodes[SICK]["status"] == "unreachable"
    assert nodes[SICK]["reason"] == f"cannot connect to {address}:22: timed out after 2s"
    assert all(nodes[n]["status"] == "ready" for n in nodes if n != SICK)
    print(f"fleet nodes with one frozen sshd took {took:.1f}s")  # one connect attempt: the reason names one 2 s wait
