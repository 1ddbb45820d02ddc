"""What the façade asks of the store for one inventory: the shared state in etcd on the record nodes it names
(opened on first contact, starting etcd when no member answers), its records and node marks, the lease's
duration, the lease by hand (`fleet lock`) and the watcher's leadership; and the inventory checks the façade makes
before contacting any node."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from fleet.core.errors import FleetError, InventoryError, LabelError, Problem, RecordsError, StoreUnreachable
from fleet.core.model import Inventory, Node
from fleet.core.nodeops import NodeMark, check_label_change
from fleet.node import etcd as E
from fleet.results.nodes import NO_SHARED_STATE, NodeReport
from fleet.results.records import NodeLease
from fleet.store.etcd import LOCK_KEY, WATCH_LEADER_KEY, EtcdLease, EtcdStore, SharedState
from fleet.store.etcd import break_lock as break_etcd_lock
from fleet.store.etcd import lock_status as etcd_lock_status
from fleet.store.etcd_records import EtcdRecords, read_marks, update_mark
from fleet.store.lease import default_holder
from fleet.store.migrate import migrate
from fleet.store.nodes import DEFAULT_BASE_DIR, record_nodes
from fleet.transport import Pool

LEASE_TTL = 30.0  # seconds; `$FLEET_LEASE_TTL` overrides (a SIGKILLed holder frees the lease after this)
# How long a fleet's first contact waits for the members it started to serve (a new cluster elects a leader).
START_WAIT = 30.0
PORT_ENV = "FLEET_ETCD_PORT"
ETCD_DATA = E.EtcdFiles().data_dir  # where a record node keeps etcd's data once its member was started


def lease_ttl() -> float:
    """How long the fleet's lease lasts unrenewed: `$FLEET_LEASE_TTL` (1 s to 1 h), else LEASE_TTL."""
    try:
        ttl = float(os.environ.get("FLEET_LEASE_TTL", LEASE_TTL))
    except ValueError:
        return LEASE_TTL
    return ttl if 1.0 <= ttl <= 3600.0 else LEASE_TTL


def lease_seconds() -> int:
    """`lease_ttl()` in whole seconds (etcd's leases count in seconds), rounded up, at least 1."""
    return max(1, math.ceil(lease_ttl()))


def client_port() -> int:
    """The etcd client port on the record nodes' loopback: `$FLEET_ETCD_PORT` (a simulated record node in
    bench/ reaches a local etcd this way), else etcd's own 2379."""
    raw = os.environ.get(PORT_ENV, "")
    if raw.isdigit() and 0 < int(raw) < 65536:
        return int(raw)
    return E.CLIENT_PORT


def stand_in() -> bool:
    """Whether the record nodes reach a stand-in etcd (`$FLEET_ETCD_PORT`: bench/'s simulated record nodes), whose
    members are not theirs: its membership is left alone."""
    return client_port() != E.CLIENT_PORT


def lease_nodes(inventory: Inventory) -> list[Node]:
    """The record nodes that keep the fleet's shared state; InventoryError when the inventory has no node at all."""
    nodes = record_nodes(inventory)
    if not nodes:
        raise InventoryError([Problem(inventory.path, None, "",
                                      "no nodes, so no record node to keep the fleet's shared state")])
    return nodes


def etcd_store(pool: Pool, inventory: Inventory, *, timeout: float = 10.0) -> EtcdStore:
    """A client of the fleet's etcd through its record nodes (no I/O until used)."""
    return EtcdStore(pool, lease_nodes(inventory), port=client_port(), timeout=timeout)


async def open_shared(pool: Pool, inventory: Inventory, start: Callable[[], Awaitable[object]],
                      restart: Callable[[], Awaitable[object]] | None = None) -> EtcdStore:
    """The fleet's etcd, answering: tried first; when no member answers, `start()` (the engine's: every member
    started, with its peer certificates) and tried again until a member serves (up to START_WAIT seconds).
    When it answers at once and there are several members, `restart()` starts any that died."""
    store = etcd_store(pool, inventory)
    try:
        await store.get(LOCK_KEY)
    except StoreUnreachable:
        pass
    else:
        if restart is not None and len(store.nodes) > 1:
            await restart()
        return store
    reports = await start()
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            await store.get(LOCK_KEY)
            return store
        except StoreUnreachable as exc:
            if time.monotonic() > deadline:
                raise StoreUnreachable(f"{exc} (after starting etcd: {reports})") from exc
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def run_lease(pool: Pool, inventory: Inventory, store: EtcdStore, *, command: str, wait: float,
                    note: Callable[..., None]) -> AsyncIterator[tuple[EtcdLease, EtcdRecords]]:
    """The fleet's lease for one run (an etcd lease: taken, waiting up to `wait`; renewed; revoked on exit) and the
    run's records, read afresh and written fenced by it. The first run on a fleet that kept file records imports
    them (fleet.store.migrate; `note` gets one line on what it did); the event log is trimmed to the inventory's
    `events_keep` at the end of a run that went well."""
    async with EtcdLease(store, command=command, ttl=lease_seconds(), wait=wait) as lease:
        shared = SharedState(store, lease)
        moved = await migrate(pool, inventory, shared, DEFAULT_BASE_DIR)
        if moved is not None and moved.services:
            note(f"imported the records of {moved.services} services ({moved.revisions} revisions) and "
                 f"{moved.marks} node marks from files into etcd", *moved.warnings)
        yield lease, EtcdRecords(store, shared, command=command)
        await shared.trim_events(inventory.events_keep)


