"""`fleet records`: what status shows (members, roles, quorum, leader, the inventory's wish), its JSON, and the
refusals made from the inventory alone, before any node is contacted."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_fleet
from rich.console import Console

from fleet.cli.records import print_reports, print_view, view_json
from fleet.engine.etcd import MemberRow, RecordsView, StepReport
from fleet.plan.members import TWO_MEMBERS, MembershipPlan, Step

VIEW = RecordsView(
    members=(MemberRow(0x1a, "n1", "n1", False, "running", leader=True, revision=12),
             MemberRow(0x2b, "n2", "n2", False, "unreachable", error="cannot connect to 10.0.0.2:22"),
             MemberRow(0x3c, "", "n4", True, "unhealthy")),
    record_nodes=("n1", "n2", "n4"),
    plan=MembershipPlan((Step("add", "n4"),), ()))


def render(view: RecordsView) -> str:
    out = Console(record=True, width=100)
    print_view(out, view)
    return out.export_text()


def test_status_shows_each_member_its_role_and_the_quorum() -> None:
    lines = render(VIEW).splitlines()
    assert lines[0].split() == ["MEMBER", "NODE", "ID", "ROLE", "STATE", "REVISION"]
    assert lines[1].split() == ["n1", "n1", "1a", "leader", "running", "12"]
    assert lines[2].split()[:5] == ["n2", "n2", "2b", "follower", "unreachable:"]
    assert lines[3].split() == ["(not", "started)", "n4", "3c", "learner", "unhealthy"]
    assert lines[4] == "quorum: 1 of 2 voting members healthy, 2 needed; leader n1"
    assert lines[5] == "record nodes in the inventory: n1, n2, n4"
    assert lines[6:] == ["the next apply changes the members:", "  records: add member n4"]


def test_status_json_and_a_refused_plan_with_its_warning() -> None:
    doc = view_json(VIEW)
    assert doc["leader"] == "n1" and doc["healthy"] == 1 and doc["quorum"] == 2
    assert [m["role"] for m in doc["members"]] == ["leader", "follower", "learner"]
    assert doc["plan"] == {"steps": ["records: add member n4"], "refused": None, "warnings": []}
    refused = RecordsView(VIEW.members[:1], ("n5", "n6"), MembershipPlan(
        refused="the record nodes named in the inventory (n5, n6) share no member", warnings=(
            TWO_MEMBERS.format(a="n5", b="n6"),)))
    text = render(refused)
    assert "the inventory asks for:\nrefused: the record nodes named in the inventory (n5, n6) share" in text
    assert "warning: two record nodes (n5 and n6) have no tie-breaker: losing either record node stops" in text
    json.dumps(view_json(refused))


def test_unreadable_cluster_is_one_line() -> None:
    text = render(RecordsView((), ("n1",), MembershipPlan(), "the fleet's shared state could not be reached"))
    assert text == "the etcd cluster could not be read: the fleet's shared state could not be reached\n"


def test_step_reports_say_what_was_done_and_where_it_stopped() -> None:
    out = Console(record=True, width=100)
    print_reports(out, [StepReport(Step("add", "n4"), ("added n4 as a learner",)),
                        StepReport(Step("remove", "n2"), ("removed member 2b (n2)",), "n2: connection refused")])
    assert out.export_text().splitlines() == [
        "records: add member n4: done", "  added n4 as a learner", "records: remove member n2: failed",
        "  removed member 2b (n2)", "  n2: connection refused"]


def _inventory(tmp_path: Path) -> str:
    # Addresses of TEST-NET-1: these tests must fail before any node is contacted.
    path = tmp_path / "inventory.yaml"
    path.write_text("nodes:\n  n1: {address: 192.0.2.1, roles: [lb]}\n  n2: {address: 192.0.2.2}\n"
                    "  n3: {address: 192.0.2.3}\n")
    return str(path)


def test_add_and_remove_must_match_the_inventory_first(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    ghost = run_fleet("records", "add", "n9", "--yes", inventory=inv, timeout=30)
    assert ghost.returncode == 2 and "n9: no such node in" in ghost.stderr
    unnamed = run_fleet("records", "add", "n2", "--yes", inventory=inv, timeout=30)
    assert unnamed.returncode == 2, unnamed.stderr
    assert "n2 is not one of the record nodes" in unnamed.stderr and "(n1)" in unnamed.stderr
    named = run_fleet("records", "remove", "n1", "--yes", inventory=inv, timeout=30)
    assert named.returncode == 2 and "n1 is still a record node" in named.stderr
