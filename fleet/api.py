"""The Fleet façade: the one entry point for the CLI, the terminal UI and a watcher.

Reading operations (nodes, plan, status, history) never take the fleet's lease; every operation that changes the
fleet (apply, reconcile, scale, destroy, rollback, promote, abort) runs under it, with the fleet's records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .engine.calls import driver_for
from .engine.nodes import NodeReport, collect, facts_command, report_from
from .errors import FleetError
from .model import Inventory, Node
from .runtime.base import RuntimeDriver
from .transport import Pool

if TYPE_CHECKING:
    from .engine.apply import Engine, Event, Outcome
    from .history import Revision
    from .reconcile import Plan
    from .rollout.decide import Command
    from .spec import ServiceSpec
    from .store.records import FleetHistory

__all__ = ["Fleet", "NodeReport", "PlanView", "RunResult", "facts_command", "report_from"]

LEASE_TTL = 30.0  # seconds; `$FLEET_LEASE_TTL` overrides (a SIGKILLed holder frees the lease after this)


def lease_ttl() -> float:
    try:
        ttl = float(os.environ.get("FLEET_LEASE_TTL", LEASE_TTL))
    except ValueError:
        return LEASE_TTL
    return ttl if 1.0 <= ttl <= 3600.0 else LEASE_TTL


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
    what `reconcile` would hold back."""

    plan: Plan
    errors: dict[str, str]
    changes: dict[str, list[str]]
    notes: dict[str, str]

    @property
    def changed(self) -> bool:
        return self.plan.changed or any(self.changes.values())


