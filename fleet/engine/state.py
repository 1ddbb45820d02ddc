"""The fleet's actual state, read from the nodes: every container with its labels, per reachable node."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..model import Resources
from ..reconcile import Replica, replicas_from
from ..runtime.base import ContainerInfo
from ..scheduler import NodeState
from ..transport import Pool
from .calls import driver_for, perform
from .nodes import NodeReport


@dataclass(frozen=True)
class Observed:
    """What the reachable nodes run; `errors` names nodes that could not be read and why."""

    replicas: tuple[Replica, ...]
    foreign: tuple[tuple[str, ContainerInfo], ...]
    errors: dict[str, str] = field(default_factory=dict)


async def observe(pool: Pool, reports: list[NodeReport]) -> Observed:
    """List every container on every ready node in parallel; a node that fails is reported, not raised."""
    ready = [r for r in reports if r.ok]

    async def one(report: NodeReport) -> list[tuple[str, ContainerInfo]]:
        infos = await perform(pool, report.node, driver_for(report.node, report.facts).list_containers())
        return [(report.node.name, info) for info in infos]

    results = await asyncio.gather(*(one(r) for r in ready), return_exceptions=True)
    rows: list[tuple[str, ContainerInfo]] = []
    errors = {r.node.name: f"{r.status}: {r.reason}" for r in reports if not r.ok}
    for report, res in zip(ready, results, strict=True):
        if isinstance(res, BaseException):
            if not isinstance(res, Exception):
                raise res
            errors[report.node.name] = str(res)
        else:
            rows += res
    mine, foreign = replicas_from(rows)
    return Observed(tuple(mine), tuple(foreign), errors)


def node_states(reports: list[NodeReport], errors: dict[str, str] | None = None) -> list[NodeState]:
    """Scheduler view of the worker nodes: allocatable size, labels, health, host ports others listen on."""
    out = []
    for r in reports:
        if not r.node.has_role("worker"):
            continue
        alloc = r.allocatable or Resources()
        healthy = r.ok and r.node.name not in (errors or {})
        ports = frozenset(r.facts.listening) if r.facts is not None else frozenset()
        out.append(NodeState(r.node.name, Resources(max(alloc.cpu, 0.0), max(alloc.memory, 0)), Resources(),
                             r.node.labels, healthy, ports))
    return out
