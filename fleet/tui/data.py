"""The TUI's data layer: what the app asks the fleet (the `Source` protocol) and the values it gets back.

A `Snapshot` is the fleet at one refresh: node reports, services with their records (wanted count, accepted
revision, a waiting canary), and every problem met on the way. An `Action` is a change as a value: what the
confirmation names before it runs and what a recording source keeps in tests. The events of the controller go to
a bounded `EventRing`. `fleet.tui.source.FleetSource` implements the protocol over the Fleet façade.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fleet.core.units import format_cpu, short_size

if TYPE_CHECKING:
    from fleet.cli.describe import NodeView, ServiceView
    from fleet.results import Event, FleetStatus, NodeLease, NodeReport, Revision, ServiceStatus, VolumeListing
    from fleet.results.jobs import JobRun


@dataclass(frozen=True)
class ServiceRecord:
    """What the fleet's records say of a service: the revision reconcile restores, the count it keeps, the last
    decision (applied, pinned, canary-waiting…) and a canary waiting for promote or abort."""

    accepted: int | None = None
    wanted: int | None = None
    decision: str = ""
    canary: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Snapshot:
    """What the fleet looked like at `taken_at`: node reports, services (None when they could not be read), each
    service's record, and every problem met on the way as `{where: why}` (a node name, `lb1 (haproxy)`,
    `status`, `refresh`); `via` names a `fleet watch` that answered for the nodes and status."""

    nodes: tuple[NodeReport, ...]
    status: FleetStatus | None
    errors: Mapping[str, str] = field(default_factory=dict)
    taken_at: datetime = field(default_factory=datetime.now)
    duration: float = 0.0
    records: Mapping[str, ServiceRecord] = field(default_factory=dict)
    via: str = ""  # "fleet watch" when a watcher on this controller answered

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))
        object.__setattr__(self, "records", MappingProxyType(dict(self.records)))

    @property
    def ready(self) -> int:
        return sum(1 for r in self.nodes if r.ok)

    @property
    def services(self) -> tuple[ServiceStatus, ...]:
        return self.status.services if self.status is not None else ()

    def service(self, name: str | None) -> ServiceStatus | None:
        return next((s for s in self.services if s.name == name), None)

    def requested(self, node: str) -> tuple[float, int]:
        """CPU and memory the fleet's running replicas on `node` asked for (their labels)."""
        reps = [r.replica for s in self.services for r in s.replicas if r.replica.node == node and r.replica.running]
        return sum(r.resources.cpu for r in reps), sum(r.resources.memory for r in reps)


Verb = Literal["scale", "restart", "rollback", "promote", "abort", "destroy", "cordon", "uncordon", "drain", "exec"]
# Actions that need the node verbs the façade may not have yet (Fleet.cordon, uncordon, drain).
NODE_VERBS: tuple[Verb, ...] = ("cordon", "uncordon", "drain")


@dataclass(frozen=True)
class Action:
    """One change the operator asked for, before it runs: `target` is a service, a node or a replica (`node/id`);
    `service` the replica's service; `count` the new replica count; `revision` the one to roll back to; `argv` the
    command to exec."""

    verb: Verb
    target: str
    service: str | None = None
    count: int | None = None
    revision: int | None = None
    argv: tuple[str, ...] = ()
    current: int | None = None

    @property
    def leased(self) -> bool:
        """Whether it runs under the fleet's lease (exec and a replica's stop do not; restart heals under it)."""
        return self.verb != "exec"

    def describe(self) -> str:
        """What will happen, in the words the confirmation shows."""
        t = self.target
        match self.verb:
            case "scale":
                now = f" from {self.current}" if self.current is not None else ""
                return (f"Scale {t}{now} to {self.count} replica(s). Reconcile keeps this count until the next "
                        "apply.")
            case "restart":
                return (f"Restart replica {t} of {self.service}: stop its container (SIGTERM, then SIGKILL after "
                        "10 s), then reconcile starts a new one.")
            case "rollback":
                to = f"revision {self.revision}" if self.revision is not None else "the last good revision"
                return f"Roll {t} back to {to}, replacing its replicas one by one; reconcile keeps it pinned."
            case "promote":
                return f"Promote the waiting canary of {t}: every replica moves to the canary's revision."
            case "abort":
                return f"Abort the waiting canary of {t}: its canary replicas are removed, the accepted revision stays."
            case "destroy":
                return (f"Destroy {t}: take it out of the load balancers, stop and remove every replica. "
                        "This cannot be undone.")
            case "cordon":
                return f"Cordon {t}: no new replica is placed on it; running ones stay."
            case "uncordon":
                return f"Uncordon {t}: replicas may be placed on it again."
            case "drain":
                return f"Drain {t}: cordon it and move every replica elsewhere, one by one."
            case "exec":
                return f"Run `{' '.join(self.argv)}` in {t}."
        raise AssertionError(self.verb)  # pragma: no cover (every verb is matched above)


