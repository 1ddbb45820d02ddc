"""The scheduler's inputs and output as frozen values: what nodes offer, what runs, what is wanted, where."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from fleet.core.errors import SchedulingError
from fleet.core.model import Resources

Strategy = Literal["spread", "pack"]
Reason = Literal["keep", "new", "move"]
DEFAULT_PORT_RANGE = (20000, 29999)


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class NodeState:
    """One node as the scheduler sees it: allocatable size, labels, health and host ports fleet does not own.

    `capacity` is already the measured size capped by any inventory override; `reserved` is kept for the host.
    `others` is what the node measures in use beyond fleet's reservations (other processes, foreign containers):
    new replicas fit only beside it; replicas already there are not moved for it.
    `cordoned`: replicas already there stay, no new one is placed there (`fleet node cordon`, or a node
    `fleet watch` holds through its grace period).
    `draining`: no new replica is placed there and those running there must move (`fleet node drain`).
    `lacks`: what a service may need that the node does not have (`cni`, `runc`, `sshfs`) or its container runtime
    cannot do (`user` on ctr), each with the words that say so; no replica of a service that needs one is started
    there (those running stay).
    """

    name: str
    capacity: Resources
    reserved: Resources = field(default_factory=Resources)
    labels: Mapping[str, str] = field(default_factory=dict)
    healthy: bool = True
    ports_in_use: frozenset[int] = frozenset()
    others: Resources = field(default_factory=Resources)
    cordoned: bool = False
    draining: bool = False
    lacks: Mapping[str, str] = field(default_factory=dict)
    # Disk where containers live (bytes), as measured; None: not measured, never refused for disk.
    disk_free: int | None = None
    disk_total: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))
        object.__setattr__(self, "lacks", _frozen(self.lacks))
        object.__setattr__(self, "ports_in_use", frozenset(self.ports_in_use))


@dataclass(frozen=True)
class Existing:
    """A replica already running, as read back from its container labels."""

    service: str
    replica: int
    node: str
    resources: Resources
    port: int
    spec_hash: str = ""


@dataclass(frozen=True)
class ServiceDemand:
    """What one service wants: how many replicas, how big, where they may go and how to spread them.

    `spread` puts replicas of the service on distinct nodes, then distinct values of the `spread_by` label,
    before doubling up; `pack` fills the most-allocated node that fits first. `port_range` is inclusive.

    `data_nodes` and `lost_data` tie a service with node-local volumes to its data: new replicas go only to
    the `data_nodes` (those holding it) when any node holds or may hold it, and as many as there are
    `lost_data` nodes (holding it, or perhaps, but unable to run it now) wait instead of starting empty.

    `held`: replicas that the caller does not manage, held where they run, on a draining node too (only their
    own service's convergence moves them).

    `needs`: what a node must have to start one (`runc`; `cni` for a bridge network; `sshfs` for network volumes);
    a node whose `lacks` names one of them is refused with its words.
    `max_per_node`: at most that many replicas of the service on one node (a hard limit; None: no limit).
    `per_node`: one replica on every node that passes the checks (`replicas` is ignored): kept where they run
    whatever their numbers, new ones on the nodes without one, in name order (`Placement.counts` says how many).
    """

    service: str
    replicas: int
    resources: Resources
    spec_hash: str = ""
    required_labels: Mapping[str, str] = field(default_factory=dict)
    spread_by: str | None = None
    strategy: Strategy = "spread"
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    data_nodes: frozenset[str] = frozenset()
    lost_data: frozenset[str] = frozenset()
    data_what: str = "its volume data"
    held: bool = False
    needs: frozenset[str] = frozenset()  # tools and runtime features its containers use: see NodeState.lacks
    disk: int = 0  # free disk (bytes) a node must have to take one of its replicas
    max_per_node: int | None = None
    per_node: bool = False

    @property
    def limit(self) -> int | None:
        """Replicas of the service one node may run: 1 per node for `per_node`, else `max_per_node`."""
        return 1 if self.per_node else self.max_per_node

    def __post_init__(self) -> None:
        object.__setattr__(self, "required_labels", _frozen(self.required_labels))
        object.__setattr__(self, "needs", frozenset(self.needs))
        object.__setattr__(self, "data_nodes", frozenset(self.data_nodes))
        object.__setattr__(self, "lost_data", frozenset(self.lost_data))
        lo, hi = self.port_range
        if self.replicas < 0:
            raise SchedulingError(f"{self.service}: replicas cannot be negative: {self.replicas}")
        if self.resources.cpu < 0 or self.resources.memory < 0:
            raise SchedulingError(f"{self.service}: resources cannot be negative: {self.resources}")
        if self.strategy not in ("spread", "pack"):
            raise SchedulingError(f"{self.service}: strategy must be spread or pack, got {self.strategy!r}")
        if not 1 <= lo <= hi <= 65535:
            raise SchedulingError(f"{self.service}: port range {lo}-{hi} is not within 1-65535")
        if self.max_per_node is not None and self.max_per_node < 1:
            raise SchedulingError(f"{self.service}: max_per_node must be at least 1, got {self.max_per_node}")


@dataclass(frozen=True)
class Assignment:
    """Replica `service[replica]` runs on `node` with host `port`: kept, new, or moved from elsewhere."""

    service: str
    replica: int
    node: str
    port: int
    resources: Resources
    reason: Reason
    spec_hash: str = ""

    def as_existing(self) -> Existing:
        return Existing(self.service, self.replica, self.node, self.resources, self.port, self.spec_hash)


@dataclass(frozen=True)
class Unplaced:
    """A replica no node can take; `reason` says what it needs and the most any eligible node has free."""

    service: str
    replica: int
    reason: str

    def __str__(self) -> str:
        return f"{self.service}[{self.replica}]: {self.reason}"


@dataclass(frozen=True)
class Placement:
    """The scheduler's answer: where every wanted replica goes, what to stop, what cannot be placed and why.

    `rejected` explains, per node, why it took nothing (unhealthy) or could not take a service left unplaced;
    `stop_reasons` says why each replica in `stops` is stopped; `counts` how many replicas each per-node
    service wants in this pass (one per node that takes or keeps one).
    """

    assignments: tuple[Assignment, ...] = ()
    stops: tuple[Existing, ...] = ()
    unplaced: tuple[Unplaced, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)
    stop_reasons: Mapping[Existing, str] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rejected", MappingProxyType(dict(self.rejected)))
        object.__setattr__(self, "stop_reasons", MappingProxyType(dict(self.stop_reasons)))
        object.__setattr__(self, "counts", MappingProxyType(dict(self.counts)))

    def as_existing(self) -> tuple[Existing, ...]:
        """What will be running once this placement is applied, to feed back as `existing`."""
        return tuple(a.as_existing() for a in self.assignments)

    def on_node(self, node: str) -> tuple[Assignment, ...]:
        return tuple(a for a in self.assignments if a.node == node)
