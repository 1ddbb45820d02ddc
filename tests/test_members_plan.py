"""The etcd membership planner (fleet.plan.members): one change at a time, and no step ever below a quorum of the
members at that moment; changes that cannot be made safely are refused with what to do instead."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.plan.members import Member, MembershipPlan, Step, plan_members, plan_one, quorum

POOL = [f"n{i}" for i in range(7)]


def _up(*names: str) -> list[Member]:
    return [Member(n, True) for n in names]


def _walk(current: list[Member], plan: MembershipPlan) -> dict[str, bool]:
    """Carry the plan out on a model of the cluster, checking the quorum before and after each step; the voters
    (and their health) at the end. A new member is healthy once its add is done (it is promoted only then)."""
    voters = {m.name: m.healthy for m in current if not m.learner}
    learners = {m.name for m in current if m.learner}
    for step in plan.steps:
        assert sum(voters.values()) >= quorum(len(voters)), f"no quorum to commit {step}"
        if step.action == "add":
            assert step.node not in voters
            learners.discard(step.node)
            voters[step.node] = True
        elif step.node in learners:
            learners.discard(step.node)
        else:
            del voters[step.node]
        assert voters, f"{step} leaves no member"
        assert sum(voters.values()) >= quorum(len(voters)), f"{step} leaves {voters} without a quorum"
    assert not learners
    return voters


def test_add_a_fourth_then_remove_an_original() -> None:
    plan = plan_members(_up("n1", "n2", "n3"), ["n1", "n3", "n4"])
    assert plan.ok and plan.steps == (Step("add", "n4"), Step("remove", "n2"))
    assert plan.lines() == ["records: add member n4", "records: remove member n2"]


def test_a_member_that_is_down_is_removed_before_anything_is_added() -> None:
    # A down voter weighs on every later quorum (with it, 4 voters need 3 healthy): it goes first.
    current = [Member("n1", True), Member("n2", True), Member("n3", False)]
    assert plan_members(current, ["n1", "n2", "n4"]).steps == (Step("remove", "n3"), Step("add", "n4"))


def test_removing_a_majority_at_once_is_refused_with_what_to_do() -> None:
    plan = plan_members(_up("n1", "n2", "n3"), ["n1"])
    assert not plan.ok and plan.steps == ()
    assert plan.refused is not None and "a majority" in plan.refused and "Keep at least 2 of n1, n2, n3" in plan.refused


def test_a_wanted_set_sharing_no_member_is_refused() -> None:
    plan = plan_members(_up("n1", "n2", "n3"), ["n4", "n5", "n6"])
    assert plan.refused is not None and "share no member" in plan.refused


def test_no_quorum_now_is_refused_naming_the_members_to_start() -> None:
    current = [Member("n1", True), Member("n2", False), Member("n3", False)]
    plan = plan_members(current, ["n1", "n2", "n3", "n4"])
    assert plan.refused is not None and "1 of 3 members healthy" in plan.refused and "Start n2, n3" in plan.refused


def test_a_removal_that_would_leave_too_few_healthy_is_refused() -> None:
    current = [Member("n1", True), Member("n2", True), Member("n3", True), Member("n4", False), Member("n5", False)]
    plan = plan_members(current, ["n1", "n2", "n4", "n5"])
    assert plan.refused is not None and "removing n3 would leave 2 healthy of 4" in plan.refused


def test_two_record_nodes_get_a_clear_warning() -> None:
    plan = plan_members(_up("n1"), ["n1", "n2"])
    assert plan.ok and plan.steps == (Step("add", "n2"),)
    assert plan.warnings and "losing either record node stops every write" in plan.warnings[0]
    assert "name a third" in plan.warnings[0]
    assert plan_members(_up("n1", "n2", "n3"), ["n1", "n2", "n3"]).warnings == ()


def test_an_unfinished_add_is_finished_or_its_learner_removed() -> None:
    current = [*_up("n1", "n2", "n3"), Member("n4", True, learner=True)]
    assert plan_members(current, ["n1", "n2", "n3", "n4"]).steps == (Step("add", "n4"),)
    assert plan_members(current, ["n1", "n2", "n3"]).steps == (Step("remove", "n4"),)


def test_nothing_to_do_and_no_cluster_yet() -> None:
    assert plan_members(_up("n1", "n2", "n3"), ["n3", "n1", "n2"]) == MembershipPlan()
    assert plan_members([], ["n1"]) == MembershipPlan()
    assert plan_members(_up("n1"), []).refused is not None


def test_one_change_by_hand() -> None:
    assert plan_one(_up("n1", "n2", "n3"), "add", "n4").steps == (Step("add", "n4"),)
    assert plan_one(_up("n1", "n2", "n3"), "remove", "n2").steps == (Step("remove", "n2"),)
    only = plan_one(_up("n1"), "remove", "n1")
    assert only.refused is not None and "only member" in only.refused
    assert plan_one(_up("n1", "n2"), "remove", "n9").steps == ()


members = st.lists(st.tuples(st.sampled_from(POOL), st.booleans(), st.booleans()), max_size=7,
                   unique_by=lambda t: t[0]).map(lambda ts: [Member(n, ok, learner) for n, ok, learner in ts])
wanted = st.lists(st.sampled_from(POOL), min_size=1, max_size=7, unique=True)


@st.composite
def changes(draw: st.DrawFn) -> tuple[list[Member], list[str]]:
    """A cluster of mostly healthy voters and a wanted set that keeps most of them: the changes that are allowed,
    where a careless order would break a quorum."""
    names = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=7, unique=True))
    current = [Member(n, draw(st.sampled_from([True, True, False])), draw(st.sampled_from([False] * 5 + [True])))
               for n in names]
    kept = [n for n in names if draw(st.sampled_from([True, True, False]))]
    new = draw(st.lists(st.sampled_from([n for n in POOL if n not in names] or POOL), max_size=3, unique=True))
    return current, list(dict.fromkeys(kept + new)) or names[:1]


@settings(max_examples=500)
@given(st.one_of(st.tuples(members, wanted), changes()))
def test_no_step_ever_drops_below_quorum(change: tuple[list[Member], list[str]]) -> None:
    current, want = change
    plan = plan_members(current, want)
    if not plan.ok:
        assert plan.steps == () and plan.refused
        return
    if not [m for m in current if not m.learner]:
        return  # no cluster to change (only learners, or nothing): formed from scratch, not planned
    final = _walk(current, plan)
    assert set(final) == set(want)


@given(members, wanted)
def test_never_removes_a_majority_of_the_voters_in_one_change(current: list[Member], want: list[str]) -> None:
    plan = plan_members(current, want)
    voters = [m.name for m in current if not m.learner]
    removed = [s.node for s in plan.steps if s.action == "remove" and s.node in voters]
    assert len(removed) <= len(voters) // 2


@given(st.lists(st.sampled_from(POOL), min_size=1, max_size=7, unique=True), wanted)
def test_a_healthy_cluster_is_refused_only_a_majority_removal(names: list[str], want: list[str]) -> None:
    plan = plan_members(_up(*names), want)
    kept = [n for n in names if n in want]
    assert plan.ok == (len(kept) >= (len(names) + 1) // 2)
    if plan.ok:
        assert set(_walk(_up(*names), plan)) == set(want)
        # One step per member that changes, and each is taken once.
        assert len(plan.steps) == len(set(names) ^ set(want)) == len({s.node for s in plan.steps})
