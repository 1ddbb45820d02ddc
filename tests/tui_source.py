"""A `Source` for the TUI's tests that records every question the app asks and answers with fixed data.

It stands in for the data layer only (labelled: a fake where the Pilot tests need deterministic answers); the
app, its views, workers and messages are the real ones. The same data draws the snapshot tests and the README's
screenshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from fleet.api import Event, NodeReport
from fleet.cli.describe import NodeView, ServiceView
from fleet.core.errors import FleetError, LeaseHeld, LeaseInfo
from fleet.core.model import Node, Resources
from fleet.engine.status import FleetStatus, ReplicaStatus, ServiceStatus
from fleet.node.facts import NodeFacts, TaskFacts
from fleet.plan.reconcile import Replica
from fleet.results import NodeLease, PsResult, VolumeListing, VolumeRow
from fleet.results.jobs import Attempt, JobRun
from fleet.store.history import Revision
from fleet.tui.data import NODE_VERBS, Action, ActionResult, EventRing, ServiceRecord, Snapshot, Verb

GiB, MiB = 1024**3, 1024**2
T0 = datetime(2024, 5, 1, 12, 0, 1)
EPOCH = 1714564801.0  # T0 as Unix seconds in UTC; only used for history and event times


def facts(ncpu: int = 2, used: int = 0, cpu_ns: int = 0, tasks: int = 0) -> NodeFacts:
    ts = tuple(TaskFacts(f"t{i}", 100 + i, True, used // max(tasks, 1), None, cpu_ns // max(tasks, 1), None, 0)
               for i in range(tasks))
    return NodeFacts(hostname="h", ncpu=ncpu, mem_total=4 * GiB, mem_available=3 * GiB, load=(0.25, 0.2, 0.1),
                     uptime_s=100.0, disk_total=20 * GiB, disk_free=10 * GiB, runtime="ctr",
                     runtime_version="1.6.20~ds1", runtime_socket=True, cgroup=2, tasks=ts)


def ready(name: str, used: int = 0, cpu_ns: int = 0, tasks: int = 0) -> NodeReport:
    return NodeReport(Node(name, f"10.0.0.{name[-1]}", reserved=Resources(0.5, GiB)), "ready", None,
                      facts(used=used, cpu_ns=cpu_ns, tasks=tasks), 0.01)


def unreachable(name: str) -> NodeReport:
    return NodeReport(Node(name, "10.0.0.9"), "unreachable", "connect: timed out after 5s", None, 5.0)


def replica(service: str, n: int, node: str, health: str = "up", revision: int = 3) -> ReplicaStatus:
    rep = Replica(node=node, id=f"{service}-{n}-abc", service=service, replica=n, revision=revision, spec_hash="h",
                  port=8000 + n, running=True, resources=Resources(0.1, 64 * MiB),
                  image=f"registry.local/{service}:v{revision}")
    return ReplicaStatus(rep, f"10.0.0.{node[-1]}", {"lb1": health})


def fleet_status(at: int = 0) -> FleetStatus:
    """api and web; HAProxy has counted 4 requests a second for api (0.5 of them 5xx) and 12.5 for web."""
    return FleetStatus(
        services=(
            ServiceStatus("api", (replica("api", 1, "n1"), replica("api", 2, "n2", "down")), ("10.0.0.4:8080",),
                          (1000 + 4 * at, 10 + at // 2)),
            ServiceStatus("web", (replica("web", 1, "n1"), replica("web", 2, "n2"), replica("web", 3, "n1")),
                          ("10.0.0.4:80",), (5000 + int(12.5 * at), 0)),
        ),
        errors={}, lb_errors={})


FLEET = fleet_status()
RECORDS = {"api": ServiceRecord(accepted=3, wanted=2, decision="applied"),
           "web": ServiceRecord(accepted=3, wanted=3, decision="applied")}


def snapshot(at: int = 0, nodes: Sequence[NodeReport] | None = None, errors: dict[str, str] | None = None,
             status: FleetStatus | bool | None = True, records: dict[str, ServiceRecord] | None = None) -> Snapshot:
    """The fleet `at` seconds after T0: node CPU time grows by 0.2 core-seconds a second on n1 (`status`: True
    for `fleet_status(at)`)."""
    if status is True:
        status = fleet_status(at)
    taken = datetime.fromtimestamp(T0.timestamp() + at)
    default = (ready("n1", 192 * MiB, int(at * 0.2e9), 2), ready("n2", 128 * MiB, int(at * 0.05e9), 2),
               ready("lb1"))
    return Snapshot(tuple(nodes if nodes is not None else default), status or None, errors or {}, taken, 0.3,
                    RECORDS if records is None else records)


HEALTHY = snapshot()
N2_DOWN = snapshot(2, nodes=(ready("n1"), unreachable("n2"), ready("lb1")),
                   errors={"n2": "unreachable: connect: timed out after 5s"})


def revision(service: str, n: int, outcome: str, reason: str = "") -> Revision:
    return Revision(service, n, f"hash{n}", f"registry.local/{service}:v{n}", "alice@ci", EPOCH + 60 * n,
                    EPOCH + 60 * n + 20, outcome, reason, "{}")  # type: ignore[arg-type]


HISTORY = {"web": [revision("web", 1, "succeeded"), revision("web", 2, "failed", "health: 0/3 ready after 20s"),
                   revision("web", 3, "succeeded")]}
LOGS = {"web": [("n1/web-1-abc", "GET / 200"), ("n2/web-2-abc", "GET /healthz 200"),
                ("n1/web-3-abc", "GET /missing 404")],
        "n1/web-1-abc": [("n1/web-1-abc", "listening on :8001"), ("n1/web-1-abc", "GET / 200")]}
INVENTORY = "/etc/fleet/prod-eu/inventory.yaml"  # the fleet the header and confirmations name: prod-eu
WEB_SPEC = ('{"image": "registry.local/web:v3", "replicas": 3, "resources": {"cpu": 0.1, "memory": 67108864}, '
            '"port": 8080, "health": {"http": "/healthz"}, "lb": {"port": 80}}')


def described(kind: str, name: str, snap: Snapshot) -> ServiceView | NodeView:
    """What `fleet describe` would read, from the fixed data: web's record, revisions and replicas; a node's report."""
    if kind == "node":
        report = next(r for r in snap.nodes if r.node.name == name)
        return NodeView(report, PsResult(()))
    revisions = [*HISTORY.get(name, [])]
    if revisions:
        revisions[-1] = dataclasses.replace(revisions[-1], spec_json=WEB_SPEC)
    status = snap.status or FLEET
    services = tuple(s for s in status.services if s.name == name)
    return ServiceView(name, {"accepted": 3, "decision": "applied", "by": "alice@ci", "at": EPOCH + 180},
                       revisions, FleetStatus(services=services, errors={}, lb_errors={}))


HOLDER = LeaseInfo(holder="bob@ops-2", pid=4242, command="fleet apply web.yaml", since=EPOCH, until=EPOCH + 30,
                   node="n1", read_at=EPOCH + 5, token="secret-token")


VOLUMES = VolumeListing((VolumeRow("n1", "local", "db", "data", 48 * MiB, "/var/lib/fleet/volumes/db/data",
                                   ("n1/db-0-abc",)),
                         VolumeRow("lb1", "sshfs", "web", "shared", 3 * MiB, "/var/lib/fleet/storage/web/shared")),
                        MappingProxyType({"n2": "unreachable: connect: timed out after 5s"}))
IMAGES = ({"n1": {"registry.local/web:v3": "sha256:" + "ab" * 32, "registry.local/api:v3": "sha256:" + "cd" * 32},
           "n2": {"registry.local/web:v3": "sha256:" + "ab" * 32}}, {"lb1": "no runtime"})
LEASES: list[NodeLease] = [("n1", HOLDER), ("n2", "connect: timed out after 5s"), ("lb1", None)]
# Two recorded runs, oldest first as the façade returns them: a nightly report that succeeded on n2, then a deploy
# hook's migration that failed on n1 after two attempts.
JOB_RUNS = [
    JobRun("report", "r-0501a", "schedule", "fleet-watch@ctl", "report --daily", "registry.local/report:v1",
           EPOCH, "succeeded", EPOCH + 12.5, 0, slot="2024-05-01T12:00Z",
           attempts=(Attempt(1, 0, "n2", "report-r-0501a-1", "/var/log/fleet/jobs/r-0501a-1.log", EPOCH, EPOCH + 12.5,
                             0),)),
    JobRun("migrate", "m-0501b", "before_deploy", "alice@ci", "migrate up", "registry.local/web:v3", EPOCH + 60,
           "failed", EPOCH + 63, 1, reason="exit 1 after 2 attempts", service="web", revision=3,
           attempts=(Attempt(1, 0, "n2", "migrate-m-0501b-1", "/l/1.log", EPOCH + 60, EPOCH + 61, 1),
                     Attempt(2, 0, "n1", "migrate-m-0501b-2", "/l/2.log", EPOCH + 61, EPOCH + 63, 1))),
]


class RecordingSource:
    """Answers from fixed data and records, in order, what the app asked: `("collect",)`, `("history", svc)`,
    `("logs", ref, follow, tail)`, `("act", Action)`. `verbs` are the actions it can carry out; `refuse` makes
    every action raise LeaseHeld naming HOLDER; `emit` are events sent while an action runs."""

    def __init__(self, *snapshots: Snapshot | Exception, verbs: Sequence[Verb] | None = None,
                 refuse: bool = False, emit: Sequence[Event] = (), history: dict[str, list[Revision]] | None = None,
                 logs: dict[str, list[tuple[str, str]]] | None = None, fail: str | None = None) -> None:
        self.snapshots: list[Snapshot | Exception] = list(snapshots) or [HEALTHY]
        self.asked: list[tuple[Any, ...]] = []
        self.events = EventRing(size=100)
        self.verbs = set(verbs) if verbs is not None else {"scale", "restart", "rollback", "promote", "abort",
                                                           "destroy", "exec", *NODE_VERBS}
        self.refuse = refuse
        self.emit = list(emit)
        self.revisions = HISTORY if history is None else history
        self.log_lines = LOGS if logs is None else logs
        self.fail = fail
        self.release = asyncio.Event()  # set it to let an action finish (it is set from the start)
        self.release.set()
        self.calls = 0
        self.inventory = INVENTORY

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [a for a in self.asked if a[0] == kind]

    @property
    def actions(self) -> list[Action]:
        return [a[1] for a in self.of("act")]

    async def collect(self, partial: Callable[[Snapshot], None] | None = None) -> Snapshot:
        self.asked.append(("collect",))
        item = self.snapshots[min(self.calls, len(self.snapshots) - 1)]
        self.calls += 1
        if isinstance(item, Exception):
            raise item
        return item

    async def history(self, service: str) -> Sequence[Revision]:
        self.asked.append(("history", service))
        return self.revisions.get(service, [])

    @contextlib.asynccontextmanager
    async def logs(self, ref: str, *, follow: bool, tail: int) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        self.asked.append(("logs", ref, follow, tail))
        if ref not in self.log_lines:
            raise FleetError(f"no container or service named {ref!r}")
        lines = self.log_lines[ref]

        async def gen() -> AsyncIterator[tuple[str, str]]:
            for line in lines:
                yield line
            if follow:
                await asyncio.Event().wait()  # a followed log waits for more until the view is left

        try:
            yield gen()
        finally:
            self.asked.append(("logs-closed", ref))

    async def describe(self, kind: Literal["service", "node"], name: str) -> ServiceView | NodeView:
        self.asked.append(("describe", kind, name))
        last = self.snapshots[min(self.calls, len(self.snapshots)) - 1] if self.calls else HEALTHY
        return described(kind, name, last if isinstance(last, Snapshot) else HEALTHY)

    async def volumes(self) -> VolumeListing:
        self.asked.append(("volumes",))
        return VOLUMES

    async def images(self) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        self.asked.append(("images",))
        return IMAGES

    async def lease(self) -> list[NodeLease]:
        self.asked.append(("lease",))
        return LEASES

    async def job_runs(self) -> list[JobRun]:
        self.asked.append(("jobs",))
        return JOB_RUNS

    def can(self, verb: Verb) -> bool:
        return verb in self.verbs

    async def act(self, action: Action, on_line: Callable[[str], None]) -> ActionResult:
        self.asked.append(("act", action))
        if self.refuse:
            raise LeaseHeld(HOLDER)
        for e in self.emit:
            self.events(e)
        await self.release.wait()
        if self.fail:
            raise FleetError(self.fail)
        if action.verb == "exec":
            on_line("hello from " + action.target)
            return ActionResult(True, f"{action.target}: `{' '.join(action.argv)}` exited 0")
        return ActionResult(True, f"{action.target}: {action.verb} done", ("web: ok, started 1, stopped 0",))


def event(step: str, service: str, message: str, node: str | None = None, at: float = 0.0) -> Event:
    return Event(step, service, message, node, None, EPOCH + at)
