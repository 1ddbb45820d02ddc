"""The scheduler: a pure function from node states, running replicas and wanted services to a Placement."""

from fleet.plan.scheduler.place import place
from fleet.plan.scheduler.values import (
    DEFAULT_PORT_RANGE,
    Assignment,
    Existing,
    NodeState,
    Placement,
    ServiceDemand,
    Strategy,
    Unplaced,
)

__all__ = [
    "DEFAULT_PORT_RANGE",
    "Assignment",
    "Existing",
    "NodeState",
    "Placement",
    "ServiceDemand",
    "Strategy",
    "Unplaced",
    "place",
]
