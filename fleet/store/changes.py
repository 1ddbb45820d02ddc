"""What other controllers change in the fleet's records, as it happens (an etcd watch): `fleet watch` is woken
by a destroy, a rollback, a scale, an abort, a cordon or a drain made elsewhere, and its next round reconciles
under the fleet's lease, which reads the records again before anything is done.

One watch on `/fleet/` sees the records (`/fleet/services/`), the node marks (`/fleet/nodes/`) and the fleet's
lock key in etcd's own order. Every write of the shared state is fenced by the lock key, so a change between this
watcher's own lock put and that lock's deletion is its own (a reconcile it ran), and every other change is news.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleet.core.errors import FleetError
from fleet.node import etcd as E
from fleet.store.etcd import LOCK_KEY, SERVICES, EtcdStore
from fleet.store.etcd_records import NODES
from fleet.store.follow import Reread, current_revision, follow
from fleet.store.lease import default_holder
from fleet.store.nodes import clean

PREFIX = "/fleet/"
# Keys whose change is news to a watcher: what a reconcile decides on.
WATCHED = (SERVICES, NODES)
HOLDER_LIMIT = 120  # as EtcdLease cuts a holder's name


@dataclass(frozen=True)
class Me:
    """Who this watcher's runs hold the fleet's lease as (the lock key's holder and pid)."""

    holder: str
    pid: int

    @staticmethod
    def here() -> Me:
        """This process, named as `EtcdLease` names a holder by default."""
        return Me(clean(default_holder(), HOLDER_LIMIT), os.getpid())


def is_mine(kv: E.KeyValue, me: Me) -> bool:
    """The lock key's value names this watcher (a value that does not decode is someone else's)."""
    try:
        doc = json.loads(kv.value)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("holder") == me.holder and doc.get("pid") == me.pid


def sort_changes(events: Sequence[E.WatchEvent], own: bool, me: Me) -> tuple[bool, list[str]]:
    """Go through one batch of changes in etcd's order: whether this watcher holds the lock after it, and the
    watched keys others changed (news). Pure: tested as data."""
    news: list[str] = []
    for e in events:
        key = e.kv.key
        if key == LOCK_KEY:
            own = e.kind == "put" and is_mine(e.kv, me)
        elif not own and key.startswith(WATCHED):
            news.append(key)
    return own, news


class RecordsFollower:
    """Follows `/fleet/` and calls `on_news(keys)` with the watched keys another controller changed (`["*"]`
    when what changed could not be followed: etcd compacted it, or no record node answered; everything must be
    read again). `note` hears why the watch was restarted."""

    def __init__(self, store: EtcdStore, me: Me, on_news: Callable[[list[str]], None],
                 note: Callable[[str], None], *, retry: float = 1.0) -> None:
        self.store = store
        self.me = me
        self.on_news = on_news
        self.note = note
        self.retry = retry
        self.own = False

    async def start(self) -> int:
        """The revision to follow from: the next one after now."""
        return await current_revision(self.store) + 1

    async def run(self, from_revision: int) -> None:
        """Follow until cancelled."""
        changes = follow(self.store, PREFIX, from_revision, retry=self.retry, note=self.note)
        async with contextlib.aclosing(changes):
            async for change in changes:
                if isinstance(change, Reread):
                    self.own = any(kv.key == LOCK_KEY and is_mine(kv, self.me) for kv in change.kvs)
                    self.note(f"{change.why}: read afresh")
                    self.on_news(["*"])
                    continue
                self.own, news = sort_changes(change.events, self.own, self.me)
                if news:
                    self.on_news(news)


async def follow_records(follower: RecordsFollower, retry: float = 2.0) -> None:
    """`follower.run` from now on, until cancelled. When it fails (no record node answers a read), it starts
    again from then `retry` seconds later, and says everything is news: what changed meanwhile was not seen."""
    while True:
        try:
            await follower.run(await follower.start())
        except FleetError as exc:
            follower.note(f"cannot follow the records: {exc}")
            follower.on_news(["*"])
        await asyncio.sleep(retry)
