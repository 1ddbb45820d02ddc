"""The scheduler's per-node services and `max_per_node` limit: chosen cases, then invariants (hypothesis)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.config.spec import from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.core.errors import SpecError
from fleet.core.model import Resources
from fleet.plan.reconcile import demand_for, plan
from fleet.plan.scheduler import Existing, NodeState, Placement, ServiceDemand, place

MiB = 1 << 20
GiB = 1 << 30
SMALL = Resources(0.1, 64 * MiB)


def node(name: str, cpu: float = 4, memory: int = 8 * GiB, **kw: object) -> NodeState:
    return NodeState(name, Resources(cpu, memory), **kw)  # type: ignore[arg-type]


def where(result: Placement, service: str) -> dict[int, str]:
    return {a.replica: a.node for a in result.assignments if a.service == service}


def shipper(**kw: object) -> ServiceDemand:
    return ServiceDemand("shipper", 0, SMALL, per_node=True, **kw)  # type: ignore[arg-type]


# --- per-node ---------------------------------------------------------------------------------------------------


def test_per_node_puts_one_replica_on_every_node_meeting_placement_in_name_order() -> None:
    nodes = [node("n3", labels={"logs": "yes"}), node("n1", labels={"logs": "yes"}), node("n2"),
             node("n4", labels={"logs": "yes"}, healthy=False), node("n5", labels={"logs": "yes"}, draining=True)]
    result = place(nodes, [], [shipper(required_labels={"logs": "yes"})])
    assert where(result, "shipper") == {0: "n1", 1: "n3"}
    assert result.counts == {"shipper": 2}
    assert not result.unplaced


def test_per_node_follows_a_node_added_and_a_node_removed_without_touching_the_others() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    first = place(nodes, [], [shipper()])
    assert where(first, "shipper") == {0: "n1", 1: "n2", 2: "n3"}
    # n4 joins: it gets the lowest free number, the others keep theirs.
    grown = place([*nodes, node("n4")], first.as_existing(), [shipper()])
    assert where(grown, "shipper") == {0: "n1", 1: "n2", 2: "n3", 3: "n4"}
    assert [a.reason for a in grown.assignments] == ["keep", "keep", "keep", "new"]
    assert grown.counts == {"shipper": 4}
    # n2 leaves: nothing is stopped or renumbered elsewhere, replica 3 keeps its number although 3 are wanted.
    shrunk = place([node("n1"), node("n3"), node("n4")], grown.as_existing(), [shipper()])
    assert where(shrunk, "shipper") == {0: "n1", 2: "n3", 3: "n4"}
    assert {a.reason for a in shrunk.assignments} == {"keep"}
    assert shrunk.counts == {"shipper": 3}
    assert [(e.node, why) for e, why in shrunk.stop_reasons.items()] == [("n2", "node n2 is gone")]


def test_per_node_second_replica_on_one_node_is_surplus() -> None:
    existing = [Existing("shipper", 0, "n1", SMALL, 20000), Existing("shipper", 1, "n1", SMALL, 20001)]
    result = place([node("n1"), node("n2")], existing, [shipper()])
    assert where(result, "shipper") == {0: "n1", 1: "n2"}  # the number freed on n1 is taken again
    assert list(result.stop_reasons.values()) == ["surplus: max_per_node: n1 already runs 1"]


def test_per_node_replica_that_does_not_fit_its_node_is_unplaced_with_that_nodes_reason() -> None:
    nodes = [node("n1"), node("n2", cpu=0.05)]
    result = place(nodes, [], [shipper()])
    assert where(result, "shipper") == {0: "n1"}
    assert [str(u) for u in result.unplaced] == ["shipper[1]: n2: cpu: needs 100m, 50m free"]
    assert result.rejected["n2"] == "shipper: cpu: needs 100m, 50m free"
    assert result.counts == {"shipper": 2}


def test_per_node_cordoned_node_keeps_its_replica_and_gets_none_new() -> None:
    existing = [Existing("shipper", 0, "n2", SMALL, 20000)]
    result = place([node("n1", cordoned=True), node("n2", cordoned=True), node("n3")], existing, [shipper()])
    assert where(result, "shipper") == {0: "n2", 1: "n3"}


# --- max_per_node -------------------------------------------------------------------------------------------------


def test_max_per_node_caps_a_node_and_explains_the_replica_left_over() -> None:
    nodes = [node("n1"), node("n2")]
    result = place(nodes, [], [ServiceDemand("web", 5, SMALL, max_per_node=2)])
    assert sorted(Counter(where(result, "web").values()).values()) == [2, 2]
    assert len(result.unplaced) == 1
    assert "2 nodes already run max_per_node 2" in result.unplaced[0].reason
    assert result.rejected == {"n1": "web: max_per_node: n1 already runs 2",
                               "n2": "web: max_per_node: n2 already runs 2"}


def test_max_per_node_binds_pack_too() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    result = place(nodes, [], [ServiceDemand("batch", 3, SMALL, strategy="pack", max_per_node=1)])
    assert sorted(where(result, "batch").values()) == ["n1", "n2", "n3"]


def test_max_per_node_lowered_moves_the_replica_over_it() -> None:
    existing = [Existing("web", 0, "n1", SMALL, 20000), Existing("web", 1, "n1", SMALL, 20001)]
    result = place([node("n1"), node("n2")], existing, [ServiceDemand("web", 2, SMALL, max_per_node=1)])
    assert where(result, "web") == {0: "n1", 1: "n2"}
    assert [a.reason for a in result.assignments] == ["keep", "move"]
    assert list(result.stop_reasons.values()) == ["max_per_node: n1 already runs 1"]


# --- invariants -----------------------------------------------------------------------------------------------------


@st.composite
def limited(draw: st.DrawFn) -> tuple[list[NodeState], list[Existing], list[ServiceDemand]]:
    names = [f"n{i}" for i in range(draw(st.integers(1, 6)))]
    nodes = [node(n, cpu=draw(st.sampled_from([0.2, 1, 4])), healthy=draw(st.booleans()) or i == 0,
                  labels={"z": draw(st.sampled_from("ab"))}) for i, n in enumerate(names)]
    wanted = []
    for k in range(draw(st.integers(1, 3))):
        per_node = draw(st.booleans())
        wanted.append(ServiceDemand(
            f"s{k}", draw(st.integers(0, 8)), Resources(draw(st.sampled_from([0.1, 0.5])), 64 * MiB),
            max_per_node=None if per_node else draw(st.integers(1, 3)), per_node=per_node,
            strategy=draw(st.sampled_from(["spread", "pack"])),
            required_labels=draw(st.sampled_from([{}, {"z": "a"}])),
        ))
    existing = [Existing(d.service, draw(st.integers(0, 6)), draw(st.sampled_from(names)), d.resources, 20000 + j)
                for j, d in enumerate(draw(st.lists(st.sampled_from(wanted), max_size=6)))]
    return nodes, existing, wanted


@settings(max_examples=150, deadline=None)
@given(limited())
def test_no_node_runs_more_than_the_limit_and_per_node_covers_every_eligible_node(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]],
) -> None:
    nodes, existing, wanted = fleet
    result = place(nodes, existing, wanted)
    for d in wanted:
        on = Counter(a.node for a in result.assignments if a.service == d.service)
        assert all(n <= (d.limit or 10**6) for n in on.values()), (d, on)
        if d.per_node:
            short = {u.reason.split(":")[0] for u in result.unplaced if u.service == d.service}
            eligible = {n.name for n in nodes if n.healthy and all(n.labels.get(k) == v
                                                                  for k, v in d.required_labels.items())}
            assert eligible <= set(on) | short, (d, on, short)
            assert result.counts[d.service] == len(on) + len(short)
            # Settled again, nothing moves.
            again = place(nodes, result.as_existing(), wanted)
            assert {a.reason for a in again.assignments if a.service == d.service} <= {"keep"}


# --- the playbook ---------------------------------------------------------------------------------------------------


def test_playbook_per_node_and_max_per_node_parse_round_trip_and_reach_the_demand() -> None:
    pb = parse_playbook("services:\n  shipper:\n    image: busybox\n    replicas: per-node\n"
                        "  web:\n    image: busybox\n    replicas: 4\n    placement: {max_per_node: 2}\n", "t.yaml")
    shipper_spec, web = pb.services
    assert shipper_spec.per_node and not web.per_node and web.placement.max_per_node == 2
    for spec in pb.services:
        assert from_playbook_dict(spec.name, to_playbook_dict(spec)) == replace(spec, source_file="", source_line=None)
    assert to_playbook_dict(shipper_spec)["replicas"] == "per-node"
    assert demand_for(shipper_spec).limit == 1 and demand_for(web).limit == 2


def test_reconcile_plan_counts_a_per_node_service_by_the_nodes() -> None:
    spec = parse_playbook("services:\n  shipper: {image: busybox, replicas: per-node}\n", "t.yaml").services[0]
    p = plan([spec], [node("n1"), node("n2"), node("n3", healthy=False)], [])
    assert p.service("shipper").spec.replicas == 2
    assert sorted(a.node for a in p.service("shipper").start) == ["n1", "n2"]


@pytest.mark.parametrize(("snippet", "message"), [
    ("replicas: per-node\n    placement: {max_per_node: 2}", "t.yaml:2: services.web: replicas per-node runs one"),
    ("placement: {max_per_node: 0}", "services.web.placement.max_per_node: Input should be greater than or equal to 1"),
    ("replicas: every", "services.web.replicas: expected an integer, got 'every'"),
])
def test_bad_per_node_settings_are_named(snippet: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_playbook(f"services:\n  web:\n    image: busybox\n    {snippet}\n", "t.yaml")
    assert message in str(info.value), info.value
