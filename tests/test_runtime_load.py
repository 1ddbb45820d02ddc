"""CPU that cannot freeze a fleet: a node busy for a minute with something else (its 1-minute load far above its
CPUs, the 5- and 15-minute ones not) still takes replicas; one overloaded for a quarter of an hour is refused, and
the refusal names the load."""

from __future__ import annotations

from fleet.core.model import Resources
from fleet.node.facts import NodeFacts
from fleet.plan.scheduler import NodeState, ServiceDemand, place

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
