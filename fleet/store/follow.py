"""Following a prefix of the shared state for as long as one likes: `EtcdStore.follow` resumed after the last
change seen when its connection ends (through whichever record node answers next), and read afresh when etcd
compacted the revision it was at. The event log read as `fleet events` shows it (a value that does not decode is
named, never taken)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, cast

from fleet.core.errors import FleetError, RecordsError
from fleet.node import etcd as E
from fleet.results.eventlog import LoggedEvent, LogNotice
from fleet.store.etcd import EVENTS, LOCK_KEY, EtcdStore, decode

# How `EtcdStore.follow` says the revision it was asked for is gone (etcd compacted it).
_COMPACTED = "(compacted)"


@dataclass(frozen=True)
class Reread:
    """etcd no longer keeps the revision the follow was at (compacted): what the prefix holds now, read at
    `revision`; the follow goes on from the next one."""

    revision: int
    kvs: tuple[E.KeyValue, ...]
    why: str


async def read_prefix(store: EtcdStore, prefix: str) -> E.Range:
    """Every key under `prefix`, oldest first, with the store's revision at that read (a follow starts after it)."""
    return await store.read_range(prefix, prefix=True, by_create=True)


async def current_revision(store: EtcdStore) -> int:
    """The store's revision now (one small read): a follow from the next one sees every later change."""
    return (await store.read_range(LOCK_KEY)).revision


async def follow(store: EtcdStore, prefix: str, from_revision: int, *, retry: float = 1.0,
                 note: Callable[[str], None] | None = None) -> AsyncGenerator[E.WatchBatch | Reread, None]:
    """Every change under `prefix` from `from_revision` on, for as long as the caller iterates: a watch that ends
    (its node's connection dropped, its member stopped) is started again `retry` seconds later from the revision
    after the last change seen, on the first record node whose member answers, so nothing is missed or seen
    twice; one whose revision etcd compacted yields a `Reread` and goes on from there. `note` hears why a watch
    ended. Use it with `contextlib.aclosing`."""
    revision = from_revision
    while True:
        try:
            async with contextlib.aclosing(cast(AsyncGenerator[E.WatchBatch, None],
                                               store.follow(prefix, revision))) as batches:
                async for batch in batches:
                    if batch.events:
                        revision = max(e.kv.mod_revision for e in batch.events) + 1
                    yield batch
            why = f"the watch on {store.node.name} ended"
        except RecordsError as exc:
            if _COMPACTED in str(exc):
                fresh = await read_prefix(store, prefix)
                revision = fresh.revision + 1
                yield Reread(fresh.revision, fresh.kvs, str(exc))
                continue
            why = str(exc)
        except FleetError as exc:
            why = f"the watch on {store.node.name} ended: {exc}"
        if note is not None:
            note(f"{why}; following again from revision {revision}")
        await asyncio.sleep(retry)
        with contextlib.suppress(FleetError):
            await current_revision(store)  # moves the store to a record node whose member answers


def logged(kv: E.KeyValue) -> LoggedEvent:
    """One entry of the event log; a value that is not a JSON object is named (RecordsError's text), not taken."""
    try:
        value: Any = decode(kv)
    except RecordsError as exc:
        return LoggedEvent(kv.create_revision, kv.key, error=str(exc))
    if not isinstance(value, dict):
        return LoggedEvent(kv.create_revision, kv.key,
                           error=f"etcd key {kv.key}: not an event (a JSON object): {kv.value[:80]!r}; refusing it")
    return LoggedEvent(kv.create_revision, kv.key, value)


class EventLog:
    """The fleet's event log (`fleet events`) through `store`: read whole, then followed as it grows."""

    def __init__(self, store: EtcdStore, *, retry: float = 1.0) -> None:
        self.store = store
        self.retry = retry

    async def read(self) -> tuple[int, list[LoggedEvent]]:
        """Every entry, oldest first, and the store's revision at that read (follow from the next one)."""
        found = await read_prefix(self.store, EVENTS)
        return found.revision, [logged(kv) for kv in found.kvs]

    def follow(self, after: int, from_revision: int) -> AsyncGenerator[LoggedEvent | LogNotice, None]:
        """New entries (numbers above `after`) as they land, from `from_revision` on, until closed (use it with
        `contextlib.aclosing`); see `follow_events`."""
        return follow_events(self.store, after, from_revision, retry=self.retry)


async def follow_events(store: EtcdStore, after: int, from_revision: int, *, retry: float = 1.0
                        ) -> AsyncGenerator[LoggedEvent | LogNotice, None]:
    """New entries of the event log (numbers above `after`) as they land, from `from_revision` on; when etcd
    compacted that revision, a `LogNotice` says the log was read afresh, then the entries above the last one
    seen. Entries trimmed meanwhile are gone; deletions (trims) are not shown."""
    last = after
    async with contextlib.aclosing(follow(store, EVENTS, from_revision, retry=retry)) as changes:
        async for change in changes:
            if isinstance(change, Reread):
                yield LogNotice(f"{change.why}: the log was read afresh at revision {change.revision}")
                kvs: tuple[E.KeyValue, ...] = change.kvs
            else:
                kvs = tuple(e.kv for e in change.events if e.kind == "put")
            for kv in kvs:
                if kv.create_revision > last:
                    last = kv.create_revision
                    yield logged(kv)
