"""Storage that follows its service, pure: a replica with a node-local volume goes back to the node holding its
data, waits for a lost node instead of starting empty (unless its playbook allows it), and sshfs volumes name a
storage node of the inventory (file:line errors otherwise)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.config.spec import from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.config.volumes import check_volumes, storage_of, volume_problems
from fleet.core.errors import SpecError
from fleet.core.model import Inventory, Node, Resources
from fleet.plan.reconcile import Replica, plan
from fleet.plan.scheduler import Existing, NodeState, ServiceDemand, place
from fleet.plan.volumes import VolumeView, data_nodes

GiB = 1 << 30


def spec_of(volumes: str, replicas: int = 1, image: str = "fleet.local/demo:v1") -> object:
    return parse_playbook(f"services:\n  db:\n    image: {image}\n    replicas: {replicas}\n"
                          f"    volumes:\n{volumes}", "pb.yaml").services[0]


LOCAL = "      - {type: volume, source: data, target: /data}\n"
EMPTY_OK = "      - {type: volume, source: data, target: /data, on_node_loss: start-empty}\n"
NODES = [NodeState(n, Resources(4, 8 * GiB)) for n in ("n1", "n2", "n3")]


def down(name: str) -> list[NodeState]:
    return [replace(n, healthy=n.name != name) for n in NODES]


def rep(spec: object, node: str, replica: int = 0, spec_hash: str | None = None) -> Replica:
    return Replica(node, f"db-{replica}-{node}", "db", replica, 1, spec_hash or spec.spec_hash(),  # type: ignore
                   20000, True, Resources(0.1, 64 << 20), "fleet.local/demo:v0")


def view(*nodes: str, read: tuple[str, ...] = ("n1", "n2", "n3")) -> VolumeView:
    return VolumeView.of([(n, "db", "data") for n in nodes], read)


def test_an_updated_replica_goes_back_to_the_node_holding_its_data() -> None:
    spec = spec_of(LOCAL)
    # n3 would win on name order and spread alike without the data (n1 runs the outdated copy).
    for holder in ("n1", "n2", "n3"):
        p = plan([spec], NODES, [rep(spec, holder, spec_hash="old")], view(holder))  # type: ignore[arg-type]
        assert [a.node for a in p.service("db").start] == [holder]


def test_without_the_view_placement_is_as_before() -> None:
    spec = spec_of(LOCAL)
    p = plan([spec], NODES, [rep(spec, "n3", spec_hash="old")])  # type: ignore[arg-type]
    assert [a.node for a in p.service("db").start] == ["n1"]


def test_a_replica_whose_data_node_is_down_is_reported_not_started_empty_elsewhere() -> None:
    spec = spec_of(LOCAL)
    p = plan([spec], down("n2"), [], view("n2", read=("n1", "n3")))  # type: ignore[arg-type]
    sp = p.service("db")
    assert sp.start == ()
    [u] = sp.unplaced
    assert "n2 (unreachable)" in u.reason and "not starting empty" in u.reason and "start-empty" in u.reason


def test_a_node_that_could_not_be_listed_may_hold_the_data_so_the_replica_waits() -> None:
    spec = spec_of(LOCAL)
    p = plan([spec], down("n2"), [], view(read=("n1", "n3")))  # type: ignore[arg-type]
    assert p.service("db").start == () and "n2" in p.service("db").unplaced[0].reason


def test_start_empty_lets_the_replica_start_elsewhere_when_its_node_is_down() -> None:
    spec = spec_of(EMPTY_OK)
    p = plan([spec], down("n2"), [], view("n2", read=("n1", "n3")))  # type: ignore[arg-type]
    assert [a.node for a in p.service("db").start] == ["n1"] and not p.unplaced


def test_start_empty_still_goes_back_to_its_data_while_the_node_is_up() -> None:
    spec = spec_of(EMPTY_OK)
    p = plan([spec], NODES, [rep(spec, "n3", spec_hash="old")], view("n3"))  # type: ignore[arg-type]
    assert [a.node for a in p.service("db").start] == ["n3"]


def test_first_deploy_with_every_node_listed_places_freely_and_spreads() -> None:
    spec = spec_of(LOCAL, replicas=3)
    p = plan([spec], NODES, [], view())  # type: ignore[arg-type]
    assert sorted(a.node for a in p.service("db").start) == ["n1", "n2", "n3"]


def test_a_scale_up_keeps_the_holders_and_spreads_the_new_replicas() -> None:
    spec = spec_of(LOCAL, replicas=3)
    p = plan([spec], NODES, [rep(spec, "n2")], view("n2"))  # type: ignore[arg-type]
    assert sorted(a.node for a in p.service("db").start) == ["n1", "n3"]


def test_of_three_replicas_only_the_one_on_the_lost_node_waits() -> None:
    spec = spec_of(LOCAL, replicas=3)
    rs = [rep(spec, "n1", 0), rep(spec, "n3", 2)]
    p = plan([spec], down("n2"), rs, view("n1", "n2", "n3", read=("n1", "n3")))  # type: ignore[arg-type]
    sp = p.service("db")
    assert sp.start == () and [u.replica for u in sp.unplaced] == [1]


def test_a_full_data_node_is_named_rather_than_the_replica_moved() -> None:
    demand = ServiceDemand("db", 1, Resources(2, GiB), data_nodes=frozenset({"n2"}), data_what="the data of db")
    nodes = [NodeState("n1", Resources(4, 8 * GiB)), NodeState("n2", Resources(1, 8 * GiB))]
    result = place(nodes, [], [demand])
    assert result.assignments == ()
    assert "the data of db is on n2 only" in result.unplaced[0].reason
    assert result.rejected["n1"] == "db: holds none of the data of db"


def test_data_nodes_lists_unread_workers_only_when_the_playbook_waits() -> None:
    nodes = down("n3")
    assert data_nodes(spec_of(LOCAL), view("n1", read=("n1", "n2")), nodes) == (  # type: ignore[arg-type]
        frozenset({"n1"}), frozenset({"n3"}))
    assert data_nodes(spec_of(EMPTY_OK), view("n1", "n3", read=("n1", "n2")), nodes) == (  # type: ignore[arg-type]
        frozenset({"n1"}), frozenset())
    no_volume = parse_playbook("services:\n  w:\n    image: a/b:c\n", "pb.yaml").services[0]
    assert data_nodes(no_volume, view("n1"), nodes) == (frozenset(), frozenset())


@settings(max_examples=150, deadline=None)
@given(holders=st.sets(st.sampled_from(["n1", "n2", "n3", "n4"])),
       sick=st.sets(st.sampled_from(["n1", "n2", "n3", "n4"])),
       replicas=st.integers(1, 5), start_empty=st.booleans())
def test_no_replica_starts_on_a_node_without_its_data_while_a_holder_could_take_it(
        holders: set[str], sick: set[str], replicas: int, start_empty: bool) -> None:
    spec = spec_of(EMPTY_OK if start_empty else LOCAL, replicas=replicas)
    nodes = [NodeState(n, Resources(8, 16 * GiB), healthy=n not in sick) for n in ("n1", "n2", "n3", "n4")]
    read = tuple(n for n in ("n1", "n2", "n3", "n4") if n not in sick)
    p = plan([spec], nodes, [], view(*holders, read=read))  # type: ignore[arg-type]
    sp = p.service("db")
    starts = [a.node for a in sp.start]
    healthy_holders = holders - sick
    assert len(starts) + len(sp.unplaced) == replicas, "every replica placed or given a reason"
    assert not set(starts) & sick
    assert len(set(starts) & healthy_holders) == min(len(starts), len(healthy_holders)), \
        "each healthy holder gets its replica back before a node without data gets one"
    waiting = 0 if start_empty else min(replicas, max(0, replicas - len(healthy_holders)), len(sick))
    if len(sick) < 4:
        assert len(sp.unplaced) == waiting
    else:
        assert starts == []


# --- parsing and the storage node ------------------------------------------------------------------------

def inventory(*nodes: tuple[str, tuple[str, ...]]) -> Inventory:
    return Inventory("inv.yaml", tuple(Node(n, "10.0.0.1", roles=r) for n, r in nodes))


SSHFS = "services:\n  db:\n    image: a/b:c\n    volumes:\n      - {type: sshfs, source: shared, target: /s%s}\n"


def test_an_sshfs_volume_defaults_to_the_only_storage_node() -> None:
    spec = parse_playbook(SSHFS % "", "pb.yaml").services[0]
    inv = inventory(("w1", ("worker",)), ("st", ("storage",)))
    found = storage_of(spec.volumes[0], inv)
    assert isinstance(found, Node) and found.name == "st"
    check_volumes([spec], inv)


@pytest.mark.parametrize("extra, nodes, message", [
    (", storage: nas", (("w1", ("worker",)), ("st", ("storage",))), "unknown storage host 'nas': it is not in"),
    (", storage: w1", (("w1", ("worker",)), ("st", ("storage",))), "unknown storage host 'w1': it has no role"),
    ("", (("w1", ("worker",)),), "no storage node in the inventory"),
    ("", (("a", ("storage",)), ("b", ("lb", "storage"))), "name its storage node (storage: NAME)"),
])
def test_an_sshfs_volume_without_a_storage_node_is_a_file_line_error(extra: str, nodes: tuple[tuple[str, tuple[
        str, ...]], ...], message: str) -> None:
    spec = parse_playbook(SSHFS % extra, "pb.yaml").services[0]
    with pytest.raises(SpecError) as exc:
        check_volumes([spec], inventory(*nodes))
    [problem] = volume_problems([spec], inventory(*nodes))
    assert (problem.file, problem.line, problem.field) == ("pb.yaml", 5, "services.db.volumes[0]")
    assert message in str(exc.value) and str(exc.value).startswith("pb.yaml:5: services.db.volumes[0]: ")


@pytest.mark.parametrize("volume, message", [
    ("{type: bind, source: /srv, target: /x, on_node_loss: wait}", "on_node_loss applies to named volumes"),
    ("{type: volume, source: d, target: /x, on_node_loss: later}", "'wait' or 'start-empty'"),
    ("{type: volume, source: d, target: /x, storage: st}", "storage applies to sshfs volumes only"),
    ("{type: sshfs, target: /x}", "a named volume needs source: NAME"),
    ("{type: sshfs, source: d, target: /x, storage: 'a b'}", "expected a storage node's name"),
    ("{type: sshfs, source: d, target: /x, size: 16MiB}", "size applies to tmpfs volumes only"),
])
def test_bad_volume_fields_are_refused_with_file_and_line(volume: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_playbook(f"services:\n  db:\n    image: a/b:c\n    volumes:\n      - {volume}\n", "pb.yaml")
    assert str(exc.value).startswith("pb.yaml:5: services.db.volumes[0]") and message in str(exc.value)


def test_volume_fields_round_trip_through_the_history_and_old_hashes_stay() -> None:
    spec = parse_playbook(SSHFS % ", storage: st", "pb.yaml").services[0]
    back = from_playbook_dict("db", to_playbook_dict(spec))
    assert back.volumes[0].storage == "st" and back.spec_hash() == spec.spec_hash()
    local = spec_of(EMPTY_OK)
    assert from_playbook_dict("db", to_playbook_dict(local)).volumes[0].on_node_loss == "start-empty"  # type: ignore
    # on_node_loss is placement only: the container does not change with it.
    assert spec_of(EMPTY_OK).spec_hash() == spec_of(LOCAL).spec_hash()  # type: ignore[attr-defined]
    assert spec_of(LOCAL).hash_input()["volumes"] == [  # type: ignore[attr-defined]
        {"type": "volume", "source": "data", "target": "/data", "readonly": False, "size": None}]


def test_a_kept_replica_on_a_node_without_data_is_not_moved() -> None:
    demand = ServiceDemand("db", 1, Resources(0.1, 1 << 20), data_nodes=frozenset({"n2"}))
    result = place(NODES, [Existing("db", 0, "n1", Resources(0.1, 1 << 20), 20000)], [demand])
    assert [(a.node, a.reason) for a in result.assignments] == [("n1", "keep")]


def test_a_healthy_worker_whose_volumes_could_not_be_listed_is_named_as_such() -> None:
    spec = spec_of(LOCAL)
    p = plan([spec], NODES, [], view(read=("n1", "n3")))  # type: ignore[arg-type]
    [u] = p.service("db").unplaced
    assert "may be on n2 (not listed)" in u.reason and p.service("db").start == ()


def test_a_service_the_records_show_never_ran_does_not_wait_for_an_unlisted_node() -> None:
    spec = spec_of(LOCAL)
    fresh = VolumeView.of([], read=("n1", "n3"))
    fresh = replace(fresh, fresh=frozenset({"db"}))
    p = plan([spec], down("n2"), [], fresh)  # type: ignore[arg-type]
    assert [a.node for a in p.service("db").start] == ["n1"] and not p.unplaced
    # ...but a node that did answer and holds its directory (restored there by hand) still ties it.
    held = replace(view("n3", read=("n1", "n3")), fresh=frozenset({"db"}))
    assert [a.node for a in plan([spec], down("n2"), [], held).service("db").start] == ["n3"]  # type: ignore
