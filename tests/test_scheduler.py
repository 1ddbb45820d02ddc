"""The scheduler: behaviour on chosen cases, then invariants over generated fleets (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core.errors import SchedulingError
from fleet.core.model import Resources
from fleet.plan.scheduler import Existing, NodeState, Placement, ServiceDemand, place
from fleet.plan.scheduler.feasibility import cpu_ceil, cpu_floor

MiB = 1 << 20
GiB = 1 << 30


def node(name: str, cpu: float = 4, memory: int = 8 * GiB, **kw: object) -> NodeState:
    return NodeState(name, Resources(cpu, memory), **kw)  # type: ignore[arg-type]


def where(result: Placement, service: str) -> list[str]:
    return [a.node for a in result.assignments if a.service == service]


# --- ranking -------------------------------------------------------------------------------------------------


def test_spread_puts_replicas_on_distinct_nodes_then_distinct_zones_before_doubling_up() -> None:
    nodes = [node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}), node("b1", labels={"zone": "b"})]
    result = place(nodes, [], [ServiceDemand("web", 4, Resources(0.5, 256 * MiB), spread_by="zone")])
    # a1 first (name breaks the tie), then the empty zone b, then the last empty node, then zone b again.
    assert where(result, "web") == ["a1", "b1", "a2", "b1"]
    assert {a.reason for a in result.assignments} == {"new"}


def test_spread_chooses_the_most_allocated_node_among_equally_spread_ones() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    db = Existing("db", 0, "n2", Resources(2, 2 * GiB), 20000)
    result = place(nodes, [db], [
        ServiceDemand("db", 1, Resources(2, 2 * GiB)),
        ServiceDemand("web", 1, Resources(1, 1 * GiB)),
    ])
    assert where(result, "web") == ["n2"]


def test_pack_fills_the_most_allocated_node_that_fits_first_so_whole_nodes_stay_free() -> None:
    nodes = [node("n1"), node("n2"), node("n3", cpu=2)]
    result = place(nodes, [], [ServiceDemand("batch", 5, Resources(1, 1 * GiB), strategy="pack")])
    # n3 is smallest so fullest relative to the fleet; then n1 fills up before n2 is touched.
    assert where(result, "batch") == ["n3", "n3", "n1", "n1", "n1"]


def test_capacity_counts_placements_already_made_in_the_same_pass() -> None:
    nodes = [node("n1"), node("n2")]
    result = place(nodes, [], [
        ServiceDemand("a", 1, Resources(3, 1 * GiB)),
        ServiceDemand("b", 1, Resources(3, 1 * GiB)),
    ])
    assert sorted(a.node for a in result.assignments) == ["n1", "n2"]


def test_best_fit_ranks_by_capacity_left_after_earlier_services_in_the_same_pass() -> None:
    nodes = [node("n1", cpu=4, memory=8 * GiB), node("n2", cpu=8, memory=16 * GiB, labels={"big": "yes"})]
    result = place(nodes, [], [
        ServiceDemand("large", 1, Resources(6, 12 * GiB), required_labels={"big": "yes"}),
        ServiceDemand("small", 1, Resources(1, 1 * GiB)),
    ])
    # n2 started emptier but "large" left it fuller than n1, so best fit puts "small" there.
    assert where(result, "small") == ["n2"]


def test_cpu_sums_are_exact_so_three_tenths_fill_a_node_of_point_three() -> None:
    result = place([node("n1", cpu=0.3)], [], [ServiceDemand("w", 4, Resources(0.1, 1 * MiB))])
    assert where(result, "w") == ["n1"] * 3
    assert [u.replica for u in result.unplaced] == [3]


def test_required_labels_restrict_nodes() -> None:
    nodes = [node("n1", labels={"disk": "hdd"}), node("n2", labels={"disk": "ssd"})]
    result = place(nodes, [], [ServiceDemand("db", 2, Resources(1, GiB), required_labels={"disk": "ssd"})])
    assert where(result, "db") == ["n2", "n2"]


# --- existing replicas -----------------------------------------------------------------------------------------


def test_rerun_with_the_result_as_existing_keeps_everything() -> None:
    nodes = [node("n1"), node("n2", labels={"zone": "b"})]
    wanted = [ServiceDemand("web", 3, Resources(1, GiB), spec_hash="h1", spread_by="zone")]
    first = place(nodes, [], wanted)
    again = place(nodes, first.as_existing(), wanted)
    assert [a.reason for a in again.assignments] == ["keep"] * 3
    assert [(a.node, a.port) for a in again.assignments] == [(a.node, a.port) for a in first.assignments]
    assert again.stops == ()


def test_changed_spec_hash_keeps_the_replica_where_it_is() -> None:
    running = Existing("web", 0, "n2", Resources(1, GiB), 20007, spec_hash="old")
    result = place([node("n1"), node("n2")], [running], [ServiceDemand("web", 1, Resources(1, GiB), spec_hash="new")])
    assert [(a.node, a.port, a.reason, a.spec_hash) for a in result.assignments] == [("n2", 20007, "keep", "new")]


def test_scaling_down_stops_the_highest_numbered_replicas() -> None:
    running = [Existing("web", r, f"n{r % 2}", Resources(1, GiB), 20000 + r) for r in range(4)]
    result = place([node("n0"), node("n1")], running, [ServiceDemand("web", 2, Resources(1, GiB))])
    assert [a.replica for a in result.assignments] == [0, 1]
    assert [e.replica for e in result.stops] == [2, 3]
    assert result.stop_reasons[running[3]] == "surplus: web wants 2 replicas"


def test_service_no_longer_wanted_is_stopped() -> None:
    gone = Existing("old", 0, "n1", Resources(1, GiB), 20000)
    result = place([node("n1")], [gone], [])
    assert result.stops == (gone,)
    assert result.stop_reasons[gone] == "service old is no longer wanted"


def test_unhealthy_node_gets_nothing_and_its_replicas_move_elsewhere() -> None:
    running = Existing("web", 0, "n1", Resources(1, GiB), 20000)
    nodes = [node("n1", healthy=False), node("n2")]
    result = place(nodes, [running], [ServiceDemand("web", 2, Resources(1, GiB))])
    assert [(a.replica, a.node, a.reason) for a in result.assignments] == [(0, "n2", "move"), (1, "n2", "new")]
    assert result.stops == (running,)
    assert result.stop_reasons[running] == "node n1 is unhealthy"
    assert result.rejected == {"n1": "unhealthy"}


def test_replica_on_a_node_that_is_gone_moves() -> None:
    running = Existing("web", 0, "n9", Resources(1, GiB), 20000)
    result = place([node("n1")], [running], [ServiceDemand("web", 1, Resources(1, GiB))])
    assert [(a.node, a.reason) for a in result.assignments] == [("n1", "move")]
    assert result.stop_reasons[running] == "node n9 is gone"
    assert result.rejected == {"n9": "not in the node list"}


def test_replica_on_a_node_that_lost_a_required_label_moves() -> None:
    running = Existing("db", 0, "n1", Resources(1, GiB), 20000)
    nodes = [node("n1", labels={"disk": "hdd"}), node("n2", labels={"disk": "ssd"})]
    result = place(nodes, [running], [ServiceDemand("db", 1, Resources(1, GiB), required_labels={"disk": "ssd"})])
    assert [(a.node, a.reason) for a in result.assignments] == [("n2", "move")]
    assert result.stop_reasons[running] == "node n1 lacks label disk=ssd"


def test_grown_replicas_that_overfill_a_node_shed_the_highest_numbers() -> None:
    running = [Existing("web", r, "n1", Resources(1, GiB), 20000 + r) for r in range(3)]
    result = place([node("n1", cpu=4), node("n2", cpu=2)], running, [ServiceDemand("web", 3, Resources(2, GiB))])
    assert [(a.replica, a.node, a.reason) for a in result.assignments] == [
        (0, "n1", "keep"), (1, "n1", "keep"), (2, "n2", "move"),
    ]
    assert result.stop_reasons[running[2]] == "n1 has no room: cpu: needs 2, 0 free"


def test_duplicate_replica_keeps_one_and_stops_the_other() -> None:
    first = Existing("web", 0, "n1", Resources(1, GiB), 20000)
    second = Existing("web", 0, "n2", Resources(1, GiB), 20000)
    result = place([node("n1"), node("n2")], [second, first], [ServiceDemand("web", 1, Resources(1, GiB))])
    assert [(a.node, a.reason) for a in result.assignments] == [("n1", "keep")]
    assert result.stop_reasons[second] == "duplicate of web[0] on n1"


def test_two_replicas_sharing_a_port_on_one_node_the_later_one_moves_to_a_new_port() -> None:
    a = Existing("api", 0, "n1", Resources(1, GiB), 20000)
    b = Existing("web", 0, "n1", Resources(1, GiB), 20000)
    result = place([node("n1")], [a, b], [
        ServiceDemand("api", 1, Resources(1, GiB)),
        ServiceDemand("web", 1, Resources(1, GiB)),
    ])
    assert [(x.service, x.port, x.reason) for x in result.assignments] == [
        ("api", 20000, "keep"), ("web", 20001, "move"),
    ]


# --- ports -----------------------------------------------------------------------------------------------------


def test_kept_replicas_keep_their_port_and_new_ones_skip_ports_in_use() -> None:
    running = Existing("web", 0, "n1", Resources(1, GiB), 20001)
    n1 = node("n1", ports_in_use=frozenset({20000, 20002}))
    result = place([n1], [running], [ServiceDemand("web", 3, Resources(0.5, GiB))])
    assert [(a.replica, a.port) for a in result.assignments] == [(0, 20001), (1, 20003), (2, 20004)]


def test_node_without_a_free_port_is_skipped_and_named_in_the_reason() -> None:
    n1 = node("n1", ports_in_use=frozenset({30000, 30001}))
    n2 = node("n2", ports_in_use=frozenset({30000}))
    result = place([n1, n2], [], [ServiceDemand("web", 2, Resources(1, GiB), port_range=(30000, 30001))])
    assert [(a.node, a.port) for a in result.assignments] == [("n2", 30001)]
    assert str(result.unplaced[0]) == (
        "web[1]: needs cpu 1, memory 1 GiB; most free on an eligible node: cpu 4 (n1), memory 8 GiB (n1); "
        "2 nodes have no free host port in 30000-30001"
    )
    assert result.rejected == {n: "web: no free host port in 30000-30001" for n in ("n1", "n2")}


# --- explanations ----------------------------------------------------------------------------------------------


def test_unplaced_replica_names_its_need_the_most_free_and_what_ruled_nodes_out() -> None:
    nodes = [
        NodeState("n1", Resources(1, 2 * GiB), Resources(0.75, 1280 * MiB), labels={"zone": "eu"}),
        NodeState("n2", Resources(1, 1 * GiB), Resources(0.5, 512 * MiB), labels={"zone": "eu"}),
        node("n3", labels={"zone": "us"}),
        node("n4"),
        node("n5", labels={"zone": "eu"}, healthy=False),
    ]
    result = place(nodes, [], [ServiceDemand("web", 1, Resources(2, 1 * GiB), required_labels={"zone": "eu"})])
    assert result.assignments == ()
    assert [str(u) for u in result.unplaced] == [
        "web[0]: needs cpu 2, memory 1 GiB; most free on an eligible node: cpu 500m (n2), memory 768 MiB (n1); "
        "2 nodes lack label zone=eu; 1 node is unhealthy"
    ]
    assert result.rejected == {
        "n1": "web: cpu: needs 2, 250m free; memory: needs 1 GiB, 768 MiB free",
        "n2": "web: cpu: needs 2, 500m free; memory: needs 1 GiB, 512 MiB free",
        "n3": "web: lacks label zone=eu",
        "n4": "web: lacks label zone=eu",
        "n5": "unhealthy",
    }


def test_no_eligible_node_is_said_plainly() -> None:
    result = place([node("n1")], [], [ServiceDemand("gpu", 1, Resources(1, GiB), required_labels={"gpu": "yes"})])
    assert result.unplaced[0].reason == "needs cpu 1, memory 1 GiB; no eligible node; 1 node lacks label gpu=yes"
    assert place([], [], [ServiceDemand("w", 1, Resources(1, GiB))]).unplaced[0].reason == (
        "needs cpu 1, memory 1 GiB; no nodes"
    )


# --- input checks ----------------------------------------------------------------------------------------------


def test_a_node_listed_twice_is_an_error() -> None:
    with pytest.raises(SchedulingError, match="node listed more than once: n1"):
        place([node("n1"), node("n1")], [], [])


def test_a_service_listed_twice_is_an_error() -> None:
    with pytest.raises(SchedulingError, match="service listed more than once: web"):
        place([node("n1")], [], [ServiceDemand("web", 1, Resources()), ServiceDemand("web", 2, Resources())])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": -1}, "replicas cannot be negative"),
        ({"resources": Resources(-1, 0)}, "resources cannot be negative"),
        ({"strategy": "random"}, "strategy must be spread or pack"),
        ({"port_range": (30000, 20000)}, "port range 30000-20000 is not within 1-65535"),
    ],
)
def test_a_malformed_demand_is_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"service": "web", "replicas": 1, "resources": Resources(1, GiB)} | kwargs
    with pytest.raises(SchedulingError, match=message):
        ServiceDemand(**fields)  # type: ignore[arg-type]


# --- invariants over generated fleets --------------------------------------------------------------------------

NODE_NAMES = [f"n{i}" for i in range(6)]
SERVICES = [f"s{i}" for i in range(4)]
SMALL_PORTS = (20000, 20002)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[NodeState], list[Existing], list[ServiceDemand]]:
    names = draw(st.lists(st.sampled_from(NODE_NAMES), min_size=1, max_size=5, unique=True))
    nodes = [
        NodeState(
            name,
            Resources(draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])), draw(st.sampled_from([512, 1024, 4096])) * MiB),
            draw(st.sampled_from([Resources(), Resources(0.25, 128 * MiB)])),
            labels=draw(st.fixed_dictionaries({}, optional={"zone": st.sampled_from("ab"), "disk": st.just("ssd")})),
            healthy=draw(st.sampled_from([True, True, True, False])),
            ports_in_use=frozenset(draw(st.sets(st.integers(20000, 20003), max_size=2))),
        )
        for name in names
    ]
    wanted = [
        ServiceDemand(
            service,
            draw(st.integers(0, 6)),
            Resources(draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])), draw(st.sampled_from([0, 128, 512])) * MiB),
            spec_hash=draw(st.sampled_from(["h1", "h2"])),
            required_labels=draw(st.sampled_from([{}, {}, {"zone": "a"}, {"disk": "ssd"}])),
            spread_by=draw(st.sampled_from([None, "zone"])),
            strategy=draw(st.sampled_from(["spread", "spread", "pack"])),
            port_range=draw(st.sampled_from([(20000, 29999), SMALL_PORTS])),
        )
        for service in draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True))
    ]
    # Mostly replicas of wanted services on known nodes, sometimes of a dropped service or on a vanished node.
    existing = draw(st.lists(st.builds(
        Existing,
        service=st.sampled_from([d.service for d in wanted] * 3 + ["gone"]),
        replica=st.integers(0, 6),
        node=st.sampled_from(names * 3 + ["n9"]),
        resources=st.just(Resources(0.25, 128 * MiB)),
        port=st.integers(20000, 20004),
        spec_hash=st.just("h1"),
    ), max_size=8))
    return nodes, existing, wanted


def free_after(nodes: list[NodeState], result: Placement) -> dict[str, Resources]:
    free = {n.name: n.capacity - n.reserved for n in nodes}
    for a in result.assignments:
        free[a.node] = free[a.node] - a.resources
    return free


def has_room(n: NodeState, free: Resources, d: ServiceDemand, result: Placement) -> bool:
    taken = n.ports_in_use | {a.port for a in result.on_node(n.name)}
    lo, hi = d.port_range
    return d.resources.fits_in(free) and any(p not in taken for p in range(lo, hi + 1))


def eligible(n: NodeState, d: ServiceDemand) -> bool:
    return n.healthy and all(n.labels.get(k) == v for k, v in d.required_labels.items())


PROPERTY = settings(max_examples=250, deadline=None)


@PROPERTY
@given(fleets())
def test_no_node_is_ever_over_capacity(fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]]) -> None:
    nodes, existing, wanted = fleet
    result = place(nodes, existing, wanted)
    for name, free in free_after(nodes, result).items():
        assert Resources().fits_in(free), (name, free)


@PROPERTY
@given(fleets())
def test_every_replica_is_placed_once_or_given_a_reason(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]],
) -> None:
    nodes, existing, wanted = fleet
    result = place(nodes, existing, wanted)
    placed = [(a.service, a.replica) for a in result.assignments]
    unplaced = [(u.service, u.replica) for u in result.unplaced]
    assert sorted(placed + unplaced) == sorted((d.service, r) for d in wanted for r in range(d.replicas))
    assert all(u.reason.startswith("needs cpu ") for u in result.unplaced)
    assert set(result.stops) == set(result.stop_reasons)
    assert not set(result.stops) & set(result.as_existing())


@PROPERTY
@given(fleets())
def test_assignments_go_only_to_healthy_nodes_with_the_required_labels(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]],
) -> None:
    nodes, existing, wanted = fleet
    result = place(nodes, existing, wanted)
    by_name = {n.name: n for n in nodes}
    demands = {d.service: d for d in wanted}
    for a in result.assignments:
        assert eligible(by_name[a.node], demands[a.service]), a
        assert a.resources == demands[a.service].resources


@PROPERTY
@given(fleets())
def test_host_ports_are_unique_per_node_and_new_ones_avoid_ports_in_use(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]],
) -> None:
    nodes, existing, wanted = fleet
    result = place(nodes, existing, wanted)
    by_name = {n.name: n for n in nodes}
    demands = {d.service: d for d in wanted}
    assert not [k for k, n in Counter((a.node, a.port) for a in result.assignments).items() if n > 1]
    for a in result.assignments:
        if a.reason != "keep":
            lo, hi = demands[a.service].port_range
            assert lo <= a.port <= hi and a.port not in by_name[a.node].ports_in_use, a


@PROPERTY
@given(fleets())
def test_spread_never_doubles_up_while_an_eligible_node_with_room_has_none(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]],
) -> None:
    nodes, existing, wanted = fleet
    result = place(nodes, existing, wanted)
    free = free_after(nodes, result)
    for d in wanted:
        if d.strategy != "spread":
            continue
        mine = [a for a in result.assignments if a.service == d.service]
        count = Counter(a.node for a in mine)
        doubled = {a.node for a in mine if a.reason != "keep" and count[a.node] >= 2}
        empty_with_room = [
            n.name for n in nodes if eligible(n, d) and count[n.name] == 0 and has_room(n, free[n.name], d, result)
        ]
        assert not (doubled and empty_with_room), (d.service, doubled, empty_with_room)


@PROPERTY
@given(fleets(), st.randoms(use_true_random=False))
def test_same_input_in_any_order_gives_the_same_placement(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]], rng: object,
) -> None:
    nodes, existing, wanted = fleet
    shuffle = rng.shuffle  # type: ignore[attr-defined]
    first = place(nodes, existing, wanted)
    nodes2, existing2, wanted2 = list(nodes), list(existing), list(wanted)
    shuffle(nodes2)
    shuffle(existing2)
    shuffle(wanted2)
    assert place(nodes2, existing2, wanted2) == first


@PROPERTY
@given(fleets())
def test_placing_again_on_the_result_keeps_everything_and_stops_nothing(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]],
) -> None:
    nodes, existing, wanted = fleet
    first = place(nodes, existing, wanted)
    again = place(nodes, first.as_existing(), wanted)
    assert again.stops == ()
    assert all(a.reason == "keep" for a in again.assignments)
    assert again.as_existing() == first.as_existing()
    assert [(u.service, u.replica) for u in again.unplaced] == [(u.service, u.replica) for u in first.unplaced]


def reference_choice(
    nodes: list[NodeState], d: ServiceDemand, kept: tuple[Existing, ...] = ()
) -> list[tuple[int, str, int]]:
    """The ranking spelled out plainly, O(replicas × nodes): every replica scans every node."""
    healthy = [n for n in nodes if n.healthy]
    free = {n.name: [cpu_floor(n.capacity.cpu) - cpu_ceil(n.reserved.cpu), n.capacity.memory - n.reserved.memory]
            for n in nodes}
    wc = 1.0 / max([free[n.name][0] for n in healthy] + [1])
    wm = 1.0 / max([free[n.name][1] for n in healthy] + [1])
    ports = {n.name: set(n.ports_in_use) for n in nodes}
    on_node: Counter[str] = Counter()
    in_group: Counter[str] = Counter()
    spread = d.strategy == "spread"

    def group(n: NodeState) -> str:
        return n.labels.get(d.spread_by, "") if spread and d.spread_by else ""

    need_cpu, need_mem = cpu_ceil(d.resources.cpu), d.resources.memory
    by_name = {n.name: n for n in nodes}
    for e in kept:
        free[e.node][0] -= need_cpu
        free[e.node][1] -= need_mem
        ports[e.node].add(e.port)
        on_node[e.node] += 1
        in_group[group(by_name[e.node])] += 1
    out = []
    lo, hi = d.port_range
    for r in sorted(set(range(d.replicas)) - {e.replica for e in kept}):
        fits = [
            n for n in healthy
            if eligible(n, d) and free[n.name][0] >= need_cpu and free[n.name][1] >= need_mem
            and any(p not in ports[n.name] for p in range(lo, hi + 1))
        ]
        if not fits:
            break
        best = min(fits, key=lambda n: (
            on_node[n.name] if spread else 0, in_group[group(n)] if spread else 0,
            free[n.name][0] * wc + free[n.name][1] * wm, n.name,
        ))
        port = min(p for p in range(lo, hi + 1) if p not in ports[best.name])
        ports[best.name].add(port)
        free[best.name][0] -= need_cpu
        free[best.name][1] -= need_mem
        on_node[best.name] += 1
        in_group[group(best)] += 1
        out.append((r, best.name, port))
    return out


@st.composite
def zoned_fleets(draw: st.DrawFn) -> tuple[list[NodeState], ServiceDemand]:
    """Nodes mostly spread over zones, one service: where ranking by node and zone counts matters most."""
    nodes = [
        NodeState(
            f"n{i}",
            Resources(draw(st.sampled_from([1.0, 2.0, 4.0])), draw(st.sampled_from([1024, 2048, 4096])) * MiB),
            labels={"zone": zone} if (zone := draw(st.sampled_from(["a", "b", "c", None]))) else {},
            healthy=draw(st.sampled_from([True, True, True, False])),
            ports_in_use=frozenset(draw(st.sets(st.integers(20000, 20003), max_size=2))),
        )
        for i in range(draw(st.integers(1, 7)))
    ]
    demand = ServiceDemand(
        "web",
        draw(st.integers(1, 20)),
        Resources(draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])), draw(st.sampled_from([0, 256, 1024])) * MiB),
        spread_by=draw(st.sampled_from(["zone", "zone", None])),
        strategy=draw(st.sampled_from(["spread", "spread", "pack"])),
        port_range=draw(st.sampled_from([(20000, 29999), SMALL_PORTS])),
    )
    return nodes, demand


@PROPERTY
@given(zoned_fleets())
def test_heap_selection_matches_the_plain_scan_of_every_node(fleet: tuple[list[NodeState], ServiceDemand]) -> None:
    nodes, demand = fleet
    result = place(nodes, [], [demand])
    assert [(a.replica, a.node, a.port) for a in result.assignments] == reference_choice(nodes, demand)


@PROPERTY
@given(zoned_fleets(), st.integers(1, 20))
def test_scaling_up_places_like_the_plain_scan_around_kept_replicas(
    fleet: tuple[list[NodeState], ServiceDemand], more: int,
) -> None:
    nodes, demand = fleet
    kept = place(nodes, [], [demand]).as_existing()
    bigger = ServiceDemand(demand.service, demand.replicas + more, demand.resources, spread_by=demand.spread_by,
                           strategy=demand.strategy, port_range=demand.port_range)
    result = place(nodes, kept, [bigger])
    new = [(a.replica, a.node, a.port) for a in result.assignments if a.reason != "keep"]
    assert new == reference_choice(nodes, bigger, kept)
