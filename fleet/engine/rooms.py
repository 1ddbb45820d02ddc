"""The room book: the reservations services converging at once share, so two services never take the same room
or port, and a service short of room waits while others free it (and fails once none is left that could)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence

from fleet.config.spec import ServiceSpec
from fleet.core.errors import RolloutFailed
from fleet.engine.view import Emit, RunView
from fleet.plan.reconcile import Replica, placement_inputs
from fleet.plan.scheduler import Assignment, place
from fleet.plan.volumes import VolumeView
from fleet.results import Event

# How long the removal behind a rollout waits for the containers being started (`RoomBook.behind`) at most.
BEHIND_PATIENCE = 3.0


class RoomBook:
    """Placements of new replicas against the run's view and each other, one service at a time.

    `pending` are replicas placed and being started, not yet in `view.live`: they hold their room and port, so a
    service placing at the same time never takes them (placing and reserving happen under one condition).
    `converging` are the services of this run still rolling, `short` those of them waiting for room; `stopping`
    counts, per service, its replicas being stopped behind its rollout (they free their room when gone);
    `starting`, the batches whose containers are being started (see `behind`)."""

    def __init__(self, view: RunView, on_event: Emit) -> None:
        self.view = view
        self.on_event = on_event
        self.pending: list[Replica] = []
        self.converging: set[str] = set()
        self.short: set[str] = set()
        self.stopping: dict[str, int] = {}
        self.starting = 0
        self._placing = asyncio.Condition()
        self._quiet = asyncio.Event()  # no container being started
        self._quiet.set()
        self._wanted = asyncio.Event()  # a placement waits for room

    def place(self, spec: ServiceSpec, k: int, outgoing: set[str], volumes: VolumeView | None) -> list[Assignment]:
        """Place k more replicas of `spec` against the live state: replicas on their way out (outdated, failing,
        misplaced) still hold their room and ports."""
        # The scheduler is asked for the whole service, so staying replicas keep their numbers and the new ones
        # take the lowest free ones; of what it could place, the first k are started now.
        shaped, existing, demands, _ = placement_inputs([spec], self.view.nodes(), [*self.view.live, *self.pending],
                                                        hold_outdated=True, outgoing=frozenset(outgoing),
                                                        volumes=volumes)
        placement = place(shaped, existing, demands)
        fresh = sorted((a for a in placement.assignments if a.service == spec.name and a.reason != "keep"),
                       key=lambda a: a.replica)
        if len(fresh) < k:
            raise RolloutFailed(f"{spec.name}: no room for {k} more replica(s) during the update: "
                                + "; ".join(sorted({u.reason for u in placement.unplaced})))
        return fresh[:k]

    @contextlib.asynccontextmanager
    async def reserve(self, spec: ServiceSpec, revision: int, k: int, outgoing: set[str],
                      volumes: VolumeView | None) -> AsyncIterator[list[Assignment]]:
        """Room for k new replicas of `spec`, held (as `pending`) while they start; given back on exit."""
        async with self._placing:
            assignments = await self._place_or_wait(spec, k, outgoing, volumes)
            held = [Replica(a.node, f"(starting {spec.name}[{a.replica}])", spec.name, a.replica, revision,
                            spec.spec_hash(), a.port, True, spec.resources, spec.image) for a in assignments]
            self.pending += held
        try:
            yield assignments
        finally:
            self.pending = [r for r in self.pending if all(r is not h for h in held)]
            await self.changed()

    async def _place_or_wait(self, spec: ServiceSpec, k: int, outgoing: set[str],
                             volumes: VolumeView | None) -> list[Assignment]:
        """`place`, under the condition. With no room now while other services converge, wait: their surge
        replicas and the ones they retire free room as they go (one at a time, a service would have had it).
        Fails as `place` does once no other service is left that could free any (all done, or all waiting) and no
        replica is being stopped."""
        while True:
            try:
                return self.place(spec, k, outgoing, volumes)
            except RolloutFailed as exc:
                if not self.converging - self.short - {spec.name} and not any(self.stopping.values()):
                    raise
                # Waiting for its own replica being stopped is the rollout's order, not a wait for others.
                if spec.name not in self.short and not self.stopping.get(spec.name):
                    self.on_event(Event("wait", spec.name, f"waiting for room that other services hold: {exc}"))
                self.short.add(spec.name)
                self._wanted.set()  # removals waiting behind starts go now: they may free this room
                try:
                    # Woken when a start or a service ends; a replica retired elsewhere is seen within 1 s.
                    async with asyncio.timeout(1.0):
                        await self._placing.wait()
                except TimeoutError:
                    pass
                finally:
                    self.short.discard(spec.name)
                    if not self.short:
                        self._wanted.clear()

    @contextlib.contextmanager
    def starts(self) -> Iterator[None]:
        """A batch's containers being started: what the rollouts wait on, and the nodes' busiest moment."""
        self.starting += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self.starting -= 1
            if not self.starting:
                self._quiet.set()

    async def behind(self, patience: float | None = None) -> None:
        """Before the removal of what a stopped replica leaves (its container, network, files): wait while
        containers are being started, up to `patience` s, and not at all once a placement waits for room. A
        removal is work no rollout waits on, and starts are what they wait on: beside a dozen of them (services
        rolling at once), a dozen removals took the nodes' CPU from them (bench/apply_many.py: the second
        batch's starts are that much slower, and every service's rollout with them). The room it frees is
        wanted at once when a placement waits for it. Quiet is judged when it returns: a batch that began its
        starts between the last one's end and this waiter's turn (services rolling at once) is waited for too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (BEHIND_PATIENCE if patience is None else patience)
        while not (self._quiet.is_set() or self._wanted.is_set()) and (left := deadline - loop.time()) > 0:
            waits = [asyncio.ensure_future(self._quiet.wait()), asyncio.ensure_future(self._wanted.wait())]
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def changed(self) -> None:
        """Room may have been freed: services waiting for it place again."""
        async with self._placing:
            self._placing.notify_all()

    @contextlib.asynccontextmanager
    async def rolling(self, services: Sequence[str]) -> AsyncIterator[None]:
        """`services` converge (and may free room for others) while inside."""
        self.converging.update(services)
        try:
            yield
        finally:
            self.converging.difference_update(services)
            await self.changed()
