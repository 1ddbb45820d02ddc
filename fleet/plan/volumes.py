"""Where node-local volume data is, as read from the nodes' volume directories, and what that means for placing
a service: its replicas go to the nodes holding its data, and wait for a lost one rather than start empty.

Pure: the view is built by the engine (fleet.engine.volumes) from each node's listing; nothing here reads a
controller file, so every controller derives the same placement from the same fleet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from fleet.config.spec import ServiceSpec
from fleet.plan.scheduler import NodeState


@dataclass(frozen=True)
class VolumeView:
    """`held`: (service, volume name) → the nodes whose volume directory for it exists; `read`: the nodes whose
    directories were listed (any other node may hold data nobody could see); `fresh`: services the fleet's
    records show never ran (no node holds their data, listed or not)."""

    held: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    read: frozenset[str] = frozenset()
    fresh: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "held", MappingProxyType(dict(self.held)))
        object.__setattr__(self, "read", frozenset(self.read))
        object.__setattr__(self, "fresh", frozenset(self.fresh))

    @classmethod
    def of(cls, dirs: Iterable[tuple[str, str, str]], read: Iterable[str]) -> VolumeView:
        """From (node, service, volume name) rows and the nodes that were listed."""
        held: dict[tuple[str, str], set[str]] = {}
        for node, service, name in dirs:
            held.setdefault((service, name), set()).add(node)
        return cls({k: frozenset(v) for k, v in held.items()}, frozenset(read))

    def holders(self, service: str, names: Iterable[str]) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for name in names:
            out |= self.held.get((service, name), frozenset())
        return out

    def with_holder(self, service: str, name: str, node: str) -> VolumeView:
        """This view after `node` created the volume's directory (a replica started there)."""
        held = dict(self.held)
        held[(service, name)] = held.get((service, name), frozenset()) | {node}
        return VolumeView(held, self.read | {node}, self.fresh)


def local_volumes(spec: ServiceSpec) -> tuple[str, ...]:
    """The names of the service's node-local (type: volume) volumes."""
    return tuple(sorted({v.source for v in spec.volumes if v.type == "volume" and v.source}))


def data_nodes(spec: ServiceSpec, view: VolumeView | None,
               nodes: Sequence[NodeState]) -> tuple[frozenset[str], frozenset[str]]:
    """(nodes holding the service's local volume data, nodes that hold or may hold it but cannot run it now).

    A worker whose directories could not be listed may hold the data (unless the service never ran: `fresh`):
    its replica waits for it unless every
    local volume of the service says `on_node_loss: start-empty`, in which case only the healthy holders count
    (a replica still goes back to its data while that node is up)."""
    names = local_volumes(spec)
    if not names or view is None:
        return frozenset(), frozenset()
    holders = view.holders(spec.name, names)
    healthy = frozenset(n.name for n in nodes if n.healthy)
    wait = any(v.on_node_loss == "wait" for v in spec.volumes if v.type == "volume")
    if not wait:
        return holders & healthy, frozenset()
    unread = frozenset(n.name for n in nodes if n.name not in view.read and spec.name not in view.fresh)
    return holders, (holders - healthy) | unread


def data_what(spec: ServiceSpec) -> str:
    names = local_volumes(spec)
    return f"the data of volume{'s' if len(names) > 1 else ''} {', '.join(names)}"
