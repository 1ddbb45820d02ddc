"""The fleet's shared state in etcd, reached through the SSH transport: the member on a record node's loopback,
by its JSON gateway through an SSH tunnel (or `etcdctl` run there where sshd forwards no TCP).

    EtcdStore       one client (fleet/store/etcd_client.py): the first record node whose member answers
    EtcdLease       the fleet's lease as an etcd lease (server-side ttl) with the lock key held by it; its
                    `fence` is the lock key's create_revision, which no other holder can ever have
    SharedState     the writes of a run, every one a transaction that also compares the fence, so a holder whose
                    lease expired or was broken writes nothing and gets `LeaseLost`; revision numbers handed out
                    by compare-and-swap (never twice); an append-only event log

Keys (one prefix per kind, so a range read or a watch follows one kind):
    /fleet/lock                                the holder's JSON, attached to its etcd lease
    /fleet/watch/leader                        the leading watcher's, the same way (`WATCH_LEADER_KEY`)
    /fleet/services/<service>/revision         the last revision number handed out for the service
    /fleet/services/<service>/revisions/<n>    one revision record, n zero-padded to 10 digits (sorts by number)
    /fleet/events/<ns>-<hex>                   one event, ordered by its create revision (its number)

A value that is not JSON is refused by name (`RecordsError` naming the key): nothing acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from fleet.core.errors import (
    LeaseError,
    LeaseHeld,
    LeaseInfo,
    LeaseLost,
    RecordsError,
)
from fleet.node import etcd as E
from fleet.store.etcd_client import EtcdStore as EtcdStore  # the client, importable from here as before
from fleet.store.etcd_client import decode as decode
from fleet.store.lease import COMMAND_LIMIT, default_holder, end_renewal
from fleet.store.nodes import clean

T = TypeVar("T")

LOCK_KEY = "/fleet/lock"
# The watcher's leadership: an `EtcdLease` on this key, apart from the runs' lease, so a leader watcher and a
# run of `fleet apply` can hold theirs at once while two watchers cannot both lead.
WATCH_LEADER_KEY = "/fleet/watch/leader"
SERVICES = "/fleet/services/"
EVENTS = "/fleet/events/"
DEFAULT_TTL = 15
# Compare-and-swap rounds before a revision allocation gives up (each lost round means another writer got a
# number; dozens in a row means something is wrong, not busy).
CAS_ATTEMPTS = 50
# Deletes per transaction: etcd refuses more than --max-txn-ops (128 by default) operations in one.
TXN_DELETES = 100


def revision_counter_key(service: str) -> str:
    return f"{SERVICES}{_segment(service)}/revision"


def revision_key(service: str, number: int) -> str:
    return f"{SERVICES}{_segment(service)}/revisions/{number:010d}"


def _segment(name: str) -> str:
    if not name or "/" in name or not name.isprintable() or name != name.strip():
        raise ValueError(f"key segment: expected a printable name without '/', got {name!r}")
    return name


def encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Holder:
    """The lock key's value: who holds the fleet's lease (the controller's clock for `since`, shown only)."""

    holder: str
    pid: int
    command: str
    since: float

    @staticmethod
    def of(kv: E.KeyValue) -> Holder:
        doc = decode(kv)
        if not (isinstance(doc, dict) and isinstance(doc.get("holder"), str) and isinstance(doc.get("pid"), int)
                and isinstance(doc.get("command"), str) and isinstance(doc.get("since"), (int, float))):
            raise RecordsError(f"etcd key {kv.key}: not a lease holder: {kv.value[:200]!r}; refusing it")
        return Holder(doc["holder"], doc["pid"], doc["command"], float(doc["since"]))


async def _info(store: EtcdStore, kv: E.KeyValue) -> LeaseInfo:
    """The holder as `LeaseInfo`: `read_at` is now on this controller and `until` now plus the ttl etcd reports,
    so `remaining` comes from the server's clock alone."""
    who = Holder.of(kv)
    ttl = (await store.timetolive(kv.lease)).ttl if kv.lease else -1
    now = time.time()
    return LeaseInfo(who.holder, who.pid, who.command, who.since, now + max(ttl, 0), store.node.name, read_at=now)


async def lock_status(store: EtcdStore) -> LeaseInfo | None:
    """Who holds the fleet's lease, or None."""
    kv = await store.get(LOCK_KEY)
    return None if kv is None else await _info(store, kv)


async def break_lock(store: EtcdStore) -> LeaseInfo | None:
    """Revoke the holder's lease (`fleet lock break`): its lock key goes, and its fenced writes fail from now on."""
    kv = await store.get(LOCK_KEY)
    if kv is None:
        return None
    try:
        info = await _info(store, kv)
    except RecordsError as exc:
        # A lock key fleet cannot read (forged, or written by another tool) is exactly what break must remove.
        info = LeaseInfo(f"unreadable lock ({exc})", 0, "", 0.0, 0.0, store.node.name)
    if kv.lease:
        await store.revoke(kv.lease)
    await store.txn([E.Compare("create", LOCK_KEY, kv.create_revision)], [E.Delete(LOCK_KEY)])
    return info


class EtcdLease:
    """The fleet's lease for one run, as an etcd lease with the lock key attached.

    `async with EtcdLease(store, command="fleet apply", wait=60):` takes it, renews it every ttl/3 in a task the
    context owns, and revokes it on exit. The ttl runs on the etcd members' clocks: a controller stopped past it
    (SIGSTOP, a suspended laptop) loses the lease, whatever its own clock says. `fence` is the compare every
    write of the run carries (`SharedState`); `check()` asks the server that the lock key is still this run's
    before an action on nodes.
    """

    def __init__(self, store: EtcdStore, *, command: str, ttl: int = DEFAULT_TTL, wait: float = 0.0,
                 holder: str | None = None, pid: int | None = None, key: str = LOCK_KEY) -> None:
        if ttl < 1 or wait < 0:
            raise ValueError("ttl must be at least 1 s, wait not negative")
        self.store = store
        self.command = clean(command, COMMAND_LIMIT)
        self.ttl = ttl
        self.wait = wait
        self.holder = clean(holder if holder is not None else default_holder(), 120)
        self.pid = pid if pid is not None else os.getpid()
        self.key = key
        self.lease_id: int | None = None
        self.revision: int | None = None
        self._lost: str | None = None
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"EtcdLease(holder={self.holder!r}, pid={self.pid}, command={self.command!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """True while this run believes it holds the lease (as of the last renewal or check)."""
        return self.revision is not None and self._lost is None

    @property
    def fence(self) -> E.Compare:
        """The lock key still has this run's create revision: true only while this run's lease lives."""
        if self.revision is None:
            raise LeaseLost("the fleet's lease is not held by this run")
        return E.Compare("create", self.key, self.revision)

    async def acquire(self, wait: float | None = None) -> None:
        """Take the lease, retrying for up to `wait` seconds; `LeaseHeld` names the holder when it stays taken."""
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        delay = 0.05
        value = encode({"holder": self.holder, "pid": self.pid, "command": self.command, "since": time.time()})
        while True:
            grant = await self.store.grant(self.ttl)
            try:
                done = await self.store.txn([E.Compare("create", self.key, 0)],
                                            [E.Put(self.key, value, grant.id)], [E.Get(self.key)])
            except BaseException:
                # The put may have landed: give the lease back, which removes the key with it.
                with contextlib.suppress(RecordsError):
                    await asyncio.shield(self.store.revoke(grant.id))
                raise
            if done.succeeded:
                self.lease_id, self.revision, self._lost = grant.id, done.revision, None
                return
            await self.store.revoke(grant.id)
            current = done.responses[0] if done.responses else None
            held = current.kvs[0] if isinstance(current, E.Range) and current.kvs else None
            left = deadline - time.monotonic()
            if left <= 0:
                if held is None:
                    raise LeaseError("the fleet's lease could not be taken: the lock key changed while taking it")
                raise LeaseHeld(await _info(self.store, held))
            await asyncio.sleep(min(left, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 1.0)

    async def renew(self) -> None:
        """Extend the lease by its ttl; raise `LeaseLost` when it is gone (expired, broken, revoked)."""
        if self.lease_id is None or self._lost is not None:
            raise LeaseLost(self._lost or "the fleet's lease is not held by this run")
        if await self.store.keepalive(self.lease_id) is None:
            self._lost = "the fleet's lease was lost: etcd no longer has it (expired or broken)"
            raise LeaseLost(self._lost)

    async def check(self) -> None:
        """Confirm with etcd that the lock key is still this run's; raise `LeaseLost` otherwise. One round trip:
        call it before each action on nodes (start, stop, HAProxy or keepalived sync)."""
        fence = self.fence
        if self._lost is not None:
            raise LeaseLost(self._lost)
        kv = await self.store.get(self.key)
        if kv is None or kv.create_revision != fence.value:
            self._lost = ("the fleet's lease was lost: the lock key is gone" if kv is None
                          else f"the fleet's lease was lost: taken by {Holder.of(kv).holder}")
            raise LeaseLost(self._lost)

    def lost(self, why: str) -> LeaseLost:
        """Mark the lease lost (a fenced write was refused) and return the error to raise."""
        self._lost = why
        return LeaseLost(why)

    async def release(self) -> None:
        """Revoke the lease; the lock key goes with it. A lease already gone is not an error."""
        lease, self.lease_id, self.revision = self.lease_id, None, None
        if lease is not None:
            await self.store.revoke(lease)

    async def _renew_forever(self) -> None:
        with contextlib.suppress(LeaseLost):
            while True:
                await asyncio.sleep(self.ttl / 3)
                try:
                    await self.renew()
                except RecordsError:
                    continue  # unreachable for now: the next round tries again; the ttl decides, not us

    async def __aenter__(self) -> EtcdLease:
        await self.acquire()
        self._renewer = asyncio.create_task(self._renew_forever(), name="fleet-etcd-lease-renewal")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await end_renewal(self._renewer, self.release)
        self._renewer = None


@dataclass(frozen=True)
class Event:
    """One entry of the event log: its number (the etcd revision that created it, never reused) and value."""

    number: int
    key: str
    value: Any


class SharedState:
    """The writes of one run holding `lease`: each is one etcd transaction that also compares the lease's fence,
    so once the lease is gone nothing is written and `LeaseLost` is raised. Reads go through `store`."""

    def __init__(self, store: EtcdStore, lease: EtcdLease) -> None:
        self.store = store
        self.lease = lease

    async def _fenced(self, compares: Sequence[E.Compare], success: Sequence[E.Op],
                      failure: Sequence[E.Op] = ()) -> E.TxnResult:
        """Run a transaction guarded by the fence; `LeaseLost` when the fence failed. The failure branch's first
        answer is the lock key (so the caller tells a lost lease from its own compares failing)."""
        fence = self.lease.fence
        done = await self.store.txn([fence, *compares], success, [E.Get(self.lease.key), *failure])
        if done.succeeded:
            return done
        lock = done.responses[0]
        if not isinstance(lock, E.Range) or not lock.kvs or lock.kvs[0].create_revision != fence.value:
            raise self.lease.lost("the fleet's lease was lost: a write was refused by etcd (the lease expired or "
                                  "was broken); nothing was written")
        return done

    async def read(self, *keys: str, prefix: bool = False) -> dict[str, Any]:
        """The JSON values of `keys` (every key under each when `prefix`), read in one transaction that also
        confirms the lease: what a decision to act is made on, never older than the lease (`LeaseLost` if gone).
        Keys that do not exist are left out."""
        done = await self._fenced([], [E.Get(k, prefix) for k in keys])
        return {kv.key: decode(kv) for answer in done.responses if isinstance(answer, E.Range) for kv in answer.kvs}

    async def write(self, puts: Mapping[str, Any], deletes: Sequence[str] = (), *, event: Any = None) -> int:
        """Put JSON values and delete keys, all or none, under the lease, with `event` (who changed what) appended
        to the log in the same transaction; the etcd revision of the write (the event's number)."""
        ops: list[E.Op] = [E.Put(k, encode(v)) for k, v in puts.items()]
        ops += [E.Delete(k) for k in deletes]
        compares, logged = _logged(event)
        done = await self._fenced(compares, [*ops, *logged])
        if not done.succeeded:
            raise RecordsError("an event key already exists; nothing was written")
        return done.revision

    async def create(self, key: str, value: Any, *, event: Any = None) -> bool:
        """Put `value` at `key` only if the key does not exist (a claim: one writer ever wins it), under the lease,
        with `event`; False when it already existed (nothing written)."""
        compares, logged = _logged(event)
        done = await self._fenced([E.Compare("version", key, 0), *compares], [E.Put(key, encode(value)), *logged])
        return done.succeeded

    async def next_revision(self, service: str, record: Any, *, event: Any = None) -> int:
        """Store `record` as the service's next revision and return its number: one compare-and-swap on the
        service's counter, in the same transaction as the record (and `event`, if given), so two writers never
        get the same number."""
        counter = revision_counter_key(service)
        current = await self.store.get(counter)
        for _ in range(CAS_ATTEMPTS):
            last = 0 if current is None else _counter(current)
            guard = (E.Compare("version", counter, 0) if current is None
                     else E.Compare("mod", counter, current.mod_revision))
            number = last + 1
            compares, logged = _logged(event)
            done = await self._fenced([guard, E.Compare("version", revision_key(service, number), 0), *compares],
                                      [E.Put(counter, str(number)), E.Put(revision_key(service, number),
                                                                          encode(record)), *logged],
                                      [E.Get(counter)])
            if done.succeeded:
                return number
            answer = done.responses[1]
            current = answer.kvs[0] if isinstance(answer, E.Range) and answer.kvs else None
        raise RecordsError(f"service {service}: no revision number after {CAS_ATTEMPTS} attempts (other writers "
                           f"took each one)")

    async def revisions(self, service: str) -> list[tuple[int, Any]]:
        """The service's revisions, (number, record) in order."""
        prefix = f"{SERVICES}{_segment(service)}/revisions/"
        out = [(int(kv.key[len(prefix):]), decode(kv)) for kv in await self.store.range(prefix)]
        return sorted(out, key=lambda item: item[0])

    async def append_event(self, event: Any) -> int:
        """Add an event to the log under the lease; its number (strictly increasing in the order events land)."""
        return await self.write({}, event=event)

    async def trim_events(self, keep: int) -> int:
        """Delete the oldest events beyond the newest `keep` (the retention the inventory sets), under the lease;
        how many were deleted. Oldest by create revision, not by key: a key's time is its controller's clock."""
        if keep < 0:
            raise ValueError(f"events to keep: expected >= 0, got {keep}")
        extra = await self.store.count(EVENTS) - keep
        if extra <= 0:
            return 0
        old = list(await self.store.oldest_keys(EVENTS, extra))
        for start in range(0, len(old), TXN_DELETES):
            await self._fenced([], [E.Delete(kv.key) for kv in old[start:start + TXN_DELETES]])
        return len(old)

    async def events(self, after: int = 0) -> list[Event]:
        """The event log in order, from the one after number `after`."""
        return [Event(kv.create_revision, kv.key, decode(kv)) for kv in await self.store.range(EVENTS)
                if kv.create_revision > after]


def _logged(event: Any) -> tuple[list[E.Compare], list[E.Op]]:
    """The compare and put that append `event` to the log (nothing for None): a new key, never overwritten."""
    if event is None:
        return [], []
    key = f"{EVENTS}{time.time_ns():020d}-{secrets.token_hex(4)}"
    return [E.Compare("version", key, 0)], [E.Put(key, encode(event))]


def _counter(kv: E.KeyValue) -> int:
    value = decode(kv)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordsError(f"etcd key {kv.key}: not a revision counter: {kv.value[:80]!r}; refusing it")
    return value
