"""The fleet's actual state, read from the nodes: every container with its labels, per reachable node."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from fleet.core import labels as L
from fleet.core.labels import ContainerLabels, parse_labels
from fleet.core.model import Resources
from fleet.engine.containers import PsResult, ps
from fleet.engine.nodes import NodeReport
from fleet.node.runtime.base import ContainerInfo, Status
from fleet.plan.reconcile import Replica
from fleet.plan.scheduler import NodeState
from fleet.transport import Pool


def _created(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def replicas_from(rows: Iterable[tuple[str, ContainerInfo]]) -> tuple[list[Replica], list[tuple[str, ContainerInfo]]]:
    """Split containers (as a node lists them) into fleet replicas (read from labels) and foreign ones (left alone)."""
    return _split((node, info, parse_labels(info.labels)) for node, info in rows)


def _split(rows: Iterable[tuple[str, ContainerInfo, ContainerLabels | None]],
           ) -> tuple[list[Replica], list[tuple[str, ContainerInfo]]]:
    mine, foreign = [], []
    for node, info, lab in rows:
        if lab is None or lab.replica is None or lab.port is None:
            foreign.append((node, info))
            continue
        mine.append(Replica(
            node=node, id=info.id, service=lab.service, replica=lab.replica, revision=lab.revision,
            spec_hash=lab.spec_hash or "", port=lab.port, running=info.status == Status.RUNNING,
            resources=Resources(lab.cpu or 0.0, lab.memory or 0), image=info.image, oom_killed=info.oom_killed,
            lb=L.parse_lb_label(info.labels.get(L.LB)), health=L.parse_health_label(info.labels.get(L.HEALTH)),
            created=_created(info.labels.get(L.CREATED)), ports=L.parse_ports_label(info.labels.get(L.PORTS)),
        ))
    return mine, foreign


@dataclass(frozen=True)
class Observed:
    """What the reachable nodes run; `errors` names nodes that could not be read and why."""

    replicas: tuple[Replica, ...]
    foreign: tuple[tuple[str, ContainerInfo], ...]
    errors: dict[str, str] = field(default_factory=dict)


async def observe(pool: Pool, reports: list[NodeReport]) -> Observed:
    """Every container on every ready node, split into fleet's replicas and foreign ones; failures reported."""
    return observed(await ps(pool, reports))


def observed(listed: PsResult) -> Observed:
    """A `ps` listing split into fleet's replicas and foreign containers, with its errors."""
    mine, foreign = _split((row.node, row.info, row.labels) for row in listed.rows)  # labels read by `ps`
    return Observed(tuple(mine), tuple(foreign), dict(listed.errors))


def node_states(reports: list[NodeReport], errors: dict[str, str] | None = None,
                held: Sequence[Replica] = ()) -> list[NodeState]:
    """Scheduler view of the worker nodes: allocatable size, labels, health, host ports others listen on, and
    what the node measures in use beyond fleet's reservations (`NodeFacts.others`).

    `held` are replicas last seen on nodes that do not answer now but are within their grace period (`fleet
    watch`): such a node counts as healthy and cordoned, sized to hold exactly them, so they stay where they are
    and nothing new goes there."""
    holding: dict[str, list[Replica]] = {}
    for h in held:
        holding.setdefault(h.node, []).append(h)
    out = []
    for r in reports:
        if not r.node.has_role("worker"):
            continue
        kept = holding.get(r.node.name)
        if kept is not None:
            # A little more than their sum: each replica's CPU is rounded up on its own.
            size = Resources(sum(k.resources.cpu for k in kept) + 0.001 * len(kept),
                             sum(k.resources.memory for k in kept))
            out.append(NodeState(r.node.name, size, Resources(), r.labels, True, cordoned=True))
            continue
        state = r.node_state
        if state.healthy and r.node.name in (errors or {}):
            state = replace(state, healthy=False)
        out.append(state)
    return out
