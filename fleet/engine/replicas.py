"""Replica operations: what a run does to the nodes and the load balancers (read the replicas, prepare the
workers, start, wait until ready, route, drain, stop, remove), as a Protocol the engine's tests fake
(tests/harness.py), and `NodeReplicas`, the real one over the pool, the node's container runtime and HAProxy. A
rollout is a sequence of these; the bookkeeping (`RunView`) stays with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from fleet.config.spec import SecretRef, ServiceSpec
from fleet.core import labels as L
from fleet.core.errors import CommandTimeout, ConnectError
from fleet.engine.calls import LIST_TIMEOUT, driver_for, perform
from fleet.engine.containers import drop_secret_files, end_replica, finish_replica, run_container
from fleet.engine.health import exec_in as health_exec
from fleet.engine.images import ensure_image
from fleet.engine.lb import Balancers, Rotation
from fleet.engine.nodefiles import NodeFiles
from fleet.engine.prepare import sync_hosts
from fleet.engine.probes import check, observe_health
from fleet.engine.runspec import run_spec, volume_dir
from fleet.engine.state import Observed, observe
from fleet.engine.view import Emit, RunView
from fleet.engine.volumes import StorageAccess, mount_all, volume_view
from fleet.node import cni
from fleet.node.runtime.base import RunSpec, Status
from fleet.plan.healthjudge import Verdict as HealthVerdict
from fleet.plan.healthjudge import ready as passed_enough
from fleet.plan.reconcile import Replica
from fleet.plan.scheduler import Assignment
from fleet.plan.volumes import VolumeView, local_volumes
from fleet.results import Event
from fleet.transport import Pool


class ReplicaOps(Protocol):
    """The steps of a rollout that touch nodes and load balancers, one replica (or one sync) at a time."""

    @property
    def balanced(self) -> bool:
        """Whether any load balancer is there to route and drain through."""
        ...

    @property
    def settled(self) -> bool:
        """Whether no lb node can still run a worker from before a reload (one that knows nothing of a drain made
        at runtime since): then a drained replica gets no request from any, and may stop while it is removed."""
        ...

    async def observe(self) -> tuple[Observed, VolumeView | None]:
        """What every ready node runs now, and where node-local volume data is."""
        ...

    async def prepare(self, specs: Sequence[ServiceSpec]) -> None:
        """Every worker ready for replicas of `specs` (hosts file, network); a worker that fails is named in
        the view's errors and left out of the run."""
        ...

    async def ensure_images(self, node: str, images: set[str]) -> None:
        """Every image on the node (pulled if need be); ImageUnavailable when one cannot be had."""
        ...

    async def start(self, spec: ServiceSpec, revision: int, a: Assignment) -> Replica:
        """Create and start the replica placed by `a` (its files, volumes and secrets first)."""
        ...

    async def wait_ready(self, spec: ServiceSpec, r: Replica) -> str | None:
        """None once the new replica is ready (see the spec's health and `min_ready`), else why not."""
        ...

    async def judge(self, spec: ServiceSpec, replicas: Sequence[Replica]) -> dict[str, bool]:
        """Per replica id, whether a running replica is ready (not failing its check)."""
        ...

    async def route(self, rotation: Rotation, settle: float = 0.0) -> None:
        """The load balancers route as `rotation` says; with `settle`, wait up to that long for old workers."""
        ...

    async def drain(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        """No new connections to `r`; existing ones finish, up to the spec's grace period."""
        ...

    async def stop(self, r: Replica, grace: float, why: str) -> None: ...

    async def halt(self, r: Replica, grace: float, why: str) -> Callable[[], Awaitable[None]]:
        """`stop` in two: returns once the replica's process is gone (what the update policy's bounds count),
        with what removes the rest (its container, network, files), to run later."""
        ...

    async def remove(self, r: Replica, why: str) -> None:
        """Stop and remove a replica that never served (not ready)."""
        ...

    async def counters(self, service: str) -> dict[str, tuple[int, int]]:
        """Per server of the service: (5xx responses, requests), cumulative (the canary's verdict)."""
        ...


def next_check_in(spec: ServiceSpec, ready_since: float | None) -> float:
    """Until a new replica's next check: 0.25 s until it passes (it is seen ready soon after it is); then, while
    it must keep passing for `min_ready`, its check's own interval (a Kubernetes probe runs at its period), cut to
    what is left of `min_ready`. Twelve services rolling at once checked every 0.25 s were 48 checks a second."""
    h = spec.health
    if h is None or ready_since is None:
        return 0.25
    left = spec.update.min_ready - (time.monotonic() - ready_since)
    return max(0.0, min(max(h.interval, 0.25), left))


class NodeReplicas:
    """`ReplicaOps` over SSH: the node's container runtime (ctr or nerdctl), its files, and HAProxy."""

    def __init__(self, pool: Pool, view: RunView, lbs: Balancers, files: NodeFiles, on_event: Emit) -> None:
        self.pool = pool
        self.view = view
        self.lbs = lbs
        self.files = files
        self.on_event = on_event
        self.storage = StorageAccess(pool)
        self._images: dict[str, set[str]] = {}
        self._image_locks: dict[str, asyncio.Lock] = {}

    def emit(self, step: str, service: str, message: str, node: str | None = None,
             container: str | None = None) -> None:
        self.on_event(Event(step, service, message, node, container))

    @property
    def balanced(self) -> bool:
        return bool(self.lbs.nodes)

    @property
    def settled(self) -> bool:
        return self.lbs.settled

    async def observe(self) -> tuple[Observed, VolumeView | None]:
        obs, volumes = await asyncio.gather(observe(self.pool, self.view.reports),
                                            volume_view(self.pool, self.view.reports))
        return obs, volumes

    async def prepare(self, specs: Sequence[ServiceSpec]) -> None:
        await sync_hosts(self.pool, self.view, self.lbs, specs)

    async def ensure_images(self, node: str, images: set[str]) -> None:
        """Every image present on the node (pulled if need be); each (node, image) is checked once per run."""
        known = self._images.setdefault(node, set())
        # One check (or pull) of an image on a node at a time: two services starting there wait for one pull.
        async with self._image_locks.setdefault(node, asyncio.Lock()):
            for image in sorted(images - known):
                if await ensure_image(self.pool, self.view.by_name[node], image, timeout=600,
                                      secrets=self.files.secrets) == "pulled":
                    self.emit("pull", "", f"pulled {image}", node)
                known.add(image)

    async def start(self, spec: ServiceSpec, revision: int, a: Assignment) -> Replica:
        report = self.view.by_name[a.node]
        node = report.node
        dirs = [volume_dir(spec.name, v.source or "") for v in spec.volumes if v.type == "volume"]
        cid = L.container_id(spec.name, a.replica)
        await mount_all(self.storage, spec, node, [r.node for r in self.view.reports], cid)
        if spec.configs:
            await self.files.configs(spec, node)
        if spec.secret_files:
            await self.files.secret_files(spec, node, cid)
        env_secrets = any(isinstance(v, SecretRef) for v in spec.env.values())
        try:
            env_file = await self.files.env_file(spec, a, node) if env_secrets else None
        except BaseException:
            await drop_secret_files(self.pool, node, cid)
            raise
        if dirs:
            await self.pool.check(node, ["mkdir", "-p", *dirs], timeout=30)
            for name in local_volumes(spec):
                volumes = self.view.volumes
                self.view.volumes = volumes.with_holder(spec.name, name, a.node) if volumes else None
        run = self.shape(run_spec(spec, revision, a, env_file, container=cid))
        self.emit("start", spec.name, f"starting {run.id} on {a.node}:{a.port}", a.node, run.id)
        try:
            await run_container(self.pool, report, run, timeout=120, subnet=self._subnet(a.node))
        except BaseException:
            await drop_secret_files(self.pool, node, cid)
            await self.storage.release(node, cid)
            raise
        finally:
            if env_file is not None:
                # The runtime copied the values into the container's spec when it created it.
                await self.pool.run(node, ["rm", "-f", env_file], timeout=30)
        return Replica(a.node, run.id, spec.name, a.replica, revision, spec.spec_hash(), a.port, True,
                       spec.resources, spec.image, created=float(run.labels[L.CREATED]),
                       ports=L.parse_ports_label(run.labels.get(L.PORTS)))

    def shape(self, run: RunSpec) -> RunSpec:
        """The container as started: a replica's as `run_spec` makes it (a job's differs: fleet.engine.jobs)."""
        return run

    def _subnet(self, node: str) -> str:
        """The subnet of the node's containers: its place among the run's nodes (the inventory's order)."""
        return cni.node_subnet(next(i for i, r in enumerate(self.view.reports) if r.node.name == node))

    async def wait_ready(self, spec: ServiceSpec, r: Replica) -> str | None:
        """None once the replica passes its check `success_threshold` times in a row and then keeps passing,
        in the same process, for `min_ready` (without `health`: once it runs, in the same process, for
        `min_ready`); else why not (deadline passed, or it crashed)."""
        h = spec.health
        deadline = time.monotonic() + spec.update.ready_deadline
        address = self.view.addresses[r.node]
        history: list[tuple[float, bool]] = []
        checks, last = 0, "no check yet"
        ready_since: float | None = None
        pid: int | None = None
        while time.monotonic() < deadline:
            now: int | None = None
            last_one = (h is not None and ready_since is not None
                        and time.monotonic() - ready_since >= spec.update.min_ready)
            if h is None:
                running = await self._pid(r, known=pid if pid is not None else -1) is not None
                ok, detail = running, ("running" if running else "not running")
            elif last_one:
                # The check that ends `min_ready` and the process it reached, asked at once: one round trip to
                # the node less between a replica ready and its route.
                result, now = await asyncio.gather(check(h, address=address, port=r.port, exec_in=self._exec_in(r)),
                                                   self._pid(r, known=pid))
                ok, detail = result.ok, result.detail
            else:
                result = await check(h, address=address, port=r.port, exec_in=self._exec_in(r))
                ok, detail = result.ok, result.detail
            checks += 1
            history.append((time.monotonic(), ok))
            if ok:
                if (passed_enough(history, h) if h is not None else True) and ready_since is None:
                    ready_since, pid = time.monotonic(), await self._pid(r, known=pid)
                if ready_since is not None and time.monotonic() - ready_since >= spec.update.min_ready:
                    if not last_one:
                        now = await self._pid(r, known=pid)
                    if now is not None and now == pid:
                        self.emit("ready", spec.name, f"{r.id} ready on {r.node}:{r.port}", r.node, r.id)
                        return None
                    last = "its process restarted while it was becoming ready (crashed)"
                    history.clear()
                    ready_since = None
                    if now is None:
                        return f"{r.id} on {r.node} crashed ({last})"
            else:
                again = ready_since is not None
                last = f"failed again after passing ({detail})" if again else detail
                ready_since = None
                if checks % 4 == 0 and await self._pid(r, known=-1) is None:
                    return f"{r.id} on {r.node} crashed ({last})"
            await asyncio.sleep(next_check_in(spec, ready_since))
        return f"{r.id} on {r.node} not ready within {spec.update.ready_deadline:g}s (last check: {last})"

    def _exec_in(self, r: Replica) -> Callable[[list[str], float], Awaitable[int]]:
        """How an exec health check runs inside this replica's container (through the node's runtime)."""
        report = self.view.by_name[r.node]
        return health_exec(self.pool, report.node, driver_for(report.node, report.facts), r.id)

    async def _pid(self, r: Replica, known: int | None = None) -> int | None:
        """The PID of the replica's running task, None when it is not running; `known` when the node did not
        answer in time (unknown this round: a slow listing must not end a rollout as a crash)."""
        report = self.view.by_name[r.node]
        try:
            tasks = await perform(self.pool, report.node, driver_for(report.node, report.facts).task(r.id),
                                  timeout=LIST_TIMEOUT)
        except (CommandTimeout, ConnectError):
            return known
        pid, status = tasks.get(r.id, (None, Status.UNKNOWN))
        return (pid or -1) if status == Status.RUNNING else None

    async def judge(self, spec: ServiceSpec, replicas: Sequence[Replica]) -> dict[str, bool]:
        """Without `health`, every running replica is ready. With it, a replica is failing only after
        `failure_threshold` failed checks in a row, `interval` apart, outside its `start_period` (counted from
        its container's creation)."""
        h = spec.health
        if h is None:
            return {r.id: True for r in replicas}
        current = spec.spec_hash()

        async def verdict(r: Replica) -> bool:
            # Outdated replicas are replaced by the rolling plan anyway; the new spec's check may not fit them.
            # A held replica's node does not answer: it is not judged until its grace ends.
            if r.spec_hash != current or r in self.view.held:
                return True
            seen = await observe_health(h, address=self.view.addresses[r.node], port=r.port,
                                        exec_in=self._exec_in(r), started_at=r.created or 0.0, clock=time.time)
            return seen.verdict is not HealthVerdict.UNHEALTHY

        results = await asyncio.gather(*(verdict(r) for r in replicas))
        return {r.id: ok for r, ok in zip(replicas, results, strict=True)}

    async def route(self, rotation: Rotation, settle: float = 0.0) -> None:
        await self.lbs.sync(rotation)
        if settle:
            await self.lbs.settle(settle)

    async def drain(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        left = await self.lbs.drain(r)
        self.emit("drain", spec.name, f"draining {r.id} ({why})", r.node, r.id)
        deadline = time.monotonic() + spec.stop_grace_period
        while left > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            left = await self.lbs.connections(r)

    async def stop(self, r: Replica, grace: float, why: str) -> None:
        await self._end(r, grace, grace + 30, "stop", f"stopping {r.id} on {r.node} ({why})")

    async def remove(self, r: Replica, why: str) -> None:
        await self._end(r, 1.0, 60, "remove", f"removing {r.id} on {r.node} ({why})")

    async def halt(self, r: Replica, grace: float, why: str) -> Callable[[], Awaitable[None]]:
        await self._end(r, grace, grace + 30, "stop", f"stopping {r.id} on {r.node} ({why})", remove=False)

        async def finish() -> None:
            await finish_replica(self.pool, self.view.by_name[r.node], r.id, 60)
        return finish

    async def _end(self, r: Replica, grace: float, timeout: float, step: str, message: str, *,
                   remove: bool = True) -> None:
        self.emit(step, r.service, message, r.node, r.id)
        ended = await end_replica(self.pool, self.view.by_name[r.node], r.id, grace, timeout, remove=remove)
        if step == "stop":  # the rest of a halted one may be removed later: when its process ended
            how = f" (killed after its {grace:g}s grace period)" if ended.killed else ""
            self.emit("stopped", r.service, f"{r.id} stopped on {r.node}{how}", r.node, r.id)

    async def counters(self, service: str) -> dict[str, tuple[int, int]]:
        return await self.lbs.counters(service)
