"""`fleet watch` on controller A while controller B scales, rolls back and destroys a service (issue 18): each
is respected within one watch round and nothing is brought back, while a second service keeps serving HTTP load
through HAProxy with 0 failed requests; B's changes are in `fleet events`, with who and which command.

A is a subprocess with its own HOME (another controller), stopped by its PID at the end; B is this test's CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_fleet, start_fleet
from loadgen import Load
from test_watch_lab import Watcher

from fleet.core import labels as L
from fleet.image.demo import build_demo

pytestmark = pytest.mark.lab

MOVED, LOADED = "wex", "wel"  # the service B changes, the one under load
PORTS = {MOVED: 18471, LOADED: 18472}
INTERVAL = 0.5  # the watcher's round
TTL = "3"  # FLEET_LEASE_TTL for both controllers: a round that acts holds the fleet's lease this long at most


def b(lab: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Controller B: this test's CLI (the worktree's code), waiting for the fleet's lease if A holds it."""
    return run_fleet(*args, inventory=lab.inventory_path, columns=250, timeout=timeout,
                     env=dict(os.environ, FLEET_LEASE_TTL=TTL))


def playbook(path: Path, image: str, version: str) -> str:
    spec = {"image": image, "replicas": 2, "resources": {"cpu": 0.05, "memory": "32MiB"},
            "health": {"http": "/healthz", "interval": "500ms", "timeout": "1s", "failure_threshold": 2},
            "update": {"min_ready": "0s"}, "stop_grace_period": "1s"}
    path.write_text(yaml.safe_dump({"services": {
        MOVED: {**spec, "env": {"VERSION": version}, "lb": {"port": PORTS[MOVED]}},
        LOADED: {**spec, "lb": {"port": PORTS[LOADED]}}}}))
    return str(path)


def running(lab: Any) -> dict[str, list[tuple[str, int | None]]]:
    """(node, revision) of every running replica by service, as the nodes report it (no watcher asked)."""
    doc = json.loads(run_fleet("ps", "--json", inventory=lab.inventory_path,
                               env=dict(os.environ, FLEET_NO_WATCHER="1")).stdout)
    out: dict[str, list[tuple[str, int | None]]] = {MOVED: [], LOADED: []}
    for c in doc["containers"]:
        if c.get("service") in out and c["status"].startswith("running"):
            out[c["service"]].append((c["node"], c.get("revision")))
    return out


def holds(lab: Any, check: Any, what: str, rounds: int = 6) -> list[tuple[str, int | None]]:
    """`check(replicas of MOVED)` is true now and stays true for `rounds` watch rounds (nothing brought back)."""
    seen = running(lab)[MOVED]
    assert check(seen), f"{what}: not so right after B's command: {seen}"
    until = time.monotonic() + rounds * INTERVAL
    while time.monotonic() < until:
        now = running(lab)[MOVED]
        assert check(now), f"{what}: the watcher brought something back: {now}"
        time.sleep(INTERVAL / 2)
    return seen