@dataclass(frozen=True)
class ActionResult:
    """How an action ended: `ok`, one summary line, and detail lines (one per service outcome or node error)."""

    ok: bool
    summary: str
    lines: tuple[str, ...] = ()


def outcome_lines(outcomes: Iterable[Any], errors: Mapping[str, str]) -> tuple[str, ...]:
    """One line per service outcome (started, stopped, why) and per node that could not take part."""
    out = []
    for o in outcomes:
        why = f": {o.reason}" if o.reason else ""
        out.append(f"{o.service}: {'ok' if o.ok else 'FAILED'}, started {o.started}, stopped {o.stopped}{why}")
    out += [f"{where}: {why}" for where, why in errors.items()]
    return tuple(out)


class EventRing:
    """The last `size` events of the controller (oldest first), with listeners told of each new one."""

    def __init__(self, size: int = 500) -> None:
        self.events: deque[Event] = deque(maxlen=size)
        self.listeners: list[Callable[[Event], None]] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        for listener in list(self.listeners):
            listener(event)

    def __len__(self) -> int:
        return len(self.events)

    def __bool__(self) -> bool:
        # A callback is always there, even with no event yet (callers write `on_event or default`).
        return True

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)


LogStream = AbstractAsyncContextManager[AsyncIterator[tuple[str, str]]]


class Source(Protocol):
    """What the app asks of the fleet. `FleetSource` reads and changes the real one through the façade; tests use
    one that records every question. `inventory` is the inventory file's path (the header and every confirmation
    name the fleet by it)."""

    events: EventRing
    inventory: str

    async def collect(self, partial: Callable[[Snapshot], None] | None = None) -> Snapshot:
        """The fleet now; `partial`, when given, may get a first part (the nodes) before the rest is read."""
        ...

    async def history(self, service: str) -> Sequence[Revision]: ...

    def logs(self, ref: str, *, follow: bool, tail: int) -> LogStream: ...

    async def describe(self, kind: Literal["service", "node"], name: str) -> ServiceView | NodeView:
        """Everything about one service or node, as `fleet describe` reads it."""
        ...

    async def volumes(self) -> VolumeListing:
        """Every volume on the workers and storage nodes (`fleet volume ls`)."""
        ...

    async def images(self) -> tuple[Mapping[str, Mapping[str, str]], Mapping[str, str]]:
        """Per node, image reference → manifest digest, and the nodes that could not be read (`fleet image ls`)."""
        ...

    async def lease(self) -> list[NodeLease]:
        """The fleet's lease as each record node holds it (`fleet lock status`)."""
        ...

    async def job_runs(self) -> list[JobRun]:
        """Every job run the fleet recorded, oldest first (`fleet job ls`)."""
        ...

    def can(self, verb: Verb) -> bool:
        """Whether this source can carry out `verb` (the node verbs need a façade that has them)."""
        ...

    async def act(self, action: Action, on_line: Callable[[str], None]) -> ActionResult:
        """Carry out `action`; exec's output goes line by line to `on_line`. Raises LeaseHeld when another run
        holds the fleet's lease, FleetError when the fleet refuses."""
        ...


# Inventory file names that say nothing of which fleet it is: the directory holding one names the fleet instead.
GENERIC_INVENTORY_NAMES = frozenset({"inventory", "hosts", "fleet", "nodes", "inv"})


