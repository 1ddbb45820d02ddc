"""The planning shortcuts that keep a reconcile round cheap at 1,000 nodes (bench/sim_reconcile.py) decide exactly
what the plain code did: each service reads its own assignments, a spec's hash is taken once, nodes without busy
ports pass through unchanged, an existing replica without room gets the same reason."""

from __future__ import annotations

from fleet.config.spec import ServiceSpec
from fleet.core.model import Resources
from fleet.plan.reconcile import Replica, placement_inputs, plan
from fleet.plan.scheduler import Existing, NodeState, ServiceDemand, place
from fleet.plan.scheduler.feasibility import missing_labels

MiB = 1 << 20


def _spec(name: str, replicas: int, memory: int, **extra: object) -> ServiceSpec:
    return ServiceSpec(name=name, image="img:1", replicas=replicas, resources=Resources(0.1, memory), **extra)


def _nodes() -> list[NodeState]:
    return [NodeState(f"n{i}", Resources(2.0, 1024 * MiB), labels={"zone": "ab"[i % 2]}) for i in range(4)]


def test_each_service_plan_holds_only_its_own_starts_and_unplaced_in_replica_order():
    specs = [_spec("a", 3, 64 * MiB), _spec("b", 5, 300 * MiB), _spec("huge", 2, 4096 * MiB)]
    p = plan(specs, _nodes(), [])
    for sp in p.services:
        assert all(a.service == sp.name for a in sp.start)
        assert [a.replica for a in sp.start] == sorted(a.replica for a in sp.start)
        assert all(u.service == sp.name for u in sp.unplaced)
    assert [len(p.service(n).start) for n in ("a", "b", "huge")] == [3, 5, 0]
    assert [u.replica for u in p.service("huge").unplaced] == [0, 1]


def test_outdated_and_current_replicas_split_by_the_spec_hash():
    spec = _spec("a", 2, 64 * MiB)
    h = spec.spec_hash()
    reps = [Replica("n0", "a-0", "a", 0, 1, h, 20000, True, spec.resources, "img:1"),
            Replica("n1", "a-1", "a", 1, 1, "old", 20001, True, spec.resources, "img:0")]
    nodes = _nodes()
    shaped, existing, _, outdated = placement_inputs([spec], nodes, reps, hold_outdated=False)
    assert [e.replica for e in existing] == [0] and [r.id for r in outdated["a"]] == ["a-1"]
    # Only the node of the outdated replica is reshaped (its port stays taken); the others are the same values.
    assert shaped[1].ports_in_use == frozenset({20001}) and shaped[1] is not nodes[1]
    assert all(shaped[i] is nodes[i] for i in (0, 2, 3))


def test_existing_replica_without_room_is_stopped_with_the_shortfall():
    nodes = [NodeState("n1", Resources(1.0, 256 * MiB))]
    d = ServiceDemand("w", 2, Resources(0.1, 200 * MiB))
    here = [Existing("w", 0, "n1", d.resources, 20000), Existing("w", 1, "n1", d.resources, 20001)]
    placement = place(nodes, here, [d])
    (stopped,) = placement.stops
    assert stopped.replica == 1
    assert placement.stop_reasons[stopped] == "n1 has no room: memory: needs 200 MiB, 56 MiB free"


def test_missing_labels_with_nothing_required_and_with_requirements():
    assert missing_labels({"zone": "a"}, {}) == []
    assert missing_labels({"zone": "a"}, {"zone": "b", "disk": "ssd"}) == ["disk=ssd", "zone=b"]
