"""What the fleet's records hold, as values: a service's revisions, and the lease on each record node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from fleet.core.errors import LeaseInfo

RevisionOutcome = Literal["in-progress", "succeeded", "failed", "rolled-back", "aborted"]

NodeLease: TypeAlias = tuple[str, "LeaseInfo | str | None"]
"""(node, its lease) where the lease is a LeaseInfo, None when free, or why the node could not be read."""


def majority(count: int) -> int:
    """How many of `count` record nodes make a strict majority (1 of 1, 2 of 2 or 3, 3 of 4 or 5)."""
    return count // 2 + 1


@dataclass(frozen=True)
class Revision:
    """One applied spec of a service and how its rollout ended; times are Unix seconds."""

    service: str
    revision: int
    spec_hash: str
    image: str
    user: str
    created_at: float
    finished_at: float | None
    outcome: RevisionOutcome
    reason: str
    spec_json: str
