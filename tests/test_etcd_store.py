"""The shared state on a real etcd (fleet.store.etcd): a single member on loopback, reached the way a controller
reaches a record node's member, by `etcdctl` over SSH (an in-process asyncssh server running /bin/sh, so every
command crosses the real transport). The lease is taken, renewed, released and refused to a second holder; a
holder whose lease expired writes nothing; revision numbers never repeat under concurrent writers. A rollout's
pause (fleet.store.pause) is written without the lease, its first author kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from etcd_local import ETCD, LocalEtcd
from sshserver import SSHFarm

from fleet.core.errors import LeaseHeld, LeaseLost, RecordsError, StoreUnreachable
from fleet.core.model import Node
from fleet.node import etcd as E
from fleet.store.etcd import (
    EVENTS,
    WATCH_LEADER_KEY,
    EtcdLease,
    EtcdStore,
    SharedState,
    break_lock,
    lock_status,
    revision_counter_key,
    revision_key,
)
from fleet.store.etcd_records import EtcdRecords
from fleet.store.pause import clear_pause, pause_key, read_pause, request_pause
from fleet.transport import Pool

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def etcd() -> Iterator[LocalEtcd]:
    with LocalEtcd(prefix="hxs") as server:
        yield server


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with SSHFarm(tmp_path / "farm") as farm:
        yield (await farm.start(1))[0]


@pytest.fixture
async def store(etcd: LocalEtcd, node: Node) -> AsyncIterator[EtcdStore]:
    async with Pool(connect_attempts=1) as pool:
        yield EtcdStore(pool, [node], port=etcd.port)


async def _until_gone(store: EtcdStore, lease_id: int, limit: float = 10.0) -> None:
    """Wait until etcd itself says the lease expired (its clock, not ours)."""
    deadline = time.monotonic() + limit
    while (await store.timetolive(lease_id)).alive:
        assert time.monotonic() < deadline, "the lease did not expire"
        await asyncio.sleep(0.2)


# ---- pauses of rollouts (fleet.store.pause): written without the lease, the first author kept -------------------


async def test_pause_is_written_without_the_lease_kept_by_its_first_author_and_cleared(store: EtcdStore):
    assert await read_pause(store, "web") is None
    first = await request_pause(store, "web", "ann@ci")
    again = await request_pause(store, "web", "bob@laptop")
    assert again == first and (await read_pause(store, "web")) == first
    assert await read_pause(store, "api") is None
    assert await EtcdRecords(store).services() == [] and await EtcdRecords(store).state("web") is None
    assert await clear_pause(store, "web") == first
    assert await read_pause(store, "web") is None and await clear_pause(store, "web") is None


async def test_a_bad_pause_value_is_refused_by_its_key(store: EtcdStore):
    await store.txn([], [E.Put(pause_key("web"), '{"by": 3}')])
    with pytest.raises(RecordsError, match=r"/fleet/services/web/pause: by: expected who paused"):
        await read_pause(store, "web")
    with pytest.raises(ValueError, match="service name"):
        pause_key("Web Site")


async def test_lease_taken_renewed_released(store: EtcdStore) -> None:
    lease = EtcdLease(store, command="fleet apply", ttl=5, holder="alice@ctl", pid=11)
    await lease.acquire()
    assert lease.held and lease.lease_id is not None
    info = await lock_status(store)
    assert info is not None and (info.holder, info.pid, info.command) == ("alice@ctl", 11, "fleet apply")
    assert 0 < info.remaining <= 5
    await asyncio.sleep(1.2)
    await lease.renew()
    assert (await store.timetolive(lease.lease_id)).ttl >= 4  # renewed back to about the full ttl
    await lease.check()
    await lease.release()
    assert not lease.held
    assert await lock_status(store) is None
    # Released means free: another run takes it at once.
    other = EtcdLease(store, command="fleet scale", ttl=5, holder="bob@ctl")
    await other.acquire()
    await other.release()


async def test_second_holder_refused_while_first_holds(store: EtcdStore) -> None:
    first = EtcdLease(store, command="fleet apply", ttl=10, holder="alice@ctl", pid=11)
    second = EtcdLease(store, command="fleet rollback", ttl=10, holder="bob@ctl", pid=22)
    async with first:
        with pytest.raises(LeaseHeld) as held:
            await second.acquire(wait=0.5)
        assert held.value.info.holder == "alice@ctl" and held.value.info.pid == 11
        assert not second.held
        await first.check()
        # The refused run's own etcd leases were revoked: only the holder's is attached to the lock key.
        kv = await store.get("/fleet/lock")
        assert kv is not None and kv.lease == first.lease_id
    # The context released it: the second run now gets it.
    await second.acquire()
    await second.release()


async def test_expired_holder_writes_nothing_and_gets_lease_lost(store: EtcdStore) -> None:
    first = EtcdLease(store, command="fleet apply", ttl=2, holder="alice@ctl")
    await first.acquire()
    mine = SharedState(store, first)
    assert await mine.next_revision("web", {"image": "web:1"}) == 1
    await mine.write({"/fleet/services/web/state": {"replicas": 2}})
    assert first.lease_id is not None
    # No renewal (a controller stopped past its ttl): etcd expires the lease on its own clock.
    await _until_gone(store, first.lease_id)
    second = EtcdLease(store, command="fleet scale", ttl=10, holder="bob@ctl")
    # The leader deletes the lock key a moment after the ttl ran out: the second controller waits for it.
    await second.acquire(wait=5)
    theirs = SharedState(store, second)
    await theirs.write({"/fleet/services/web/state": {"replicas": 5}})
    await theirs.append_event({"what": "scale", "by": "bob@ctl"})

    # The first run resumes and tries every kind of write: each is refused, nothing lands.
    with pytest.raises(LeaseLost, match="nothing was written"):
        await mine.write({"/fleet/services/web/state": {"replicas": 2}, "/fleet/other": 1})
    with pytest.raises(LeaseLost):
        await mine.next_revision("web", {"image": "web:2"})
    with pytest.raises(LeaseLost):
        await mine.append_event({"what": "apply", "by": "alice@ctl"})
    with pytest.raises(LeaseLost):
        await mine.read("/fleet/services/web/state")
    with pytest.raises(LeaseLost):
        await first.check()
    with pytest.raises(LeaseLost):
        await first.renew()
    assert await theirs.read("/fleet/services/web/state", "/fleet/missing") == {
        "/fleet/services/web/state": {"replicas": 5}}
    assert set(await theirs.read("/fleet/services/web/", prefix=True)) == {
        "/fleet/services/web/state", revision_counter_key("web"), revision_key("web", 1)}
    assert await store.read("/fleet/services/web/state") == {"replicas": 5}
    assert await store.get("/fleet/other") is None
    assert await store.read(revision_counter_key("web")) == 1
    assert await store.get(revision_key("web", 2)) is None
    assert [e.value["by"] for e in await theirs.events()] == ["bob@ctl"]
    await second.check()
    await second.release()


async def test_watch_leadership_is_a_lease_of_its_own(store: EtcdStore) -> None:
    leader = EtcdLease(store, command="fleet watch", ttl=10, holder="w1@ctl", key=WATCH_LEADER_KEY)
    rival = EtcdLease(store, command="fleet watch", ttl=10, holder="w2@ctl", key=WATCH_LEADER_KEY)
    async with leader, EtcdLease(store, command="fleet apply", ttl=10, holder="alice@ctl") as run:
        # A leading watcher and a run hold theirs at once; a second watcher does not lead.
        with pytest.raises(LeaseHeld, match="w1@ctl"):
            await rival.acquire()
        await leader.check()
        await run.check()
        await SharedState(store, leader).write({"/fleet/watch/round": 1})
    await rival.acquire()
    await rival.release()


async def test_broken_lock_stops_the_holder(store: EtcdStore) -> None:
    lease = EtcdLease(store, command="fleet apply", ttl=30, holder="alice@ctl")
    await lease.acquire()
    broken = await break_lock(store)
    assert broken is not None and broken.holder == "alice@ctl"
    with pytest.raises(LeaseLost):
        await SharedState(store, lease).write({"/fleet/x": 1})
    with pytest.raises(LeaseLost):
        await lease.check()
    assert await store.get("/fleet/x") is None
    assert await lock_status(store) is None


async def test_revision_numbers_from_concurrent_writers_never_repeat(etcd: LocalEtcd, node: Node) -> None:
    # Two writers with their own SSH connections, allocating for the same service at once under one lease
    # (a run recording many services in parallel): every compare-and-swap lost is retried with a new number.
    async with Pool(connect_attempts=1) as pool_a, Pool(connect_attempts=1) as pool_b:
        store_a = EtcdStore(pool_a, [node], port=etcd.port)
        store_b = EtcdStore(pool_b, [node], port=etcd.port)
        lease = EtcdLease(store_a, command="fleet apply", ttl=30, holder="alice@ctl")
        await lease.acquire()
        a, b = SharedState(store_a, lease), SharedState(store_b, lease)
        per = 12
        numbers = await asyncio.gather(*[w.next_revision("web", {"writer": name, "i": i})
                                         for i in range(per) for name, w in (("a", a), ("b", b))])
        assert sorted(numbers) == list(range(1, 2 * per + 1))
        stored = await a.revisions("web")
        assert [n for n, _ in stored] == list(range(1, 2 * per + 1))
        assert sorted((r["writer"], r["i"]) for _, r in stored) == sorted(
            (name, i) for i in range(per) for name in "ab")
        await lease.release()


async def test_event_log_is_ordered_and_numbers_increase(store: EtcdStore) -> None:
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        numbers = [await state.append_event({"n": i}) for i in range(5)]
        assert numbers == sorted(numbers) and len(set(numbers)) == 5
        events = await state.events()
        assert [e.value["n"] for e in events] == list(range(5))
        assert [e.number for e in await state.events(after=numbers[2])] == numbers[3:]


async def test_change_and_its_event_land_together(store: EtcdStore) -> None:
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        number = await state.next_revision("web", {"image": "web:1"}, event={"what": "revision", "n": 1})
        at = await state.write({"/fleet/services/web/state": {"replicas": 3}}, event={"what": "scale", "to": 3})
        events = await state.events()
        assert [e.value for e in events] == [{"what": "revision", "n": number}, {"what": "scale", "to": 3}]
        assert events[-1].number == at  # the event's number is the write's revision: one transaction


async def test_trim_events_keeps_the_newest(store: EtcdStore) -> None:
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        for i in range(6):
            await state.append_event({"n": i})
        assert await state.trim_events(keep=4) == 2
        assert [e.value["n"] for e in await state.events()] == [2, 3, 4, 5]
        assert await state.trim_events(keep=4) == 0
        assert await state.trim_events(keep=0) == 4
        assert await state.events() == []


async def test_follow_sees_history_then_live_changes(store: EtcdStore) -> None:
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        first = await state.append_event({"n": 0})
        seen: list[E.WatchEvent] = []

        async def reader() -> None:
            async with contextlib.aclosing(store.follow(EVENTS, first)) as batches:
                async for batch in batches:
                    seen.extend(batch.events)
                    if len(seen) >= 3:
                        return

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.5)  # the watch is running: what follows arrives live, not as history
        await state.append_event({"n": 1})
        await state.write({"/fleet/other": 1})  # outside the prefix: not seen
        await state.append_event({"n": 2})
        await asyncio.wait_for(task, 15)
        assert [json.loads(e.kv.value)["n"] for e in seen] == [0, 1, 2]
        assert seen[0].kv.create_revision == first and all(e.kind == "put" for e in seen)


async def test_follow_from_a_compacted_revision_says_read_afresh(store: EtcdStore) -> None:
    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        for i in range(3):
            last = await state.append_event({"n": i})
    await store.call(E.etcdctl("compaction", str(last), at=store.at), lambda out: out)
    with pytest.raises(RecordsError, match="compacted"):
        async with contextlib.aclosing(store.follow(EVENTS, 1)) as batches:
            async for _ in batches:
                pass


async def test_value_that_is_not_json_is_refused_by_name(store: EtcdStore) -> None:
    # Written behind fleet's back (root on a record node): fleet reads it and refuses it, naming the key.
    await store.txn([], [E.Put(revision_key("web", 1), "{not json"), E.Put(f"{EVENTS}0-bad", "\x01")])
    with pytest.raises(RecordsError, match="/fleet/services/web/revisions/0000000001: not a JSON value"):
        await store.read(revision_key("web", 1))
    async with EtcdLease(store, command="fleet events", ttl=10) as lease:
        state = SharedState(store, lease)
        with pytest.raises(RecordsError, match="/fleet/services/web/revisions/0000000001"):
            await state.revisions("web")
        with pytest.raises(RecordsError, match=f"{EVENTS}0-bad"):
            await state.events()
    await store.txn([], [E.Put("/fleet/lock", '{"holder": 3}')])
    with pytest.raises(RecordsError, match="/fleet/lock: not a lease holder"):
        await lock_status(store)
    # ... and `fleet lock break` removes it all the same.
    broken = await break_lock(store)
    assert broken is not None and broken.holder.startswith("unreadable lock")
    assert await store.get("/fleet/lock") is None


async def test_unreachable_member_is_a_records_error(tmp_path: Path) -> None:
    async with SSHFarm(tmp_path / "farm") as farm, Pool(connect_attempts=1) as pool:
        node = (await farm.start(1))[0]
        store = EtcdStore(pool, [node], port=1, command_timeout_s=2)
        # Nothing listens on the port: the probe says so and no etcdctl runs (it would wait its whole timeout);
        # a write is then certainly not sent, so it is "could not be reached" too, not "may still take effect".
        with pytest.raises(RecordsError, match=r"could not be reached: .*no etcd member listens on 127\.0\.0\.1:1"):
            await store.get("/fleet/lock")
        # Through the gateway, a member that does not listen is known at once (the tunnel is refused) and through
        # etcdctl (sshd forwarding nothing) by the probe, which spares etcdctl its whole timeout: either way the
        # write certainly never left, so the store could not be reached, never "may still take effect".
        for forwarding in (True, False):
            farm.servers[node.name].forwarding = forwarding
            store = EtcdStore(pool, [node], port=1, command_timeout_s=2)
            start = time.monotonic()
            with pytest.raises(StoreUnreachable, match=r"n1: no etcd member listens on 127\.0\.0\.1:1"):
                await store.txn([], [E.Put("/fleet/x", "1")])
            assert time.monotonic() - start < 2
            assert set(store.by_etcdctl) == (set() if forwarding else {node.name})
        # Something listens but never answers (a member cut off from its quorum, as a client sees it): the request
        # is bounded by the member's deadline plus a second (etcdctl's txn alone ignores --command-timeout, so the
        # node's `timeout` bounds it), and a write whose fate is unknown is reported as such, never sent again
        # elsewhere. Both ways.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            for forwarding in (True, False):
                farm.servers[node.name].forwarding = forwarding
                store = EtcdStore(pool, [node], port=silent.getsockname()[1], command_timeout_s=2)
                start = time.monotonic()
                with pytest.raises(RecordsError, match=rf"txn on {node.name}: no answer .* may still take effect"):
                    await store.txn([], [E.Put("/fleet/x", "1")])
                assert time.monotonic() - start < 6
