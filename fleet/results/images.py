"""What pushing an image archive did on each node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PushStatus = Literal["sent", "present", "failed"]
@dataclass(frozen=True)
class PushResult:
    """What pushing one archive did on one node."""

    node: str
    status: PushStatus
    bytes_sent: int
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"
