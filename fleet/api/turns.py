"""The façade's turns of one service's rollouts, each one run of the engine under the fleet's lease (rollback,
promote, abort, restart, deploy, resume), and the pause a rollout reads before each batch. `Fleet` inherits them;
they need of it only its records and its lease.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence

from fleet.engine import byhand
from fleet.engine.apply import Engine
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.pause import Pause
from fleet.results import Revision, RunResult
from fleet.store.etcd_records import EtcdRecords
from fleet.store.pause import clear_pause, request_pause


class Turns(abc.ABC):
    """A service's rollout turned by hand: every turn a decision recorded under the lease (fleet.engine.apply)."""

    @abc.abstractmethod
    def records(self) -> EtcdRecords:
        """The fleet's records (fleet.api.Fleet.records)."""

    @abc.abstractmethod
    def writing(self, held: Sequence[Replica] = ()) -> contextlib.AbstractAsyncContextManager[Engine]:
        """An engine under the fleet's lease (fleet.api.Fleet.writing)."""

    async def rollback(self, service: str, to: int | None = None) -> tuple[Revision, RunResult]:
        """Back to revision `to` (default: the last good one before the newest), pinned: reconcile keeps it."""
        async with self.writing() as engine:
            return await engine.turn("rollback", service, to)

    async def promote(self, service: str) -> tuple[Revision, RunResult]:
        """Roll the rest of the service to the waiting canary's revision, batch by batch."""
        async with self.writing() as engine:
            return await engine.turn("promote", service)

    async def abort(self, service: str) -> tuple[Revision, RunResult]:
        """Remove the waiting canary: the service goes back to its accepted revision; reconcile keeps it so."""
        async with self.writing() as engine:
            return await engine.turn("abort", service)

    async def pause(self, service: str) -> Pause:
        """Pause the service's rollouts before their next batch; no lease (the rollout to pause holds it)."""
        return await request_pause(self.records().store, service)

    async def resume(self, service: str) -> tuple[Pause | None, RunResult]:
        """Lift the service's pause (the one it was, if any), then carry its paused rollout on to the end."""
        was = await clear_pause(self.records().store, service)
        async with self.writing() as engine:
            return was, await byhand.resume(engine, service)

    async def restart(self, service: str) -> tuple[Revision, RunResult]:
        """Replace every replica, surge first and health-checked, with the same image and settings."""
        async with self.writing() as engine:
            return await engine.turn("restart", service)

    async def deploy(self, service: str, image: str) -> tuple[Revision, RunResult]:
        """Roll the service to `image` as its accepted revision: reconcile keeps it, `plan` shows the drift."""
        async with self.writing() as engine:
            return await engine.turn("deploy", service, image=image)
