"""`fleet status` as values: each service's replicas, their health in each load balancer, the virtual IP."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.node.keepalived import VrrpState
from fleet.plan.reconcile import Replica


@dataclass(frozen=True)
class VipStatus:
    """The virtual IP, and per lb node: its keepalived state, or why it could not be read."""

    address: str
    states: dict[str, VrrpState] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def holders(self) -> list[str]:
        """The lb nodes that hold the address now: one when all is well, none during a move (or with every
        HAProxy down), two only while a split lasts."""
        return sorted(name for name, st in self.states.items() if st.holds)


@dataclass(frozen=True)
class ReplicaStatus:
    replica: Replica
    address: str
    lb_health: dict[str, str] = field(default_factory=dict)  # lb node → up/down/drain/maint/nocheck


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    replicas: tuple[ReplicaStatus, ...]
    endpoints: tuple[str, ...]
    # HAProxy's cumulative counters of the service's servers summed over the lb nodes that answered: (requests,
    # 5xx responses); the TUI charts their rates between two reads.
    requests: tuple[int, int] = (0, 0)

    @property
    def running(self) -> int:
        return sum(1 for r in self.replicas if r.replica.running)

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.replicas if r.replica.running and r.lb_health
                   and all(h == "up" for h in r.lb_health.values()))


@dataclass(frozen=True)
class FleetStatus:
    services: tuple[ServiceStatus, ...]
    errors: dict[str, str]
    lb_errors: dict[str, str]
    # The fleet's virtual IP and which lb node holds it (None: the inventory has none).
    vip: VipStatus | None = None
