"""Old images removed from the nodes (the inventory's `image_retention: N`), at the end of every apply and
reconcile: an image is removed from a node only when

- some service's recorded revision used it, older than that service's last N revisions (an image fleet never
  ran, such as one pushed for the next apply, is never touched), and
- no revision within any service's last N, nor any accepted revision, uses it, and
- no container on that node (running or stopped, fleet's or not) was made from it.

`ctr images rm` removes the name; containerd's garbage collector frees the layers no other image shares. A
rollback to a revision whose image was removed pulls it again (registry images) or needs it pushed again
(`fleet.local/…`). A node that cannot be read or fails a removal is named in an event, never an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleet.core.errors import FleetError
from fleet.engine.calls import LIST_TIMEOUT, driver_for, perform, why
from fleet.engine.ledger import spec_of
from fleet.engine.nodes import NodeReport
from fleet.results import Event
from fleet.results.records import Revision
from fleet.transport import Pool


@dataclass(frozen=True)
class Retained:
    """Image references of recorded revisions: `old` (past every service's last N), `kept` (within them)."""

    old: frozenset[str]
    kept: frozenset[str]


def image_of(rev: Revision) -> str | None:
    """The reference a revision's containers ran (its pinned digest included), None when unreadable."""
    try:
        return spec_of(rev).image_ref
    except (FleetError, ValueError):
        return None


def retained(history: dict[str, Sequence[Revision]], accepted: dict[str, int | None], keep: int) -> Retained:
    """Pure: which recorded images are old and which are kept, over every service's history (oldest first)."""
    old: set[str] = set()
    kept: set[str] = set()
    for service, revs in history.items():
        ordered = sorted(revs, key=lambda r: r.revision)
        recent = {r.revision for r in ordered[-keep:]} | ({accepted[service]} - {None})
        for rev in ordered:
            image = image_of(rev)
            if image is not None:
                (kept if rev.revision in recent else old).add(image)
    return Retained(frozenset(old - kept), frozenset(kept))


def removable(images: dict[str, str], in_use: set[str], plan: Retained) -> list[str]:
    """Of one node's images ({ref: digest}), those to remove: old, not kept, no container made from them."""
    return sorted(ref for ref in images if ref in plan.old and ref not in plan.kept and ref not in in_use)


class History(Protocol):
    """What retention reads of the fleet's records."""

    async def services(self) -> list[str]: ...
    async def list(self, service: str) -> list[Revision]: ...
    async def state(self, service: str) -> dict[str, Any] | None: ...


async def prune(pool: Pool, reports: Sequence[NodeReport], records: History, keep: int,
                emit: Callable[[Event], None]) -> dict[str, list[str]]:
    """Read every service's history and accepted revision, then remove the old images (see the module)."""
    services = await records.services()
    revs, states = await asyncio.gather(asyncio.gather(*(records.list(s) for s in services)),
                                        asyncio.gather(*(records.state(s) for s in services)))
    accepted = {s: (st or {}).get("accepted") for s, st in zip(services, states, strict=True)}
    return await prune_images(pool, reports, retained(dict(zip(services, revs, strict=True)), accepted, keep), emit)


async def prune_images(pool: Pool, reports: Sequence[NodeReport], plan: Retained,
                       emit: Callable[[Event], None]) -> dict[str, list[str]]:
    """Remove `plan`'s old images from every ready worker, except those its containers (read now, any state,
    fleet's or not) were made from; what each node had removed."""
    done: dict[str, list[str]] = {}

    async def one(report: NodeReport) -> None:
        name = report.node.name
        driver = driver_for(report.node, report.facts)
        try:
            images, containers = await asyncio.gather(
                perform(pool, report.node, driver.image_list(), timeout=LIST_TIMEOUT),
                perform(pool, report.node, driver.list_containers(), timeout=LIST_TIMEOUT))
        except FleetError as exc:
            emit(Event("images", "", f"old images not removed: {why(name, exc)}", name))
            return
        for ref in removable(images, {c.image for c in containers}, plan):
            try:
                await perform(pool, report.node, driver.image_remove(ref), timeout=LIST_TIMEOUT)
            except FleetError as exc:
                emit(Event("images", "", f"removing old image {ref} failed: {why(name, exc)}", name))
                continue
            done.setdefault(name, []).append(ref)
            emit(Event("images", "", f"removed old image {ref}", name))

    if plan.old:
        await asyncio.gather(*(one(r) for r in reports if r.ok and r.node.has_role("worker")))
    return done
