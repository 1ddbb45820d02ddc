"""Node grace, pure: which nodes that stopped answering are still given time, and the replicas held for them.

A node that stops answering keeps, for `grace` seconds from the first round that missed it, the replicas it ran
when last read: the engine counts them as running where they were (see `Engine(held=…)`), so a brief loss moves
nothing. Once the grace is over they are no longer held, and the engine starts their replacements elsewhere;
when the node answers again its copies are duplicates, which the plan retires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from fleet.plan.reconcile import Replica

DEFAULT_GRACE = 30.0


@dataclass(frozen=True)
class GraceView:
    """One round's verdict: replicas held, nodes within their grace (seconds left), nodes whose grace is over,
    and lost nodes never read by this watcher (nothing to hold: acting would replace replicas it never saw)."""

    held: tuple[Replica, ...] = ()
    waiting: Mapping[str, float] = field(default_factory=dict)
    expired: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "waiting", MappingProxyType(dict(sorted(self.waiting.items()))))


@dataclass(frozen=True)
class Grace:
    """What the watcher remembers between rounds: each node's replicas when it last answered, and since when
    each lost node has not answered (the watcher's monotonic clock)."""

    grace: float = DEFAULT_GRACE
    last_seen: Mapping[str, tuple[Replica, ...]] = field(default_factory=dict)
    lost_since: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grace < 0:
            raise ValueError("node_grace must not be negative")
        object.__setattr__(self, "last_seen", MappingProxyType(dict(self.last_seen)))
        object.__setattr__(self, "lost_since", MappingProxyType(dict(self.lost_since)))

    def update(self, now: float, answered: Iterable[str], lost: Iterable[str],
               replicas: Iterable[Replica]) -> tuple[Grace, GraceView]:
        """The state after a round in which `answered` nodes were read (running `replicas`) and `lost` were not."""
        answered, lost = set(answered), set(lost) - set(answered)
        seen = dict(self.last_seen)
        by_node: dict[str, list[Replica]] = {n: [] for n in answered}
        for r in replicas:
            if r.node in by_node:
                by_node[r.node].append(r)
        for node, rs in by_node.items():
            seen[node] = tuple(sorted(rs, key=lambda r: (r.service, r.replica, r.id)))
        since = {n: t for n, t in self.lost_since.items() if n in lost}
        for n in lost:
            since.setdefault(n, now)
        held: list[Replica] = []
        waiting: dict[str, float] = {}
        expired: set[str] = set()
        unknown: set[str] = set()
        for n in sorted(lost):
            left = since[n] + self.grace - now
            if left <= 0:
                expired.add(n)
            elif n in seen:
                waiting[n] = left
                held += [r for r in seen[n] if r.running]
            else:
                waiting[n] = left
                unknown.add(n)
        return (replace(self, last_seen=seen, lost_since=since),
                GraceView(tuple(held), waiting, frozenset(expired), frozenset(unknown)))
