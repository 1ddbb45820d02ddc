"""The engine's harness, after Nomad's scheduler Harness: the real `Engine` (run, rollouts, room book, ledger)
over fake replica operations that record every step, an in-memory ledger and fake node reports. Fast (no node,
no SSH: the pool is never connected), so the engine's logic is tested here and the lab keeps what only real
nodes show. A fake, labelled as such: readiness, health and 5xx rates are whatever a test configures.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.config.spec import ServiceSpec, parse_playbook
from fleet.core.errors import FleetError
from fleet.core.model import Node
from fleet.engine.apply import Engine
from fleet.engine.lb import Rotation
from fleet.engine.nodes import NodeReport
from fleet.engine.state import Observed
from fleet.node.facts import NodeFacts
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.pause import Pause
from fleet.plan.scheduler import Assignment
from fleet.plan.volumes import VolumeView
from fleet.results import Event, RunResult
from fleet.store.history import FinalOutcome, Revision, same_revision
from fleet.store.protocol import Records
from fleet.transport import Pool

GiB = 1024**3


def facts(ncpu: int) -> NodeFacts:
    return NodeFacts(hostname="h", ncpu=ncpu, mem_total=4 * GiB, mem_available=3 * GiB, load=(0.0, 0.0, 0.0),
                     uptime_s=100.0, disk_total=20 * GiB, disk_free=10 * GiB, runtime="ctr",
                     runtime_version="1.6.20~ds1", runtime_socket=True, cgroup=1, tasks=())


def worker(name: str, ncpu: int = 2) -> NodeReport:
    """A ready worker node's report (never reached: its address is never connected to)."""
    return NodeReport(Node(name, f"10.0.0.{name[-1]}"), "ready", None, facts(ncpu), 0.01)


def service(name: str, replicas: int, cpu: float = 0.5, image: str = "fleet.local/demo:v1", extra: str = "",
            ) -> ServiceSpec:
    """A service as a playbook gives it; `extra` is more YAML under the service (indented four spaces)."""
    return parse_playbook(f"services:\n  {name}:\n    image: {image}\n    replicas: {replicas}\n"
                          f"    resources: {{cpu: {cpu}, memory: 64MiB}}\n{extra}", "pb.yaml").services[0]


