"""What one run knows of the fleet, shared by every room of the engine: the node reports, the replicas seen and
running, the nodes that did not answer, what the load balancers should route, and where volume data is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleet.engine.lb import Rotation
from fleet.engine.nodes import NodeReport
from fleet.engine.state import node_states
from fleet.plan.reconcile import Replica
from fleet.plan.scheduler import NodeState
from fleet.plan.volumes import VolumeView
from fleet.results import Event

Emit = Callable[[Event], None]


@dataclass
class RunView:
    """The run's view, read by `Engine.observe` and kept up to date by every start and stop of the run.

    `held` are replicas last seen on nodes that do not answer now, within their grace period (`fleet watch`):
    they count as running where they were, and their nodes take nothing new (see `node_states`)."""

    reports: list[NodeReport]
    held: tuple[Replica, ...] = ()
    live: list[Replica] = field(default_factory=list)
    seen: tuple[Replica, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)
    rotation: Rotation = field(default_factory=Rotation)
    # Where node-local volume data is (read with the containers), as the ledger sees it (see Ledger.fresh).
    volumes: VolumeView | None = None

    def __post_init__(self) -> None:
        self.by_name = {r.node.name: r for r in self.reports}
        self.addresses = {r.node.name: r.ip_address or r.node.address for r in self.reports}

    def nodes(self) -> list[NodeState]:
        """The nodes as the scheduler sees them now."""
        return node_states(self.reports, self.errors, self.held)

    def running(self, service: str, others: Sequence[str] = ()) -> list[Replica]:
        """The service's running replicas, but for those of a spec hash in `others` (a canary kept apart)."""
        return [r for r in self.live if r.service == service and r.spec_hash not in others]

    def gone(self, r: Replica) -> None:
        """A replica stopped or removed: no longer running, no longer routed."""
        self.live = [x for x in self.live if x.id != r.id]
        self.rotation.drop(r)
