"""What the façade asks of the store for one inventory: its records (with the local cache), its nodes' marks, the
lease's duration, the lease by hand (`fleet lock`) and the watcher's lease, all on the record nodes it names; and
the inventory checks the façade makes before contacting any node."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from fleet.core.errors import FleetError, InventoryError, LabelError, LeaseError, Problem
from fleet.core.model import Inventory, Node
from fleet.core.nodeops import NodeMark, check_label_change
from fleet.results.nodes import NodeReport
from fleet.results.records import NodeLease
from fleet.store.history import History
from fleet.store.lease import Lease, break_lease, default_holder, lease_status
from fleet.store.nodeops import fetch_marks, update_mark
from fleet.store.nodes import record_nodes
from fleet.store.records import FleetHistory
from fleet.transport import Pool

LEASE_TTL = 30.0  # seconds; `$FLEET_LEASE_TTL` overrides (a SIGKILLed holder frees the lease after this)


def lease_ttl() -> float:
    """How long the fleet's lease lasts unrenewed: `$FLEET_LEASE_TTL` (1 s to 1 h), else LEASE_TTL."""
    try:
        ttl = float(os.environ.get("FLEET_LEASE_TTL", LEASE_TTL))
    except ValueError:
        return LEASE_TTL
    return ttl if 1.0 <= ttl <= 3600.0 else LEASE_TTL


def fleet_records(pool: Pool, inventory: Inventory) -> FleetHistory:
    """The fleet's revision history and decisions, kept on the record nodes, with the local copy as a cache
    when this machine has one to offer (a cache that cannot be opened is done without)."""
    cache = None
    with contextlib.suppress(FleetError, OSError):
        cache = History()
    return FleetHistory(pool, record_nodes(inventory), cache=cache)


def marked(reports: Sequence[NodeReport], marks: Mapping[str, NodeMark], why: str | None) -> list[NodeReport]:
    """The reports with each node's mark (`why`: the marks could not be read, so none is known)."""
    return [replace(r, mark=marks.get(r.node.name, NodeMark()), mark_error=why) for r in reports]


async def marks_of(pool: Pool, inventory: Inventory) -> tuple[dict[str, NodeMark], str | None]:
    """Every node's mark, read from the record nodes now, and why they could not be read (if so)."""
    return await fetch_marks(pool, record_nodes(inventory))


async def change_mark(records: FleetHistory, node: str, change: Callable[[NodeMark], NodeMark]) -> dict[str, NodeMark]:
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


def lease_nodes(inventory: Inventory) -> list[Node]:
    """The record nodes that keep the fleet's lease; InventoryError when the inventory has no node at all."""
    nodes = record_nodes(inventory)
    if not nodes:
        raise InventoryError([Problem(inventory.path, None, "",
                                      "no nodes, so no record node to keep the fleet's lease")])
    return nodes


async def lock_status(pool: Pool, inventory: Inventory, *, timeout: float) -> list[NodeLease]:
    """The lease on each record node, each within `timeout` seconds: `(node, LeaseInfo)` (possibly expired),
    `(node, None)` when free, `(node, why)` when it could not be read. Never takes the lease."""
    return await lease_status(pool, lease_nodes(inventory), timeout=timeout)


async def break_lock(pool: Pool, inventory: Inventory, *, timeout: float) -> list[NodeLease]:
    """Remove the lease on every record node, whoever holds it; returns what was broken there (None: it was
    free; a string: the node could not be reached). A holder still running stops at its next renewal."""
    return await break_lease(pool, lease_nodes(inventory), timeout=timeout)


def watcher_lease(pool: Pool, inventory: Inventory, base_dir: str, ttl: float) -> Lease:
    """The lease that says which of several `fleet watch` acts for the fleet (under `base_dir` on the record
    nodes, apart from the fleet's own lease); LeaseError when the inventory has no record node."""
    nodes = record_nodes(inventory)
    if not nodes:
        raise LeaseError("no record node to keep the watcher's lease")
    return Lease(pool, nodes, command="fleet watch", ttl=ttl, base_dir=base_dir)
