"""What lets several services converge at once: a coalescing runner for "make it so" actions (the load
balancers' config), batches for requests to one place (the load balancers' drains), and the fleet's records behind
one lock.

Services converge in parallel because a rollout is mostly waiting (health checks, `min_ready`, drains), not
work; what they share must then be touched one caller at a time: HAProxy refuses a second apply while one runs
on a node, and a records write that overlaps another may repair a file with the copy it read before the other
write.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from fleet.store.history import FinalOutcome, Revision
from fleet.store.protocol import Records

T = TypeVar("T")
R = TypeVar("R")

# Services converging at once by default. A rollout mostly waits (health checks, `min_ready`, drains): the
# controller spends well under 0.1 s of CPU on one, and HAProxy reloads are shared by the services waiting for
# them, so a dozen at once take little more than one (bench/apply_many.py: 12 services created in 1.3x the time of
# one at 16, 2.0x at 8, two waves). Past that the shared pieces queue anyway: one reload at a time per lb node,
# records written one at a time, 8 SSH sessions per node; and each service in flight may hold one surge replica's
# room, which the bound caps.
DEFAULT_PARALLEL = 16


class Coalesced:
    """One idempotent action (render the whole state, apply it) run by one caller at a time.

    A call made while a run is under way waits, and is served by the next run, which starts after the call
    and so sees every change the caller made before calling; callers waiting together share that one run.
    A run that fails raises in the caller that ran it; the others it would have served run it again.
    """

    def __init__(self, action: Callable[[], Awaitable[None]]) -> None:
        self.action = action
        self.lock = asyncio.Lock()
        self.runs = 0
        self._asked = 0
        self._done = 0

    async def __call__(self) -> None:
        self._asked += 1
        ticket = self._asked
        async with self.lock:
            if self._done >= ticket:
                return  # a run that started after this call already carried its changes
            upto = self._asked
            self.runs += 1
            await self.action()
            self._done = max(self._done, upto)


class Batched(Generic[T, R]):
    """Requests to one place sent one batch at a time: a call made while a batch is under way waits and goes
    with every other call made meanwhile in the next one (a group commit). `action` gets the batch's items in
    order and gives one result per item: a value, or an exception raised in that item's caller alone. When the
    action itself fails, every caller of its batch gets that error; when the caller running it is cancelled, the
    others go in the next batch."""

    def __init__(self, action: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]) -> None:
        self.action = action
        self.lock = asyncio.Lock()
        self.runs = 0
        self._queued: list[tuple[T, asyncio.Future[R]]] = []

    async def __call__(self, item: T) -> R:
        mine: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, mine))
        async with self.lock:
            if not mine.done():
                batch, self._queued = self._queued, []
                self.runs += 1
                try:
                    results = await self.action([i for i, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                except BaseException:
                    self._queued[:0] = [(i, f) for i, f in batch if f is not mine]
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        return mine.result()


class SerialRecords:
    """The fleet's records (`Records`) with writes one at a time: a write re-reads or repairs from the snapshot
    the one before it left, so two services' writes must not overlap. New revisions asked for while a write
    runs are written together next (`record_many`: one read and one write for all of them), so services that
    start at once do not queue one round trip each. Reads come from the snapshot (no round trip once it is
    read) and go straight through."""

    def __init__(self, inner: Records) -> None:
        self.inner = inner
        self.lock = asyncio.Lock()
        self.writes = 0
        self._queued: builtins.list[tuple[tuple[str, str, str, str, str], asyncio.Future[int]]] = []

    async def record(self, service: str, spec_json: str, spec_hash: str, image: str, user: str) -> int:
        mine: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queued.append(((service, spec_json, spec_hash, image, user), mine))
        async with self.lock:
            if not mine.done():
                # Everything queued so far, one entry per service (a second one waits for the next write).
                batch: builtins.list[tuple[tuple[str, str, str, str, str], asyncio.Future[int]]] = []
                for entry in self._queued:
                    if entry[0][0] not in {item[0] for item, _ in batch}:
                        batch.append(entry)
                self._queued = [entry for entry in self._queued if entry not in batch]
                self.writes += 1
                try:
                    numbers = await self.inner.record_many([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        future.set_exception(exc)
                except BaseException:
                    # Cancelled: the others' entries go back to the queue, for the next of them to write.
                    self._queued = [entry for entry in batch if entry[1] is not mine] + self._queued
                    raise
                else:
                    for (_, future), number in zip(batch, numbers, strict=True):
                        future.set_result(number)
        return await mine

    async def record_many(self, items: Sequence[tuple[str, str, str, str, str]]) -> builtins.list[int]:
        async with self.lock:
            self.writes += 1
            return await self.inner.record_many(items)

    async def finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> bool:
        async with self.lock:
            return await self.inner.finish(service, revision, outcome, reason)

    async def set_state(self, service: str, state: dict[str, Any] | None) -> None:
        async with self.lock:
            await self.inner.set_state(service, state)

    async def get(self, service: str, revision: int) -> Revision | None:
        return await self.inner.get(service, revision)

    async def latest_succeeded(self, service: str, before: int | None = None) -> Revision | None:
        return await self.inner.latest_succeeded(service, before)

    async def services(self) -> builtins.list[str]:
        return await self.inner.services()

    async def state(self, service: str) -> dict[str, Any] | None:
        return await self.inner.state(service)

    async def list(self, service: str) -> builtins.list[Revision]:
        return await self.inner.list(service)

    async def reread(self, *services: str) -> None:
        async with self.lock:  # not under a write that repairs from the snapshot
            await self.inner.reread(*services)
