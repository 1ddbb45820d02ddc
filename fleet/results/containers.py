"""The containers on the nodes as `fleet ps` lists them, and the deadline each node has to list them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fleet.core.labels import ContainerLabels
from fleet.node.runtime.base import ContainerInfo

# How long one node has to answer a listing (containers, tasks, images): ~20 ms each on a healthy node. Here,
# beside the listing it bounds, so that `fleet ps --help` shows it without loading the engine (fleet.engine.calls).
LIST_TIMEOUT = 8.0


@dataclass(frozen=True)
class PsRow:
    """One container on one node; `labels` is None for a container fleet did not start (foreign)."""

    node: str
    info: ContainerInfo
    labels: ContainerLabels | None

    @property
    def foreign(self) -> bool:
        return self.labels is None

    @property
    def service(self) -> str | None:
        return self.labels.service if self.labels else None


@dataclass(frozen=True)
class PsResult:
    """Every container on every ready node; `errors` names the nodes that could not be read, and why."""

    rows: tuple[PsRow, ...]
    errors: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))