def fleet_records(store: EtcdStore, *, command: str = "") -> EtcdRecords:
    """The fleet's revision history and decisions in etcd, read-only (outside the lease)."""
    return EtcdRecords(store, command=command)


def marked(reports: Sequence[NodeReport], marks: Mapping[str, NodeMark], why: str | None) -> list[NodeReport]:
    """The reports with each node's mark (`why`: the marks could not be read, so none is known)."""
    return [replace(r, mark=marks.get(r.node.name, NodeMark()), mark_error=why) for r in reports]


async def marks_of(pool: Pool, inventory: Inventory) -> tuple[dict[str, NodeMark], str | None]:
    """Every node's mark, read from etcd now, and why they could not be read (if so). Never raises for a node."""
    if not inventory.nodes:
        return {}, None
    try:
        return await read_marks(etcd_store(pool, inventory)), None
    except RecordsError as exc:
        # A fleet whose etcd never ran (not even installed yet) has no marks to read: none is known to exist.
        if not await any_etcd_data(pool, lease_nodes(inventory)):
            return {}, NO_SHARED_STATE
        return {}, f"cannot read the fleet's record of its nodes: {exc}"


async def brand_new(pool: Pool, inventory: Inventory) -> bool:
    """A fleet whose etcd was never started: no member answers and no record node holds etcd's data (so nothing
    is on record; the first writing run starts etcd). One round trip to a record node when its member answers."""
    try:
        await etcd_store(pool, inventory).get(LOCK_KEY)
    except StoreUnreachable:
        return not await any_etcd_data(pool, lease_nodes(inventory))
    return False


async def any_etcd_data(pool: Pool, nodes: Sequence[Node]) -> bool:
    """Whether any of the record nodes holds etcd's data (ETCD_DATA; or could not be asked): False only when every
    one answered that it has none, a fleet whose first writing run has not started etcd yet."""
    results = await asyncio.gather(*(pool.run(n, ["test", "-e", ETCD_DATA], timeout=10.0) for n in nodes))
    return any(r.error is not None or r.exit_status != 1 for r in results)


async def change_mark(records: EtcdRecords, node: str, change: Callable[[NodeMark], NodeMark]) -> dict[str, NodeMark]:
    """Change one node's mark on the fleet, by this controller (the caller holds the lease); every mark after."""
    return await update_mark(records, node, change, by=default_holder())


def known_node(inventory: Inventory, name: str) -> Node:
    """The inventory's node `name`; InventoryError naming the node and the inventory file when there is none."""
    try:
        return inventory.node(name)
    except KeyError:
        raise InventoryError([Problem(inventory.path, None, "", f"no node {name!r} in this inventory "
                                      f"(its nodes: {', '.join(inventory.names()) or 'none'})")]) from None


def checked_label_change(sets: Mapping[str, str], removes: Sequence[str]) -> None:
    """LabelError for a label change the label rules refuse (fleet.core.nodeops.check_label_change)."""
    try:
        check_label_change(sets, removes)
    except ValueError as exc:
        raise LabelError(str(exc)) from exc


def check_lb_nodes(inventory: Inventory, names: Sequence[str]) -> None:
    """FleetError naming those of `names` that are not lb nodes of the inventory."""
    unknown = [n for n in names if n not in inventory.names() or not inventory.node(n).has_role("lb")]
    if unknown:
        raise FleetError(f"not an lb node of {inventory.path}: {', '.join(unknown)}")


async def lock_status(pool: Pool, inventory: Inventory, *, timeout: float) -> list[NodeLease]:
    """The lease as each record node's member reports it, each within `timeout` seconds: `(node, LeaseInfo)`,
    `(node, None)` when free, `(node, why)` when it could not be read. Never takes the lease."""
    nodes = lease_nodes(inventory)

    async def one(node: Node) -> NodeLease:
        try:
            return node.name, await etcd_lock_status(EtcdStore(pool, [node], port=client_port(), timeout=timeout))
        except RecordsError as exc:
            return node.name, str(exc)

    return list(await asyncio.gather(*(one(n) for n in nodes)))


async def break_lock(pool: Pool, inventory: Inventory, *, timeout: float) -> list[NodeLease]:
    """Revoke the fleet's lease, whoever holds it: its holder's fenced writes fail from then on, and it stops at
    its next check. One line per record node: what was broken (None: it was free; a string: that node's member
    could not be reached)."""
    before = await lock_status(pool, inventory, timeout=timeout)
    if all(isinstance(info, str) for _, info in before):
        return before
    broken = await break_etcd_lock(etcd_store(pool, inventory, timeout=timeout))
    return [(name, info if isinstance(info, str) else broken) for name, info in before]


def watcher_lease(pool: Pool, inventory: Inventory, ttl: float) -> EtcdLease:
    """The leadership of `fleet watch`: an etcd lease on its own key, apart from the fleet's lease (a leading
    watcher and a run of `fleet apply` hold theirs at once; two watchers cannot both lead)."""
    return EtcdLease(etcd_store(pool, inventory), command="fleet watch", ttl=max(1, math.ceil(ttl)),
                     key=WATCH_LEADER_KEY)