class Fleet:
    """Operations on the fleet described by an inventory, over one connection pool."""

    def __init__(self, inventory: Inventory, pool: Pool, *, on_event: Callable[[Event], None] | None = None,
                 secrets: Callable[[str], str | None] | None = None, wait: float = 0.0,
                 command: str | None = None) -> None:
        self.inventory = inventory
        self.pool = pool
        self.on_event = on_event
        self.secrets = secrets
        self.wait = wait
        self.command = command or shlex.join(["fleet", *sys.argv[1:]])[:200]
        self._reports: list[NodeReport] | None = None
        self._records: FleetHistory | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, inventory: Inventory, **kwargs: object) -> AsyncIterator[Fleet]:
        """A Fleet with its own connection pool, closed on exit."""
        async with Pool() as pool:
            yield cls(inventory, pool, **kwargs)  # type: ignore[arg-type]

    # --- reading ----------------------------------------------------------------------------------------
    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        """Facts from every node in one round trip each, concurrently; one report per node, in inventory order.

        `ports` adds the TCP ports in use on each node, which placement needs and `fleet nodes` does not."""
        self._reports = await collect(self.pool, self.inventory.nodes, ports=ports, inventory=self.inventory.path)
        return self._reports

    async def reports(self, *, ports: bool = False) -> list[NodeReport]:
        """The node reports of this run (collected once, on first use)."""
        if self._reports is None:
            await self.nodes(ports=ports)
        assert self._reports is not None
        return self._reports

    async def ready(self) -> list[NodeReport]:
        return [r for r in await self.reports() if r.ok]

    def driver(self, report: NodeReport) -> RuntimeDriver:
        return driver_for(report.node, report.facts)

    def node(self, name: str) -> Node:
        return self.inventory.node(name)

    def records(self) -> FleetHistory:
        """The fleet's revision history and decisions, kept on the record nodes (a local copy as a cache)."""
        if self._records is None:
            from .history import History
            from .store.nodes import record_nodes
            from .store.records import FleetHistory

            cache = None
            with contextlib.suppress(FleetError, OSError):
                cache = History()
            self._records = FleetHistory(self.pool, record_nodes(self.inventory), cache=cache)
        return self._records

    async def engine(self, guard: Callable[[], None] | None = None) -> Engine:
        from .engine.apply import Engine

        return Engine(self.pool, await self.reports(ports=True), on_event=self.on_event, secrets=self.secrets,
                      records=self.records(), guard=guard)

    async def plan(self, specs: Sequence[ServiceSpec]) -> PlanView:
        """What `apply` would change; read-only (no lease)."""
        from .rollout.decide import config_changes

        engine = await self.engine()
        p, obs = await engine.plan(specs)
        changes: dict[str, list[str]] = {}
        notes: dict[str, str] = {}
        for spec in specs:
            state = await engine.state_of(spec.name)
            accepted = await engine._spec_at(spec.name, state.accepted) if state is not None else None
            changes[spec.name] = config_changes(accepted, spec)
            target = await engine.target("reconcile", spec)
            if target.note:
                notes[spec.name] = target.note
        return PlanView(p, dict(obs.errors), changes, notes)

    async def history(self, service: str) -> list[Revision]:
        return await self.records().list(service)

    # --- changing (under the fleet's lease) -------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[Engine]:
        """The fleet's lease for this operation, then an engine whose every step checks it is still held."""
        from .store.lease import Lease
        from .store.nodes import record_nodes

        async with Lease(self.pool, record_nodes(self.inventory), command=self.command, ttl=lease_ttl(),
                         wait=self.wait) as lease:
            yield await self.engine(guard=lease.check)

    async def apply(self, specs: Sequence[ServiceSpec], command: Command = "apply") -> RunResult:
        """`apply` tries the playbooks; `reconcile` restores the accepted state (see fleet.rollout.decide)."""
        async with self.writing() as engine:
            outcomes = await engine.apply(specs, command)
            outcomes += await self._sweep(engine, {s.name for s in specs})
            return RunResult(outcomes, self._errors(engine))

    async def _sweep(self, engine: Engine, managed: set[str]) -> list[Outcome]:
        from .engine.apply import Outcome

        removed = await engine.sweep_destroyed(exclude=managed)
        return [Outcome(name, True, stopped=n) for name, n in sorted(removed.items())]

    @staticmethod
    def _errors(engine: Engine) -> dict[str, str]:
        return {**engine.errors, **{n: "unreachable lb node" for n in engine.lbs.unreachable}}

    async def scale(self, spec: ServiceSpec, replicas: int) -> RunResult:
        """Run `replicas` of the service now; the count holds (reconcile keeps it) until the next `apply`."""
        from .rollout.decide import ServiceState

        async with self.writing() as engine:
            await engine.observe()
            target = await engine.target("reconcile", spec)
            state = await engine.state_of(spec.name)
            base = target.spec if target.heal and not target.skip else spec
            outcomes = await engine.apply_targets([dataclasses.replace(
                target, spec=dataclasses.replace(base, replicas=replicas))])
            if state is not None and target.heal and all(o.ok for o in outcomes):
                await self.records().set_state(spec.name, dataclasses.replace(state, replicas=replicas).to_json())
            elif state is None or not target.heal:
                now = await engine.state_of(spec.name)
                if now is not None:
                    await self.records().set_state(spec.name, ServiceState.to_json(
                        dataclasses.replace(now, replicas=replicas)))
            return RunResult(outcomes, self._errors(engine))

    async def destroy(self, service: str, grace: float = 10.0) -> RunResult:
        """Remove the service; a node that is down now has its replicas removed by the next run that reaches it."""
        from .engine.apply import Outcome

        async with self.writing() as engine:
            n = await engine.destroy(service, grace)
            return RunResult([Outcome(service, True, stopped=n)], self._errors(engine))

    async def rollback(self, service: str, to: int | None = None) -> tuple[Revision, RunResult]:
        """Back to revision `to` (default: the last good one before the newest), pinned: reconcile keeps it."""
        async with self.writing() as engine:
            rev = await self._target_revision(service, to)
            outcomes = await engine.rollback(rev)
            return rev, RunResult(outcomes, self._errors(engine))

    async def _target_revision(self, service: str, to: int | None) -> Revision:
        records = self.records()
        revs = await records.list(service)
        if not revs:
            raise FleetError(f"no history for service {service!r} on this fleet")
        if to is not None:
            rev = await records.get(service, to)
            if rev is None:
                raise FleetError(f"{service} has no revision {to} (see `fleet history {service}`)")
            return rev
        current = revs[-1].revision
        prev = await records.latest_succeeded(service, before=current)
        if prev is None:
            raise FleetError(f"{service}: no succeeded revision before {current} to roll back to")
        return prev

    async def promote(self, service: str) -> tuple[Revision, RunResult]:
        async with self.writing() as engine:
            rev, outcomes = await engine.promote(service)
            return rev, RunResult(outcomes, self._errors(engine))

    async def abort(self, service: str) -> tuple[Revision, RunResult]:
        async with self.writing() as engine:
            rev, outcomes = await engine.abort(service)
            return rev, RunResult(outcomes, self._errors(engine))
