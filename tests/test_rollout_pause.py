"""`fleet rollout pause/resume` through tests/harness.py (the real engine and ledger over fake replica operations
and in-memory records): a pause asked mid-rollout stops it before its next batch, saying who paused it; apply and
reconcile leave a paused rollout where it is; resume carries it on to the end and records it as succeeded."""

from __future__ import annotations

from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec
from fleet.engine import byhand
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.pause import Pause

V1, V2 = "fleet.local/demo:v1", "fleet.local/demo:v2"


def web(image: str = V1) -> ServiceSpec:
    return service("web", 3, cpu=0.25, image=image)


def images(h: Harness) -> list[str]:
    return sorted(r.image for r in h.ops.of("web"))


async def test_pause_mid_rollout_stops_before_the_next_batch_and_resume_finishes_it():
    h = Harness([worker("w1"), worker("w2")])
    assert (await h.apply(web())).ok
    h.ops.steps.clear()

    def pause_at_first_new(r: Replica) -> None:
        if r.image == V2:
            h.pauses["web"] = Pause("ann@ci", 1_700_000_000.0)

    h.ops.on_start = pause_at_first_new
    result = await h.apply(web(V2))
    [out] = result.outcomes
    assert out.ok and out.waiting and out.reason.startswith("paused by ann@ci at "), out
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"]  # the batch under way finished
    assert images(h) == [V1, V1, V2]
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "in-progress")]
    assert h.memory().states["web"]["accepted"] == 1
    assert any(e.step == "paused" for e in h.events)

    # Paused: neither reconcile nor apply takes another batch, nor goes back.
    h.ops.steps.clear()
    for command in ("reconcile", "apply"):
        [again] = (await h.apply(web(V2), command=command)).outcomes
        assert again.waiting and "paused by ann@ci" in (again.reason or "")
    assert h.steps("web") == [] and images(h) == [V1, V1, V2]

    # Resume: the pause lifted, the rest rolls at the same revision, recorded as succeeded.
    del h.pauses["web"]
    h.ops.on_start = None
    [done] = (await byhand.resume(h.fresh_engine(), "web")).outcomes
    assert done.ok and not done.waiting
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"] * 2
    assert images(h) == [V2, V2, V2]
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "succeeded")]
    assert (h.memory().states["web"]["accepted"], h.memory().states["web"]["decision"]) == (2, "applied")
    h.ops.steps.clear()
    assert (await h.apply(web(V2), command="reconcile")).ok and h.steps("web") == []


async def test_pause_before_a_rollout_changes_nothing_and_resume_without_one_says_so():
    h = Harness([worker("w1")])
    assert (await h.apply(web())).ok
    h.pauses["web"] = Pause("bob@laptop", 1_700_000_000.0)
    h.ops.steps.clear()
    [out] = (await h.apply(web(V2))).outcomes
    assert out.waiting and h.steps("web") == [] and images(h) == [V1, V1, V1]
    # A restart is paused the same way, and not recorded as done.
    _, restarted = await h.fresh_engine().turn("restart", "web")
    assert restarted.outcomes[0].waiting and h.steps("web") == []
    del h.pauses["web"]
    h2 = Harness([worker("w1")])
    assert (await h2.apply(web())).ok
    [nothing] = (await byhand.resume(h2.fresh_engine(), "web")).outcomes
    assert nothing.ok and nothing.reason == "no rollout in progress to resume" and not nothing.changed
