"""The engine's rollouts through tests/harness.py (the real run, rollouts, room book and ledger over fake replica
operations and in-memory records): the order of steps and the bounds the update policy sets, a failing version
rolled back, canaries promoted and aborted, two services sharing scarce room, and a lease lost mid-rollout.
Each takes well under a second (`pytest --durations`: a speed is shown by figures, never asserted); the lab tests
keep what only real nodes show."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import pytest
from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec
from fleet.core.errors import LeaseLost, RecordsError
from fleet.engine.probes import ProbeResult
from fleet.engine.replicas import NodeReplicas, next_check_in
from fleet.plan.reconcile import Replica
from fleet.results import Event

V1, V2 = "fleet.local/demo:v1", "fleet.local/demo:v2"
LIFE = ("start", "ready", "stop", "stopped")  # a replica's steps, its stop's end too (the fake's `stop_delay`)
CANARY = ("    lb: {port: 8080}\n    update: {strategy: canary, canary: {steps: [10, 50], pause: 50ms, "
          "auto_promote: %s}}\n")


def web(image: str, replicas: int = 3, update: str = "", extra: str = "") -> ServiceSpec:
    return service("web", replicas, cpu=0.25, image=image,
                   extra=(f"    update: {{{update}}}\n" if update else "") + extra)


async def started_at_v1(h: Harness, spec: ServiceSpec) -> None:
    """`spec` applied and running (revision 1), the fake's bounds reset for what follows."""
    result = await h.apply(spec)
    assert result.ok, result.outcomes
    h.ops.steps.clear()
    h.ops.peak.clear()
    h.ops.low.clear()


async def test_surge_first_starts_each_new_replica_before_stopping_an_old_one():
    h = Harness([worker("w1"), worker("w2")])
    await started_at_v1(h, web(V1))
    old = {r.id for r in h.ops.of("web")}
    result = await h.apply(web(V2, update="max_surge: 1, max_unavailable: 0"))
    assert result.ok and result.outcomes[0].started == 3 and result.outcomes[0].stopped == 3
    kinds = [kind for kind, _ in h.steps("web")]
    assert kinds == ["start", "ready", "stop"] * 3
    assert {rid for kind, rid in h.steps("web") if kind == "stop"} == old
    assert h.ops.peak["web"] <= 4 and h.ops.low["web"] >= 3  # never more than one over, never one short
    assert {r.image for r in h.ops.of("web")} == {V2} and len(h.ops.of("web")) == 3
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "succeeded")]
    assert h.memory().states["web"]["accepted"] == 2 and h.memory().states["web"]["decision"] == "applied"


async def test_unavailable_first_stops_an_old_replica_before_starting_its_replacement():
    h = Harness([worker("w1")])
    await started_at_v1(h, web(V1))
    result = await h.apply(web(V2, update="max_surge: 0, max_unavailable: 1"))
    assert result.ok
    assert [kind for kind, _ in h.steps("web")] == ["stop", "start", "ready"] * 3
    assert h.ops.peak["web"] <= 3 and h.ops.low["web"] >= 2  # never over the count, never two short
    assert {r.image for r in h.ops.of("web")} == {V2}


async def test_a_version_that_never_becomes_ready_is_rolled_back_to_the_last_good_revision():
    h = Harness([worker("w1")])
    await started_at_v1(h, web(V1))
    h.ops.not_ready[V2] = "exited with status 1"
    result = await h.apply(web(V2))
    [outcome] = result.outcomes
    assert not outcome.ok and outcome.reason is not None
    assert "new replicas did not become ready" in outcome.reason and "exited with status 1" in outcome.reason
    assert outcome.reason.endswith("; rolled back to revision 1")
    # The one new replica tried was removed; the old ones never stopped.
    assert [kind for kind, _ in h.steps("web")] == ["start", "remove"]
    assert {r.image for r in h.ops.of("web")} == {V1} and len(h.ops.of("web")) == 3
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "rolled-back")]
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"]) == (1, "rolled-back")
    assert [e.step for e in h.events].count("rollback") == 1
    # Reconcile does not try the failed revision again while the playbook is unchanged.
    h.ops.steps.clear()
    again = await h.apply(web(V2), command="reconcile")
    assert again.outcomes[0].ok and h.steps("web") == []


