"""CPU that cannot freeze a fleet: a node busy for a minute with something else (its 1-minute load far above its
CPUs, the 5- and 15-minute ones not) still takes replicas; one overloaded for a quarter of an hour is refused, and
the refusal names the load."""

from __future__ import annotations

import dataclasses

import pytest
from harness import Harness, service, worker

from fleet.core.errors import SchedulingError
from fleet.core.model import Resources
from fleet.node.facts import NodeFacts, TaskFacts
from fleet.plan.scheduler import Existing, NodeState, ServiceDemand, place

GiB = 1 << 30


def facts(load: tuple[float, float, float]) -> NodeFacts:
    return NodeFacts("n1", 2, 4 * GiB, 3 * GiB, load, 100.0, 0, 0, "ctr", None, True, 1, (), mem_used=GiB,
                     scope="host")


def test_a_burst_of_load_does_not_refuse_the_node_a_sustained_one_does():
    want = [ServiceDemand("web", 2, Resources(0.5, 64 << 20))]
    burst = facts((8.0, 1.2, 0.4))  # a minute of a build on 2 CPUs
    assert burst.cpu_in_use == 0.4 and burst.others.cpu == 0.4
    placed = place([NodeState("n1", Resources(2, 4 * GiB), others=burst.others)], [], want)
    assert len(placed.assignments) == 2 and not placed.unplaced
    held = facts((8.0, 7.5, 6.0))  # fifteen minutes of it
    assert held.others.cpu == 2.0  # at most the node's CPUs
    refused = place([NodeState("n1", Resources(2, 4 * GiB), others=held.others)], [], want)
    assert not refused.assignments
    assert "cpu 2 in use beyond fleet's requests (load)" in refused.rejected["n1"]


def test_replicas_already_on_an_overloaded_node_are_kept_there_and_nothing_new_joins_them():
    """Fifteen minutes of load on the node's every CPU: its replicas of an older revision are not moved off it for
    the load (kept, same node and port, assigned the new revision), and a replica more is not placed beside them.
    The surge replicas that replace them: the next test."""
    want = [ServiceDemand("web", 2, Resources(0.5, 64 << 20), spec_hash="new")]
    held = facts((8.0, 7.5, 6.0))
    old = [Existing("web", i, "n1", Resources(0.5, 64 << 20), 20000 + i, "old") for i in range(2)]
    placed = place([NodeState("n1", Resources(2, 4 * GiB), others=held.others)], old, want)
    assert [(a.node, a.port, a.reason, a.spec_hash) for a in placed.assignments] == [
        ("n1", 20000, "keep", "new"), ("n1", 20001, "keep", "new")]
    assert not placed.unplaced
    more = place([NodeState("n1", Resources(2, 4 * GiB), others=held.others)], old,
                 [ServiceDemand("web", 3, Resources(0.5, 64 << 20), spec_hash="new")])
    assert len(more.assignments) == 2 and len(more.unplaced) == 1


async def test_a_busy_node_replaces_its_own_replicas_in_a_rolling_update_and_takes_no_new_service():
    """The engine's rolling update (tests/harness.py) on one 2-CPU node at sustained full load, its two replicas'
    1 CPU of requests included (so 1 CPU in use beyond them): each surge replica of the replacement fits beside the
    old ones (whose room comes back as they stop), while a new service's replica is refused for the load."""
    busy = worker("w1")
    assert busy.facts is not None
    tasks = tuple(TaskFacts(f"t{i}", 100 + i, True, 1 << 20, 64 << 20, 0, 0.5, 0) for i in range(2))
    loaded = dataclasses.replace(busy.facts, load=(2.4, 2.3, 2.2), tasks=tasks)
    assert loaded.others.cpu == 1.0
    h = Harness([dataclasses.replace(busy, facts=loaded)])
    v1 = service("web", 2, cpu=0.5)
    h.ops.run(*(h.ops.replica(v1, 1, "w1", i, 20000 + i) for i in range(2)))
    rolled = await h.apply(service("web", 2, cpu=0.5, image="fleet.local/demo:v2"))
    assert rolled.ok, rolled.outcomes
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"] * 2
    assert {r.image for r in h.ops.of("web")} == {"fleet.local/demo:v2"}
    assert len(h.ops.of("web")) == 2
    with pytest.raises(SchedulingError, match=r"w1: api: cpu: needs 500m, 0 free; cpu 1 in use beyond fleet's "
                                              r"requests \(load\)"):
        await h.apply(service("api", 1, cpu=0.5))
    assert not h.ops.of("api")
