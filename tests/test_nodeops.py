"""Node operations without the lab: label arguments, marks and their document, the scheduler with cordoned and
draining nodes, the drain target, the marks in etcd (reached over SSH), and the CLI's refusals."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from etcd_local import ETCD
from helpers import free_port, run_fleet
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sshserver import SSHFarm
from test_scheduler import fleets

from fleet.api import NodeReport, report_from
from fleet.cli.nodes import report_json, sched, table
from fleet.config.spec import parse_playbook
from fleet.core.errors import LeaseLost, RecordsError
from fleet.core.model import Inventory, Node, Resources
from fleet.core.nodeops import NodeMark, decode_marks, encode_marks, parse_label_args, relabel
from fleet.engine.state import node_states
from fleet.plan.drain import drain_target
from fleet.plan.reconcile import Replica, plan
from fleet.plan.rollout.decide import ServiceState
from fleet.plan.scheduler import Existing, NodeState, ServiceDemand, place
from fleet.results.nodes import NO_SHARED_STATE
from fleet.store import access
from fleet.store.access import marks_of
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.store.etcd_records import EtcdRecords, read_marks, update_mark
from fleet.transport import Pool

needs_etcd = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")
MiB = 1 << 20
GiB = 1 << 30
SMALL = Resources(0.25, 128 * MiB)
FACTS = Path(__file__).parent / "data" / "facts"


# ---- label arguments and marks ----------------------------------------------------------------------------------


def test_label_arguments_split_into_sets_and_removals() -> None:
    assert parse_label_args(["disk=ssd", "gpu-", "note=", "zone=eu-west-1", "a-b-"]) == (
        {"disk": "ssd", "note": "", "zone": "eu-west-1"}, ["gpu", "a-b"])


@pytest.mark.parametrize(("args", "problem"), [
    ([], "expected at least one label change"),
    (["disk"], "'disk': expected key=value to set a label or key- to remove one"),
    (["=ssd"], "'=ssd': expected key=value"),
    (["disk=ssd", "disk-"], "'disk-': label 'disk' is changed twice"),
    (["disk=a", "disk=b"], "label 'disk' is changed twice"),
    (["-disk=ssd"], "invalid label key '-disk'"),
    (["disk=s s"], "invalid value 's s' for label 'disk'"),
    (["fleet.records=true"], "label 'fleet.records' is read from the inventory only"),
    (["fleet.records-"], "label 'fleet.records' is read from the inventory only"),
])
def test_bad_label_arguments_are_refused_naming_the_argument(args: list[str], problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_label_args(args)
    assert problem in str(caught.value)


def test_cli_labels_win_over_the_inventory_and_removals_are_recorded_only_for_inventory_labels() -> None:
    inventory = {"zone": "a", "disk": "hdd"}
    mark = relabel(NodeMark(), inventory, {"disk": "ssd", "gpu": "yes"}, [])
    assert mark.effective(inventory) == {"disk": "ssd", "gpu": "yes", "zone": "a"}
    # key- drops a CLI label (the inventory's value shows again)…
    mark = relabel(mark, inventory, {}, ["gpu"])
    assert mark.effective(inventory) == {"disk": "ssd", "zone": "a"} and mark.removed == frozenset()
    # …and on an inventory label records its removal; a label neither has is not recorded at all.
    mark = relabel(mark, inventory, {}, ["zone", "never-there"])
    assert mark.effective(inventory) == {"disk": "ssd"} and mark.removed == {"zone"}
    assert mark.changes() == ["disk=ssd", "-zone"]
    # Setting it again lifts the removal; the CLI value wins.
    mark = relabel(mark, inventory, {"zone": "b"}, [])
    assert mark.effective(inventory) == {"disk": "ssd", "zone": "b"} and mark.removed == frozenset()
    # Removing a key the CLI set and the inventory has: neither value is left.
    mark = relabel(mark, inventory, {}, ["disk"])
    assert "disk" not in mark.effective(inventory) and mark.removed == {"disk"}


def test_marks_document_round_trips_and_leaves_out_nodes_with_nothing_recorded() -> None:
    marks = {"n1": NodeMark(cordoned=True, by="ann@ctl", at=12.5),
             "n2": NodeMark(draining=True, cordoned=True, labels={"disk": "ssd"}, removed=frozenset({"zone"})),
             "n3": NodeMark(by="bob@ctl", at=99.0)}
    doc = encode_marks(marks)
    assert set(doc["nodes"]) == {"n1", "n2"}
    assert json.loads(json.dumps(doc)) == doc
    assert decode_marks(doc) == {"n1": marks["n1"], "n2": marks["n2"]}
    assert decode_marks(None) == {}


@pytest.mark.parametrize(("doc", "problem"), [
    ({"format": 2, "nodes": {}}, "written by a newer fleet (format 2"),
    ({"format": 1, "nodes": []}, "nodes: expected an object"),
    ({"format": 1, "nodes": {"n1": {"cordoned": "yes"}}}, "nodes.n1.cordoned: expected true or false"),
    ({"format": 1, "nodes": {"n2": {"labels": {"disk": 1}}}}, "nodes.n2.labels: expected an object of strings"),
    ({"format": 1, "nodes": {"n2": {"removed": "zone"}}}, "nodes.n2.removed: expected a list of strings"),
    ({"nodes": {}}, "format: expected an integer"),
])
def test_a_bad_marks_document_is_refused_naming_the_field(doc: dict, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode_marks(doc)
    assert problem in str(caught.value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["n1", "n2", "n3"]), st.builds(
    NodeMark, cordoned=st.booleans(), draining=st.booleans(),
    labels=st.dictionaries(st.sampled_from(["disk", "gpu", "zone"]), st.sampled_from(["", "a", "ssd"])),
    removed=st.frozensets(st.sampled_from(["rack", "zone"])), by=st.just("x@y"), at=st.floats(0, 1e9))))
def test_any_marks_survive_the_document(marks: dict[str, NodeMark]) -> None:
    assert decode_marks(json.loads(json.dumps(encode_marks(marks)))) == {n: m for n, m in marks.items() if not m.empty}


# ---- the scheduler ------------------------------------------------------------------------------------------------


def node(name: str, **kw: object) -> NodeState:
    return NodeState(name, Resources(2, 2 * GiB), **kw)  # type: ignore[arg-type]


def test_a_cordoned_node_keeps_its_replicas_and_takes_no_new_one() -> None:
    nodes = [node("n1"), node("n2", cordoned=True), node("n3")]
    result = place(nodes, [Existing("web", 0, "n2", SMALL, 20000)], [ServiceDemand("web", 5, SMALL)])
    assert [(a.replica, a.node, a.reason) for a in result.assignments if a.node == "n2"] == [(0, "n2", "keep")]
    assert not result.stops
    assert sorted(a.node for a in result.assignments if a.reason == "new") == ["n1", "n1", "n3", "n3"]


def test_a_draining_nodes_replicas_move_and_it_takes_none() -> None:
    nodes = [node("n1"), node("n2", draining=True), node("n3")]
    existing = [Existing("web", 0, "n1", SMALL, 20000), Existing("web", 1, "n2", SMALL, 20000)]
    result = place(nodes, existing, [ServiceDemand("web", 2, SMALL)])
    assert dict(result.stop_reasons) == {existing[1]: "node n2 is draining"}
    assert [(a.replica, a.node, a.reason) for a in result.assignments] == [(0, "n1", "keep"), (1, "n3", "move")]


def test_an_unplaceable_replica_names_the_cordoned_and_draining_nodes() -> None:
    nodes = [node("n1", cordoned=True), node("n2", draining=True), node("n3", labels={"disk": "hdd"})]
    result = place(nodes, [], [ServiceDemand("db", 1, SMALL, required_labels={"disk": "ssd"})])
    (why,) = [u.reason for u in result.unplaced]
    assert "n2 is draining" in why and "n1 is cordoned" in why and "1 node lacks label disk=ssd" in why
    assert result.rejected["n1"] == "db: cordoned: takes no new replicas"
    assert result.rejected["n2"] == "db: draining: takes no new replicas"


def test_spread_by_zone_with_a_cordoned_node_holding_replicas() -> None:
    """A kept replica on a cordoned node counts for nothing new there (the node is in no candidate group)."""
    nodes = [node("a1", labels={"zone": "a"}, cordoned=True), node("a2", labels={"zone": "a"}),
             node("b1", labels={"zone": "b"})]
    existing = [Existing("web", 0, "a1", SMALL, 20000)]
    result = place(nodes, existing, [ServiceDemand("web", 3, SMALL, spread_by="zone")])
    assert sorted((a.node, a.reason) for a in result.assignments) == [
        ("a1", "keep"), ("a2", "new"), ("b1", "new")]


@settings(max_examples=200, deadline=None)
@given(fleets(), st.data())
def test_nothing_new_lands_on_a_cordoned_or_draining_node_and_nothing_stays_on_a_draining_one(
    fleet: tuple[list[NodeState], list[Existing], list[ServiceDemand]], data: st.DataObject,
) -> None:
    nodes, existing, wanted = fleet
    marked = [dataclasses.replace(n, cordoned=data.draw(st.booleans()), draining=data.draw(st.booleans()))
              for n in nodes]
    result = place(marked, existing, wanted)
    closed = {n.name for n in marked if n.cordoned or n.draining}
    draining = {n.name for n in marked if n.draining}
    for a in result.assignments:
        assert a.reason == "keep" or a.node not in closed, a
        assert a.node not in draining, a
    placed = sorted((a.service, a.replica) for a in result.assignments)
    unplaced = sorted((u.service, u.replica) for u in result.unplaced)
    assert sorted(placed + unplaced) == sorted((d.service, r) for d in wanted for r in range(d.replicas))


SPEC = parse_playbook("services:\n  web:\n    image: fleet.local/demo:v1\n    replicas: 2\n    lb: {port: 8080}\n"
                      "    placement: {require: {disk: ssd}}\n", "pb.yaml").services[0]


def rep(node: str, replica: int, port: int = 20000, spec_hash: str | None = None, service: str = "web") -> Replica:
    return Replica(node, f"{service}-{replica}-{node}", service, replica, 1, spec_hash or SPEC.spec_hash(), port,
                   True, SPEC.resources, SPEC.image)


def test_the_reconcile_plan_moves_replicas_off_a_draining_node_and_keeps_the_marks() -> None:
    nodes = [node(n, labels={"disk": "ssd"}, draining=n == "n2") for n in ("n1", "n2", "n3")]
    sp = plan([SPEC], nodes, [rep("n1", 0), rep("n2", 1)]).service("web")
    assert [(r.id, why) for r, why in sp.stop] == [("web-1-n2", "node n2 is draining")]
    assert [(a.replica, a.node, a.reason) for a in sp.start] == [(1, "n3", "move")]


def test_replicas_of_other_services_are_held_on_a_draining_node_and_take_no_room_elsewhere() -> None:
    """Only the service being converged moves off a draining node: the others' replicas there (held in place by
    the plan) must not claim room on the other nodes, or a full fleet could not take the moving replica."""
    # Two web replicas (0.1 cpu each) fit on n2 (0.3 cpu); "big" (0.15 cpu, placed first: bigger) would take its room.
    big = dataclasses.replace(rep("n1", 0, 20002, service="big"), resources=Resources(0.15, 64 * MiB), spec_hash="b")
    nodes = [NodeState("n1", Resources(4, 4 * GiB), labels={"disk": "ssd"}, draining=True),
             NodeState("n2", Resources(0.3, GiB), labels={"disk": "ssd"})]
    p = plan([SPEC], nodes, [rep("n1", 0), rep("n1", 1, 20001), big])
    assert not p.unplaced, p.unplaced
    assert [(a.replica, a.node, a.reason) for a in p.service("web").start] == [(0, "n2", "move"), (1, "n2", "move")]


def report(name: str, mark: NodeMark | None = None, labels: dict[str, str] | None = None,
           why: str | None = None) -> NodeReport:
    stdout = json.loads((FACTS / "lab_node_idle.json").read_text())["stdout"]
    r = report_from(Node(name, "10.9.9.9", labels=labels or {}), 0, stdout, None, 0.1)
    return dataclasses.replace(r, mark=mark or NodeMark(), mark_error=why)


def test_node_reports_carry_the_marks_to_the_scheduler_with_the_labels_merged() -> None:
    reports = [report("n1", labels={"zone": "a"}),
               report("n2", NodeMark(cordoned=True, labels={"disk": "ssd"}), {"zone": "b", "rack": "r1"}),
               report("n3", NodeMark(draining=True, removed=frozenset({"zone"})), {"zone": "c"})]
    states = {s.name: s for s in node_states(reports)}
    assert (states["n1"].cordoned, states["n1"].draining, dict(states["n1"].labels)) == (False, False, {"zone": "a"})
    assert (states["n2"].cordoned, dict(states["n2"].labels)) == (True, {"disk": "ssd", "rack": "r1", "zone": "b"})
    assert (states["n3"].cordoned, states["n3"].draining, dict(states["n3"].labels)) == (True, True, {})


def test_fleet_nodes_shows_cordons_and_cli_labels_in_its_table_and_json() -> None:
    reports = [report("n1", labels={"zone": "a"}),
               report("n2", NodeMark(cordoned=True, labels={"disk": "ssd"}, removed=frozenset({"zone"}), by="ann@c"),
                      {"zone": "b"}),
               report("n3", NodeMark(draining=True, cordoned=True)),
               report("n4", why="cannot read the fleet's records: no record node answered")]
    console = Console(record=True, width=160)
    console.print(table(reports))
    text = console.export_text()
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert "SCHED" in text and "…" not in text
    assert "cordoned disk=ssd,-zone" in lines["n2"] and "draining" in lines["n3"]
    assert lines["n1"].split()[2:4] == ["ready", "-"] and lines["n4"].split()[2:4] == ["ready", "?"]
    # With nothing recorded on any node the column is left out: the table is as narrow as before.
    plain = Console(record=True, width=160)
    plain.print(table([report("n1"), report("n2")]))
    assert "SCHED" not in plain.export_text()
    doc = report_json(reports[1])
    assert (doc["cordoned"], doc["draining"], doc["labels"], doc["inventory_labels"]) == (
        True, False, {"disk": "ssd"}, {"zone": "b"})
    assert doc["node_ops"]["removed"] == ["zone"] and doc["node_ops"]["by"] == "ann@c"
    assert report_json(reports[3])["node_ops"]["error"].startswith("cannot read the fleet's records")


# ---- what a drain converges to ------------------------------------------------------------------------------------


def test_drain_heals_the_accepted_revision_with_as_many_replicas_as_run() -> None:
    state = ServiceState(accepted=3, decision="applied")
    target = drain_target("web", state, SPEC, None, [rep("n1", 0), rep("n2", 3), rep("n3", 1, service="other")])
    assert not isinstance(target, str)
    assert (target.revision, target.heal, target.skip, target.spec.replicas) == (3, True, False, 4)
    scaled = drain_target("web", dataclasses.replace(state, replicas=6), SPEC, None, [rep("n1", 0)])
    assert not isinstance(scaled, str) and scaled.spec.replicas == 6


def test_drain_keeps_a_waiting_canary_apart_and_finishes_a_destroyed_service() -> None:
    canary = dataclasses.replace(SPEC, image="fleet.local/demo:v2")
    state = ServiceState(accepted=3, decision="canary-waiting", canary=4)
    running = [rep("n1", 0), rep("n2", 1), rep("n2", 0, spec_hash=canary.spec_hash())]
    target = drain_target("web", state, SPEC, canary, running)
    assert not isinstance(target, str)
    assert target.canary == (canary, 4) and target.spec.replicas == 2
    gone = drain_target("web", ServiceState(accepted=3, decision="destroyed"), None, None, running)
    assert not isinstance(gone, str) and gone.skip


def test_a_service_with_no_accepted_revision_cannot_be_drained_and_says_why() -> None:
    why = drain_target("tool", None, None, None, [rep("n2", 1, service="tool")])
    assert isinstance(why, str) and why.startswith("tool: the fleet's records hold no accepted revision")
    failed = drain_target("web", ServiceState(accepted=None, decision="failed"), None, None, [rep("n2", 0)])
    assert isinstance(failed, str)


# ---- the marks in etcd (a real member, reached by etcdctl over SSH) ---------------------------------------------


@pytest.fixture
def records(shared_store: EtcdStore) -> Callable[[EtcdLease], EtcdRecords]:
    return lambda lease: EtcdRecords(shared_store, SharedState(shared_store, lease), command="fleet node")


@needs_etcd
async def test_marks_are_written_under_the_lease_and_read_by_another_controller(
        shared_store: EtcdStore, records: Callable[[EtcdLease], EtcdRecords]) -> None:
    assert await read_marks(shared_store) == {}
    async with EtcdLease(shared_store, command="fleet node cordon n2") as lease:
        mine = records(lease)
        marks = await update_mark(mine, "n2", lambda m: dataclasses.replace(m, cordoned=True), by="ann@ctl")
        assert marks["n2"].cordoned and marks["n2"].by == "ann@ctl"
        await update_mark(mine, "n3", lambda m: relabel(m, {"zone": "c"}, {"disk": "ssd"}, ["zone"]), by="ann@ctl")
        seen = await read_marks(shared_store)  # a second controller reads etcd, outside the lease
        assert seen["n2"].cordoned and seen["n3"].effective({"zone": "c"}) == {"disk": "ssd"}
        assert await EtcdRecords(shared_store).services() == []  # marks are not services
        # Uncordoning clears the node's key altogether; an unchanged mark is not written again.
        await update_mark(mine, "n2", lambda m: dataclasses.replace(m, cordoned=False))
        assert "n2" not in await read_marks(shared_store)
        before = await SharedState(shared_store, lease).events()
        await update_mark(mine, "n3", lambda m: m)
        after = await SharedState(shared_store, lease).events()
    assert after == before and [e.value["node"] for e in after] == ["n2", "n3", "n2"]
    assert after[0].value["what"] == "node" and after[0].value["mark"]["cordoned"] is True


@needs_etcd
async def test_marks_are_not_changed_without_the_lease(shared_store: EtcdStore,
                                                       records: Callable[[EtcdLease], EtcdRecords]) -> None:
    lease = EtcdLease(shared_store, command="fleet node cordon n2")
    await lease.acquire()
    await lease.release()
    with pytest.raises(LeaseLost):
        await update_mark(records(lease), "n2", lambda m: dataclasses.replace(m, cordoned=True))
    with pytest.raises(RecordsError, match="only under the fleet's lease"):
        await update_mark(EtcdRecords(shared_store), "n2", lambda m: dataclasses.replace(m, cordoned=True))
    assert await read_marks(shared_store) == {}


async def test_every_look_at_the_nodes_says_why_the_marks_are_unknown_when_etcd_does_not_answer(
        farm: SSHFarm, pool: Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_ETCD_PORT", str(free_port()))  # nothing listens there
    data = tmp_path / "etcd-data"
    monkeypatch.setattr(access, "ETCD_DATA", str(data))  # the farm's nodes share this machine's files
    inv = Inventory(str(tmp_path / "inv.yaml"), tuple(farm.nodes))
    # A fleet whose etcd never ran (no record node holds its data): no mark exists yet, nothing is unknown.
    assert await marks_of(pool, inv) == ({}, NO_SHARED_STATE)
    fresh = dataclasses.replace(report("n1"), mark_error=NO_SHARED_STATE)
    assert not fresh.marks_unknown and str(sched(fresh)) == "-"
    assert await access.brand_new(pool, inv)  # so `fleet plan` plans with nothing on record
    # Once a member kept data there, etcd not answering leaves the marks unknown, and says why.
    data.mkdir()
    marks, why = await marks_of(pool, inv)
    assert marks == {} and why is not None
    assert why.startswith("cannot read the fleet's record of its nodes: the fleet's shared state could not be "
                          "reached: n1: ")
    assert report("n1", why=why).marks_unknown
    assert not await access.brand_new(pool, inv)  # `fleet plan` then says the shared state is unreachable


# ---- the CLI's refusals (before any node is contacted) -----------------------------------------------------------


@pytest.fixture
def inventory(tmp_path: Path) -> str:
    path = tmp_path / "inv.yaml"
    path.write_text("nodes:\n  n1:\n    address: 10.255.255.1\n  n2:\n    address: 10.255.255.2\n")
    return str(path)


@pytest.mark.parametrize(("args", "problem"), [
    (["node", "label", "n1", "disk"], "fleet node label: 'disk': expected key=value"),
    (["node", "label", "n1", "fleet.records=true"], "read from the inventory only"),
    (["node", "cordon", "n9"], "no node 'n9' in this inventory (its nodes: n1, n2)"),
    (["node", "drain", "n9"], "no node 'n9' in this inventory"),
    (["node", "label", "n9", "disk=ssd"], "no node 'n9' in this inventory"),
    (["node", "cordon", "n1", "--wait", "soon"], "--wait:"),
])
def test_bad_node_commands_exit_2_naming_the_problem(inventory: str, args: list[str], problem: str) -> None:
    out = run_fleet(*args, inventory=inventory, timeout=60, columns=200)
    assert out.returncode == 2, out.stdout + out.stderr
    assert problem in " ".join(out.stderr.split()), out.stderr
    if "n9" in args:
        assert inventory in out.stderr.replace("\n", "")
