"""The TUI's data layer: one `Snapshot` of the fleet per refresh, read through the façade; widgets only get values.

A `Source` is the seam: the app asks it for snapshots and never sees the transport (nor does this module: it
only calls the façade's `nodes` and `status`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fleet.api import FleetStatus, NodeReport


@dataclass(frozen=True)
class Snapshot:
    """What the fleet looked like at `taken_at`: node reports, services (None when they could not be read), and
    every problem met on the way as `{where: why}` (a node name, `lb1 (haproxy)`, `status`, `refresh`)."""

    nodes: tuple[NodeReport, ...]
    status: FleetStatus | None
    errors: Mapping[str, str] = field(default_factory=dict)
    taken_at: datetime = field(default_factory=datetime.now)
    duration: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))

    @property
    def ready(self) -> int:
        return sum(1 for r in self.nodes if r.ok)


class FleetLike(Protocol):
    """What `collect` needs of the façade (`fleet.api.Fleet` is one)."""

    async def nodes(self) -> list[NodeReport]: ...

    async def status(self, reports: Sequence[NodeReport] | None = None) -> FleetStatus: ...


class Source(Protocol):
    """Where the app gets its snapshots; `FleetSource` reads the real fleet, tests pass fixed ones."""

    async def collect(self) -> Snapshot: ...


def node_errors(reports: list[NodeReport]) -> dict[str, str]:
    return {r.node.name: f"{r.status}: {r.reason}" if r.reason else r.status for r in reports if not r.ok}


def status_errors(st: FleetStatus) -> dict[str, str]:
    return {**st.errors, **{f"{name} (haproxy)": why for name, why in st.lb_errors.items()}}


async def collect(fleet: FleetLike) -> Snapshot:
    """Node facts, then services, replicas and LB health from the ready nodes; a node that cannot be read is an
    entry in `errors`, never an exception. Only an unexpected failure of the status read is caught as a whole."""
    started = time.perf_counter()
    reports = await fleet.nodes()
    errors = node_errors(reports)
    st: FleetStatus | None
    try:
        st = await fleet.status(reports)
    # The view must outlive one bad read: any failure of the status pass becomes a line in the status bar.
    except Exception as exc:
        st = None
        errors["status"] = f"{type(exc).__name__}: {exc}"
    else:
        for where, why in status_errors(st).items():
            errors.setdefault(where, why)
    return Snapshot(tuple(reports), st, errors, datetime.now(), time.perf_counter() - started)


def failed(previous: Snapshot | None, exc: BaseException) -> Snapshot:
    """The last good data kept on screen, with the reason this refresh failed."""
    why = f"{type(exc).__name__}: {exc}"
    if previous is None:
        return Snapshot((), None, {"refresh": why})
    return Snapshot(previous.nodes, previous.status, {**previous.errors, "refresh": why})


class FleetSource:
    """Snapshots of the real fleet through the façade; the caller owns the façade's pool."""

    def __init__(self, fleet: FleetLike) -> None:
        self.fleet = fleet

    async def collect(self) -> Snapshot:
        return await collect(self.fleet)