async def test_a_canary_left_waiting_is_promoted_to_every_replica():
    h = Harness([worker("w1"), worker("w2")], balanced=True)
    await started_at_v1(h, web(V1, extra=CANARY % "false"))
    [outcome] = (await h.apply(web(V2, extra=CANARY % "false"))).outcomes
    assert outcome.ok and outcome.waiting and outcome.started == 1
    assert sorted(r.image for r in h.ops.of("web")) == [V1, V1, V1, V2]
    state = h.memory().states["web"]
    assert (state["decision"], state["canary"], state["accepted"]) == ("canary-waiting", 2, 1)
    # The canary's traffic steps: its weight against the old replicas' went up at each step.
    canary_id = next(r.id for r in h.ops.of("web") if r.image == V2)
    weights = [w for kind, name, routed in h.ops.steps if kind == "route"
               for w in [dict(s.split(":", 2)[0::2] for s in routed.split(","))] if canary_id in w]
    assert len(weights) >= 2 and weights[0] != weights[-1]

    h.ops.steps.clear()
    h.ops.peak.clear()
    h.ops.low.clear()
    rev, result = await h.fresh_engine().turn("promote", "web")
    assert rev.revision == 2 and result.ok
    assert {r.image for r in h.ops.of("web")} == {V2} and len(h.ops.of("web")) == 3
    # The canary holds the surge room: an old replica goes first, then one new for one old, each old one
    # drained from the load balancers before it stops.
    assert [kind for kind, _ in h.steps("web")] == ["drain", "stop"] + ["start", "ready", "drain", "stop"] * 2
    assert h.ops.peak["web"] <= 4 and h.ops.low["web"] >= 3
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "succeeded")]
    assert (h.memory().states["web"]["decision"], h.memory().states["web"]["accepted"]) == ("applied", 2)


async def test_a_waiting_canary_aborted_by_hand_leaves_the_accepted_revision():
    h = Harness([worker("w1")], balanced=True)
    await started_at_v1(h, web(V1, extra=CANARY % "false"))
    await h.apply(web(V2, extra=CANARY % "false"))
    h.ops.steps.clear()
    rev, result = await h.fresh_engine().turn("abort", "web")
    assert rev.revision == 2 and result.ok
    assert {r.image for r in h.ops.of("web")} == {V1} and len(h.ops.of("web")) == 3
    assert [kind for kind, _ in h.steps("web", ["start", "drain", "stop"])] == ["drain", "stop"]
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "aborted")]
    state = h.memory().states["web"]
    assert (state["decision"], state["accepted"], state["canary"]) == ("aborted", 1, None)


async def test_a_canary_serving_errors_is_aborted_on_its_own():
    h = Harness([worker("w1")], balanced=True)
    await started_at_v1(h, web(V1, extra=CANARY % "true"))
    h.ops.error_rate[V2] = 0.5
    [outcome] = (await h.apply(web(V2, extra=CANARY % "true"))).outcomes
    assert not outcome.ok and outcome.reason is not None and "canary aborted at 10%" in outcome.reason
    assert {r.image for r in h.ops.of("web")} == {V1} and len(h.ops.of("web")) == 3
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "aborted")]
    assert h.memory().states["web"]["decision"] == "aborted"


async def test_two_services_sharing_scarce_room_both_roll_without_overfilling_the_node():
    # One node of 2 CPUs, full: each service's two replicas take half a CPU each. `a` goes down to one replica,
    # stopping an old one before starting its replacement; `b`, surge-first, has no room for its surge replica
    # while `a` rolls, and waits for the room `a` frees instead of failing.
    h = Harness([worker("w1")])
    first = "    update: {max_surge: 0, max_unavailable: 1}\n"
    assert (await h.apply(service("a", 2, cpu=0.5, image=V1, extra=first), service("b", 2, cpu=0.5, image=V1))).ok
    h.ops.delay = 0.02
    result = await h.apply(service("a", 1, cpu=0.5, image=V2, extra=first), service("b", 2, cpu=0.5, image=V2))
    assert result.ok, result.outcomes
    assert sorted((r.service, r.image) for r in h.ops.running.values()) == [("a", V2)] + [("b", V2)] * 2
    assert h.ops.cpu_peak["w1"] <= 2.0
    # Once or more: `a`'s replaced replica gives its room back once stopped, which runs behind a's rollout.
    assert {e.service for e in h.events if e.step == "wait"} == {"b"}
    assert h.engine.book.pending == [] and h.engine.book.converging == set()
    assert not any(h.engine.book.stopping.values())


