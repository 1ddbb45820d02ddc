"""The lease confirmed before every action on nodes: `Guarded` wraps the replica operations so that starting,
stopping, removing or draining a replica, preparing the workers and syncing the load balancers (HAProxy, and
keepalived with it) each first await the run's guard, which raises `LeaseLost` once the fleet's lease is gone.

The guard is one round trip to etcd (`EtcdLease.check`); the façade hands it in `Coalesced`, so services
converging at once share one check that started after each of them asked. Reads (observe, health, counters,
images) are not guarded: they change nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from fleet.config.spec import ServiceSpec
from fleet.engine.lb import Rotation
from fleet.engine.replicas import ReplicaOps
from fleet.engine.state import Observed
from fleet.plan.reconcile import Replica
from fleet.plan.scheduler import Assignment
from fleet.plan.volumes import VolumeView

# A guard may be plain (the engine's tests) or a coroutine function (the lease's check over the network).
Guard = Callable[[], Awaitable[None] | None]


async def confirm(guard: Guard) -> None:
    """Call the guard and wait for its answer; it raises when the run must stop."""
    pending = guard()
    if inspect.isawaitable(pending):
        await pending


class Guarded:
    """`inner`'s operations, each action on nodes after `guard` (see the module docstring)."""

    def __init__(self, inner: ReplicaOps, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard

    @property
    def balanced(self) -> bool:
        return self.inner.balanced

    @property
    def settled(self) -> bool:
        return self.inner.settled

    async def observe(self) -> tuple[Observed, VolumeView | None]:
        return await self.inner.observe()

    async def prepare(self, specs: Sequence[ServiceSpec]) -> None:
        await confirm(self.guard)
        await self.inner.prepare(specs)

    async def ensure_images(self, node: str, images: set[str]) -> None:
        await self.inner.ensure_images(node, images)

    async def start(self, spec: ServiceSpec, revision: int, a: Assignment) -> Replica:
        await confirm(self.guard)
        return await self.inner.start(spec, revision, a)

    async def wait_ready(self, spec: ServiceSpec, r: Replica) -> str | None:
        return await self.inner.wait_ready(spec, r)

    async def judge(self, spec: ServiceSpec, replicas: Sequence[Replica]) -> dict[str, bool]:
        return await self.inner.judge(spec, replicas)

    async def route(self, rotation: Rotation, settle: float = 0.0) -> None:
        await confirm(self.guard)
        await self.inner.route(rotation, settle)

    async def drain(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        await confirm(self.guard)
        await self.inner.drain(spec, r, why)

    async def stop(self, r: Replica, grace: float, why: str) -> None:
        await confirm(self.guard)
        await self.inner.stop(r, grace, why)

    async def halt(self, r: Replica, grace: float, why: str) -> Callable[[], Awaitable[None]]:
        await confirm(self.guard)
        finish = await self.inner.halt(r, grace, why)

        async def guarded() -> None:
            await confirm(self.guard)
            await finish()
        return guarded

    async def remove(self, r: Replica, why: str) -> None:
        await confirm(self.guard)
        await self.inner.remove(r, why)

    async def counters(self, service: str) -> dict[str, tuple[int, int]]:
        return await self.inner.counters(service)
