"""The pure reconcile diff: replicas read from labels against playbooks."""

from __future__ import annotations

from dataclasses import replace as _replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.config.spec import parse_playbook
from fleet.core.model import Resources
from fleet.plan.reconcile import Replica, duplicates, plan
from fleet.plan.scheduler import NodeState

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


# ---- property: applying a plan, then diffing again, gives an empty plan ---------------------------------------

_SPECS = [_replace(SPEC, name=name, replicas=0) for name in ("web", "api", "db")]


def _apply(p, replicas: list[Replica]) -> list[Replica]:
    """What the engine leaves once a plan is carried out: kept replicas plus the started ones (at their
    assignments), everything replaced, stopped or cleaned up gone; other services' replicas untouched."""
    gone = {r.id for s in p.services for r in (*s.replace, *s.cleanup)}
    gone |= {r.id for s in p.services for r, _ in s.stop}
    managed = {s.name for s in p.services}
    out = [r for r in replicas if r.id not in gone and (r.service not in managed or r.running)]
    for s in p.services:
        for a in s.start:
            out.append(Replica(a.node, f"{s.name}-{a.replica}-new{a.node}{a.port}", s.name, a.replica, 2,
                               s.spec.spec_hash(), a.port, True, s.spec.resources, s.spec.image))
    return out


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 5), min_size=1, max_size=3),
       nodes=st.integers(1, 4),
       existing=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 5), st.booleans(),
                                   st.booleans()), max_size=10))
def test_applying_a_plan_then_diffing_again_gives_an_empty_plan(counts, nodes, existing):
    specs = [_replace(s, replicas=n) for s, n in zip(_SPECS, counts, strict=False)]
    node_list = [NodeState(f"n{i}", Resources(2.0, 2 * 1024**3), labels={"zone": "abcd"[i]}) for i in range(nodes)]
    replicas = []
    for k, (svc, node, index, outdated, running) in enumerate(existing):
        spec = _SPECS[svc]
        replicas.append(Replica(f"n{node % nodes}", f"{spec.name}-{index}-x{k}", spec.name, index, 1,
                                "old" if outdated else spec.spec_hash(), 20000 + k, running, spec.resources,
                                spec.image))
    first = plan(specs, node_list, replicas)
    if first.unplaced:
        return
    after = _apply(first, replicas)
    again = plan(specs, node_list, after)
    assert not again.changed, [(s.name, s.start, s.replace, s.stop, s.cleanup) for s in again.services]
    assert not again.unplaced
    for s in specs:
        running = [r for r in after if r.service == s.name and r.running]
        assert len(running) == s.replicas
        assert len({r.replica for r in running}) == s.replicas, "no second copy of a replica"