class WatcherA(Watcher):
    """Controller A: `fleet watch` as test_watch_lab runs it, but the worktree's CLI with a HOME of its own."""

    def __init__(self, lab: Any, playbook: str, state: Path) -> None:
        state.mkdir(parents=True)
        (state / "home").mkdir()
        env = dict(os.environ, HOME=str(state / "home"), FLEET_STATE_DIR=str(state), FLEET_LEASE_TTL=TTL)
        self.log = state / "watch.log"
        self._out = self.log.open("w")
        self.proc = start_fleet("watch", "-i", lab.inventory_path, "--interval", f"{INTERVAL}s", playbook, env=env,
                                stdout=self._out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def services(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Both services applied by B, MOVED twice (revisions 1 and 2, so a rollback has somewhere to go); the
    playbooks of v1 and v2. Destroyed at the end."""
    d = tmp_path_factory.mktemp("watch-etcd")
    archive = build_demo(f"we{L.random_suffix(6)}", d / "demo.tar")
    assert b(lab, "image", "push", archive.path).returncode == 0
    v1, v2 = playbook(d / "v1.yaml", archive.name, "1"), playbook(d / "v2.yaml", archive.name, "2")
    try:
        for pb in (v1, v2):
            out = b(lab, "apply", pb)
            assert out.returncode == 0, out.stdout + out.stderr
        yield v1, v2
    finally:
        for name in (MOVED, LOADED):
            b(lab, "destroy", name, "--grace", "1", "--wait", "30s")


def test_scale_rollback_destroy_from_a_second_controller_respected_by_a_running_watcher(lab, services, tmp_path):
    _, v2 = services
    address = lab.inventory.node("lb1").address
    w = WatcherA(lab, v2, tmp_path / "a")
    # B follows the event log meanwhile, as a user would (stopped by its PID at the end).
    followed = (tmp_path / "events.jsonl").open("w")
    follower = start_fleet("events", "-i", lab.inventory_path, "--follow", "--json", "-n", "0",
                           env=dict(os.environ), stdout=followed, stderr=subprocess.STDOUT)
    try:
        with Load(address, PORTS[LOADED], clients=4, max_seconds=150) as load:
            w.wait_for(lambda e: e.get("event") == "reconciled", 90)
            before = running(lab)[MOVED]
            assert len(before) == 2 and {r for _, r in before} == {2}, before

            # 1. B scales MOVED to 1: it stays at 1, the watcher's playbook (2) notwithstanding; the watcher heard
            # of it (an etcd watch) and reconciled at once, reading the records again under the lease.
            n = len(w.lines())
            out = b(lab, "scale", MOVED, "1", "-f", v2, "--wait", "60s")
            assert out.returncode == 0, out.stdout + out.stderr
            holds(lab, lambda rs: len(rs) == 1, "scale to 1")
            w.wait_for(lambda e: e.get("event") == "reconciled" and e.get("reason") == "records", 10, after=n)

            # 2. B rolls MOVED back to revision 1's spec (recorded as a new revision): it stays there, the
            # watcher's playbook (revision 2's spec) held back.
            out = b(lab, "rollback", MOVED, "--wait", "60s")
            assert out.returncode == 0, out.stdout + out.stderr
            history = json.loads(b(lab, "history", MOVED, "--json").stdout)
            newest = max(history, key=lambda r: r["revision"])
            assert newest["spec"]["env"] == {"VERSION": "1"} and newest["revision"] > 2, newest
            holds(lab, lambda rs: len(rs) >= 1 and {r for _, r in rs} == {newest["revision"]},
                  "rollback to revision 1's spec")

            # 3. B destroys MOVED: nothing of it comes back.
            out = b(lab, "destroy", MOVED, "--grace", "1", "--wait", "60s")
            assert out.returncode == 0, out.stdout + out.stderr
            holds(lab, lambda rs: rs == [], "destroy")
            after_destroy = len(w.lines())
            time.sleep(4 * INTERVAL)
        assert load.result.ok > 100 and load.result.failed == 0, load.result
        print(f"\nload through HAProxy on {LOADED}: {load.result.ok} ok, {load.result.failed} failed")
        assert len(running(lab)[LOADED]) == 2
        lines = w.lines()
        # The watcher heard each change of B's (an etcd watch), and none of its reconciles started MOVED again.
        assert [e for e in lines[n:] if e.get("event") == "records-changed"], lines[n:][-20:]
        started = [e for e in lines[n:] if e.get("event") == "reconciled"
                   and (e.get("changed") or {}).get(MOVED, {}).get("started")]
        assert started == [], started
        assert not [e for e in lines[after_destroy:] if e.get("event") == "step" and e.get("service") == MOVED]
        assert not [e for e in lines if e.get("event") == "round-error"], [e for e in lines
                                                                          if e.get("event") == "round-error"]
    finally:
        os.kill(follower.pid, signal.SIGINT)
        try:
            follower.wait(timeout=15)
        finally:
            # Neither process outlives the test, even when the follower did not stop on SIGINT (seen when the
            # suite ran with SIGINT ignored: the watcher was left running too).
            if follower.poll() is None:
                follower.kill()
                follower.wait(timeout=5)
            followed.close()
            assert w.stop() == 0, w.log.read_text()[-3000:]

    # What `fleet events --follow` printed as it happened: B's scale, rollback and destroy, in order.
    streamed = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    commands = [e["command"].split(" -i ")[0] for e in streamed if e.get("service") == MOVED]
    firsts = [next(i for i, c in enumerate(commands) if c.startswith(f"fleet {verb}"))
              for verb in ("scale", "rollback", "destroy")]
    assert firsts == sorted(firsts), commands

    # B's changes in the event log: who, the command, what.
    out = b(lab, "events", "--json", "--service", MOVED)
    assert out.returncode == 0, out.stdout + out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(e["service"] == MOVED for e in events)
    decisions = [e for e in events if e["what"] == "decision"]
    assert any(e.get("decision") == "destroyed" and "fleet destroy" in e["command"] for e in decisions), decisions
    assert any("fleet rollback" in e["command"] for e in decisions) and any(
        "fleet scale" in e["command"] for e in events), events
    assert [e["number"] for e in events] == sorted(e["number"] for e in events)
    tail = b(lab, "events", "-n", "1")
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 1, tail.stdout + tail.stderr
