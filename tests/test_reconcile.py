"""The pure reconcile diff: replicas read from labels against playbooks."""

from __future__ import annotations

from fleet.model import Resources
from fleet.reconcile import Replica, duplicates, plan
from fleet.scheduler import NodeState
from fleet.spec import parse_playbook

SPEC = parse_playbook("services:\n  web:\n    image: fleet.local/demo:v1\n    replicas: 3\n    lb: {port: 8080}\n",
                      "pb.yaml").services[0]
NODES = [NodeState(n, Resources(2.0, 2 * 1024**3), labels={"zone": z}) for n, z in (("n1", "a"), ("n2", "b"),
                                                                                     ("n3", "c"))]


def rep(node: str, replica: int, port: int, spec_hash: str | None = None, running: bool = True,
        rid: str | None = None) -> Replica:
    return Replica(node, rid or f"web-{replica}-{node}", "web", replica, 1, spec_hash or SPEC.spec_hash(), port,
                   running, SPEC.resources, SPEC.image)


def test_second_copies_from_the_most_crowded_node_go():
    rs = [rep("n1", 0, 20000), rep("n1", 2, 20001), rep("n2", 1, 20000), rep("n3", 2, 20000)]
    assert [r.id for r in duplicates(rs)] == ["web-2-n1"]
    assert duplicates(rs[:3]) == []


def test_converged_state_plans_nothing():
    rs = [rep("n1", 0, 20000), rep("n2", 1, 20000), rep("n3", 2, 20000)]
    p = plan([SPEC], NODES, rs)
    assert not p.changed and [r.id for r in p.service("web").keep] == ["web-0-n1", "web-1-n2", "web-2-n3"]


def test_duplicate_outdated_stopped_and_missing_planned():
    rs = [rep("n1", 0, 20000), rep("n1", 0, 20001, rid="web-0-again"), rep("n2", 1, 20000, spec_hash="old"),
          rep("n3", 2, 20000, running=False)]
    sp = plan([SPEC], NODES, rs).service("web")
    assert [(r.id, why) for r, why in sp.stop] == [("web-0-again", "second copy of web[0]")]
    assert [r.id for r in sp.replace] == ["web-1-n2"]
    assert [r.id for r in sp.cleanup] == ["web-2-n3"]
    assert len(sp.start) == 2 and all(a.reason == "new" for a in sp.start)
    assert {a.node for a in sp.start} == {"n2", "n3"}, "spread: the new replicas go where web is not yet"


def test_unhealthy_node_gets_nothing():
    nodes = [NODES[0], NodeState("n2", Resources(2.0, 2 * 1024**3), healthy=False), NODES[2]]
    p = plan([SPEC], nodes, [])
    assert {a.node for a in p.service("web").start} == {"n1", "n3"}
    assert p.rejected["n2"] == "unhealthy"
