"""A per-node service through tests/harness.py (the real engine over fake replica operations): one replica per
worker, one added for a node that joins, none touched when one leaves, an update rolled one node at a time."""

from __future__ import annotations

from harness import Harness, worker

from fleet.config.spec import ServiceSpec, parse_playbook

V1, V2 = "fleet.local/demo:v1", "fleet.local/demo:v2"


def shipper(image: str = V1, surge: int = 1) -> ServiceSpec:
    return parse_playbook(f"services:\n  shipper:\n    image: {image}\n    replicas: per-node\n"
                          f"    resources: {{cpu: 0.25, memory: 64MiB}}\n"
                          f"    update: {{max_surge: {surge}, max_unavailable: {1 - surge}}}\n",
                          "pb.yaml").services[0]


def nodes_of(h: Harness) -> dict[str, str]:
    return {r.node: r.image for r in h.ops.of("shipper")}


async def test_per_node_follows_the_nodes_and_leaves_the_others_alone():
    h = Harness([worker("w1"), worker("w2")])
    assert (await h.apply(shipper())).ok
    assert sorted(nodes_of(h)) == ["w1", "w2"]
    before = {r.id for r in h.ops.of("shipper")}
    h.ops.steps.clear()
    h.engine.view.reports.append(worker("w3"))
    assert (await h.apply(shipper(), command="reconcile")).ok
    assert sorted(nodes_of(h)) == ["w1", "w2", "w3"]
    assert [kind for kind, _ in h.steps("shipper")] == ["start", "ready"]  # the new node's only
    assert before <= {r.id for r in h.ops.of("shipper")}
    # w1 leaves the inventory (its replica is no longer seen): the others are not touched.
    h.engine.view.reports[:] = [r for r in h.engine.view.reports if r.node.name != "w1"]
    for r in [r for r in h.ops.of("shipper") if r.node == "w1"]:
        del h.ops.running[r.id]
    h.ops.steps.clear()
    assert (await h.apply(shipper(), command="reconcile")).ok
    assert h.steps("shipper") == [] and sorted(nodes_of(h)) == ["w2", "w3"]


async def test_per_node_update_replaces_one_node_at_a_time_in_node_order():
    for surge in (1, 0):
        h = Harness([worker("w2"), worker("w1"), worker("w3")])
        assert (await h.apply(shipper(surge=surge))).ok
        node_of = {r.id: r.node for r in h.ops.of("shipper")}
        h.ops.steps.clear()
        h.ops.peak.clear()
        h.ops.low.clear()
        assert (await h.apply(shipper(V2, surge=surge))).ok
        started: list[str] = []
        for kind, rid in h.steps("shipper", ("start", "stop")):
            node = node_of.get(rid) or next(r.node for r in h.ops.of("shipper") if r.id == rid)
            started.append(f"{kind} {node}")
        first = ["start", "stop"] if surge else ["stop", "start"]
        assert started == [f"{k} {n}" for n in ("w1", "w2", "w3") for k in first], (surge, started)
        assert nodes_of(h) == {"w1": V2, "w2": V2, "w3": V2}
        # One node at a time: one replica more (surge) or one fewer, never more.
        assert h.ops.peak["shipper"] == 3 + surge and h.ops.low["shipper"] == 2 + surge
