"""`fleet watch` without a lab: node grace, when a round acts, containerd's event lines, the held replicas in the
plan, systemd's readiness datagram, the JSON log lines, and the local socket's protocol."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from helpers import run_fleet

from fleet.api import Fleet
from fleet.cli.watch import log_line
from fleet.config.spec import from_playbook_dict
from fleet.core.labels import ContainerLabels
from fleet.core.model import Inventory, Node, Resources
from fleet.core.nodeops import NodeMark
from fleet.engine.containers import PsResult, PsRow
from fleet.engine.nodes import READY, UNREACHABLE, NodeReport
from fleet.engine.state import node_states
from fleet.engine.status import FleetStatus, ReplicaStatus, ServiceStatus
from fleet.node.runtime.base import ContainerInfo, Status
from fleet.plan.reconcile import Replica, plan
from fleet.transport import Pool
from fleet.transport.warm import ask, socket_path
from fleet.watch.controller import Look, should_act, signature
from fleet.watch.events import events_argv, is_drift, parse_event
from fleet.watch.grace import Grace, GraceView
from fleet.watch.notify import sd_notify
from fleet.watch.server import serving

# Recorded on the lab (ctr 1.6.20, `ctr -n fleet events` over SSH) ~2 ms after `kill -9` of the task's PID.
EXIT_LINE = ('2026-11-30 20:18:35.551466956 +0000 UTC fleet /tasks/exit {"container_id":"evt-1-j5dl5i",'
             '"id":"evt-1-j5dl5i","pid":27025,"exit_status":137,"exited_at":"2026-11-30T20:18:35.5514097Z"}')
DELETE_LINE = ('2026-11-30 20:33:16.452100000 +0000 UTC fleet /containers/delete {"id":"wt-0-nop4v2"}')


def rep(node: str, rid: str, replica: int = 0, service: str = "web", running: bool = True,
        spec_hash: str = "h1", port: int = 20000) -> Replica:
    return Replica(node, rid, service, replica, 1, spec_hash, port, running, Resources(0.1, 32 << 20), "img")


# --- grace ------------------------------------------------------------------------------------------------------

def test_brief_loss_holds_the_nodes_last_seen_replicas_then_its_grace_ends():
    g = Grace(6.0)
    a, b = rep("n1", "a"), rep("n2", "b", 1)
    g, view = g.update(0.0, {"n1", "n2"}, set(), [a, b])
    assert view == GraceView()
    g, view = g.update(1.0, {"n1"}, {"n2"}, [a])
    assert view.held == (b,) and dict(view.waiting) == {"n2": 6.0} and not view.expired
    g, view = g.update(6.5, {"n1"}, {"n2"}, [a])
    assert view.held == (b,) and view.waiting["n2"] == pytest.approx(0.5)
    g, view = g.update(7.0, {"n1"}, {"n2"}, [a])
    assert view.held == () and view.expired == {"n2"}


def test_a_node_that_answers_again_holds_nothing_and_a_new_loss_starts_a_new_grace():
    g = Grace(6.0)
    a, b = rep("n1", "a"), rep("n2", "b", 1)
    g, _ = g.update(0.0, {"n1", "n2"}, set(), [a, b])
    g, _ = g.update(1.0, {"n1"}, {"n2"}, [a])
    g, view = g.update(2.0, {"n1", "n2"}, set(), [a, b])
    assert view == GraceView() and dict(g.lost_since) == {}
    g, view = g.update(5.0, {"n1"}, {"n2"}, [a])
    g, view = g.update(10.0, {"n1"}, {"n2"}, [a])
    assert view.held == (b,), "lost at 5 s: its grace runs to 11 s"


def test_stopped_replicas_are_not_held_and_a_never_read_node_is_unknown():
    g = Grace(30.0)
    g, _ = g.update(0.0, {"n1"}, set(), [rep("n1", "a", running=False), rep("n1", "b", 1)])
    g, view = g.update(1.0, set(), {"n1", "n9"}, [])
    assert [r.id for r in view.held] == ["b"]
    assert view.unknown == {"n9"} and set(view.waiting) == {"n1", "n9"}


def test_negative_grace_is_refused():
    with pytest.raises(ValueError):
        Grace(-1.0)


# --- when a round acts ------------------------------------------------------------------------------------------

NO_LOSS = GraceView()


def look(replicas: list[Replica], down: frozenset[tuple[str, str]] = frozenset(), view: GraceView = NO_LOSS,
         lost: frozenset[str] = frozenset()) -> Look:
    return Look((), tuple(replicas), down, lost, view, signature(replicas, down, lost, view.expired))


HEALTHY = look([rep("n1", "a"), rep("n2", "b", 1)])
DEAD = look([rep("n1", "a", running=False), rep("n2", "b", 1)])


@pytest.mark.parametrize(("name", "the_look", "kwargs", "expected"), [
    ("first round", HEALTHY, {"first": True, "acted": None, "since_act": 0.0}, "start"),
    ("nothing wrong", HEALTHY, {"first": False, "acted": None, "since_act": 5.0}, None),
    ("a replica died", DEAD, {"first": False, "acted": HEALTHY.signature, "since_act": 0.1}, "problem"),
    ("same problem, just acted", DEAD, {"first": False, "acted": DEAD.signature, "since_act": 0.5}, None),
    ("same problem, retry due", DEAD, {"first": False, "acted": DEAD.signature, "since_act": 2.0}, "problem"),
    ("resync", HEALTHY, {"first": False, "acted": HEALTHY.signature, "since_act": 60.0}, "resync"),
    ("playbooks changed", HEALTHY, {"first": False, "acted": HEALTHY.signature, "since_act": 0.1,
                                    "playbooks_changed": True}, "playbooks"),
    ("unknown lost node", look([rep("n1", "a", running=False)], view=GraceView(unknown=frozenset({"n2"}))),
     {"first": True, "acted": None, "since_act": 9.0}, None),
    ("records changed by another controller", HEALTHY, {"first": False, "acted": HEALTHY.signature,
                                                        "since_act": 0.1, "records_changed": True}, "records"),
    ("records changed, a node never read", look([rep("n1", "a")], view=GraceView(unknown=frozenset({"n2"}))),
     {"first": False, "acted": None, "since_act": 9.0, "records_changed": True}, None),
])
def test_should_act(name, the_look, kwargs, expected):
    assert should_act(the_look, retry=2.0, resync=60.0, **kwargs) == expected, name


def test_problems_name_dead_replicas_down_servers_expired_nodes_and_second_copies():
    lk = look([rep("n1", "a", running=False), rep("n2", "b", 1), rep("n3", "c", 1)],
              down=frozenset({("be_web", "b")}), view=GraceView(expired=frozenset({"n4"})))
    problems = lk.problems
    assert "web: a on n1 is not running" in problems
    assert "be_web/b is down in HAProxy" in problems
    assert "n4: not answering for longer than node_grace" in problems
    assert any("second copy of replica 1" in p for p in problems)
    assert HEALTHY.problems == []


def test_a_node_in_its_grace_is_no_problem_and_changes_the_signature():
    a, b = rep("n1", "a"), rep("n2", "b", 1)
    lost = look([a], view=GraceView(held=(b,), waiting={"n2": 5.0}), lost=frozenset({"n2"}))
    assert lost.problems == []
    assert lost.signature != look([a, b]).signature


# --- held replicas in the plan ------------------------------------------------------------------------------------

def test_held_replicas_stay_where_they_were_and_their_node_takes_nothing_new():
    spec = from_playbook_dict("web", {"image": "img", "replicas": 3, "resources": {"cpu": 0.1, "memory": "32MiB"}},
                              "<test>")
    h = spec.spec_hash()
    running = [replace(rep(n, f"r{i}", i, spec_hash=h), resources=spec.resources)
               for i, n in enumerate(["n1", "n2", "n3"])]
    reports = [NodeReport(Node(n, f"10.0.0.{i}"), READY, None, None, 0.0) for i, n in enumerate(["n1", "n2"], 1)]
    reports.append(NodeReport(Node("n3", "10.0.0.3"), UNREACHABLE, "connection refused", None, 0.0))
    big = Resources(2.0, 2 << 30)
    nodes = [replace(s, capacity=big) if s.name != "n3" else s for s in node_states(reports, {}, running[2:])]
    n3 = next(s for s in nodes if s.name == "n3")
    assert n3.healthy and n3.cordoned
    held = plan([spec], nodes, running)
    assert not held.changed, held
    # Without holding them (the grace is over), the lost node's replica is started elsewhere.
    gone = plan([spec], [replace(s, capacity=big) for s in node_states(reports, {})], running[:2])
    starts = gone.service("web").start
    assert [(a.replica, a.node != "n3") for a in starts] == [(2, True)]


# --- events -------------------------------------------------------------------------------------------------------

def test_event_lines_parse_and_exits_in_fleets_namespace_are_drift():
    e = parse_event(EXIT_LINE)
    assert e is not None and (e.namespace, e.topic, e.container, e.exit_status) == (
        "fleet", "/tasks/exit", "evt-1-j5dl5i", 137)
    assert is_drift(e, "fleet") and not is_drift(e, "other")
    d = parse_event(DELETE_LINE)
    assert d is not None and d.container == "wt-0-nop4v2" and is_drift(d, "fleet")
    start = parse_event('2026-11-30 20:33:16.5 +0000 UTC fleet /tasks/start {"container_id":"x","pid":3}')
    assert start is not None and not is_drift(start, "fleet")
    assert parse_event("ctr: failed to dial") is None
    assert events_argv("fleet") == ["ctr", "-n", "fleet", "events"]


# --- systemd, log lines -------------------------------------------------------------------------------------------

def test_sd_notify_sends_one_datagram_to_the_notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert server.recv(100) == b"READY=1"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(f"\0fleet-test-{os.getpid()}")
        assert sd_notify("STOPPING=1", {"NOTIFY_SOCKET": f"@fleet-test-{os.getpid()}"})
        assert server.recv(100) == b"STOPPING=1"
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})


def test_log_line_is_one_json_object_with_a_utc_timestamp():
    line = log_line("reconciled", ok=True, reason="problem", node=None, level="warning")
    doc = json.loads(line)
    assert "\n" not in line
    assert list(doc) == ["ts", "level", "event", "ok", "reason"]
    assert doc["ts"].endswith("Z") and doc["level"] == "warning" and doc["event"] == "reconciled"


# --- the local socket ---------------------------------------------------------------------------------------------

@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FLEET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("FLEET_NO_WATCHER", raising=False)
    return tmp_path / "state"


async def test_ask_gets_the_watchers_answer_for_its_inventory_only(state, tmp_path):
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text("nodes: {}\n")
    other = tmp_path / "other.yaml"
    other.write_text("nodes: {}\n")
    seen: list[tuple[str, dict[str, Any], Any]] = []

    async def reply(fleet: Any, op: str, args: dict[str, Any], recent: Any) -> Any:
        seen.append((op, args, recent))
        return PsResult((), {"op": op, "nodes": ",".join(n.name for n in fleet.inventory.nodes)})

    inventory = Inventory(str(inv_path), (Node("n1", "10.0.0.1"),))
    logged: list[str] = []
    async with Pool() as pool, serving(Fleet(inventory, pool), lambda event, **f: logged.append(event), reply,
                                       recent=lambda: []) as path:
        assert path == socket_path(str(inv_path))
        assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
        assert await ask(str(inv_path), "ps", all=True) == PsResult((), {"op": "ps", "nodes": "n1"})
        assert seen == [("ps", {"all": True}, [])], "the watcher's fresh reports go to the reply"
        assert await ask(str(other), "status") is None  # no watcher for that inventory
        os.chmod(path, 0o666)
        assert await ask(str(inv_path), "status") is None, "a socket others may open is not trusted"
        os.chmod(path, 0o600)
        os.environ["FLEET_NO_WATCHER"] = "1"
        try:
            assert await ask(str(inv_path), "status") is None
        finally:
            del os.environ["FLEET_NO_WATCHER"]
    assert not path.exists() and logged == ["socket"]
    assert await ask(str(inv_path), "status") is None


async def test_node_reports_ps_and_status_with_read_only_mappings_come_through_the_socket(state, tmp_path):
    # The results carry mapping proxies (node labels, marks, container labels, ps errors): they must come back
    # read-only, or the watcher would answer "not ok" and every command would quietly open its own connections.
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text("nodes: {}\n")
    node = Node("n1", "10.0.0.1", labels={"disk": "ssd"})
    report = NodeReport(node, READY, None, None, 0.01, mark=NodeMark(cordoned=True, labels={"gpu": "a"}, by="a@b"))
    info = ContainerInfo("web-0-x", "fleet.local/demo:v1", {"fleet.service": "web"}, Status.RUNNING, pid=7)
    ps = PsResult((PsRow("n1", info, ContainerLabels("web", 1, 0)),), {"n2": "unreachable"})
    status = FleetStatus((ServiceStatus("web", (ReplicaStatus(rep("n1", "web-0-x"), "10.0.0.1:20000",
                                                               {"lb1": "up"}),), ("10.0.0.9:80",)),),
                         {"n2": "unreachable"}, {})
    answers = {"nodes": [report], "ps": ps, "status": status}

    async def reply(fleet: Any, op: str, args: dict[str, Any], recent: Any) -> Any:
        return answers[op]

    async with Pool() as pool, serving(Fleet(Inventory(str(inv_path), (node,)), pool), lambda event, **f: None, reply):
        got = {op: await ask(str(inv_path), op) for op in ("nodes", "ps", "status")}  # type: ignore[arg-type]
    assert got == answers
    assert isinstance(got["nodes"][0].mark.labels, MappingProxyType), "read-only as they were sent"
    assert isinstance(got["ps"].rows[0].info.labels, MappingProxyType)


async def test_ask_without_a_watcher_or_with_a_stale_socket_is_none(state, tmp_path):
    inv = str(tmp_path / "inv.yaml")
    assert await ask(inv, "status") is None
    path = socket_path(inv)
    path.parent.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a SIGKILLed watcher leaves
    os.chmod(path, 0o600)
    assert await asyncio.wait_for(ask(inv, "status"), 5) is None


# --- the command line ---------------------------------------------------------------------------------------------

def test_cli_refuses_a_bad_grace_or_playbook_with_exit_2_before_watching(tmp_path):
    inv = tmp_path / "inventory.yaml"
    inv.write_text("nodes:\n  n1:\n    address: 127.0.0.1\n    port: 9\n")
    good = tmp_path / "web.yaml"
    good.write_text("services:\n  web:\n    image: img\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  web:\n    image: img\n    replicas: three\n")
    out = run_fleet("watch", "--node-grace", "soon", str(good), inventory=str(inv), timeout=60)
    assert out.returncode == 2 and "--node-grace" in out.stderr, out.stderr
    out = run_fleet("watch", "--once", str(bad), inventory=str(inv), timeout=60)
    assert out.returncode == 2 and "bad.yaml:4" in out.stderr and "replicas" in out.stderr, out.stderr
