"""The results of changing operations: progress events, per-service outcomes, a run's result, a plan's view."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet.plan.members import MembershipPlan
from fleet.plan.reconcile import Plan


@dataclass(frozen=True)
class Event:
    """One step of an apply, for progress bars and `--json` event streams."""

    step: str
    service: str
    message: str
    node: str | None = None
    container: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Outcome:
    """How one service ended: `ok`, what was started and stopped, and why (failure, a waiting canary, a note).

    `changed` is False when the run found the service as it should be and did nothing to it."""

    service: str
    ok: bool
    started: int = 0
    stopped: int = 0
    reason: str | None = None
    changed: bool = True
    waiting: bool = False



@dataclass(frozen=True)
class RunResult:
    """What a changing operation did: one outcome per service, and the nodes that could not take part."""

    outcomes: list[Outcome]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes) and not self.errors

    @property
    def changed(self) -> bool:
        return any(o.changed for o in self.outcomes)


@dataclass(frozen=True)
class PlanView:
    """`fleet plan`: the reconcile diff, the spec changes that keep containers (lb, health, …) per service, and
    what `reconcile` would hold back; `lb_diff`: per lb node, the unified diff of its HAProxy config (masked)."""

    plan: Plan
    errors: dict[str, str]
    changes: dict[str, list[str]]
    notes: dict[str, str]
    lb_diff: dict[str, list[str]] = field(default_factory=dict)
    # The etcd membership steps toward the inventory's record nodes, or why they are refused (fleet.plan.members).
    members: MembershipPlan = field(default_factory=MembershipPlan)

    @property
    def changed(self) -> bool:
        return self.plan.changed or any(self.changes.values()) or bool(self.members.steps)
