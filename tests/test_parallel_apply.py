"""Services converging at once: the load balancers' syncs coalesced, records written one at a time, placement that
never hands two services the same port or room, one service's failure kept to its own outcome, and progress
output with one row per service."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import pytest
from etcd_local import ETCD
from harness import Harness, service, worker
from rich.console import Console
from test_records import SPEC

from fleet.cli.apply import _Progress
from fleet.config.spec import ServiceSpec
from fleet.core.errors import LbReloadError, LeaseLost, RecordsError, RolloutFailed, RuntimeCommandError
from fleet.engine.concurrency import Batched, Coalesced, SerialRecords
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import Target
from fleet.results import Event, Outcome
from fleet.store.etcd import EtcdLease, SharedState
from fleet.store.etcd_records import EtcdRecords


# --- Coalesced -------------------------------------------------------------------------------------------------
async def test_calls_during_a_sync_share_one_next_sync_that_sees_their_changes():
    state: list[int] = []
    rendered: list[list[int]] = []
    gate = asyncio.Event()

    async def action() -> None:
        snapshot = list(state)
        await gate.wait()
        rendered.append(snapshot)

    sync = Coalesced(action)

    async def change_then_sync(n: int) -> None:
        state.append(n)
        await sync()

    first = asyncio.create_task(change_then_sync(0))
    await asyncio.sleep(0)  # the first run has started and holds the lock
    waiters = [asyncio.create_task(change_then_sync(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *waiters)
    # One run for the first call, one for the three that waited together, which rendered all of their changes.
    assert sync.runs == 2
    assert rendered == [[0], [0, 1, 2, 3]]


async def test_a_sync_that_started_before_a_change_does_not_count_for_it():
    state: list[int] = []
    rendered: list[list[int]] = []
    started = asyncio.Event()
    gate = asyncio.Event()

    async def action() -> None:
        snapshot = list(state)
        started.set()
        await gate.wait()
        rendered.append(snapshot)

    sync = Coalesced(action)
    state.append(1)
    first = asyncio.create_task(sync())
    await started.wait()
    state.append(2)
    second = asyncio.create_task(sync())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, second)
    assert rendered == [[1], [1, 2]]


async def test_a_failed_sync_raises_in_its_caller_and_the_waiting_callers_run_again():
    calls = 0
    gate = asyncio.Event()

    async def action() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
            raise RuntimeError("reload failed")

    sync = Coalesced(action)
    first = asyncio.create_task(sync())
    await asyncio.sleep(0)
    second = asyncio.create_task(sync())
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert calls == 2


async def test_a_sync_after_a_finished_one_runs_again():
    runs = 0

    async def action() -> None:
        nonlocal runs
        runs += 1

    sync = Coalesced(action)
    await sync()
    await sync()
    assert runs == 2


# --- Batched ---------------------------------------------------------------------------------------------------
async def test_asks_made_while_a_batch_runs_go_together_in_the_next_each_with_its_own_result():
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def action(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        await gate.wait()
        return [i * 10 if i != 3 else ValueError("3 refused") for i in items]

    batch = Batched(action)
    first = asyncio.create_task(batch(1))
    await asyncio.sleep(0)  # the first batch is under way
    later = [asyncio.create_task(batch(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(first, *later, return_exceptions=True)
    assert batches == [[1], [2, 3, 4]] and batch.runs == 2
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError), "a refused ask fails its own caller only"


async def test_a_failed_batch_fails_every_ask_in_it_and_not_the_next():
    calls = 0
    gate = asyncio.Event()

    async def action(items: list[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
            raise ConnectionError("lb node unreachable")
        return items

    batch = Batched(action)
    first = asyncio.create_task(batch("a"))
    await asyncio.sleep(0)
    second, third = asyncio.create_task(batch("b")), asyncio.create_task(batch("c"))
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(first, second, third, return_exceptions=True)
    assert isinstance(results[0], ConnectionError) and results[1:] == ["b", "c"]
    assert calls == 2


async def test_when_the_caller_running_a_batch_is_cancelled_the_others_go_in_the_next():
    batches: list[list[str]] = []
    gates = [asyncio.Event(), asyncio.Event(), asyncio.Event()]

    async def action(items: list[str]) -> list[str | BaseException]:
        batches.append(items)
        await gates[len(batches) - 1].wait()
        return [i.upper() for i in items]

    batch = Batched(action)
    first = asyncio.create_task(batch("a"))
    await asyncio.sleep(0)
    runner, other = asyncio.create_task(batch("b")), asyncio.create_task(batch("c"))
    await asyncio.sleep(0)
    gates[0].set()
    assert await first == "A"
    while len(batches) < 2:
        await asyncio.sleep(0)
    assert batches[1] == ["b", "c"]  # run by b's caller, the first to wait
    runner.cancel()
    gates[2].set()
    assert await other == "C"
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert batches == [["a"], ["b", "c"], ["c"]]


# --- SerialRecords ---------------------------------------------------------------------------------------------
class SlowRecords:
    """Records whose every call takes a moment and notes how many calls overlap (the inner store under test)."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.calls: list[str] = []

    async def _call(self, name: str) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(0.01)
        self.calls.append(name)
        self.inside -= 1

    async def record(self, service: str, spec_json: str, spec_hash: str, image: str, user: str) -> int:
        await self._call(f"record {service}")
        return 1

    async def record_many(self, items: Sequence[tuple[str, str, str, str, str]]) -> list[int]:
        await self._call("record_many " + " ".join(item[0] for item in items))
        if any(item[2] == "fails" for item in items):
            raise RecordsError("the fleet's record reached 0 of 3 record nodes, 2 needed")
        return [int(item[0][1:]) for item in items]

    async def finish(self, service: str, revision: int, outcome: Any, reason: str = "") -> bool:
        await self._call(f"finish {service}")
        return True

    async def get(self, service: str, revision: int) -> Any:
        await self._call(f"get {service}")
        return None

    async def latest_succeeded(self, service: str, before: int | None = None) -> Any:
        await self._call(f"latest {service}")
        return None

    async def services(self) -> list[str]:
        await self._call("services")
        return []

    async def state(self, service: str) -> dict[str, Any] | None:
        await self._call(f"state {service}")
        return None

    async def set_state(self, service: str, state: dict[str, Any] | None) -> None:
        await self._call(f"set_state {service}")

    async def list(self, service: str) -> list[Any]:
        await self._call(f"list {service}")
        return []