@pytest.mark.parametrize(("balanced", "settled"), [(False, True), (True, True), (True, False)])
async def test_a_stopped_replicas_container_is_removed_while_the_next_batch_starts_within_the_bounds(
        balanced: bool, settled: bool):
    h = Harness([worker("w1"), worker("w2")], balanced=balanced)
    lb = "    lb: {port: 8080}\n" if balanced else ""
    await started_at_v1(h, web(V1, extra=lb))
    old = {r.id for r in h.ops.of("web")}
    h.ops.stop_delay = 0.05
    h.ops.route_delay, h.ops.settled = 0.02, settled
    result = await h.apply(web(V2, update="max_surge: 1, max_unavailable: 0", extra=lb))
    assert result.ok and result.outcomes[0].stopped == 3
    steps = h.steps("web", (*LIFE, "deleted"))
    first = next(rid for kind, rid in steps if kind == "stop")
    # Its process is gone before the next batch starts (the bounds count running processes: never more than
    # one over, never one short), its container is removed while that batch starts.
    assert steps.index(("stopped", first)) < steps.index(next(
        s for s in steps[steps.index(("stopped", first)):] if s[0] == "start")) < steps.index(("deleted", first))
    assert h.ops.peak["web"] <= 4 and h.ops.low["web"] >= 3
    # Every old replica is removed before the outcome, and none is left being removed.
    assert {rid for kind, rid in steps if kind == "deleted"} == old
    assert {r.image for r in h.ops.of("web")} == {V2} and len(h.ops.of("web")) == 3
    assert not any(h.engine.book.stopping.values())
    if balanced:
        # Each old replica was drained before its stop, and out of the load balancer (a route without it) before
        # the next start; before its stop too unless the lb nodes are settled (no worker from before a reload that
        # would not know the drain): then the stop runs while it is removed. The last route lists the new replicas
        # only, ready.
        for rid in old:
            stop_at, drain_at = h.ops.steps.index(("stop", "web", rid)), h.ops.steps.index(("drain", "web", rid))
            assert drain_at < stop_at
            unrouted = next(i for i, (kind, name, routed) in enumerate(h.ops.steps)
                            if i > drain_at and kind == "route" and name == "web" and rid not in routed)
            assert (unrouted > stop_at) == settled, (settled, h.ops.steps)
            later = [i for i, (kind, name, _) in enumerate(h.ops.steps) if kind == "start" and i > stop_at]
            assert not later or unrouted < later[0]
        last = next(routed for kind, name, routed in reversed(h.ops.steps) if kind == "route" and name == "web")
        assert sorted(x.split(":")[0] for x in last.split(",")) == sorted(r.id for r in h.ops.of("web"))
        assert all(x.endswith(":ready:1") for x in last.split(","))


async def test_a_batch_that_needs_the_room_of_a_replica_being_stopped_waits_for_it():
    # One node of 2 CPUs: 3 replicas of half a CPU and one surge replica fill it. The second batch has no room
    # until the first replaced replica is gone: it waits for it (no overfilled node, no failure, no wait for
    # others reported).
    h = Harness([worker("w1")])
    await started_at_v1(h, service("web", 3, cpu=0.5, image=V1))
    h.ops.stop_delay = 0.05
    result = await h.apply(service("web", 3, cpu=0.5, image=V2, extra="    update: {max_surge: 1}\n"))
    assert result.ok, result.outcomes
    assert h.ops.cpu_peak["w1"] <= 2.0
    kinds = [kind for kind, _ in h.steps("web", LIFE)]
    assert kinds == ["start", "ready", "stop", "stopped"] * 3
    assert not [e for e in h.events if e.step == "wait"]


async def test_removals_behind_rollouts_wait_while_containers_are_being_started():
    # Two services rolling at once on two nodes with room to spare: every replaced replica's removal waits for a
    # moment when no container is being started, the starts being what the rollouts wait on
    # (fleet.engine.rooms.RoomBook.behind).
    h = Harness([worker("w1", 4), worker("w2", 4)])
    await started_at_v1(h, service("a", 3, image=V1))
    await started_at_v1(h, service("b", 3, image=V1))
    h.ops.delays, h.ops.stop_delay = {"a": 0.02, "b": 0.05}, 0.01  # their batches out of step
    surge = "    update: {max_surge: 1, max_unavailable: 0}\n"
    result = await h.apply(service("a", 3, image=V2, extra=surge), service("b", 3, image=V2, extra=surge))
    assert result.ok, result.outcomes
    assert h.ops.removed_beside_starts == 0
    assert sum(kind == "deleted" for kind, _, _ in h.ops.steps) == 6
    assert not any(h.engine.book.stopping.values())


