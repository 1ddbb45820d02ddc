"""Disk-aware placement: a node whose disk (where containers live, from its facts) is nearly full takes no new
replica, and a service's `disk:` request is a feasibility check; each refusal says why, naming the node."""

from __future__ import annotations

import pytest

from fleet.config.spec import ServiceSpec, from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.core.errors import SpecError
from fleet.core.model import Resources
from fleet.plan.reconcile import demand_for
from fleet.plan.scheduler import Existing, NodeState, place

GiB = 1 << 30


def node(name: str, free: int | None, total: int | None = 100 * GiB) -> NodeState:
    return NodeState(name, Resources(4, 8 * GiB), disk_free=free, disk_total=total)


def spec(extra: str = "") -> ServiceSpec:
    text = "services:\n  web:\n    image: r.io/web:v1\n    replicas: 2\n    resources: {cpu: 0.1, memory: 16MiB}\n"
    return parse_playbook(text + extra, "pb.yaml").services[0]


def test_a_nearly_full_node_is_refused_naming_it_and_its_replicas_stay():
    nodes = [node("n1", 2 * GiB), node("n2", 50 * GiB), node("n3", None, None)]  # n3: not measured
    placed = place(nodes, [], [demand_for(spec())])
    assert {a.node for a in placed.assignments} == {"n2", "n3"}
    alone = place(nodes[:1], [], [demand_for(spec())])
    assert alone.rejected["n1"] == "web: disk nearly full: 2 GiB free of 100 GiB (under 5%)"
    assert "not enough free disk on n1" in alone.unplaced[0].reason
    # A replica already there is not moved for it.
    there = Existing("web", 0, "n1", Resources(0.1, 16 << 20), 20000, demand_for(spec()).spec_hash)
    kept = place(nodes[:1], [there], [demand_for(spec(), replicas=1)])
    assert [(a.node, a.reason) for a in kept.assignments] == [("n1", "keep")]


def test_a_disk_request_is_a_feasibility_check_with_its_reason():
    s = spec("    disk: 20GiB\n")
    assert s.disk == 20 * GiB and "disk" not in s.hash_input()
    assert from_playbook_dict("web", to_playbook_dict(s)).disk == s.disk
    placed = place([node("n1", 10 * GiB, 11 * GiB), node("n2", 30 * GiB)], [], [demand_for(s)])
    assert {a.node for a in placed.assignments} == {"n2"}
    refused = place([node("n1", 10 * GiB, 11 * GiB)], [], [demand_for(s)])
    assert refused.rejected["n1"] == "web: disk: needs 20 GiB, 10 GiB free"
    with pytest.raises(SpecError, match=r"pb\.yaml:6: services\.web\.disk: expected a memory size"):
        spec("    disk: lots\n")
