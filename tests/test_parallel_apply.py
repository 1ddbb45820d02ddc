"""Services converging at once: the load balancers' syncs coalesced, records written one at a time, placement that
never hands two services the same port or room, one service's failure kept to its own outcome, and progress
output with one row per service."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fleet.cli.apply import _Progress
from fleet.config.spec import ServiceSpec, parse_playbook
from fleet.core.errors import LbReloadError, LeaseLost, RecordsError, RolloutFailed, RuntimeCommandError
from fleet.core.model import Node
from fleet.engine.apply import Engine
from fleet.engine.concurrency import Coalesced, SerialRecords
from fleet.engine.nodes import NodeReport
from fleet.node.facts import NodeFacts
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import Target
from fleet.plan.scheduler import Assignment
from fleet.results import Event, Outcome
from fleet.transport import Pool

GiB = 1024**3


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


async def test_fleet_history_records_several_services_in_one_read_and_one_write(farm, pool, tmp_path):
    from test_records import SPEC, history

    base = str(tmp_path / "nodes" / "{node}" / "fleet")
    h = history(pool, farm, base)
    assert await h.record("web", SPEC, "h1", "img:1", "alice") == 1
    trips: list[str] = []
    run = pool.run

    async def counted(node, command, **kw):  # type: ignore[no-untyped-def]
        trips.append(node.name)
        return await run(node, command, **kw)

    pool.run = counted  # type: ignore[method-assign]
    numbers = await h.record_many([("web", SPEC, "h2", "img:2", "bob"), ("api", SPEC, "a1", "api:1", "bob"),
                                   ("db", SPEC, "d1", "db:1", "bob")])
    pool.run = run  # type: ignore[method-assign]
    assert numbers == [2, 1, 1]
    assert sorted(trips) == sorted([n.name for n in farm.nodes] * 2)  # one read and one write per record node
    # The same specs again: the revisions in progress, nothing written.
    assert await h.record_many([("api", SPEC, "a1", "api:1", "bob"), ("web", SPEC, "h2", "img:2", "bob")]) == [1, 2]
    fresh = history(pool, farm, base)
    assert [(r.service, r.revision, r.outcome) for s in ("api", "db", "web") for r in await fresh.list(s)] == [
        ("api", 1, "in-progress"), ("db", 1, "in-progress"), ("web", 1, "in-progress"), ("web", 2, "in-progress")]
    with pytest.raises(ValueError, match="once"):
        await h.record_many([("web", SPEC, "h3", "img:3", "bob"), ("web", SPEC, "h4", "img:4", "bob")])


async def test_records_reads_do_not_wait_for_a_write():
    inner = SlowRecords()
    records = SerialRecords(inner)
    await asyncio.gather(records.record("s1", "{}", "h", "img", "me"), records.get("a", 1),
                         records.latest_succeeded("a"), records.services(), records.state("a"), records.list("a"))
    assert inner.most == 6


# --- the engine ------------------------------------------------------------------------------------------------
def facts(ncpu: int) -> NodeFacts:
    return NodeFacts(hostname="h", ncpu=ncpu, mem_total=4 * GiB, mem_available=3 * GiB, load=(0.0, 0.0, 0.0),
                     uptime_s=100.0, disk_total=20 * GiB, disk_free=10 * GiB, runtime="ctr",
                     runtime_version="1.6.20~ds1", runtime_socket=True, cgroup=1, tasks=())


def worker(name: str, ncpu: int = 2) -> NodeReport:
    return NodeReport(Node(name, f"10.0.0.{name[-1]}"), "ready", None, facts(ncpu), 0.01)


def service(name: str, replicas: int, cpu: float = 0.5) -> ServiceSpec:
    return parse_playbook(f"services:\n  {name}:\n    image: fleet.local/demo:v1\n    replicas: {replicas}\n"
                          f"    resources: {{cpu: {cpu}, memory: 64MiB}}\n", "pb.yaml").services[0]


@pytest.fixture
async def unconnected_pool() -> AsyncIterator[Pool]:
    """A pool that is never used to connect: these tests reach no node."""
    async with Pool(connect_attempts=1, connect_timeout=1) as p:
        yield p


class StartsInPlace:
    """Stands in for the SSH start of placed replicas (`Engine._start_placed`): it records what each batch was
    given and takes a while, so the services' batches overlap."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.given: list[tuple[str, Assignment]] = []

    async def __call__(self, spec: ServiceSpec, revision: int, assignments: Sequence[Assignment],
                       weight: int) -> list[Replica]:
        self.given += [(spec.name, a) for a in assignments]
        await asyncio.sleep(0.05)
        new = [Replica(a.node, f"{spec.name}-{a.replica}", spec.name, a.replica, revision, spec.spec_hash(),
                       a.port, True, spec.resources, spec.image) for a in assignments]
        self.engine.live += new
        return new