async def test_a_removal_waits_behind_starts_at_most_its_patience_and_not_when_a_placement_waits_for_room():
    h = Harness([worker("w1")])
    await started_at_v1(h, service("web", 4, cpu=0.5, image=V1))  # the node's 2 CPUs, full
    book = h.engine.book
    with book.starts():  # a batch's containers being started
        await asyncio.wait_for(book.behind(patience=0.05), 1.0)  # waited its patience, then went
        waiting = asyncio.create_task(book.behind(patience=60.0))
        await asyncio.sleep(0.05)
        assert not waiting.done(), "a removal waits while containers are being started"
        # A batch needs the room that a replica being stopped still holds: it waits for it, and the removal goes.
        book.stopping["web"] = 1
        book.converging.add("web")

        async def place() -> None:
            async with book.reserve(service("web", 5, cpu=0.5, image=V2), 2, 1, set(), None):
                pass

        placing = asyncio.create_task(place())
        await asyncio.wait_for(waiting, 1.0)
        placing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await placing
    waiting = asyncio.create_task(book.behind(patience=60.0))
    await asyncio.wait_for(waiting, 1.0)  # no start under way: at once


async def test_a_removal_waits_for_starts_that_begin_as_the_last_ones_end():
    # Services rolling at once: one batch's starts end, and another's begin before the waiting removal's turn
    # comes round. The removal sees starts under way again and goes on waiting (it went at once when it only
    # woke on the first batch's end: the flake of test_removals_behind_rollouts_wait_… under load).
    h = Harness([worker("w1")])
    book = h.engine.book
    first = book.starts()
    first.__enter__()
    waiting = asyncio.create_task(book.behind(patience=60.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    first.__exit__(None, None, None)
    with book.starts():  # no await between the one batch's end and the next one's start
        await asyncio.sleep(0.05)
        assert not waiting.done(), "a removal never begins while a batch's containers are being started"
    await asyncio.wait_for(waiting, 1.0)


async def test_a_service_with_a_volume_stops_each_old_replica_before_its_next_batch():
    h = Harness([worker("w1"), worker("w2")])
    data = "    volumes: [{type: volume, source: data, target: /data}]\n"
    await started_at_v1(h, web(V1, extra=data))
    h.ops.stop_delay = 0.02
    assert (await h.apply(web(V2, update="max_surge: 1, max_unavailable: 0", extra=data))).ok
    assert [kind for kind, _ in h.steps("web", LIFE)] == ["start", "ready", "stop", "stopped"] * 3


async def test_a_lease_lost_mid_rollout_stops_at_the_next_step_and_writes_nothing_after():
    lost = False

    def guard() -> None:
        if lost:
            raise LeaseLost("the fleet's lease was taken by another run")

    h = Harness([worker("w1")])
    await started_at_v1(h, web(V1))
    writes_before = len(h.memory().writes)

    def lose(r: object) -> None:
        nonlocal lost
        lost = True

    h.ops.on_start = lose
    engine = h.fresh_engine(guard=guard)
    with pytest.raises(LeaseLost):
        await engine.apply([web(V2)])
    # The start under way finished (its new replica ready); the lease is confirmed before every action on nodes,
    # so no old replica was stopped after it was lost and no other step began.
    assert [kind for kind, _ in h.steps("web", LIFE)] == ["start", "ready"]
    assert sorted(r.image for r in h.ops.of("web")) == [V1, V1, V1, V2]
    # Revision 2 was begun before the loss; nothing was written after it.
    assert h.memory().writes[writes_before:] == [("record", "web@2")]
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "in-progress")]


async def test_before_each_batch_the_lease_and_the_pause_are_asked_at_once_and_a_lost_lease_ends_the_run():
    lost, asking, overlapped = False, 0, 0

    async def guard() -> None:  # as the real lease's: a round trip to etcd
        nonlocal asking
        asking += 1
        await asyncio.sleep(0.002)
        asking -= 1
        if lost:
            raise LeaseLost("the fleet's lease was taken by another run")

    async def paused(service: str) -> None:
        nonlocal overlapped, lost
        overlapped += asking > 0
        if overlapped == 5:  # the second batch of the second run: etcd lost beside a lease lost
            lost = True
            raise RecordsError("etcd: no answer")

    h = Harness([worker("w1")])
    await started_at_v1(h, web(V1))
    h.paused = paused  # type: ignore[method-assign]
    assert (await h.fresh_engine(guard=guard).apply([web(V2)])).ok  # type: ignore[arg-type]
    assert overlapped == 3, "each batch's pause read went beside its lease check"
    with pytest.raises(LeaseLost):
        await h.fresh_engine(guard=guard).apply([web(V1)])  # type: ignore[arg-type]
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "succeeded"), (3, "in-progress")]


