"""The rollout as data: rolling-update steps, canary weights and verdicts, and what is left after a crash.

Pure functions only; the rollout engine executes the steps (start, wait ready and in the backend, drain, stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

HAPROXY_MAX_WEIGHT = 256


@dataclass(frozen=True)
class Step:
    """Start `start_new` new replicas, wait until they are ready and in the backend, then drain and stop `stop_old`."""

    start_new: int
    stop_old: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightStep:
    """HAProxy weights for one canary step: every new server gets `new_weight`, every old one `old_weight`.

    `pct` is the share of traffic asked for; `actual_pct` is the share these integer weights give.
    """

    new_weight: int
    old_weight: int
    pct: int
    actual_pct: float


@dataclass(frozen=True)
class Verdict:
    """Whether the canary's 5xx rate stays within bounds; `ok` is None when there is not enough traffic yet.

    Rates are percentages (0-100).
    """

    ok: bool | None
    canary_rate: float
    base_rate: float
    reason: str


@dataclass(frozen=True)
class ReplicaState:
    """One replica as read back from its labels and health: its container ID, spec hash and readiness."""

    id: str
    spec_hash: str | None
    ready: bool
    replica: int | None = None


@dataclass(frozen=True)
class Resume:
    """What is left of an interrupted rollout.

    First stop `stop_first` (surplus or duplicate ready new ones: the rest stay at least `wanted`), then run
    `steps` (which also replace the replicas that are not ready). `keep` are the ready replicas
    already on the new spec hash, counted towards `wanted`.
    """

    stop_first: tuple[str, ...]
    keep: tuple[str, ...]
    steps: tuple[Step, ...]

    @property
    def done(self) -> bool:
        return not self.stop_first and not self.steps


def _check_policy(max_surge: int, max_unavailable: int, batch_size: int | None) -> int:
    if max_surge < 0 or max_unavailable < 0:
        raise ValueError(f"max_surge and max_unavailable must be >= 0, got max_surge={max_surge}, "
                         f"max_unavailable={max_unavailable}")
    if max_surge == 0 and max_unavailable == 0:
        raise ValueError("max_surge and max_unavailable cannot both be 0 (the update could never progress)")
    if batch_size is None:
        return max(1, max_surge + max_unavailable)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def effective_limits(wanted: int, max_surge: int, max_unavailable: int) -> tuple[int, int]:
    """The (surge, unavailable) a rollout to `wanted` replicas really uses.

    At least one replica stays ready: `max_unavailable` is capped at `wanted - 1`. A one-replica service with
    `max_surge: 0` would have to stop its only replica first, so it surges by one instead.
    """
    _check_policy(max_surge, max_unavailable, None)
    if wanted < 1:
        return max_surge, max_unavailable
    unavailable = min(max_unavailable, wanted - 1)
    surge = max_surge if max_surge + unavailable > 0 else 1
    return surge, unavailable


def _plan(old: Sequence[str], have_new: int, wanted: int, max_surge: int, max_unavailable: int,
          batch_size: int | None, sick: Sequence[str] = ()) -> list[Step]:
    batch = _check_policy(max_surge, max_unavailable, batch_size)
    if wanted < 0:
        raise ValueError(f"wanted must be >= 0, got {wanted}")
    if len(set(old) | set(sick)) != len(old) + len(sick):
        raise ValueError("old replica IDs must be unique")
    surge, unavailable = effective_limits(wanted, max_surge, max_unavailable)
    floor = wanted - unavailable if wanted >= 1 else 0
    cap = wanted + surge
    remaining = list(old)
    failing = list(sick)
    new = min(have_new, wanted)
    steps: list[Step] = []
    while new < wanted or remaining or failing:
        # Every replica running at a step boundary is ready, except the failing ones: they run (and hold room)
        # but serve nothing, so stopping them never lowers readiness. They are replaced surge-first: when
        # there is room, their replacements start (and become ready) before they are stopped.
        running = len(remaining) + len(failing) + new
        start = min(wanted - new, max(0, cap - running), batch)
        ready = len(remaining) + new + start
        stop_failing = min(len(failing), batch)
        stop = max(0, min(len(remaining), ready - floor, batch))
        if start == 0 and stop == 0 and stop_failing == 0:
            raise AssertionError("rolling plan cannot progress")  # unreachable when surge + unavailable >= 1
        steps.append(Step(start, tuple(failing[:stop_failing]) + tuple(remaining[:stop])))
        del failing[:stop_failing]
        del remaining[:stop]
        new += start
    return steps


def plan_rolling(old: Sequence[str], wanted: int, max_surge: int, max_unavailable: int,
                 batch_size: int | None) -> list[Step]:
    """The steps replacing the ready replicas `old` by `wanted` new ones.

    Each stop leaves at least `wanted - max_unavailable` (and at least one) replica ready, and a start never
    takes the running count above `wanted + max_surge` (see `effective_limits` for the one-replica case).
    When there are more old replicas than that, surplus ones are stopped before anything new starts.
    At most `batch_size` (default `max_surge + max_unavailable`) replicas are started, and at most as many
    stopped, per step. Old replicas are stopped in the order given.
    """
    return _plan(old, 0, wanted, max_surge, max_unavailable, batch_size)


def resume_plan(replicas: Sequence[ReplicaState], spec_hash: str, wanted: int, max_surge: int,
                max_unavailable: int, batch_size: int | None) -> Resume:
    """What remains to bring a service to `wanted` ready replicas of `spec_hash`: after an interrupted rollout,
    when replicas fail their checks, or when some must move.

    Of the ready new ones, up to `wanted` are kept (distinct replica indexes first, lowest first) and the rest
    are stopped first; ready old ones are replaced by a rolling plan that counts the kept new ones. Replicas
    that are not ready (failing their checks) serve nothing but hold room: they are replaced surge-first, each
    stopped once its replacement is ready where `max_surge` leaves room, or first where it does not. Running
    it again on the result gives an empty plan.
    """
    _check_policy(max_surge, max_unavailable, batch_size)
    if wanted < 0:
        raise ValueError(f"wanted must be >= 0, got {wanted}")
    ids = [r.id for r in replicas]
    if len(set(ids)) != len(ids):
        raise ValueError("replica IDs must be unique")
    unready = [r.id for r in replicas if not r.ready]
    old = [r.id for r in replicas if r.ready and r.spec_hash != spec_hash]
    fresh = [r for r in replicas if r.ready and r.spec_hash == spec_hash]
    seen: set[int] = set()
    unique: list[ReplicaState] = []
    duplicates: list[ReplicaState] = []
    for r in sorted(fresh, key=lambda r: (r.replica is None, r.replica if r.replica is not None else 0, r.id)):
        if r.replica is not None and r.replica in seen:
            duplicates.append(r)
        else:
            unique.append(r)
            if r.replica is not None:
                seen.add(r.replica)
    # A replica sharing its index with another is kept only when needed to reach `wanted`: readiness first.
    ranked = unique + duplicates
    keep, surplus = ranked[:wanted], ranked[wanted:]
    steps = _plan(old, len(keep), wanted, max_surge, max_unavailable, batch_size, sick=unready)
    return Resume(tuple(r.id for r in surplus), tuple(r.id for r in keep), tuple(steps))


def _share(new_count: int, old_count: int, wn: int, wo: int) -> Fraction:
    return Fraction(new_count * wn, new_count * wn + old_count * wo)


def canary_weights(steps: Sequence[int], new_count: int, old_count: int) -> list[WeightStep]:
    """HAProxy server weights (0-256) that send each step's percentage of traffic to the new replicas.

    The weights are the smallest pair whose share is closest to the percentage; 0 and 100 switch one side
    off. The engine appends 100 after the last canary step itself.
    """
    if new_count < 0 or old_count < 0:
        raise ValueError(f"replica counts must be >= 0, got new_count={new_count}, old_count={old_count}")
    out: list[WeightStep] = []
    for pct in steps:
        if not 0 <= pct <= 100:
            raise ValueError(f"canary step must be a percentage from 0 to 100, got {pct}")
        if pct > 0 and new_count == 0:
            raise ValueError(f"canary step {pct}% needs at least one new replica")
        if pct < 100 and old_count == 0:
            raise ValueError(f"canary step {pct}% needs at least one old replica")
        if pct == 0:
            out.append(WeightStep(0, 1, 0, 0.0))
            continue
        if pct == 100:
            out.append(WeightStep(1, 0, 100, 100.0))
            continue
        target = Fraction(pct, 100)
        best: tuple[Fraction, int, int] | None = None
        for wo in range(1, HAPROXY_MAX_WEIGHT + 1):
            ideal = Fraction(wo * pct * old_count, (100 - pct) * new_count)
            for wn in {int(ideal), int(ideal) + 1}:
                wn = min(max(wn, 1), HAPROXY_MAX_WEIGHT)
                error = abs(_share(new_count, old_count, wn, wo) - target)
                if best is None or error < best[0]:
                    best = (error, wn, wo)
            if best is not None and best[0] == 0:
                break
        assert best is not None
        _, wn, wo = best
        out.append(WeightStep(wn, wo, pct, float(_share(new_count, old_count, wn, wo) * 100)))
    return out


def canary_verdict(canary_5xx: int, canary_total: int, base_5xx: int, base_total: int, max_delta_pct: float,
                   min_requests: int = 20, what: str = "5xx") -> Verdict:
    """Compare the 5xx rates (`what` the errors are: a tcp service's are connection errors) of canary and
    baseline over one observation window.

    Undecided (`ok=None`) until the canary has served `min_requests`; a baseline with fewer requests than
    that counts as 0 % errors, so a failing canary is never excused by a quiet baseline.
    """
    for name, bad, total in (("canary", canary_5xx, canary_total), ("base", base_5xx, base_total)):
        if total < 0 or bad < 0 or bad > total:
            raise ValueError(f"{name}: need 0 <= 5xx <= total, got 5xx={bad}, total={total}")
    if max_delta_pct < 0:
        raise ValueError(f"max_delta_pct must be >= 0, got {max_delta_pct}")
    canary_rate = 100.0 * canary_5xx / canary_total if canary_total else 0.0
    base_known = base_total >= min_requests and base_total > 0
    base_rate = 100.0 * base_5xx / base_total if base_known else 0.0
    if canary_total < min_requests:
        return Verdict(None, canary_rate, base_rate,
                       f"not enough canary traffic yet: {canary_total} of {min_requests} requests")
    delta = canary_rate - base_rate
    base_text = (f"baseline {base_rate:.2f}% ({base_5xx}/{base_total})" if base_known
                 else f"baseline taken as 0% (only {base_total} requests)")
    text = (f"canary {what} {canary_rate:.2f}% ({canary_5xx}/{canary_total}) vs {base_text}: "
            f"{delta:+.2f} points, limit +{max_delta_pct:g}")
    return Verdict(delta <= max_delta_pct, canary_rate, base_rate, text)


@dataclass(frozen=True)
class WindowEnd:
    """How a canary window ends: `next` (the canary passed: on to the next step), `extend` (too few requests:
    once, by the window's length) or `fail`; `reason` says why."""

    action: Literal["next", "extend", "fail"]
    reason: str = ""


def window_end(verdict: Verdict, seen: int, min_requests: int, extended: bool) -> WindowEnd:
    """Judge a canary window at its end: failed on its error rate, or on too few requests (`seen`, fewer than
    `min_requests`) once it was already `extended`; too few the first time: extend. A canary is never promoted
    on a window that saw almost nothing."""
    if verdict.ok is False:
        return WindowEnd("fail", verdict.reason)
    if verdict.ok is None or seen < min_requests:
        if not extended:
            return WindowEnd("extend", f"only {seen} requests in the window (min_requests {min_requests}): "
                                       "extending it once by its length")
        return WindowEnd("fail", f"only {seen} requests in the window, extended once (min_requests "
                                 f"{min_requests}): too little traffic to judge the canary")
    return WindowEnd("next", verdict.reason)
