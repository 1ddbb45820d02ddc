"""The reconcile diff, pure: what the playbooks want against what the nodes' container labels say runs.

The plan is computed "as if at once" (old replicas of an update are assumed gone, their ports kept busy);
the rollout engine then carries it out batch by batch, re-placing each batch against the live state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from fleet.config.spec import ServiceSpec
from fleet.core import labels as L
from fleet.core.model import Resources
from fleet.plan.needs import lacking, service_needs
from fleet.plan.scheduler import Assignment, Existing, NodeState, ServiceDemand, Unplaced, place
from fleet.plan.volumes import VolumeView, data_nodes, data_what

OLD = "~old"


@dataclass(frozen=True)
class Replica:
    """One fleet container as read back from a node: its labels plus its runtime state."""

    node: str
    id: str
    service: str
    replica: int
    revision: int | None
    spec_hash: str
    port: int
    running: bool
    resources: Resources
    image: str
    oom_killed: bool = False
    lb: L.LbLabel | None = None
    health: L.HealthLabel | None = None
    created: float | None = None
    # Each named container port's host port (`fleet.ports`), by name; empty for a replica with no named ports.
    ports: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ServicePlan:
    """What converging one service means."""

    spec: ServiceSpec
    keep: tuple[Replica, ...] = ()
    start: tuple[Assignment, ...] = ()
    replace: tuple[Replica, ...] = ()
    stop: tuple[tuple[Replica, str], ...] = ()
    cleanup: tuple[Replica, ...] = ()
    unplaced: tuple[Unplaced, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def changed(self) -> bool:
        return bool(self.start or self.replace or self.stop or self.cleanup)


@dataclass(frozen=True)
class Plan:
    services: tuple[ServicePlan, ...]
    rejected: Mapping[str, str] = field(default_factory=dict)
    unmanaged: tuple[str, ...] = ()
    # Nodes that lack what some of these services need (fleet.plan.needs.lacking): nothing of theirs starts there.
    lacking: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rejected", MappingProxyType(dict(self.rejected)))
        object.__setattr__(self, "lacking", MappingProxyType(dict(self.lacking)))

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.services)

    @property
    def unplaced(self) -> tuple[Unplaced, ...]:
        return tuple(u for s in self.services for u in s.unplaced)

    def service(self, name: str) -> ServicePlan:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


def duplicates(replicas: Sequence[Replica]) -> list[Replica]:
    """Extra running copies of one replica number of a service, as a node that was unreachable (and whose
    replicas were placed elsewhere) leaves behind when it comes back. One copy of each is kept: the one on the
    node holding fewest of that service's replicas, so the spread comes back too. Copies are of one spec:
    an old and a new replica sharing a number mid-rollout (or a canary beside its baseline) are not copies."""
    running = [r for r in replicas if r.running]
    crowd: dict[tuple[str, str], int] = {}
    for r in running:
        crowd[(r.service, r.node)] = crowd.get((r.service, r.node), 0) + 1
    groups: dict[tuple[str, int, str], list[Replica]] = {}
    for r in running:
        groups.setdefault((r.service, r.replica, r.spec_hash), []).append(r)
    extras = []
    for rs in groups.values():
        if len(rs) > 1:
            ranked = sorted(rs, key=lambda r: (-crowd[(r.service, r.node)], r.node, r.id))
            extras += ranked[:-1]
    return sorted(extras, key=lambda r: (r.service, r.replica, r.node))


def demand_for(spec: ServiceSpec, replicas: int | None = None, *, volumes: VolumeView | None = None,
               nodes: Sequence[NodeState] = ()) -> ServiceDemand:
    """The scheduler's demand for `spec`; with `volumes`, tied to the nodes holding its local volume data."""
    held, lost = data_nodes(spec, volumes, nodes)
    return ServiceDemand(
        data_nodes=held, lost_data=lost, data_what=data_what(spec),
        service=spec.name,
        replicas=spec.replicas if replicas is None else replicas,
        resources=spec.resources,
        spec_hash=spec.spec_hash(),
        required_labels=spec.placement.require,
        spread_by=spec.placement.spread_by,
        strategy=spec.placement.strategy,
        needs=service_needs(spec) | ({"user"} if spec.security.user is not None else frozenset()),
        disk=spec.disk,
        max_per_node=spec.placement.max_per_node,
        per_node=spec.per_node,
    )


def _keep_demand(service: str, replicas: Sequence[Replica]) -> ServiceDemand:
    """Hold replicas that this plan does not manage exactly where they are."""
    biggest = max((r.resources for r in replicas), key=lambda r: (r.cpu, r.memory), default=Resources())
    return ServiceDemand(service=service, replicas=len(replicas), resources=biggest, strategy="pack", held=True)


def _existing(r: Replica, service: str | None = None, replica: int | None = None) -> Existing:
    return Existing(service or r.service, r.replica if replica is None else replica, r.node, r.resources, r.port,
                    r.spec_hash)