class PidWatch(NodeReplicas):
    """NodeReplicas with the task listing (`_pid`) answered from `pids` in turn, noting whether a check was under
    way at each call; no node is reached (its checks are `passing` below)."""

    def __init__(self, pids: list[int], under_way: list[bool]) -> None:
        self.view = SimpleNamespace(addresses={"w1": "127.0.0.1"})  # type: ignore[assignment]
        self.events: list[Event] = []
        self.on_event = self.events.append
        self.pids, self.seen, self.under_way = iter(pids), [], under_way

    def _exec_in(self, r: Replica) -> Callable[[list[str], float], Awaitable[int]]:
        async def nothing(argv: list[str], timeout: float) -> int:
            raise AssertionError("an http check runs nothing in the container")
        return nothing

    async def _pid(self, r: Replica, known: int | None = None) -> int | None:
        self.seen.append(self.under_way[0])
        return next(self.pids)


async def test_the_check_that_ends_min_ready_and_its_process_listing_go_at_once(monkeypatch):
    under_way = [False]

    async def passing(health: object, **_: object) -> ProbeResult:
        under_way[0] = True
        await asyncio.sleep(0.01)
        under_way[0] = False
        return ProbeResult(True, "HTTP 200", 0.01)

    monkeypatch.setattr("fleet.engine.replicas.check", passing)
    spec = service("web", 1, extra="    health: {http: /healthz, interval: 1s}\n    update: {min_ready: 0.1s}\n")
    r = Replica("w1", "web-0-abc", "web", 0, 1, spec.spec_hash(), 20000, True, spec.resources, spec.image)
    ops = PidWatch([7, 7], under_way)
    assert await ops.wait_ready(spec, r) is None
    # Listed once when it first passed (after that check), then beside the last check, not after it.
    assert ops.seen == [False, True] and [e.step for e in ops.events] == ["ready"]
    # A process that changed by the last check is a restart: readiness starts again, from the new process.
    ops = PidWatch([7, 8, 8, 8], under_way)
    assert await ops.wait_ready(spec, r) is None
    assert ops.seen == [False, True, False, True]
    # Without a check, the listing is the check: running at the first look, then in the same process after.
    bare = service("web", 1, extra="    update: {min_ready: 0.1s}\n")
    ops = PidWatch([7, 7, 7, 7], under_way)
    assert await ops.wait_ready(bare, r) is None
    assert len(ops.seen) == 4 and [e.step for e in ops.events] == ["ready"]


async def test_a_scaled_count_holds_through_reconcile_until_the_next_apply():
    h = Harness([worker("w1"), worker("w2")])
    await started_at_v1(h, web(V1))
    result = await h.fresh_engine().scale(web(V1), 5)
    assert result.ok and len(h.ops.of("web")) == 5
    assert h.memory().states["web"]["replicas"] == 5
    assert (await h.apply(web(V1), command="reconcile")).ok and len(h.ops.of("web")) == 5
    assert (await h.apply(web(V1))).ok and len(h.ops.of("web")) == 3
    assert h.memory().states["web"]["replicas"] is None
    assert h.memory().outcomes("web") == [(1, "succeeded")]  # the count is not a new revision


def test_a_new_replica_is_checked_every_quarter_second_until_it_passes_then_at_its_interval_through_min_ready():
    """What `NodeReplicas.wait_ready` sleeps between checks (`next_check_in`)."""
    checked = service("web", 1, extra="    health: {http: /healthz, interval: 1s}\n    update: {min_ready: 3s}\n")
    assert next_check_in(checked, None) == 0.25  # not passed yet
    now = time.monotonic()
    assert next_check_in(checked, now) == pytest.approx(1.0)  # passed: its interval
    assert next_check_in(checked, now - 2.5) == pytest.approx(0.5, abs=0.05)  # what is left of min_ready
    assert next_check_in(checked, now - 5) == 0.0  # min_ready over: checked once more, now
    quick = service("web", 1, extra="    health: {http: /healthz, interval: 100ms}\n    update: {min_ready: 3s}\n")
    assert next_check_in(quick, now) == pytest.approx(0.25)  # never faster than before it passed
    assert next_check_in(service("web", 1), now) == 0.25  # no check: its process is polled
