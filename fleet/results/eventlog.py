"""The fleet's event log as `fleet events` shows it: one entry per change of the shared state (who, when, what,
from which command), and the notices a follow gives when it had to read the log afresh."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoggedEvent:
    """One entry: its number (the etcd revision that wrote it, never reused) and key, and its JSON value; or,
    for a value that does not decode, `error` naming the key (nothing is taken from it)."""

    number: int
    key: str
    value: dict[str, Any] | None = None
    error: str | None = None

    def field(self, name: str) -> Any:
        return None if self.value is None else self.value.get(name)

    @property
    def service(self) -> str | None:
        found = self.field("service")
        return found if isinstance(found, str) else None


@dataclass(frozen=True)
class LogNotice:
    """Something a follower of the log must be told: e.g. etcd compacted the revision it was at, so the log was
    read afresh (events trimmed meanwhile cannot be shown)."""

    message: str