async def test_records_writes_of_services_at_once_never_overlap():
    inner = SlowRecords()
    records = SerialRecords(inner)
    await asyncio.gather(*(records.set_state(s, {}) for s in "abcd"), records.finish("a", 1, "succeeded"),
                         records.record("s1", "{}", "h", "img", "me"))
    assert inner.most == 1
    assert sorted(inner.calls) == sorted([*(f"set_state {s}" for s in "abcd"), "finish a", "record_many s1"])


async def test_revisions_asked_for_during_a_write_are_written_together():
    inner = SlowRecords()
    records = SerialRecords(inner)
    names = [f"s{i}" for i in range(1, 13)]
    numbers = await asyncio.gather(*(records.record(n, "{}", "h", "img", "me") for n in names))
    assert numbers == list(range(1, 13))  # each caller gets its own service's number
    # The first write goes alone; the eleven that queued meanwhile share the next one.
    assert inner.calls == ["record_many s1", "record_many " + " ".join(names[1:])]
    assert records.writes == 2 and inner.most == 1


async def test_a_failed_batch_fails_every_caller_in_it_and_a_second_revision_of_one_service_waits():
    inner = SlowRecords()
    records = SerialRecords(inner)
    results = await asyncio.gather(records.record("s1", "{}", "h", "img", "me"),
                                   records.record("s2", "{}", "fails", "img", "me"),
                                   records.record("s3", "{}", "h", "img", "me"),
                                   records.record("s3", "{}", "h", "img", "me"), return_exceptions=True)
    assert results[0] == 1
    assert isinstance(results[1], RecordsError) and isinstance(results[2], RecordsError)
    assert results[3] == 3
    assert inner.calls == ["record_many s1", "record_many s2 s3", "record_many s3"]


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed")
async def test_etcd_records_several_services_numbered_apart_and_the_same_specs_again_write_nothing(shared_store):
    async with EtcdLease(shared_store, command="fleet apply", ttl=10) as lease:
        h = EtcdRecords(shared_store, SharedState(shared_store, lease))
        assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
        numbers = await h.record_many([("web", SPEC, "h2", "img:2", "bob"), ("api", SPEC, "a1", "api:1", "bob"),
                                       ("db", SPEC, "d1", "db:1", "bob")])
        assert numbers == [2, 1, 1]
        trips: list[str] = []
        run = shared_store.pool.run

        async def counted(node, command, **kw):  # type: ignore[no-untyped-def]
            trips.append(node.name)
            return await run(node, command, **kw)

        shared_store.pool.run = counted  # type: ignore[method-assign]
        # The same specs again: the revisions in progress, nothing read or written.
        assert await h.record_many([("api", SPEC, "a1", "api:1", "bob"), ("web", SPEC, "h2", "img:2", "bob")]) == [
            1, 2]
        shared_store.pool.run = run  # type: ignore[method-assign]
        assert trips == []
        with pytest.raises(ValueError, match="once"):
            await h.record_many([("web", SPEC, "h3", "img:3", "bob"), ("web", SPEC, "h4", "img:4", "bob")])
    fresh = EtcdRecords(shared_store)
    assert [(r.service, r.revision, r.outcome) for s in ("api", "db", "web") for r in await fresh.list(s)] == [
        ("api", 1, "in-progress"), ("db", 1, "in-progress"), ("web", 1, "in-progress"), ("web", 2, "in-progress")]