async def test_services_placing_at_once_never_share_a_port_or_overfill_a_node(unconnected_pool):
    # Two nodes of 2 CPUs; six services of one 0.5-CPU replica each fit only if no two take the same room.
    engine = Engine(unconnected_pool, [worker("w1"), worker("w2")])
    starts = StartsInPlace(engine)
    engine._start_placed = starts  # type: ignore[method-assign]
    specs = [service(f"s{i}", 1, cpu=0.5) for i in range(6)]
    await asyncio.gather(*(engine._start_batch(s, 1, 1, set()) for s in specs))
    assert len(starts.given) == 6
    spots = [(a.node, a.port) for _, a in starts.given]
    assert len(set(spots)) == 6
    for node in ("w1", "w2"):
        assert sum(0.5 for _, a in starts.given if a.node == node) <= 2.0
    assert engine._pending == []


async def test_a_ninth_replica_that_does_not_fit_beside_the_placing_ones_fails_its_service_only(unconnected_pool):
    engine = Engine(unconnected_pool, [worker("w1"), worker("w2")])
    engine._start_placed = StartsInPlace(engine)  # type: ignore[method-assign]
    specs = [service(f"s{i}", 1, cpu=0.5) for i in range(9)]
    results = await asyncio.gather(*(engine._start_batch(s, 1, 1, set()) for s in specs), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], RolloutFailed)
    assert "no room" in str(failed[0])
    assert len(engine.live) == 8


async def test_a_service_short_of_room_waits_while_another_converging_one_frees_it(unconnected_pool):
    seen: list[Event] = []
    engine = Engine(unconnected_pool, [worker("w1")], on_event=seen.append)
    engine._start_placed = StartsInPlace(engine)  # type: ignore[method-assign]
    big, small = service("big", 1, cpu=2.0), service("small", 1, cpu=1.0)
    await engine._start_batch(big, 1, 1, set())  # the node is full
    engine._converging = {"big", "small"}
    waiting = asyncio.create_task(engine._start_batch(small, 1, 1, set()))
    await asyncio.sleep(0.1)
    assert not waiting.done() and engine._short == {"small"}
    assert [e.step for e in seen] == ["wait"] and "no room" in seen[0].message
    engine.live = []  # big's replica retired (its rollout goes on)
    await engine._room_changed()
    async with asyncio.timeout(5):
        new = await waiting
    assert [(r.service, r.node) for r in new] == [("small", "w1")]
    assert engine._short == set()


async def test_short_of_room_fails_at_once_when_no_other_service_converges(unconnected_pool):
    engine = Engine(unconnected_pool, [worker("w1")])
    engine._start_placed = StartsInPlace(engine)  # type: ignore[method-assign]
    await engine._start_batch(service("big", 1, cpu=2.0), 1, 1, set())
    engine._converging = {"small"}
    with pytest.raises(RolloutFailed, match="no room"):
        async with asyncio.timeout(5):
            await engine._start_batch(service("small", 1, cpu=1.0), 1, 1, set())


async def test_services_all_short_of_room_fail_instead_of_waiting_on_each_other(unconnected_pool):
    engine = Engine(unconnected_pool, [worker("w1")])
    engine._start_placed = StartsInPlace(engine)  # type: ignore[method-assign]
    await engine._start_batch(service("big", 1, cpu=2.0), 1, 1, set())  # held by a service not converging
    engine._converging = {"b", "c"}

    async def converge(name: str) -> BaseException | None:
        try:
            await engine._start_batch(service(name, 1, cpu=1.0), 1, 1, set())
        except RolloutFailed as exc:
            return exc
        finally:
            engine._converging.discard(name)  # as apply_targets does when a service ends
            await engine._room_changed()
        return None

    async with asyncio.timeout(5):
        results = await asyncio.gather(converge("b"), converge("c"))
    assert all(isinstance(r, RolloutFailed) for r in results)