def placement_inputs(
    specs: Sequence[ServiceSpec], nodes: Sequence[NodeState], replicas: Sequence[Replica],
    *, hold_outdated: bool, outgoing: frozenset[str] = frozenset(), volumes: VolumeView | None = None,
) -> tuple[list[NodeState], list[Existing], list[ServiceDemand], dict[str, list[Replica]]]:
    """Scheduler inputs: managed services as demands; everything else running held in place.

    With `hold_outdated`, a service's outdated replicas keep their room (a batch of a rolling update must fit
    beside them); without it they are assumed gone and only their ports stay taken. Replicas named in
    `outgoing` (failing their checks, or having to move) count as outdated although their spec is current.
    `volumes` (where node-local volume data is) ties services with such volumes to their data.
    """
    managed = {s.name: s for s in specs}
    # A spec's hash is canonical JSON plus sha256: computed once per spec, not once per replica.
    hashes = {s.name: s.spec_hash() for s in specs}
    running = [r for r in replicas if r.running]
    existing: list[Existing] = []
    demands: list[ServiceDemand] = []
    outdated: dict[str, list[Replica]] = {}
    others: dict[str, list[Replica]] = {}
    busy_ports: dict[str, set[int]] = {}
    for r in running:
        spec = managed.get(r.service)
        if spec is None:
            others.setdefault(r.service, []).append(r)
        elif r.spec_hash != hashes[r.service] or r.id in outgoing:
            outdated.setdefault(r.service, []).append(r)
        else:
            existing.append(_existing(r))
    for name, rs in sorted(others.items()):
        existing += [_existing(r, replica=i) for i, r in enumerate(sorted(rs, key=lambda x: (x.replica, x.id)))]
        demands.append(_keep_demand(name, rs))
    for name, rs in sorted(outdated.items()):
        if hold_outdated:
            key = name + OLD
            existing += [_existing(r, key, i) for i, r in enumerate(sorted(rs, key=lambda x: (x.replica, x.id)))]
            demands.append(_keep_demand(key, rs))
        else:
            for r in rs:
                busy_ports.setdefault(r.node, set()).add(r.port)
    demands += [demand_for(s, volumes=volumes, nodes=nodes) for s in specs]
    shaped = [replace(n, ports_in_use=n.ports_in_use | frozenset(busy_ports[n.name])) if n.name in busy_ports else n
              for n in nodes]
    # A replica on its way out gives its room back when it stops, and its own work is part of the load its node
    # measures: that load does not refuse its replacement there (up to the CPU those replicas ask), so a busy node
    # keeps its share of a rolling update instead of the update waiting for room the load took.
    leaving: dict[str, float] = {}
    for rs in outdated.values():
        for r in rs:
            leaving[r.node] = leaving.get(r.node, 0.0) + r.resources.cpu
    shaped = [replace(n, others=replace(n.others, cpu=max(0.0, round(n.others.cpu - leaving[n.name], 3))))
              if leaving.get(n.name) and n.others.cpu > 0 else n for n in shaped]
    return shaped, existing, demands, outdated


def plan(specs: Sequence[ServiceSpec], nodes: Sequence[NodeState], replicas: Sequence[Replica],
         volumes: VolumeView | None = None) -> Plan:
    """What converging `specs` means, given the nodes that answered, the replicas they run and (`volumes`)
    where node-local volume data is."""
    extra = duplicates(replicas)
    extra_ids = {r.id for r in extra}
    replicas = [r for r in replicas if r.id not in extra_ids]
    shaped, existing, demands, outdated = placement_inputs(specs, nodes, replicas, hold_outdated=False,
                                                           volumes=volumes)
    placement = place(shaped, existing, demands)
    healthy = {n.name for n in nodes if n.healthy}
    by_service: dict[str, list[Replica]] = {}
    for r in replicas:
        by_service.setdefault(r.service, []).append(r)
    stop_index = {(e.service, e.node, e.port): reason for e, reason in placement.stop_reasons.items()}
    # The placement's assignments and unplaced replicas by service, in their order: each service reads its own
    # instead of scanning everyone's (S services x R replicas).
    assigned: dict[str, list[Assignment]] = {}
    for a in placement.assignments:
        assigned.setdefault(a.service, []).append(a)
    unplaced: dict[str, list[Unplaced]] = {}
    for u in placement.unplaced:
        unplaced.setdefault(u.service, []).append(u)
    plans = []
    for spec in specs:
        if spec.per_node:
            spec = replace(spec, replicas=placement.counts.get(spec.name, 0))  # as this pass counts
        mine = by_service.get(spec.name, [])
        h = spec.spec_hash()
        up_to_date = [r for r in mine if r.running and r.spec_hash == h]
        kept_keys = {(a.node, a.port) for a in assigned.get(spec.name, ()) if a.reason == "keep"}
        keep = tuple(r for r in up_to_date if (r.node, r.port) in kept_keys)
        stops = tuple((r, stop_index.get((r.service, r.node, r.port), "surplus"))
                      for r in up_to_date if (r.node, r.port) not in kept_keys)
        stops += tuple((r, f"second copy of {r.service}[{r.replica}]") for r in extra if r.service == spec.name)
        plans.append(ServicePlan(
            spec=spec,
            keep=keep,
            start=tuple(a for a in assigned.get(spec.name, ()) if a.reason != "keep"),
            replace=tuple(sorted(outdated.get(spec.name, []), key=lambda r: (r.replica, r.id))),
            stop=stops,
            cleanup=tuple(r for r in mine if not r.running and r.node in healthy),
            unplaced=tuple(unplaced.get(spec.name, ())),
        ))
    managed = {s.name for s in specs}
    unmanaged = tuple(sorted({r.service for r in replicas} - managed))
    return Plan(tuple(plans), placement.rejected, unmanaged, lacking(nodes, specs))
