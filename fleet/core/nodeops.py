"""Node operations as values: a node's mark (cordoned, draining, labels set or removed by `fleet node label`),
the `key=value` / `key-` arguments, and the JSON document every controller reads from the fleet's records.

Pure: the store keeps each node's mark as a key in etcd (fleet.store.etcd_records); the scheduler sees its effect
through NodeState (cordoned, draining, effective labels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from fleet.core.names import LABEL_KEY_RE, LABEL_VALUE_RE

FORMAT = 1
# Which nodes keep the records is read from the inventory alone: a label kept in the records cannot choose them.
INVENTORY_ONLY = ("fleet.records",)
_ARG_RE = re.compile(r"^(?P<key>[^=]+?)(?:=(?P<value>.*)|(?P<minus>-))$")


@dataclass(frozen=True)
class NodeMark:
    """What `fleet node` recorded about one node.

    `cordoned`: no new replicas go there (those running stay). `draining`: its replicas are being moved off (set
    while `fleet node drain` runs; a controller that finds it set carries the drain on). `labels` are set by the
    CLI and win over the inventory's; `removed` names inventory labels the CLI took away. `by`/`at` say who
    changed the mark last, and when (Unix seconds)."""

    cordoned: bool = False
    draining: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    by: str = ""
    at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(sorted(self.labels.items()))))
        object.__setattr__(self, "removed", frozenset(self.removed))

    @property
    def empty(self) -> bool:
        """Nothing recorded: the node is as its inventory entry says."""
        return not (self.cordoned or self.draining or self.labels or self.removed)

    @property
    def schedule(self) -> str:
        """`draining`, `cordoned` or `ok` (new replicas may go there)."""
        return "draining" if self.draining else "cordoned" if self.cordoned else "ok"

    def effective(self, inventory: Mapping[str, str]) -> dict[str, str]:
        """The node's labels: the inventory's without the removed ones, then the CLI's over them."""
        out = {k: v for k, v in inventory.items() if k not in self.removed}
        out.update(self.labels)
        return dict(sorted(out.items()))

    def changes(self) -> list[str]:
        """The CLI's label changes as `key=value` and `-key`, sorted by key: what `fleet nodes` shows."""
        return [f"{k}={v}" for k, v in self.labels.items()] + [f"-{k}" for k in sorted(self.removed)]


def parse_label_args(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """`key=value` (set) and `key-` (remove) arguments as ({key: value}, [key]); ValueError names the bad one."""
    if not args:
        raise ValueError("expected at least one label change: key=value to set, key- to remove")
    sets: dict[str, str] = {}
    removes: list[str] = []
    for arg in args:
        m = _ARG_RE.match(arg)
        if m is None:
            raise ValueError(f"{arg!r}: expected key=value to set a label or key- to remove one")
        key = m.group("key")
        if key in sets or key in removes:
            raise ValueError(f"{arg!r}: label {key!r} is changed twice")
        if m.group("minus"):
            removes.append(key)
        else:
            sets[key] = m.group("value")
    check_label_change(sets, removes)
    return sets, removes


def check_label_change(sets: Mapping[str, str], removes: Sequence[str]) -> None:
    """Refuse keys and values the label rules refuse, a key both set and removed, and inventory-only keys."""
    for key in [*sets, *removes]:
        if not LABEL_KEY_RE.match(key):
            raise ValueError(f"invalid label key {key!r}: letters, digits, . _ / - (starting with a letter or "
                             f"digit), up to 127 characters")
        if key in INVENTORY_ONLY:
            raise ValueError(f"label {key!r} is read from the inventory only (it says which nodes keep the fleet's "
                             f"records); change it there")
    for key, value in sets.items():
        if not LABEL_VALUE_RE.match(value):
            raise ValueError(f"invalid value {value!r} for label {key!r}: letters, digits and . _ : / @ + -, "
                             f"up to 128 characters")
    both = sorted(set(sets) & set(removes))
    if both:
        raise ValueError(f"label {both[0]!r} is both set and removed")


def relabel(mark: NodeMark, inventory: Mapping[str, str], sets: Mapping[str, str],
            removes: Sequence[str]) -> NodeMark:
    """The mark after `fleet node label`: each set key wins over the inventory (and is no longer removed); each
    removed key loses its CLI value and, when the inventory has it, is recorded as removed."""
    check_label_change(sets, removes)
    labels = {k: v for k, v in mark.labels.items() if k not in removes}
    labels.update(sets)
    removed = (set(mark.removed) - set(sets)) | {k for k in removes if k in inventory}
    return replace(mark, labels=labels, removed=frozenset(removed))


# ---- the document on the fleet --------------------------------------------------------------------------------


def encode_marks(marks: Mapping[str, NodeMark]) -> dict[str, Any]:
    """The JSON object kept in the fleet's records; nodes with nothing recorded are left out."""
    return {"format": FORMAT, "nodes": {
        name: {"cordoned": m.cordoned, "draining": m.draining, "labels": dict(m.labels),
               "removed": sorted(m.removed), "by": m.by, "at": m.at}
        for name, m in sorted(marks.items()) if not m.empty}}


def decode_marks(data: Mapping[str, Any] | None) -> dict[str, NodeMark]:
    """Read the document back (None: nothing recorded yet); ValueError names the node and field that is wrong."""
    if data is None:
        return {}
    fmt = data.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise ValueError(f"format: expected an integer, got {fmt!r}")
    if fmt > FORMAT:
        raise ValueError(f"written by a newer fleet (format {fmt}, this fleet reads {FORMAT})")
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        raise ValueError(f"nodes: expected an object, got {type(nodes).__name__}")
    out: dict[str, NodeMark] = {}
    for name, raw in nodes.items():
        if not isinstance(raw, dict):
            raise ValueError(f"nodes.{name}: expected an object, got {type(raw).__name__}")
        out[str(name)] = _decode_mark(str(name), raw)
    return out


def _decode_mark(name: str, raw: Mapping[str, Any]) -> NodeMark:
    def flag(key: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise ValueError(f"nodes.{name}.{key}: expected true or false, got {value!r}")
        return value

    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError(f"nodes.{name}.labels: expected an object of strings, got {labels!r:.80}")
    removed = raw.get("removed", [])
    if not isinstance(removed, list) or not all(isinstance(k, str) for k in removed):
        raise ValueError(f"nodes.{name}.removed: expected a list of strings, got {removed!r:.80}")
    at = raw.get("at", 0.0)
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise ValueError(f"nodes.{name}.at: expected a number, got {at!r}")
    return NodeMark(flag("cordoned"), flag("draining"), labels, frozenset(removed), str(raw.get("by", "")),
                    float(at))
