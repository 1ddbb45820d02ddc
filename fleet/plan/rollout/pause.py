"""A rollout paused by hand (`fleet rollout pause`), as a value: who asked and when, and what a paused rollout
says. A pause is asked for while the rollout holds the fleet's lease, so it is a request beside the records that
the rollout reads before each batch (fleet.store.pause), not a decision written under the lease."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pause:
    """`by` (user@host) paused the service's rollouts at `at` (Unix seconds)."""

    by: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at}

    @classmethod
    def from_json(cls, data: Any) -> Pause:
        """Read a stored pause back; ValueError says what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        by, at = data.get("by"), data.get("at")
        if not isinstance(by, str) or not by:
            raise ValueError(f"by: expected who paused, got {by!r:.60}")
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise ValueError(f"at: expected a time in seconds, got {at!r:.60}")
        return cls(by, float(at))

    def reason(self) -> str:
        """What a rollout stopped for this pause reports."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        return f"paused by {self.by} at {when}; `fleet rollout resume` continues it"
