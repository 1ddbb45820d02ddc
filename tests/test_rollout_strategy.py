"""The rolling plan keeps its invariants for any policy; canary weights and verdicts; resuming after a crash."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.plan.rollout import (
    ReplicaState,
    Step,
    canary_verdict,
    canary_weights,
    effective_limits,
    plan_rolling,
    resume_plan,
)

counts = st.integers(min_value=0, max_value=12)
policies = st.tuples(st.integers(0, 4), st.integers(0, 4)).filter(lambda p: p != (0, 0))
batches = st.one_of(st.none(), st.integers(1, 5))


def _simulate(old: Sequence[str], have_new: int, wanted: int, surge: int, unavailable: int,
              steps: Sequence[Step], sick: Sequence[str] = ()) -> tuple[int, list[str]]:
    """Run the steps moment by moment and assert the invariants; returns (new started, old stopped).

    `sick` replicas run (they hold room) but are not ready: stopping them never lowers readiness."""
    limit_surge, limit_unavail = effective_limits(wanted, surge, unavailable)
    floor = max(wanted - limit_unavail, 1) if wanted >= 1 else 0
    cap = wanted + limit_surge
    remaining, failing, new, started = list(old), list(sick), have_new, 0
    initial_ready = len(remaining) + new
    stopped: list[str] = []
    for step in steps:
        assert step.start_new > 0 or step.stop_old, "empty step"
        running_before = len(remaining) + len(failing) + new
        # Starting: the new ones run but are not ready yet.
        if step.start_new:
            assert running_before + step.start_new <= cap, f"surge over {cap} at {step}"
        assert len(remaining) + new >= min(initial_ready, floor)
        needed = new < wanted
        new += step.start_new
        started += step.start_new
        # Draining one by one: readiness falls to its lowest when the last one of the step has stopped.
        for rid in step.stop_old:
            assert rid in remaining or rid in failing, f"{rid} stopped twice or unknown"
            if rid in failing:
                # A failing replica with room to surge is stopped only once its replacement started (and,
                # the step being done in order, became ready).
                assert step.start_new > 0 or running_before >= cap or not needed, f"{rid} stopped too early"
                failing.remove(rid)
            else:
                remaining.remove(rid)
            stopped.append(rid)
        if step.stop_old:
            assert len(remaining) + new >= min(initial_ready, floor), f"ready below {floor} after {step}"
            assert wanted == 0 or initial_ready == 0 or len(remaining) + new >= 1
    assert remaining == [] and failing == []
    assert new == wanted
    return started, stopped


@settings(max_examples=400, deadline=None)
@given(old_n=counts, wanted=counts, policy=policies, batch=batches)
def test_rolling_plan_invariants_hold_for_any_policy(old_n, wanted, policy, batch):
    surge, unavailable = policy
    old = [f"old-{i}" for i in range(old_n)]
    steps = plan_rolling(old, wanted, surge, unavailable, batch)
    started, stopped = _simulate(old, 0, wanted, surge, unavailable, steps)
    assert started == wanted
    assert sorted(stopped) == sorted(old)
    assert stopped == old  # in the order given
    assert len(steps) <= old_n + wanted


@settings(max_examples=200, deadline=None)
@given(old_n=st.integers(1, 12), wanted=st.integers(2, 12), policy=policies, batch=batches)
def test_rolling_plan_never_exceeds_the_configured_surge_or_unavailability(old_n, wanted, policy, batch):
    surge, unavailable = policy
    old = [f"o{i}" for i in range(old_n)]
    running = ready = old_n
    for step in plan_rolling(old, wanted, surge, unavailable, batch):
        if step.start_new:
            assert running + step.start_new <= wanted + surge
        running += step.start_new - len(step.stop_old)
        ready += step.start_new - len(step.stop_old)
        if step.stop_old:
            assert ready >= max(1, wanted - unavailable)


def test_default_policy_replaces_one_at_a_time_with_one_surge():
    assert plan_rolling(["a", "b", "c"], 3, 1, 0, None) == [Step(1, ("a",)), Step(1, ("b",)), Step(1, ("c",))]


def test_zero_surge_stops_first_then_replaces():
    assert plan_rolling(["a", "b", "c"], 3, 0, 1, None) == [
        Step(0, ("a",)), Step(1, ("b",)), Step(1, ("c",)), Step(1, ())]


def test_batch_size_bounds_starts_and_stops_per_step():
    assert plan_rolling(["a", "b", "c", "d"], 4, 1, 1, 2) == [Step(1, ("a", "b")), Step(2, ("c", "d")), Step(1, ())]


def test_scale_down_stops_surplus_before_starting_new():
    steps = plan_rolling(["a", "b", "c", "d", "e"], 2, 1, 0, None)
    assert steps[:3] == [Step(0, ("a",)), Step(0, ("b",)), Step(0, ("c",))]
    assert sum(s.start_new for s in steps) == 2


def test_scale_up_starts_new_before_stopping_any_old():
    steps = plan_rolling(["a"], 3, 1, 0, None)
    assert steps == [Step(1, ()), Step(1, ()), Step(1, ("a",))]


def test_scale_to_zero_stops_everything_in_batches():
    assert plan_rolling(["a", "b", "c"], 0, 1, 0, 2) == [Step(0, ("a", "b")), Step(0, ("c",))]


def test_single_replica_with_zero_surge_surges_by_one_rather_than_go_dark():
    assert effective_limits(1, 0, 1) == (1, 0)
    assert plan_rolling(["a"], 1, 0, 1, None) == [Step(1, ("a",))]


def test_unavailable_is_capped_to_keep_one_replica_ready():
    assert effective_limits(3, 0, 5) == (0, 2)
    steps = plan_rolling(["a", "b", "c"], 3, 0, 5, None)
    assert steps[0] == Step(0, ("a", "b"))


def test_zero_surge_and_zero_unavailable_rejected_naming_both_fields():
    with pytest.raises(ValueError, match="max_surge and max_unavailable cannot both be 0"):
        plan_rolling(["a"], 1, 0, 0, None)


@pytest.mark.parametrize("args", [(-1, 1, None), (1, -1, None), (1, 0, 0)])
def test_negative_limits_and_empty_batch_rejected(args):
    with pytest.raises(ValueError, match=r"max_surge|batch_size"):
        plan_rolling(["a"], 1, *args)


def test_negative_wanted_and_duplicate_old_ids_rejected():
    with pytest.raises(ValueError, match="wanted"):
        plan_rolling([], -1, 1, 0, None)
    with pytest.raises(ValueError, match="unique"):
        plan_rolling(["a", "a"], 1, 1, 0, None)


# ---- canary ------------------------------------------------------------------------------------------------


def test_canary_weights_exact_for_one_new_three_old():
    ws = canary_weights([10, 50], 1, 3)
    assert [(w.new_weight, w.old_weight, w.pct, w.actual_pct) for w in ws] == [(1, 3, 10, 10.0), (3, 1, 50, 50.0)]


def test_canary_weights_switch_a_side_off_at_0_and_100():
    zero, full = canary_weights([0, 100], 2, 2)
    assert (zero.new_weight, zero.old_weight, full.new_weight, full.old_weight) == (0, 1, 1, 0)


def test_canary_weights_clamp_to_haproxy_range_and_report_actual_share():
    (w,) = canary_weights([99], 1, 3)
    assert (w.new_weight, w.old_weight) == (256, 1)
    assert w.actual_pct == pytest.approx(100 * 256 / 259)


@settings(max_examples=200, deadline=None)
@given(pct=st.integers(1, 99), new=st.integers(1, 20), old=st.integers(1, 20))
def test_canary_weights_within_range_and_close_to_the_asked_share(pct, new, old):
    (w,) = canary_weights([pct], new, old)
    assert 1 <= w.new_weight <= 256 and 1 <= w.old_weight <= 256
    share = 100 * new * w.new_weight / (new * w.new_weight + old * w.old_weight)
    assert share == pytest.approx(w.actual_pct)
    # 256:1 weights can reach 256*new/old: within 0.5 points whenever the ask is reachable.
    if pct / (100 - pct) <= 256 * new / old and (100 - pct) / pct <= 256 * old / new:
        assert abs(share - pct) <= 0.5


def test_canary_weights_reject_impossible_steps():
    with pytest.raises(ValueError, match="new replica"):
        canary_weights([10], 0, 3)
    with pytest.raises(ValueError, match="old replica"):
        canary_weights([10], 1, 0)
    with pytest.raises(ValueError, match="percentage"):
        canary_weights([101], 1, 1)


def test_canary_verdict_fails_when_canary_errors_exceed_the_delta():
    v = canary_verdict(3, 100, 1, 200, 1.0)
    assert v.ok is False
    assert (v.canary_rate, v.base_rate) == (3.0, 0.5)
    assert "+2.50 points" in v.reason


def test_canary_verdict_passes_within_the_delta():
    v = canary_verdict(1, 100, 1, 200, 1.0)
    assert v.ok is True


def test_canary_verdict_undecided_without_enough_canary_traffic():
    v = canary_verdict(5, 10, 0, 500, 1.0)
    assert v.ok is None
    assert "10 of 20" in v.reason


def test_canary_verdict_quiet_baseline_counts_as_zero_errors():
    v = canary_verdict(2, 100, 5, 5, 1.0)
    assert v.ok is False
    assert v.base_rate == 0.0


def test_canary_verdict_rejects_more_errors_than_requests():
    with pytest.raises(ValueError, match="canary"):
        canary_verdict(5, 4, 0, 0, 1.0)


# ---- resume -------------------------------------------------------------------------------------------------


def test_resume_after_crash_mid_rollout_counts_ready_new_ones():
    reps = [ReplicaState("o1", "old", True, 1), ReplicaState("o2", "old", True, 2),
            ReplicaState("n1", "new", True, 1), ReplicaState("n3", "new", False, 3)]
    r = resume_plan(reps, "new", 3, 1, 0, None)
    assert r.stop_first == ()
    assert r.keep == ("n1",)
    # No room to surge while n3 holds it: the failing one goes first (it serves nothing), then the rolling steps.
    assert r.steps == (Step(0, ("n3",)), Step(1, ("o1",)), Step(1, ("o2",)))


def test_failing_replicas_are_replaced_surge_first_when_there_is_room():
    reps = [ReplicaState("a", "new", False, 0), ReplicaState("b", "new", False, 1)]
    r = resume_plan(reps, "new", 2, 1, 0, None)
    assert r.keep == () and r.stop_first == ()
    # Each replacement starts (and is ready) before a failing replica is stopped.
    assert r.steps == (Step(1, ("a",)), Step(1, ("b",)))


def test_one_failing_replica_of_one_is_replaced_before_it_stops_even_with_max_surge_zero():
    r = resume_plan([ReplicaState("only", "new", False, 0)], "new", 1, 0, 1, None)
    assert r.steps == (Step(1, ("only",)),)


def test_resume_on_converged_service_is_done():
    reps = [ReplicaState(f"n{i}", "new", True, i) for i in range(3)]
    r = resume_plan(reps, "new", 3, 1, 0, None)
    assert r.done and r.keep == ("n0", "n1", "n2")


def test_resume_stops_surplus_new_replicas_preferring_duplicate_indexes():
    reps = [ReplicaState("a", "new", True, 1), ReplicaState("b", "new", True, 1), ReplicaState("c", "new", True, 2)]
    r = resume_plan(reps, "new", 2, 1, 0, None)
    assert r.keep == ("a", "c") and r.stop_first == ("b",) and r.steps == ()


replica_sets = st.lists(
    st.tuples(st.sampled_from(["old", "new", "older"]), st.booleans(), st.one_of(st.none(), st.integers(0, 5))),
    max_size=12)


@settings(max_examples=400, deadline=None)
@given(reps=replica_sets, wanted=counts, policy=policies, batch=batches)
def test_resume_converges_without_duplicates_and_never_goes_dark(reps, wanted, policy, batch):
    surge, unavailable = policy
    states = [ReplicaState(f"r{i}", h, ready, idx) for i, (h, ready, idx) in enumerate(reps)]
    plan = resume_plan(states, "new", wanted, surge, unavailable, batch)
    ready_before = sum(s.ready for s in states)
    stopped = set(plan.stop_first)
    assert stopped.isdisjoint(plan.keep)
    assert len(plan.keep) <= wanted
    # Stopping first never takes away readiness needed for `wanted`, and never a replica that is not ready.
    ready_after_cleanup = sum(1 for s in states if s.ready and s.id not in stopped)
    assert ready_after_cleanup >= min(ready_before, wanted)
    old = [s.id for s in states if s.ready and s.spec_hash != "new"]
    sick = [s.id for s in states if not s.ready]
    started, stopped_old = _simulate(old, len(plan.keep), wanted, surge, unavailable, plan.steps, sick)
    assert len(plan.keep) + started == wanted
    assert sorted(stopped_old) == sorted(old + sick)
    assert stopped.isdisjoint(stopped_old)
    # Every replica is either kept, stopped first, or stopped by the plan: exactly once.
    assert sorted([*plan.keep, *plan.stop_first, *stopped_old]) == sorted(s.id for s in states)
    # After running it, the service reads back as converged: resuming again is a no-op.
    after = [ReplicaState(k, "new", True, i) for i, k in enumerate(plan.keep)]
    after += [ReplicaState(f"x{i}", "new", True, 100 + i) for i in range(started)]
    again = resume_plan(after, "new", wanted, surge, unavailable, batch)
    assert again.done
