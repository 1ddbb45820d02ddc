"""`fleet rollout pause/resume` through tests/harness.py (the real engine and ledger over fake replica operations
and in-memory records): a pause asked mid-rollout stops it before its next batch, saying who paused it; apply and
reconcile leave a paused rollout where it is; resume carries it on to the end and records it as succeeded. A turn
by hand that a pause stopped (`fleet deploy`, `restart`, `rollback`) is said so on the service's record, and
resume ends it as that turn records an unpaused one: deployed, a restart, pinned, or failed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec
from fleet.engine import byhand
from fleet.engine.ledger import TurnKind
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import PausedTurn, ServiceState, intent_hash
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


def pause_at_revision(h: Harness, revision: int) -> None:
    """A pause asked as the first replica of `revision` starts (the batch under way finishes)."""
    def pause(r: Replica) -> None:
        if r.revision == revision:
            h.pauses["web"] = Pause("ann@ci", 1_700_000_000.0)

    h.ops.on_start = pause


def unpause(h: Harness) -> None:
    del h.pauses["web"]
    h.ops.on_start = None


@pytest.mark.parametrize(("kind", "reason", "decision", "image"), [
    ("deploy", f"image {V2} by `fleet deploy`", "deployed", V2),
    ("restart", "restart of revision 1 by `fleet restart`", "applied", V1),
])
async def test_a_paused_turn_once_resumed_is_recorded_as_the_turn_unpaused_is(kind: TurnKind, reason: str,
                                                                              decision: str, image: str):
    h = Harness([worker("w1"), worker("w2")])
    assert (await h.apply(web())).ok
    pause_at_revision(h, 2)
    _, paused = await h.fresh_engine().turn(kind, "web", image=V2)
    assert paused.outcomes[0].waiting and h.memory().outcomes("web") == [(1, "succeeded"), (2, "in-progress")]
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"]) == (1, "applied")
    assert state["paused_turn"] == {"kind": kind, "revision": 2, "shown": 1}

    unpause(h)
    [done] = (await byhand.resume(h.fresh_engine(), "web")).outcomes
    assert done.ok and not done.waiting and images(h) == [image] * 3
    last = (await h.memory().list("web"))[-1]
    assert (last.revision, last.outcome, last.reason) == (2, "succeeded", reason)
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"], state["intent"]) == (2, decision, intent_hash(web()))
    assert "paused_turn" not in state
    # Reconcile keeps what the turn made (a deploy's image is not taken back to the playbook's).
    h.ops.steps.clear()
    assert (await h.apply(web(), command="reconcile")).ok and h.steps("web") == [] and images(h) == [image] * 3


async def test_a_paused_deploy_that_fails_once_resumed_is_recorded_failed_as_an_unpaused_one():
    h = Harness([worker("w1"), worker("w2")])
    assert (await h.apply(web())).ok
    pause_at_revision(h, 2)
    await h.fresh_engine().turn("deploy", "web", image=V2)
    unpause(h)
    h.ops.not_ready[V2] = "exited with status 1"
    [failed] = (await byhand.resume(h.fresh_engine(), "web")).outcomes
    assert not failed.ok and failed.reason is not None and "exited with status 1" in failed.reason
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "failed")]
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"], state["intent"]) == (1, "applied", intent_hash(web()))
    assert "paused_turn" not in state
    # Nothing left to resume; reconcile brings the accepted revision back on every replica.
    [nothing] = (await byhand.resume(h.fresh_engine(), "web")).outcomes
    assert nothing.reason == "no rollout in progress to resume"
    assert (await h.apply(web(), command="reconcile")).ok and images(h) == [V1] * 3


def test_a_paused_turn_is_read_back_from_the_record_and_a_bad_one_is_named():
    state = ServiceState(1, "applied", "i", paused_turn=PausedTurn("deploy", 2, 1))
    assert ServiceState.from_json(state.to_json()) == state
    assert "paused_turn" not in ServiceState(1, "applied").to_json()  # records without one are as they were
    with pytest.raises(ValueError, match=r"paused_turn: expected \{kind, revision, shown\}, got \{'kind': 'scale'"):
        ServiceState.from_json({**state.to_json(), "paused_turn": {"kind": "scale", "revision": 2, "shown": 1}})


CANARY = ("    lb: {port: 8080}\n    update: {strategy: canary, canary: {steps: [10, 50], pause: 50ms, "
          "auto_promote: false}}\n")


async def rolled_back(h: Harness) -> None:
    """Revisions 1 (v1) and 2 (v2) applied: `fleet rollback` to 1 is revision 3."""
    assert (await h.apply(web())).ok and (await h.apply(web(V2))).ok


async def canary_waits(h: Harness) -> None:
    """Revision 1 (v1) applied, revision 2 (v2) a canary waiting for `fleet promote`."""
    assert (await h.apply(service("web", 3, cpu=0.25, image=V1, extra=CANARY))).ok
    assert (await h.apply(service("web", 3, cpu=0.25, image=V2, extra=CANARY))).outcomes[0].waiting


@pytest.mark.parametrize(("kind", "to", "before", "revision", "shown", "image", "reason", "decision"), [
    ("rollback", 1, rolled_back, 3, 1, V1, "rollback to revision 1", "pinned"),
    ("promote", None, canary_waits, 2, 2, V2, "promoted by `fleet promote`", "applied"),
])
async def test_a_paused_rollback_or_promote_once_resumed_is_recorded_as_an_unpaused_one(
        kind: TurnKind, to: int | None, before: Callable[[Harness], Awaitable[None]], revision: int, shown: int,
        image: str, reason: str, decision: str):
    h = Harness([worker("w1")], balanced=True)
    await before(h)
    pause_at_revision(h, revision)
    _, paused = await h.fresh_engine().turn(kind, "web", to)
    assert paused.outcomes[0].waiting and h.memory().states["web"]["paused_turn"] == {
        "kind": kind, "revision": revision, "shown": shown}
    unpause(h)
    [done] = (await byhand.resume(h.fresh_engine(), "web")).outcomes
    assert done.ok and images(h) == [image] * 3
    last = (await h.memory().list("web"))[-1]
    assert (last.revision, last.outcome, last.reason) == (revision, "succeeded", reason)
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"]) == (revision, decision) and "paused_turn" not in state


async def test_a_paused_apply_set_once_resumed_is_recorded_as_the_deploy_it_is():
    h = Harness([worker("w1"), worker("w2")])
    assert (await h.apply(web())).ok
    pause_at_revision(h, 2)
    [paused] = (await h.fresh_engine().apply([web()], "apply", images={"web": V2})).outcomes
    assert paused.waiting and h.memory().states["web"]["paused_turn"] == {
        "kind": "set", "revision": 2, "shown": 2, "set_from": intent_hash(web())}
    unpause(h)
    [done] = (await byhand.resume(h.fresh_engine(), "web")).outcomes
    assert done.ok and images(h) == [V2] * 3 and h.memory().outcomes("web") == [(1, "succeeded"), (2, "succeeded")]
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"], state["intent"]) == (2, "deployed", intent_hash(web()))
    assert state["reason"] == f"image {V2} by `fleet apply --set`" and "paused_turn" not in state
    h.ops.steps.clear()
    assert (await h.apply(web(), command="reconcile")).ok and h.steps("web") == [] and images(h) == [V2] * 3
