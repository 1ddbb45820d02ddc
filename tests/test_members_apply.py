"""`fleet apply` and `fleet plan` with the etcd members (fleet.engine.etcd.EtcdMembership.pending/apply): the plan
lines, the steps made one at a time under the lease (the guard before each), a refused change that stops with the
planner's reason having changed nothing, and a failed step that stops the rest. In process: `FakeCluster` is the
real EtcdMembership with its etcd and node calls (member list, probes, add, remove, the CA) answered from memory,
a fake labelled as such; real members are changed by tests/test_etcd_members_lab.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from rich.console import Console

from fleet.cli import records
from fleet.core.errors import LeaseLost, RecordsError
from fleet.core.model import Node
from fleet.engine.etcd import EtcdMembership, StepReport
from fleet.node import etcd as E
from fleet.plan.members import MembershipPlan, Step
from fleet.results import PlanView
from fleet.store.etcd_pki import PeerCa
from fleet.store.secrets import Secret
from fleet.transport import Pool

NODES = [Node(f"n{i}", f"192.0.2.{i}") for i in range(1, 6)]


class FakeCluster(EtcdMembership):
    """The membership logic over a cluster in memory: `voters` (healthy or not), `learners`; every call kept."""

    def __init__(self, record: Sequence[str], voters: dict[str, bool], *, unreachable: bool = False,
                 fail: str | None = None) -> None:
        self.lines: list[str] = []
        super().__init__(Pool(connect_attempts=1, connect_timeout=1), NODES,
                         [n for n in NODES if n.name in record], cluster_token="t", on_step=self.lines.append)
        self.voters = dict(voters)
        self.learners: set[str] = set()
        self.unreachable = unreachable
        self.fail = fail
        self.calls: list[str] = []

    async def members(self) -> tuple[E.EtcdMember, ...]:
        self.calls.append("member list")
        if self.unreachable:
            raise RecordsError("no record node's etcd answers")
        return tuple(E.EtcdMember(i + 1, name, (f"https://192.0.2.{name[1:]}:2380",), (), name in self.learners)
                     for i, name in enumerate([*self.voters, *sorted(self.learners)]))

    async def _probe(self, node: Node) -> tuple[str, E.EndpointStatus | None, str | None]:
        self.calls.append(f"probe {node.name}")
        return ("running" if self.voters.get(node.name, True) else "stopped"), None, None

    async def load_ca(self) -> PeerCa:
        self.calls.append("load ca")
        return PeerCa("cert", Secret("key"))

    async def add(self, name: str, ca: PeerCa) -> StepReport:
        self.calls.append(f"add {name}")
        if self.fail == name:
            return StepReport(Step("add", name), (f"added {name} as a learner",), f"etcd on {name} did not start")
        self.voters[name] = True
        return StepReport(Step("add", name), (f"added {name} as a learner", f"promoted {name}"))

    async def remove(self, name: str) -> StepReport:
        self.calls.append(f"remove {name}")
        del self.voters[name]
        return StepReport(Step("remove", name), (f"removed member ({name})",))


def _up(*names: str) -> dict[str, bool]:
    return dict.fromkeys(names, True)


async def test_settled_members_cost_one_member_list_and_change_nothing() -> None:
    cluster = FakeCluster(["n1", "n2", "n3"], _up("n1", "n2", "n3"))
    assert await cluster.pending() == MembershipPlan()
    assert await cluster.apply() == []
    assert cluster.calls == ["member list", "member list"] and cluster.lines == []


async def test_plan_lines_then_apply_adds_before_it_removes_one_step_at_a_time_under_the_guard() -> None:
    cluster = FakeCluster(["n2", "n3", "n4"], _up("n1", "n2", "n3"))
    plan = await cluster.pending()
    assert plan.ok and plan.lines() == ["records: add member n4", "records: remove member n1"]
    checks: list[list[str]] = []

    async def guard() -> None:
        checks.append(list(cluster.calls))

    reports = await cluster.apply(guard)
    assert [(r.step.line(), r.ok) for r in reports] == [("records: add member n4", True),
                                                        ("records: remove member n1", True)]
    # The lease confirmed before each step, each step after the one before had finished.
    assert [c[-1] for c in checks] == ["load ca", "add n4"]
    assert cluster.lines == ["records: add member n4", "  added n4 as a learner", "  promoted n4",
                             "records: remove member n1", "  removed member (n1)"]
    assert cluster.voters == _up("n2", "n3", "n4")


async def test_a_change_with_no_quorum_is_refused_with_the_reason_and_nothing_changes() -> None:
    cluster = FakeCluster(["n1", "n2", "n3", "n4"], {"n1": True, "n2": False, "n3": False})
    plan = await cluster.pending()
    assert not plan.ok and plan.steps == ()
    with pytest.raises(RecordsError) as caught:
        await cluster.apply()
    assert "the etcd cluster has no quorum now: 1 of 3 members healthy (n1), 2 needed" in str(caught.value)
    assert "Start n2, n3 first" in str(caught.value)
    assert not [c for c in cluster.calls if c.startswith(("add", "remove", "load"))] and cluster.lines == []


async def test_removing_a_majority_at_once_is_refused_and_nothing_changes() -> None:
    cluster = FakeCluster(["n1"], _up("n1", "n2", "n3"))
    with pytest.raises(RecordsError, match="would take 2 of the etcd cluster's 3 members at once, a majority"):
        await cluster.apply()
    assert cluster.voters == _up("n1", "n2", "n3") and cluster.lines == []


async def test_a_failed_step_stops_the_rest_and_is_named() -> None:
    cluster = FakeCluster(["n2", "n3", "n4"], _up("n1", "n2", "n3"), fail="n4")
    with pytest.raises(RecordsError, match=r"records: add member n4 failed: etcd on n4 did not start"):
        await cluster.apply()
    assert "remove n1" not in cluster.calls and "n1" in cluster.voters


async def test_a_lease_lost_between_steps_stops_before_the_next() -> None:
    cluster = FakeCluster(["n2", "n3", "n4"], _up("n1", "n2", "n3"))

    async def guard() -> None:
        if "add n4" in cluster.calls:
            raise LeaseLost("the fleet's lease was taken by bob@ctl2")

    with pytest.raises(LeaseLost):
        await cluster.apply(guard)
    assert cluster.calls[-1] == "add n4" and "n1" in cluster.voters


async def test_a_cluster_not_formed_yet_plans_nothing_but_apply_refuses_one_it_cannot_read() -> None:
    cluster = FakeCluster(["n1", "n2", "n3"], {}, unreachable=True)
    assert await cluster.pending() == MembershipPlan()
    with pytest.raises(RecordsError, match="the etcd cluster could not be read: no record node's etcd answers"):
        await cluster.apply()


def test_plan_output_shows_the_member_steps_and_a_refusal() -> None:
    from fleet.cli.apply import print_members
    from fleet.plan.reconcile import Plan

    out = Console(record=True, width=100)
    plan = MembershipPlan((Step("add", "n4"), Step("remove", "n1")))
    print_members(plan, out)
    print_members(MembershipPlan(), out)  # nothing to change: nothing shown
    print_members(MembershipPlan(refused="the etcd cluster has no quorum now"), out)
    assert out.export_text().splitlines() == [
        "The record nodes (etcd members; apply changes them first, one at a time):",
        "  records: add member n4", "  records: remove member n1",
        "The record nodes (etcd members; apply changes them first, one at a time):",
        "refused: the etcd cluster has no quorum now"]
    view = PlanView(Plan(()), {}, {}, {}, members=plan)
    assert view.changed and not PlanView(Plan(()), {}, {}, {}).changed
    assert records.plan_json(plan)["steps"] == ["records: add member n4", "records: remove member n1"]
