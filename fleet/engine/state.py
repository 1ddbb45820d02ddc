"""The fleet's actual state, read from the nodes: every container with its labels, per reachable node."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Resources
from ..reconcile import Replica, replicas_from
from ..runtime.base import ContainerInfo
from ..scheduler import NodeState
from ..transport import Pool
from .containers import ps
from .nodes import NodeReport


@dataclass(frozen=True)
class Observed:
    """What the reachable nodes run; `errors` names nodes that could not be read and why."""

    replicas: tuple[Replica, ...]
    foreign: tuple[tuple[str, ContainerInfo], ...]
    errors: dict[str, str] = field(default_factory=dict)


async def observe(pool: Pool, reports: list[NodeReport]) -> Observed:
    """Every container on every ready node, split into fleet's replicas and foreign ones; failures reported."""
    listed = await ps(pool, reports)
    mine, foreign = replicas_from((row.node, row.info) for row in listed.rows)
    return Observed(tuple(mine), tuple(foreign), dict(listed.errors))


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