def fleet_name(inventory: str) -> str:
    """The fleet's name as the UI shows it: the inventory file's name without its suffix (`prod.yaml`: prod), or
    its directory's when the file's name is a generic one (`/etc/fleet/eu-west/inventory.ini`: eu-west; a lab's
    `/var/lib/fleet-lab/fl/inventory.yaml`: fl)."""
    path = PurePath(inventory)
    stem = path.name.split(".", 1)[0] or path.name
    if stem.lower() in GENERIC_INVENTORY_NAMES and path.parent.name not in ("", "/", "."):
        return path.parent.name
    return stem


def sort_key(cell: object) -> tuple[int, float, str]:
    """How a column sorts: by its leading number when it has one (`1.5/2`, `12.5`, `r3 (r2,r3)`, `192M`), else as
    text; a missing value (`-`) last."""
    text = str(cell).strip()
    if text in ("", "-"):
        return (2, 0.0, "")
    m = _NUMBER.match(text)
    if m:
        number = float(m.group(1)) * _SCALE.get(m.group(2), 1)
        return (0, number, text.lower())
    return (1, 0.0, text.lower())


_NUMBER = re.compile(r"^[rv]?(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|m)?")
_SCALE = {**{p: 1024.0 ** (i + 1) for i, u in enumerate("KMGTP") for p in (u, u + "i", u + "iB", u + "B")},
          "m": 0.001}


def node_errors(reports: Sequence[NodeReport]) -> dict[str, str]:
    return {r.node.name: f"{r.status}: {r.reason}" if r.reason else r.status for r in reports if not r.ok}


def status_errors(st: FleetStatus) -> dict[str, str]:
    return {**st.errors, **{f"{name} (haproxy)": why for name, why in st.lb_errors.items()}}


def failed(previous: Snapshot | None, exc: BaseException) -> Snapshot:
    """The last good data kept on screen, with the reason this refresh failed."""
    why = f"{type(exc).__name__}: {exc}"
    if previous is None:
        return Snapshot((), None, {"refresh": why})
    return Snapshot(previous.nodes, previous.status, {**previous.errors, "refresh": why}, previous.taken_at,
                    previous.duration, previous.records, previous.via)


@dataclass
class Series:
    """Figures of one node or service over the last refreshes, for its sparklines: `a` and `b` are rates of
    cumulative counters between two reads (a node's container CPU time in cores, a service's requests per
    second) or levels (`b` of a node: memory in use; of a service: 5xx responses per second)."""

    a: deque[float] = field(default_factory=lambda: deque(maxlen=90))
    b: deque[float] = field(default_factory=lambda: deque(maxlen=90))
    last: tuple[float, float, float] | None = None  # (seconds, counter a, counter b) of the previous read

    def rate(self, at: float, a: float, b: float | None = None) -> None:
        """Add the rates of counters `a` (and `b`) since the last read; a counter that went back (a restarted
        HAProxy or container) starts again."""
        last = self.last
        # Rounded so that jitter in the last digits does not fill a flat chart's whole height.
        if last is not None and at > last[0] and a >= last[1]:
            self.a.append(round((a - last[1]) / (at - last[0]), 3))
            if b is not None and b >= last[2]:
                self.b.append(round((b - last[2]) / (at - last[0]), 3))
        self.last = (at, a, b if b is not None else 0.0)

    def level(self, b: float) -> None:
        self.b.append(b)


def track(series: dict[str, Series], traffic: dict[str, Series], snapshot: Snapshot) -> None:
    """Add each ready node's CPU and memory, and each service's request and 5xx rates, from `snapshot`; times
    are the snapshot's own (its reads, not when the app got them)."""
    at = snapshot.taken_at.timestamp()
    for r in snapshot.nodes:
        if r.facts is not None:
            s = series.setdefault(r.node.name, Series())
            s.rate(at, r.facts.used_cpu_ns / 1e9)
            s.level(float(r.facts.used_memory))
    for svc in snapshot.services:
        requests, errors = getattr(svc, "requests", (0, 0))
        traffic.setdefault(svc.name, Series()).rate(at, float(requests), float(errors))


def rate_text(per_second: float) -> str:
    return f"{per_second:.1f}" if per_second < 100 else f"{per_second:.0f}"


def cpu_text(cores: float) -> str:
    return format_cpu(round(cores, 3))


def size_text(n: float) -> str:
    return short_size(int(n))