async def test_each_service_gets_its_own_outcome_at_most_parallel_at_once(unconnected_pool):
    engine = Engine(unconnected_pool, [worker("w1")], parallel=2)
    inside = most = 0

    async def rollout(t: Target, command: str = "apply") -> Outcome:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.02)
        inside -= 1
        if t.spec.name == "bad":
            raise RolloutFailed("bad: new replicas did not become ready")
        return Outcome(t.spec.name, True, started=1)

    engine.rollout = rollout  # type: ignore[method-assign]
    names = ["a", "bad", "c", "d", "e"]
    # No replicas wanted: the up-front plan places nothing and no node is reached.
    targets = [Target(service(n, 0), None, False) for n in names]
    t0 = time.monotonic()
    outcomes = await engine.apply_targets(targets)
    assert [o.service for o in outcomes] == names
    assert [o.ok for o in outcomes] == [True, False, True, True, True]
    assert outcomes[1].reason == "bad: new replicas did not become ready"
    assert most == 2
    assert time.monotonic() - t0 >= 0.06  # five of 0.02 s, two at a time: three rounds


async def test_a_lost_lease_stops_every_service_and_is_raised(unconnected_pool):
    lost = False

    def guard() -> None:
        if lost:
            raise LeaseLost("the fleet's lease was taken by another run")

    engine = Engine(unconnected_pool, [worker("w1")], guard=guard, parallel=4)
    finished: list[str] = []

    async def rollout(t: Target, command: str = "apply") -> Outcome:
        nonlocal lost
        if t.spec.name == "a":
            lost = True
            engine.guard()
        await asyncio.sleep(0.01)
        engine.guard()  # the next step of the others
        finished.append(t.spec.name)
        return Outcome(t.spec.name, True)

    engine.rollout = rollout  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        await engine.apply_targets([Target(service(n, 0), None, False) for n in "abc"])
    assert finished == []


class FinishRecords(SlowRecords):
    """Records that keep what each revision was finished with."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[tuple[str, int, str, str]] = []

    async def finish(self, service: str, revision: int, outcome: Any, reason: str = "") -> bool:
        self.finished.append((service, revision, outcome, reason))
        return True


@pytest.mark.parametrize("error", [RuntimeCommandError("w1", "task start", 1, "ctr: failed to start shim"),
                                   LbReloadError("lb1", "no master line in show proc output")])
async def test_a_runtime_or_haproxy_error_mid_rollout_fails_the_revision_with_its_reason(unconnected_pool, error):
    records = FinishRecords()
    engine = Engine(unconnected_pool, [worker("w1")], records=records)

    async def converge(spec: ServiceSpec, revision: int) -> Outcome:
        raise error

    engine.converge = converge  # type: ignore[method-assign]
    [outcome] = await engine.apply_targets([Target(service("web", 0), 4, False)])
    assert not outcome.ok and str(error) in (outcome.reason or "")
    assert records.finished == [("web", 4, "failed", f"web: {error}")]


async def test_a_lost_lease_mid_rollout_stops_the_run_and_a_records_error_is_not_written_to_the_records(
        unconnected_pool):
    for error in (LeaseLost("the fleet's lease was taken by another run"), RecordsError("0 of 3 record nodes")):
        records = FinishRecords()
        engine = Engine(unconnected_pool, [worker("w1")], records=records)

        async def converge(spec: ServiceSpec, revision: int, error: Exception = error) -> Outcome:
            raise error

        engine.converge = converge  # type: ignore[method-assign]
        if isinstance(error, LeaseLost):
            with pytest.raises(LeaseLost):
                await engine.apply_targets([Target(service("web", 0), 4, False)])
        else:
            [outcome] = await engine.apply_targets([Target(service("web", 0), 4, False)])
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