async def test_records_reads_do_not_wait_for_a_write():
    inner = SlowRecords()
    records = SerialRecords(inner)
    await asyncio.gather(records.record("s1", "{}", "h", "img", "me"), records.get("a", 1),
                         records.latest_succeeded("a"), records.services(), records.state("a"), records.list("a"))
    assert inner.most == 6


# --- the engine (through tests/harness.py: the real run, room book and rollouts over fake replica operations) ---
def batch(h: Harness, spec: ServiceSpec) -> Awaitable[list[Replica]]:
    """One batch of one new replica of `spec` (revision 1), placed through the room book and started."""
    return h.engine.rollout.converge.start_batch(spec, 1, 1, set())


async def test_services_placing_at_once_never_share_a_port_or_overfill_a_node():
    # Two nodes of 2 CPUs; six services of one 0.5-CPU replica each fit only if no two take the same room.
    h = Harness([worker("w1"), worker("w2")])
    h.ops.delay = 0.05  # each start takes a while, so the services' batches overlap
    specs = [service(f"s{i}", 1, cpu=0.5) for i in range(6)]
    await asyncio.gather(*(batch(h, s) for s in specs))
    given = list(h.ops.running.values())
    assert len(given) == 6 and h.ops.most == 6
    spots = [(r.node, r.port) for r in given]
    assert len(set(spots)) == 6
    for node in ("w1", "w2"):
        assert sum(0.5 for r in given if r.node == node) <= 2.0
    assert h.engine.book.pending == []


async def test_a_ninth_replica_that_does_not_fit_beside_the_placing_ones_fails_its_service_only():
    h = Harness([worker("w1"), worker("w2")])
    h.ops.delay = 0.05
    specs = [service(f"s{i}", 1, cpu=0.5) for i in range(9)]
    results = await asyncio.gather(*(batch(h, s) for s in specs), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], RolloutFailed)
    assert "no room" in str(failed[0])
    assert len(h.engine.view.live) == 8


async def test_a_service_short_of_room_waits_while_another_converging_one_frees_it():
    h = Harness([worker("w1")])
    h.ops.delay = 0.05
    book = h.engine.book
    big, small = service("big", 1, cpu=2.0), service("small", 1, cpu=1.0)
    await batch(h, big)  # the node is full
    book.converging = {"big", "small"}
    waiting = asyncio.create_task(batch(h, small))
    await asyncio.sleep(0.1)
    assert not waiting.done() and book.short == {"small"}
    assert [e.step for e in h.events] == ["wait"] and "no room" in h.events[0].message
    h.engine.view.live = []  # big's replica retired (its rollout goes on)
    await book.changed()
    async with asyncio.timeout(5):
        new = await waiting
    assert [(r.service, r.node) for r in new] == [("small", "w1")]
    assert book.short == set()


async def test_short_of_room_fails_at_once_when_no_other_service_converges():
    h = Harness([worker("w1")])
    await batch(h, service("big", 1, cpu=2.0))
    h.engine.book.converging = {"small"}
    with pytest.raises(RolloutFailed, match="no room"):
        async with asyncio.timeout(5):
            await batch(h, service("small", 1, cpu=1.0))


