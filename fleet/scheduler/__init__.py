"""The scheduler: a pure function from node states, running replicas and wanted services to a Placement."""

from fleet.scheduler.place import place
from fleet.scheduler.values import (
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
