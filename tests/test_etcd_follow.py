"""Following the shared state on a real etcd (fleet.store.follow, fleet.store.changes): the event log as `fleet
events` reads and follows it, a follow that goes on through another record node when its connection ends, one
whose revision was compacted, and the watcher's view of who changed the records. etcd is a single member on
loopback, reached by `etcdctl` over SSH (in-process asyncssh servers running /bin/sh), as on the record nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from etcd_local import ETCD, LocalEtcd
from sshserver import SSHFarm

from fleet.cli.events import event_line, selected
from fleet.node import etcd as E
from fleet.results.eventlog import LoggedEvent, LogNotice
from fleet.store.changes import Me, RecordsFollower, sort_changes
from fleet.store.etcd import EVENTS, LOCK_KEY, EtcdLease, EtcdStore, SharedState
from fleet.transport import Pool

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup.sh installs it)")
ME = Me("me@ctl-a", 41)


@pytest.fixture
async def store(local_etcd: LocalEtcd, farm: SSHFarm) -> AsyncIterator[EtcdStore]:
    async with Pool(connect_attempts=1) as pool:
        # Two record nodes reaching the same member: a follow can go on through the second.
        yield EtcdStore(pool, [farm.node("n1"), farm.node("n2")], port=local_etcd.port, timeout=5)


def _kv(key: str, value: str = "{}", rev: int = 1) -> E.KeyValue:
    return E.KeyValue(key, value, rev, rev, 1)


def test_changes_inside_this_watchers_own_lock_are_not_news() -> None:
    mine = json.dumps({"holder": ME.holder, "pid": ME.pid, "command": "fleet watch", "since": 0})
    theirs = json.dumps({"holder": "bob@laptop", "pid": ME.pid, "command": "fleet destroy web", "since": 0})
    batch = [E.WatchEvent("put", _kv(LOCK_KEY, mine)), E.WatchEvent("put", _kv("/fleet/services/web/state")),
             E.WatchEvent("put", _kv("/fleet/nodes/n1"))]
    assert sort_changes(batch, False, ME) == (True, [])
    # The lock goes, another controller takes it and writes: that is news; events and the leader key are not.
    batch = [E.WatchEvent("delete", _kv(LOCK_KEY)), E.WatchEvent("put", _kv(LOCK_KEY, theirs)),
             E.WatchEvent("put", _kv("/fleet/services/web/state")), E.WatchEvent("put", _kv(f"{EVENTS}1-ab")),
             E.WatchEvent("put", _kv("/fleet/watch/leader")), E.WatchEvent("delete", _kv("/fleet/nodes/n2"))]
    assert sort_changes(batch, True, ME) == (False, ["/fleet/services/web/state", "/fleet/nodes/n2"])
    # A lock value that does not decode is never this watcher's.
    assert sort_changes([E.WatchEvent("put", _kv(LOCK_KEY, "{bad"))], False, ME) == (False, [])


def test_events_selected_by_service_and_count_and_rendered_on_one_line() -> None:
    a = LoggedEvent(5, "k5", {"who": "bob@laptop", "command": "fleet destroy web", "what": "decision",
                              "at": 0.0, "service": "web", "decision": "destroyed"})
    b = LoggedEvent(6, "k6", {"who": "amy@ci", "command": "fleet apply", "what": "revision", "at": 0.0,
                              "service": "api", "image": "api:2"})
    bad = LoggedEvent(7, "k7", error="etcd key k7: not a JSON value")
    assert selected([a, b, bad], "web", None) == [a, bad]  # an unreadable entry is always named
    assert selected([a, b, bad], None, 2) == [b, bad] and selected([a, b], None, 0) == []
    line = event_line(a)
    assert line.split()[0] == "5" and "bob@laptop  decision  service=web decision=destroyed" in line
    assert line.endswith("(fleet destroy web)")


async def test_event_log_read_names_an_entry_that_does_not_decode_and_keeps_the_others(store: EtcdStore) -> None:
    from fleet.store.follow import EventLog

    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        first = await state.append_event({"what": "revision", "service": "web"})
        await store.txn([], [E.Put(f"{EVENTS}00000000000000000002-bad", "{nope")])
        last = await state.append_event({"what": "decision", "service": "web"})
    revision, entries = await EventLog(store).read()
    assert revision >= last
    assert [(e.number, e.value) for e in entries if e.error is None] == [
        (first, {"what": "revision", "service": "web"}), (last, {"what": "decision", "service": "web"})]
    (bad,) = [e for e in entries if e.error is not None]
    assert bad.value is None and f"{EVENTS}00000000000000000002-bad: not a JSON value" in (bad.error or "")


async def test_follow_goes_on_through_another_record_node_when_its_connection_ends(
        store: EtcdStore, farm: SSHFarm) -> None:
    from fleet.store.follow import EventLog

    log = EventLog(store, retry=0.2)
    revision, _ = await log.read()
    seen: list[LoggedEvent | LogNotice] = []

    async def reader() -> None:
        async with contextlib.aclosing(log.follow(0, revision + 1)) as items:
            async for item in items:
                seen.append(item)
                if len(seen) == 4:
                    return

    task = asyncio.create_task(reader())
    writer = EtcdStore(store.pool, [farm.node("n2")], port=store.at.port, timeout=5)  # another controller's
    async with EtcdLease(writer, command="fleet apply", ttl=10) as lease:
        state = SharedState(writer, lease)
        await asyncio.sleep(0.5)
        await state.append_event({"n": 0})
        await state.append_event({"n": 1})
        for _ in range(50):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.1)
        assert store.node.name == "n1"
        await farm.stop("n1")  # the record node the watch runs through goes down
        await state.append_event({"n": 2})  # written meanwhile
        await state.append_event({"n": 3})
        await asyncio.wait_for(task, 20)
    assert [x.value for x in seen if isinstance(x, LoggedEvent)] == [{"n": i} for i in range(4)]
    assert store.node.name == "n2"


async def test_follow_from_a_compacted_revision_says_so_and_reads_afresh(store: EtcdStore) -> None:
    from fleet.store.follow import EventLog

    async with EtcdLease(store, command="fleet apply", ttl=10) as lease:
        state = SharedState(store, lease)
        numbers = [await state.append_event({"n": i}) for i in range(3)]
    await store.call(E.etcdctl("compaction", str(numbers[-1]), at=store.at), lambda out: out)
    got: list[LoggedEvent | LogNotice] = []
    async with contextlib.aclosing(EventLog(store).follow(numbers[0], 1)) as items:
        async for item in items:
            got.append(item)
            if len(got) == 3:
                break
    notice, *entries = got
    assert isinstance(notice, LogNotice) and "compacted" in notice.message and "read afresh" in notice.message
    # Entries after the last one seen, none twice.
    assert [e.number for e in entries if isinstance(e, LoggedEvent)] == numbers[1:]


async def test_records_follower_reports_only_what_other_controllers_change(store: EtcdStore) -> None:
    news: list[list[str]] = []
    notes: list[str] = []
    follower = RecordsFollower(store, ME, news.append, notes.append)
    task = asyncio.create_task(follower.run(await follower.start()))
    try:
        await asyncio.sleep(0.5)
        # This watcher's own reconcile: its lock, a decision under it, then the lock goes.
        async with EtcdLease(store, command="fleet watch", ttl=10, holder=ME.holder, pid=ME.pid) as mine:
            await SharedState(store, mine).write({"/fleet/services/web/state": {"decision": "applied"}},
                                                 event={"what": "decision"})
        # Another controller destroys web and cordons n1.
        async with EtcdLease(store, command="fleet destroy web", ttl=10, holder="bob@laptop", pid=7) as theirs:
            await SharedState(store, theirs).write({"/fleet/services/web/state": {"decision": "destroyed"},
                                                    "/fleet/nodes/n1": {"cordoned": True}},
                                                   event={"what": "decision"})
        for _ in range(50):
            if news:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert news == [["/fleet/nodes/n1", "/fleet/services/web/state"]] or news == [
        ["/fleet/services/web/state", "/fleet/nodes/n1"]]
    assert notes == []


def test_events_printer_prints_the_good_entries_and_names_a_bad_one_on_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    from fleet.cli.events import Printer

    good = LoggedEvent(5, "k5", {"who": "bob@laptop", "command": "fleet destroy web", "what": "decision",
                                 "at": 0.0, "service": "web", "decision": "destroyed"})
    other = LoggedEvent(6, "k6", {"who": "amy@ci", "what": "revision", "service": "api"})
    show = Printer(json=True, service="web")
    for item in (good, other, LoggedEvent(7, "/fleet/events/7-x", error="etcd key /fleet/events/7-x: not a JSON "
                                          "value (Expecting value at 0); refusing it"), LogNotice("compacted")):
        show(item)
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [{"number": 5, "key": "k5", **(good.value or {})}]
    assert "event 7: etcd key /fleet/events/7-x: not a JSON value" in err and "note: compacted" in err
    assert show.bad == 1  # `fleet events` exits 1 after printing the good ones


async def test_event_log_through_the_facade(local_etcd: LocalEtcd, farm: SSHFarm,
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dataclasses import replace

    from fleet.api import Fleet, event_log
    from fleet.core.model import Inventory

    monkeypatch.setenv("FLEET_ETCD_PORT", str(local_etcd.port))
    inv = Inventory(str(tmp_path / "inv.yaml"), (replace(farm.node("n1"), roles=("worker", "record")),))
    async with Pool(connect_attempts=1) as pool:
        store = EtcdStore(pool, [farm.node("n1")], port=local_etcd.port)
        async with EtcdLease(store, command="fleet scale web 2", ttl=10) as lease:
            number = await SharedState(store, lease).append_event({"what": "decision", "service": "web"})
        revision, entries = await (await event_log(Fleet(inv, pool))).read()
    assert revision >= number and [(e.number, e.value) for e in entries] == [
        (number, {"what": "decision", "service": "web"})]