async def test_services_all_short_of_room_fail_instead_of_waiting_on_each_other():
    h = Harness([worker("w1")])
    book = h.engine.book
    await batch(h, service("big", 1, cpu=2.0))  # held by a service not converging

    async def converge(name: str) -> BaseException | None:
        try:
            async with book.rolling([name]):  # as the run does while a service rolls
                await batch(h, service(name, 1, cpu=1.0))
        except RolloutFailed as exc:
            return exc
        return None

    book.converging = {"b", "c"}
    async with asyncio.timeout(5):
        results = await asyncio.gather(converge("b"), converge("c"))
    assert all(isinstance(r, RolloutFailed) for r in results)
    assert book.converging == set()


async def test_each_service_gets_its_own_outcome_at_most_parallel_at_once():
    h = Harness([worker("w1")], records=False, parallel=2)
    h.ops.delay = 0.02
    h.ops.not_ready["fleet.local/demo:bad"] = "fails its check"
    names = ["a", "bad", "c", "d", "e"]
    specs = [service(n, 1, cpu=0.1, image="fleet.local/demo:bad" if n == "bad" else "fleet.local/demo:v1")
             for n in names]
    t0 = time.monotonic()
    result = await h.fresh_engine().apply(specs)
    outcomes = result.outcomes
    assert [o.service for o in outcomes] == names
    assert [o.ok for o in outcomes] == [True, False, True, True, True]
    [(_, bad_id)] = h.steps("bad", ["start"])
    assert outcomes[1].reason == f"bad: new replicas did not become ready: {bad_id} on w1 fails its check"
    assert h.steps("bad", ["remove"]) == [("remove", bad_id)]
    assert h.ops.most == 2
    assert time.monotonic() - t0 >= 0.06  # five of 0.02 s, two at a time: three rounds


async def test_a_lost_lease_stops_every_service_and_is_raised():
    lost = False

    def guard() -> None:
        if lost:
            raise LeaseLost("the fleet's lease was taken by another run")

    def lose(r: Replica) -> None:
        nonlocal lost
        lost = lost or r.service == "a"

    h = Harness([worker("w1")], guard=guard, parallel=4)
    h.ops.delay = 0.01
    h.ops.on_start = lose
    with pytest.raises(LeaseLost):
        await h.engine.apply([service(n, 2, cpu=0.1) for n in "abc"])
    # Each service stopped at its next step: one start each (the step under way), no second batch, and nothing
    # written to the records after the revisions were begun.
    assert sorted(name for kind, name, _ in h.ops.steps if kind == "start") == ["a", "b", "c"]
    assert [kind for kind, _ in h.memory().writes] == ["record"] * 3