@dataclass
class FakeOps:
    """`ReplicaOps` in memory: every step recorded in `steps` as (step, service, replica id or detail).

    `not_ready`: image → why its replicas never become ready; `unhealthy`: images whose running replicas fail their
    checks; `error_rate`: image → share of 5xx its replicas answer (the canary's verdict); `fail`: step ("route",
    "stop", ...) → error raised by the next such step; `on_start`: called with each replica started (before it is
    ready); `delay`: how long a start takes (so services' batches overlap), `most` the starts seen under way at
    once, `removed_beside_starts` the removals begun while one was; `stop_delay`: how long a stop takes (it is
    recorded as "stop" when it begins, "stopped" once the replica
    is gone); `route_delay`: how long a route takes (recorded once done); `settled`: whether no lb worker from
    before a reload can be left (a drained replica then stops while it is removed from the load balancers). `peak` /
    `low` per service: the most replicas running and the fewest serving (ready, not draining) seen after the first
    change; `cpu_peak` per node: the most CPU its running replicas reserved."""

    balanced: bool = False
    settled: bool = True
    not_ready: dict[str, str] = field(default_factory=dict)
    unhealthy: set[str] = field(default_factory=set)
    error_rate: dict[str, float] = field(default_factory=dict)
    fail: dict[str, BaseException] = field(default_factory=dict)
    on_start: Callable[[Replica], None] | None = None
    delay: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)  # service → its starts' `delay`
    stop_delay: float = 0.0
    route_delay: float = 0.0
    running: dict[str, Replica] = field(default_factory=dict)
    serving: set[str] = field(default_factory=set)
    steps: list[tuple[str, str, str]] = field(default_factory=list)
    peak: dict[str, int] = field(default_factory=dict)
    low: dict[str, int] = field(default_factory=dict)
    cpu_peak: dict[str, float] = field(default_factory=dict)
    requests: dict[str, tuple[int, int]] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)  # image → requests per counters() call (default 100)
    inside: int = 0
    most: int = 0
    removed_beside_starts: int = 0  # removals (what `halt` returns) begun while a start was under way
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def run(self, *replicas: Replica) -> None:
        """Replicas the nodes run before the test starts (ready and serving)."""
        for r in replicas:
            self.running[r.id] = r
            self.serving.add(r.id)

    def replica(self, spec: ServiceSpec, revision: int, node: str, index: int, port: int = 20000) -> Replica:
        return Replica(node, f"{spec.name}-{index}-r{revision}-{next(self._ids)}", spec.name, index, revision,
                       spec.spec_hash(), port, True, spec.resources, spec.image_ref)

    def of(self, service: str) -> list[Replica]:
        return sorted((r for r in self.running.values() if r.service == service), key=lambda r: r.replica)

    def _failing(self, step: str) -> None:
        error = self.fail.pop(step, None)
        if error is not None:
            raise error

    def _measure(self, service: str) -> None:
        running = [r for r in self.running.values() if r.service == service]
        self.peak[service] = max(self.peak.get(service, 0), len(running))
        self.low[service] = min(self.low.get(service, len(running)),
                                len([r for r in running if r.id in self.serving]))

    async def observe(self) -> tuple[Observed, VolumeView | None]:
        return Observed(tuple(self.running.values()), ()), None

    async def prepare(self, specs: Sequence[ServiceSpec]) -> None:
        self.steps.append(("prepare", "", ",".join(sorted(s.name for s in specs))))

    async def ensure_images(self, node: str, images: set[str]) -> None:
        return None

    async def start(self, spec: ServiceSpec, revision: int, a: Assignment) -> Replica:
        r = self.replica(spec, revision, a.node, a.replica, a.port)
        self.steps.append(("start", spec.name, r.id))
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            delay = self.delays.get(spec.name, self.delay)
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.inside -= 1
        self.running[r.id] = r
        self._measure(spec.name)
        cpu = sum(x.resources.cpu for x in self.running.values() if x.node == r.node)
        self.cpu_peak[r.node] = max(self.cpu_peak.get(r.node, 0.0), cpu)
        if self.on_start is not None:
            self.on_start(r)
        return r

    async def wait_ready(self, spec: ServiceSpec, r: Replica) -> str | None:
        why = self.not_ready.get(spec.image)
        if why is not None:
            return f"{r.id} on {r.node} {why}"
        self.steps.append(("ready", spec.name, r.id))
        self.serving.add(r.id)
        return None

    async def judge(self, spec: ServiceSpec, replicas: Sequence[Replica]) -> dict[str, bool]:
        return {r.id: r.image not in self.unhealthy for r in replicas}

    async def route(self, rotation: Rotation, settle: float = 0.0) -> None:
        self._failing("route")
        if self.route_delay:  # recorded once done: a stop may begin meanwhile
            await asyncio.sleep(self.route_delay)
        for name, servers in sorted(rotation.entries.items()):
            routed = ",".join(f"{rid}:{state}:{weight}" for rid, (_, state, weight) in sorted(servers.items()))
            self.steps.append(("route", name, routed))

    async def drain(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        self.steps.append(("drain", r.service, r.id))
        self.serving.discard(r.id)
        self._measure(r.service)

    async def stop(self, r: Replica, grace: float, why: str) -> None:
        await (await self.halt(r, grace, why))()

    async def halt(self, r: Replica, grace: float, why: str) -> Callable[[], Awaitable[None]]:
        """`stop` in two: the process gone now ("stop", then "stopped" after `stop_delay`; no longer running),
        the container removed by what it returns ("deleted")."""
        self._failing("stop")
        self.steps.append(("stop", r.service, r.id))
        if self.stop_delay:
            await asyncio.sleep(self.stop_delay)
            self.steps.append(("stopped", r.service, r.id))
        self.running.pop(r.id, None)
        self.serving.discard(r.id)
        self._measure(r.service)

        async def finish() -> None:
            self.removed_beside_starts += self.inside > 0
            if self.stop_delay:
                await asyncio.sleep(self.stop_delay)
            self.steps.append(("deleted", r.service, r.id))
        return finish

    async def remove(self, r: Replica, why: str) -> None:
        self.steps.append(("remove", r.service, r.id))
        self.running.pop(r.id, None)
        self.serving.discard(r.id)
        self._measure(r.service)

    async def counters(self, service: str) -> dict[str, tuple[int, int]]:
        """Each call: 100 (`traffic`) more requests to every replica of the service, 5xx as its image's error
        rate."""
        for r in self.of(service):
            bad, total = self.requests.get(r.id, (0, 0))
            n = self.traffic.get(r.image, 100)
            self.requests[r.id] = (bad + int(n * self.error_rate.get(r.image, 0.0)), total + n)
        return {rid: c for rid, c in self.requests.items() if rid in self.running}


class MemoryRecords:
    """The fleet's records in memory (`Records`), numbering revisions as `EtcdRecords` does: the spec of the
    latest succeeded revision, or of an in-progress newest one, is that revision again."""

    def __init__(self) -> None:
        self.revisions: dict[str, list[Revision]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []

    async def record(self, service: str, spec_json: str, spec_hash: str, image: str, user: str) -> int:
        return (await self.record_many([(service, spec_json, spec_hash, image, user)]))[0]

    async def record_many(self, items: Sequence[tuple[str, str, str, str, str]]) -> builtins.list[int]:
        numbers = []
        for service, spec_json, spec_hash, image, user in items:
            revs = self.revisions.setdefault(service, [])
            ok = [r for r in revs if r.outcome == "succeeded"]
            if ok and ok[-1].spec_hash == spec_hash and same_revision(ok[-1].spec_json, spec_json):
                numbers.append(ok[-1].revision)
                continue
            if revs and revs[-1].outcome == "in-progress" and revs[-1].spec_hash == spec_hash and same_revision(
                    revs[-1].spec_json, spec_json):
                numbers.append(revs[-1].revision)
                continue
            number = len(revs) + 1
            revs.append(Revision(service, number, spec_hash, image, user, time.time(), None, "in-progress", "",
                                 spec_json))
            self.writes.append(("record", f"{service}@{number}"))
            numbers.append(number)
        return numbers

    async def finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> bool:
        revs = self.revisions.get(service, [])
        if not 0 < revision <= len(revs):
            raise FleetError(f"service {service!r} has no revision {revision}")
        current = revs[revision - 1]
        if current.outcome != "in-progress":
            return False
        revs[revision - 1] = dataclasses.replace(current, outcome=outcome, reason=reason, finished_at=time.time())
        self.writes.append(("finish", f"{service}@{revision} {outcome}"))
        return True

    async def get(self, service: str, revision: int) -> Revision | None:
        revs = self.revisions.get(service, [])
        return revs[revision - 1] if 0 < revision <= len(revs) else None

    async def latest_succeeded(self, service: str, before: int | None = None) -> Revision | None:
        found = [r for r in self.revisions.get(service, [])
                 if r.outcome == "succeeded" and (before is None or r.revision < before)]
        return found[-1] if found else None

    async def services(self) -> builtins.list[str]:
        return sorted(self.revisions)

    async def state(self, service: str) -> dict[str, Any] | None:
        state = self.states.get(service)
        return json.loads(json.dumps(state)) if state is not None else None

    async def set_state(self, service: str, state: dict[str, Any] | None) -> None:
        if state is None:
            self.states.pop(service, None)
        else:
            self.states[service] = json.loads(json.dumps(state))
        self.writes.append(("state", f"{service} {state['decision'] if state else None}"))

    async def list(self, service: str) -> builtins.list[Revision]:
        return list(self.revisions.get(service, []))

    async def reread(self, *services: str) -> None:
        """Nothing to read again: these records are the fleet's own (see `RunCopy` for one run's copy)."""
        return None

    def outcomes(self, service: str) -> builtins.list[tuple[int, str]]:
        return [(r.revision, r.outcome) for r in self.revisions.get(service, [])]


class RunCopy(MemoryRecords):
    """One run's copy of the fleet's records (`fleet`), read whole at its first use as EtcdRecords reads them;
    `reread` reads one service again; writes go to the fleet's records too. Another controller writing `fleet`
    meanwhile is what a decision must not miss."""

    def __init__(self, fleet: MemoryRecords) -> None:
        super().__init__()
        self.fleet = fleet
        self.read = False
        self.rereads: builtins.list[tuple[str, ...]] = []  # each read, the services it read again

    def _first(self) -> None:
        if not self.read:
            self.revisions = {s: list(revs) for s, revs in self.fleet.revisions.items()}
            self.states = json.loads(json.dumps(self.fleet.states))
            self.read = True

    async def reread(self, *services: str) -> None:
        await asyncio.sleep(0)  # a read is a round trip to etcd: others run meanwhile
        self._first()
        self.rereads.append(services)
        for service in services:
            self.revisions[service] = list(self.fleet.revisions.get(service, []))
            self.states.pop(service, None)
            if service in self.fleet.states:
                self.states[service] = json.loads(json.dumps(self.fleet.states[service]))

    async def record_many(self, items: Sequence[tuple[str, str, str, str, str]]) -> builtins.list[int]:
        self._first()
        await self.fleet.record_many(items)
        return await super().record_many(items)

    async def finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> bool:
        self._first()
        await self.fleet.finish(service, revision, outcome, reason)
        return await super().finish(service, revision, outcome, reason)

    async def set_state(self, service: str, state: dict[str, Any] | None) -> None:
        self._first()
        await self.fleet.set_state(service, state)
        await super().set_state(service, state)

    async def get(self, service: str, revision: int) -> Revision | None:
        self._first()
        return await super().get(service, revision)

    async def latest_succeeded(self, service: str, before: int | None = None) -> Revision | None:
        self._first()
        return await super().latest_succeeded(service, before)

    async def services(self) -> builtins.list[str]:
        self._first()
        return await super().services()

    async def state(self, service: str) -> dict[str, Any] | None:
        self._first()
        return await super().state(service)

    async def list(self, service: str) -> builtins.list[Revision]:
        self._first()
        return await super().list(service)


class Harness:
    """An Engine over `nodes` with `FakeOps` and (unless `records=False`) `MemoryRecords`; events kept."""

    def __init__(self, nodes: Sequence[NodeReport], *, records: bool | Records = True, balanced: bool = False,
                 guard: Callable[[], None] | None = None, parallel: int = 16) -> None:
        self.ops = FakeOps(balanced=balanced)
        self.records: Records | None = (MemoryRecords() if records is True else None if records is False
                                        else records)
        self.events: list[Event] = []
        self.pauses: dict[str, Pause] = {}  # `fleet rollout pause`, as the engine reads it before each batch
        self.pool = Pool(connect_attempts=1, connect_timeout=1)  # never connected: FakeOps reaches no node
        self.parallel = parallel
        self.engine = Engine(self.pool, list(nodes), on_event=self.events.append, records=self.records,
                             user="harness", guard=guard, parallel=parallel, ops=self.ops, paused=self.paused)

    async def paused(self, service: str) -> Pause | None:
        return self.pauses.get(service)

    def fresh_engine(self, guard: Callable[[], None] | None = None) -> Engine:
        """A new run's engine over the same nodes, fake replicas and records (the next command)."""
        self.engine = Engine(self.pool, self.engine.view.reports, on_event=self.events.append,
                             records=self.records, user="harness", guard=guard, parallel=self.parallel,
                             ops=self.ops, paused=self.paused)
        return self.engine

    async def apply(self, *specs: ServiceSpec, command: str = "apply") -> RunResult:
        assert command in ("apply", "reconcile")
        return await self.fresh_engine().apply(specs, "apply" if command == "apply" else "reconcile")

    def steps(self, service: str, kinds: Sequence[str] = ("start", "ready", "drain", "stop", "remove")) -> list[
            tuple[str, str]]:
        return [(kind, rid) for kind, name, rid in self.ops.steps if name == service and kind in kinds]

    def memory(self) -> MemoryRecords:
        assert isinstance(self.records, MemoryRecords)
        return self.records
