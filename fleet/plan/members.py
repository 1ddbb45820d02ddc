"""How the etcd cluster's members become the inventory's record nodes: one member at a time, never below a quorum.

Pure decisions; `fleet.engine.etcd` executes the steps. An add joins the new member as a learner (it replicates,
it does not vote), starts it, and promotes it once it has caught up, so the voters grow only by a member that is
already healthy; a remove takes one voter out. Invariants (property tests in tests/test_members_plan.py):
- before every step the healthy voters are a quorum of the voters (etcd commits a membership change only then),
  and after it they still are: no step of a plan ever leaves the cluster without a majority;
- one change never removes a majority of the current voters: the kept ones meet every quorum the cluster ever
  had, so each acknowledged write is on a member that stays, even if every removed node vanishes midway;
- a plan that is carried out ends with exactly the wanted voters and no learner left.
A change that cannot keep these is refused with what to do instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

TWO_MEMBERS = ("two record nodes ({a} and {b}) have no tie-breaker: losing either record node stops every write "
               "to the fleet's shared state (etcd needs 2 of 2) until it is back; name a third")


def quorum(voters: int) -> int:
    """Members that must agree for etcd to commit anything, of `voters` voting members."""
    return voters // 2 + 1


@dataclass(frozen=True)
class Member:
    """A member of the running cluster as seen now: the record node it runs on, whether it answers (running and
    serving; a learner: running), and whether it is a learner (added, not yet promoted)."""

    name: str
    healthy: bool
    learner: bool = False


@dataclass(frozen=True)
class Step:
    """One membership change: `add` (join as a learner, start, wait until caught up, promote) or `remove`
    (member remove, then stop that node's etcd and move its data aside)."""

    action: Literal["add", "remove"]
    node: str

    def line(self) -> str:
        """The plan line `fleet plan` and `fleet apply` show."""
        return f"records: {self.action} member {self.node}"


@dataclass(frozen=True)
class MembershipPlan:
    """The steps in order, warnings about the result, or why the change is refused (then no step)."""

    steps: tuple[Step, ...] = ()
    warnings: tuple[str, ...] = ()
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None

    def lines(self) -> list[str]:
        return [s.line() for s in self.steps]


@dataclass
class _Cluster:
    """The voters and learners as the steps change them (healthy per voter)."""

    voters: dict[str, bool]
    learners: set[str] = field(default_factory=set)

    @property
    def healthy(self) -> int:
        return sum(self.voters.values())

    def has_quorum(self) -> bool:
        return self.healthy >= quorum(len(self.voters))


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def plan_members(current: Sequence[Member], wanted: Sequence[str]) -> MembershipPlan:
    """The steps from the `current` members to voters that are exactly `wanted` (the inventory's record nodes,
    in its order), or the reason they cannot be taken safely. No current member: the cluster is not formed yet,
    and is formed by starting every record node together (`EtcdMembers.ensure`), not by these steps."""
    want = list(dict.fromkeys(wanted))
    if not want:
        return MembershipPlan(refused="no record node is named in the inventory: name at least one (three "
                                      "survive the loss of one)")
    warnings = (TWO_MEMBERS.format(a=want[0], b=want[1]),) if len(want) == 2 else ()
    if not current:
        return MembershipPlan(warnings=warnings)
    by_name = {m.name: m for m in current}
    voters = [m.name for m in current if not m.learner]
    kept = [n for n in voters if n in want]
    removing = [n for n in voters if n not in want]
    adding = [n for n in want if n not in by_name or by_name[n].learner]
    stale = [m.name for m in current if m.learner and m.name not in want]
    if not (adding or removing or stale):
        return MembershipPlan(warnings=warnings)

    def refuse(why: str) -> MembershipPlan:
        return MembershipPlan(warnings=warnings, refused=why)

    at_least = (len(voters) + 1) // 2
    if len(kept) < at_least:
        if not kept:
            return refuse(f"the record nodes named in the inventory ({_names(want)}) share no member with the "
                          f"running etcd cluster ({_names(voters)}): its whole history would have to move at once. "
                          f"Keep at least {at_least} of {_names(voters)} named as record nodes while the new ones "
                          f"join, then unname them in a later change")
        return refuse(f"removing {_names(removing)} would take {len(removing)} of the etcd cluster's "
                      f"{len(voters)} members at once, a majority: if they went away midway, no member left would "
                      f"be sure to hold the whole history. Keep at least {at_least} of {_names(voters)} named as "
                      f"record nodes for this change, then remove the others in a later one")
    cluster = _Cluster({n: by_name[n].healthy for n in voters}, {m.name for m in current if m.learner})
    if not cluster.has_quorum():
        up = [n for n in voters if by_name[n].healthy]
        down = [n for n in voters if not by_name[n].healthy]
        return refuse(f"the etcd cluster has no quorum now: {len(up)} of {len(voters)} members healthy "
                      f"({_names(up)}), {quorum(len(voters))} needed. Start {_names(down)} first (the next run "
                      f"restarts a member that died; `fleet records status` shows them), then retry")
    steps: list[Step] = []
    # Learners left by an add that did not finish, for nodes no longer wanted: they do not vote, so removing
    # them changes no quorum.
    for name in stale:
        cluster.learners.discard(name)
        steps.append(Step("remove", name))
    # Voters that are down first: removing one lowers the quorum and costs no healthy member.
    for name in [n for n in removing if not cluster.voters[n]]:
        del cluster.voters[name]
        steps.append(Step("remove", name))
    # Adds before healthy removals: the cluster tolerates at least as many failures throughout. A learner is
    # promoted only once it is running and caught up, so the voters grow by a healthy member.
    for name in adding:
        cluster.learners.discard(name)
        cluster.voters[name] = True
        steps.append(Step("add", name))
    for name in [n for n in removing if cluster.voters.get(n)]:
        del cluster.voters[name]
        if not cluster.has_quorum():
            down = [n for n, ok in cluster.voters.items() if not ok]
            return refuse(f"removing {name} would leave {cluster.healthy} healthy of {len(cluster.voters)} "
                          f"members, {quorum(len(cluster.voters))} needed: start {_names(down)} first, then retry")
        steps.append(Step("remove", name))
    return MembershipPlan(tuple(steps), warnings)


def plan_one(current: Sequence[Member], action: Literal["add", "remove"], node: str) -> MembershipPlan:
    """`fleet records add|remove NODE`: that one change, checked as `plan_members` checks a whole change."""
    voters = [m.name for m in current if not m.learner]
    if action == "add":
        wanted = [*voters, node] if node not in voters else voters
    else:
        wanted = [n for n in voters if n != node]
        if voters and not wanted:
            return MembershipPlan(refused=f"{node} is the etcd cluster's only member: removing it would lose the "
                                          f"fleet's shared state; add another record node first")
    plan = plan_members(current, wanted)
    if not plan.ok:
        return plan
    # Only this node's step: other pending changes (a stale learner) are the next apply's.
    return MembershipPlan(tuple(s for s in plan.steps if s.node == node), plan.warnings)
