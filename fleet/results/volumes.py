"""The volumes on the workers and storage nodes, as `fleet volume ls` lists them."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Kind = Literal["local", "sshfs"]


@dataclass(frozen=True)
class VolumeRow:
    """One volume directory: `local` on a worker (its data is there only), `sshfs` on a storage node. `users`:
    the fleet containers that mount it (for `local`, the service's containers on that node; for `sshfs`, the
    service's containers on any node), as `node/container id`."""

    node: str
    kind: Kind
    service: str
    name: str
    size: int | None
    path: str
    users: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.service}/{self.name}"


@dataclass(frozen=True)
class VolumeListing:
    rows: tuple[VolumeRow, ...]
    errors: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