class FinishRecords(SlowRecords):
    """Records that keep what each revision was finished with."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[tuple[str, int, str, str]] = []

    async def finish(self, service: str, revision: int, outcome: Any, reason: str = "") -> bool:
        self.finished.append((service, revision, outcome, reason))
        return True


def web_replacing_one(records: FinishRecords) -> tuple[Harness, Target]:
    """`web` at revision 4 replacing its one replica of an older spec, routed (so the run syncs HAProxy)."""
    h = Harness([worker("w1")], records=records)
    lb = "    lb: {port: 8080}\n"
    old = service("web", 1, image="fleet.local/demo:v0", extra=lb)
    h.ops.run(h.ops.replica(old, 3, "w1", 0))
    return h, Target(service("web", 1, extra=lb), 4, False)


@pytest.mark.parametrize(("step", "error"), [
    ("stop", RuntimeCommandError("w1", "task start", 1, "ctr: failed to start shim")),
    ("route", LbReloadError("lb1", "no master line in show proc output"))])
async def test_a_runtime_or_haproxy_error_mid_rollout_fails_the_revision_with_its_reason(step, error):
    records = FinishRecords()
    h, target = web_replacing_one(records)
    h.ops.fail[step] = error
    await h.engine.observe()
    [outcome] = await h.engine.apply_targets([target])
    assert not outcome.ok and str(error) in (outcome.reason or "")
    assert records.finished == [("web", 4, "failed", f"web: {error}")]


async def test_a_lost_lease_mid_rollout_stops_the_run_and_a_records_error_is_not_written_to_the_records():
    for error in (LeaseLost("the fleet's lease was taken by another run"), RecordsError("0 of 3 record nodes")):
        records = FinishRecords()
        h, target = web_replacing_one(records)
        h.ops.fail["route"] = error
        await h.engine.observe()
        if isinstance(error, LeaseLost):
            with pytest.raises(LeaseLost):
                await h.engine.apply_targets([target])
        else:
            [outcome] = await h.engine.apply_targets([target])
            assert not outcome.ok and outcome.reason == str(error)
        assert records.finished == []


# --- progress output -------------------------------------------------------------------------------------------
def events() -> list[Event]:
    at = 1000.0
    return [
        Event("start", "web", "starting web-0-x on w1:20000", "w1", "web-0-x", at),
        Event("start", "api", "starting api-0-y on w2:20001", "w2", "api-0-y", at + 0.1),
        Event("ready", "web", "web-0-x ready on w1:20000", "w1", "web-0-x", at + 1.0),
        Event("pull", "", "pulled fleet.local/demo:v2", "w3", None, at + 1.1),
        Event("stop", "web", "stopping web-0-old on w1 (replaced)", "w1", "web-0-old", at + 2.0),
        Event("done", "web", "web: 1/1 replicas at revision 2", None, None, at + 2.5),
    ]


def test_plain_output_prefixes_every_step_with_its_service():
    console = Console(record=True, width=100)
    show = _Progress(False, console=console, live=False)
    for e in events():
        show(e)
    lines = [line.strip() for line in console.export_text().splitlines()]
    assert [line.split(" ", 1)[1] for line in lines] == [
        "web: starting web-0-x on w1:20000",
        "api: starting api-0-y on w2:20001",
        "web: web-0-x ready on w1:20000",
        "pulled fleet.local/demo:v2",
        "web: stopping web-0-old on w1 (replaced)",
        "web: 1/1 replicas at revision 2",
    ]


def test_live_table_has_one_row_per_service_with_its_counts_and_state():
    console = Console(record=True, width=120)
    show = _Progress(False, console=console, live=False, clock=lambda: 1004.0)
    show.add("web", 1)
    show.add("api", 2)
    show.add("db", 1)
    for e in events():
        if e.service:
            show._count(e)
    show.finish([Outcome("web", True, 1, 1), Outcome("api", False, reason="api: new replicas did not become ready"),
                 Outcome("db", True, changed=False)])
    console.print(show.table())
    text = console.export_text()
    rows = [line.split() for line in text.splitlines()[1:]]
    assert [r[:6] for r in rows] == [
        ["web", "✓", "1/1", "1", "1", "2.5s"],
        ["api", "✗", "0/2", "1", "0", "3.9s"],
        ["db", "✓", "0/1", "0", "0", "no"],
    ]
    assert "1/1 replicas at revision 2" in text and "new replicas did not become ready" in text
    assert "no change" in text


def test_a_queued_service_says_it_waits_for_a_slot():
    console = Console(record=True, width=120)
    show = _Progress(False, console=console, live=False)
    show.add("later", 2)
    console.print(show.table())
    assert "waiting for a slot" in console.export_text()


def test_json_events_keep_their_shape(capsys):
    show = _Progress(True, console=Console(record=True, width=100))
    show(events()[0])
    data = json.loads(capsys.readouterr().out)
    assert data == {"event": "start", "step": "start", "service": "web", "message": "starting web-0-x on w1:20000",
                    "node": "w1", "container": "web-0-x", "at": 1000.0}


# --- the readiness wait's cheap task listing ---------------------------------------------------------------------
def test_ctr_tasks_is_one_tasks_ls_parsed_to_pids_and_states():
    from fleet.core.model import CommandResult
    from fleet.node.runtime.base import Status
    from fleet.node.runtime.ctr import CtrDriver

    rec = json.loads((Path(__file__).parent / "data" / "ctr" / "tasks_ls.json").read_text())
    call = CtrDriver(namespace="fleet", address="/run/c.sock").tasks()
    assert call.command == ["ctr", "-a", "/run/c.sock", "-n", "fleet", "tasks", "ls"]
    got = call.parse(CommandResult("n1", 0, rec["stdout"], "", 0.0))
    assert got["web-1-rec001"] == (12665, Status.RUNNING)
    assert got["exit3-1-rec003"][1] is Status.STOPPED
    assert len(got) == 4
