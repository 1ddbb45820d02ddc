"""`FleetSource`: the TUI's questions and actions answered by the Fleet façade, on its warm connection pool.

Reads take no lease; every change goes through the same façade call as the CLI's command, under the same lease
(LeaseHeld, naming the holder, reaches the app as it is). The controller's events reach `events` through the
façade's `on_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from fleet.api import Reader, converge_accepted
from fleet.cli.describe import read_node, read_service
from fleet.config.spec import from_playbook_dict
from fleet.core.errors import FleetError
from fleet.plan.rollout.decide import ServiceState
from fleet.tui.data import (
    NODE_VERBS,
    Action,
    ActionResult,
    EventRing,
    LogStream,
    ServiceRecord,
    Snapshot,
    Verb,
    node_errors,
    outcome_lines,
    status_errors,
)

if TYPE_CHECKING:
    from fleet.api import Fleet
    from fleet.cli.describe import NodeView, ServiceView
    from fleet.config.spec import ServiceSpec
    from fleet.results import FleetStatus, NodeLease, Revision, RunResult, VolumeListing
    from fleet.results.jobs import JobRun

# `fleet.api.ask_watcher` (inventory path, op) -> the watcher's answer, or None when no watcher answers.
Watcher = Callable[[str, Literal["nodes", "status"]], Awaitable[Any]]


class FleetSource:
    """The real fleet through the façade; the caller owns the façade's pool. Revisions never change once
    recorded, so the specs read for the wanted counts are kept across refreshes."""

    def __init__(self, fleet: Fleet, events: EventRing | None = None, watcher: Watcher | None = None) -> None:
        self.fleet = fleet
        self.events = events if events is not None else EventRing()
        fleet.on_event = self.events
        self.inventory = fleet.inventory.path
        self.watcher = watcher
        self._specs: dict[tuple[str, int], ServiceSpec] = {}

    # --- reading ------------------------------------------------------------------------------------------
    async def collect(self, partial: Callable[[Snapshot], None] | None = None) -> Snapshot:
        """Node facts and the fleet's records (read again: another controller may have changed them), then
        services, replicas and LB health from the ready nodes; a node that cannot be read is an entry in `errors`,
        never an exception. `partial` gets the nodes as soon as they are read (the first screen)."""
        started = time.perf_counter()
        errors: dict[str, str] = {}
        # The one read path: a `fleet watch` on this controller for this inventory lends its warm connections,
        # else this UI's own pool.
        read = Reader(self.fleet.inventory.path, self.fleet, ask=self.watcher)
        reports, _ = await asyncio.gather(read.nodes(), self._refresh_records(errors))
        errors.update(node_errors(reports))
        if partial is not None:
            partial(Snapshot(tuple(reports), None, errors, datetime.now(), time.perf_counter() - started))
        st: FleetStatus | None
        records: dict[str, ServiceRecord] = {}
        try:
            st = await read.status(reports)
        # The view must outlive one bad read: any failure of the status pass becomes a line in the status bar.
        except Exception as exc:
            st = None
            errors["status"] = f"{type(exc).__name__}: {exc}"
        else:
            for where, why in status_errors(st).items():
                errors.setdefault(where, why)
            try:
                records = await self._records([s.name for s in st.services])
            except FleetError as exc:
                errors["records"] = str(exc)
        return Snapshot(tuple(reports), st, errors, datetime.now(), time.perf_counter() - started, records,
                        via=read.via)

    async def _refresh_records(self, errors: dict[str, str]) -> None:
        try:
            await self.fleet.records().refresh()
        except ValueError:  # an inventory with no node to keep records on
            pass
        except FleetError as exc:
            errors["records"] = str(exc)

    async def _records(self, services: Sequence[str]) -> dict[str, ServiceRecord]:
        out = {}
        for name in services:
            state = await self._state(name)
            if state is None:
                continue
            wanted = state.replicas
            if wanted is None and state.accepted is not None:
                spec = await self._spec(name, state.accepted)
                wanted = spec.replicas if spec is not None and not spec.per_node else None  # per-node: the nodes say
            out[name] = ServiceRecord(state.accepted, wanted, state.decision, state.canary, state.reason)
        return out

    async def _state(self, service: str) -> ServiceState | None:
        try:
            raw = await self.fleet.records().state(service)
        except ValueError:  # an inventory with no node to keep records on
            return None
        if raw is None:
            return None
        try:
            return ServiceState.from_json(raw)
        except ValueError as exc:
            raise FleetError(f"{service}: the fleet's record of this service is unreadable: {exc}") from exc

    async def _spec(self, service: str, revision: int) -> ServiceSpec | None:
        key = (service, revision)
        if key not in self._specs:
            rev = await self.fleet.records().get(service, revision)
            if rev is None:
                return None
            self._specs[key] = from_playbook_dict(service, json.loads(rev.spec_json),
                                                  f"<history {service}@{revision}>")
        return self._specs[key]

    async def accepted_spec(self, service: str) -> ServiceSpec:
        """The spec reconcile restores for `service` (its accepted revision), which scale and restart converge."""
        state = await self._state(service)
        spec = await self._spec(service, state.accepted) if state and state.accepted is not None else None
        if spec is None:
            raise FleetError(f"{service}: no accepted revision on this fleet's records (apply it first)")
        return spec

    async def history(self, service: str) -> Sequence[Revision]:
        await self.fleet.records().refresh()
        return await self.fleet.history(service)

    async def describe(self, kind: Literal["service", "node"], name: str) -> ServiceView | NodeView:
        """What `fleet describe` reads, on this UI's pool."""
        if kind == "node":
            return await read_node(self.fleet, name)
        await self._refresh_records({})
        return await read_service(self.fleet, name)

    async def volumes(self) -> VolumeListing:
        return await self.fleet.volumes()

    async def images(self) -> tuple[Mapping[str, Mapping[str, str]], Mapping[str, str]]:
        return await self.fleet.image_list()

    async def lease(self) -> list[NodeLease]:
        return await self.fleet.lock_status(timeout=5.0)

    async def job_runs(self) -> list[JobRun]:
        return await self.fleet.job_runs()

    @contextlib.asynccontextmanager
    async def logs(self, ref: str, *, follow: bool, tail: int) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        async with self.fleet.logs(ref, follow=follow, tail=tail) as lines:
            yield aiter(lines)

    # --- changing -----------------------------------------------------------------------------------------
    def can(self, verb: Verb) -> bool:
        return verb not in NODE_VERBS or callable(getattr(self.fleet, verb, None))

    async def act(self, action: Action, on_line: Callable[[str], None]) -> ActionResult:
        f, t = self.fleet, action.target
        # The lease names this: `fleet lock status` (and a refused CLI run) show what the UI is doing.
        f.command = shlex.join(["fleet", "ui:", action.verb, t, *([str(action.count)] if action.count is not None
                                                                  else [])])
        match action.verb:
            # Scale and restart converge the accepted revision as the records hold it under the lease, never the
            # snapshot's: a rollback or destroy another controller made since the last refresh is respected.
            case "scale":
                assert action.count is not None
                await self.accepted_spec(t)  # refused at once when the snapshot already knows there is none
                return ran(f"{t}: scaled to {action.count}", await converge_accepted(f, t, action.count))
            case "restart":
                # The replica is replaced as `fleet restart` replaces one: its replacement first, where the update
                # policy allows, then it is drained and stopped (under the lease, at the accepted revision).
                service = action.service or t
                await self.accepted_spec(service)
                return ran(f"{t}: restarted", await f.renew(service, t))
            case "rollback":
                rev, result = await f.rollback(t, action.revision)
                return ran(f"{t}: rolled back to revision {rev.revision}", result)
            case "promote":
                rev, result = await f.promote(t)
                return ran(f"{t}: promoted revision {rev.revision}", result)
            case "abort":
                rev, result = await f.abort(t)
                return ran(f"{t}: aborted revision {rev.revision}", result)
            case "destroy":
                return ran(f"{t}: destroyed", await f.destroy(t))
            case "cordon" | "uncordon" | "drain":
                method = cast(Callable[[str], Any], getattr(f, action.verb))
                out = method(t)
                result = await out if asyncio.iscoroutine(out) else out
                if result is not None and hasattr(result, "outcomes"):
                    return ran(f"{t}: {action.verb}ed", result)
                return ActionResult(True, f"{t}: {action.verb}ed")
            case "exec":
                code = await f.exec(t, action.argv, on_line)
                return ActionResult(code == 0, f"{t}: `{' '.join(action.argv)}` exited {code}")
        raise AssertionError(action.verb)  # pragma: no cover


def ran(summary: str, result: RunResult) -> ActionResult:
    """An ActionResult from the façade's RunResult: ok only when every service and node took part."""
    return ActionResult(result.ok, summary if result.ok else f"{summary} (with failures)",
                        outcome_lines(result.outcomes, result.errors))


__all__ = ["FleetSource", "LogStream", "Watcher"]
