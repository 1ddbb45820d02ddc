"""Converging services: start, health-check, route, drain and stop replicas, step by step of the rolling plan.

Every step is read back from or written to the nodes (container labels), the load balancers and the fleet's
records; nothing else is kept, so a controller killed at any point is picked up by the next run. The steps are
those of `fleet.plan.rollout.resume_plan` (the pure, property-tested plan): this module only carries them out.
"""

from __future__ import annotations

import asyncio
import builtins
import getpass
import json
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from fleet.config.spec import SecretRef, ServiceSpec, from_playbook_dict, to_playbook_dict
from fleet.core import labels as L
from fleet.core.edge import EdgeSettings
from fleet.core.errors import (
    CanaryAborted,
    CommandTimeout,
    ConnectError,
    FleetError,
    ImageUnavailable,
    LeaseError,
    Problem,
    RecordsError,
    RolloutFailed,
    SchedulingError,
    SpecError,
)
from fleet.core.model import Node
from fleet.core.ports import STATS_PORT
from fleet.engine.calls import LIST_TIMEOUT, driver_for, perform
from fleet.engine.concurrency import DEFAULT_PARALLEL, SerialRecords
from fleet.engine.containers import drop_secret_files
from fleet.engine.edge import Edge
from fleet.engine.health import exec_in as health_exec
from fleet.engine.images import ensure_image
from fleet.engine.lb import Balancers, Rotation
from fleet.engine.nodes import NodeReport
from fleet.engine.probes import check, observe_health
from fleet.engine.runspec import (
    config_file,
    hosts_text,
    prepare_node_script,
    run_spec,
    secret_env_path,
    secret_mount,
    volume_dir,
)
from fleet.engine.state import Observed, node_states, observe
from fleet.engine.volumes import StorageAccess, mount_all, volume_view
from fleet.node.paths import NOT_TMPFS_EXIT, write_file, write_secret_file
from fleet.node.runtime.base import Status
from fleet.plan.checks import edge_port_problems, lb_port_problems
from fleet.plan.healthjudge import Verdict as HealthVerdict
from fleet.plan.healthjudge import ready as passed_enough
from fleet.plan.reconcile import Plan, Replica, duplicates, placement_inputs, plan
from fleet.plan.rollout.decide import (
    Command,
    ServiceState,
    Target,
    after_failure,
    after_success,
    decide,
    intent_hash,
)
from fleet.plan.rollout.strategy import ReplicaState, Verdict, canary_verdict, canary_weights, resume_plan
from fleet.plan.scheduler import Assignment, place
from fleet.plan.volumes import VolumeView, local_volumes
from fleet.results import Event, Outcome
from fleet.store.history import FinalOutcome, Revision
from fleet.transport import Pool


class Records(Protocol):
    """The fleet's revision history and per-service decisions (`fleet.store.records.FleetHistory`)."""

    async def record(self, service: str, spec_json: str, spec_hash: str, image: str, user: str) -> int: ...
    async def record_many(self, items: Sequence[tuple[str, str, str, str, str]]) -> builtins.list[int]: ...
    async def finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> bool: ...
    async def get(self, service: str, revision: int) -> Revision | None: ...
    async def latest_succeeded(self, service: str, before: int | None = None) -> Revision | None: ...
    async def services(self) -> builtins.list[str]: ...
    async def state(self, service: str) -> dict[str, Any] | None: ...
    async def set_state(self, service: str, state: dict[str, Any] | None) -> None: ...
    async def list(self, service: str) -> builtins.list[Revision]: ...


def spec_of(rev: Revision) -> ServiceSpec:
    """The spec a history revision recorded."""
    return from_playbook_dict(rev.service, json.loads(rev.spec_json), f"<history {rev.service}@{rev.revision}>")


def _revision_from_labels(spec: ServiceSpec, replicas: Sequence[Replica]) -> int:
    """Without records: the revision of replicas already running `spec`, else one past the newest seen."""
    h = spec.spec_hash()
    same = [r.revision for r in replicas if r.service == spec.name and r.spec_hash == h and r.revision]
    if same:
        return max(same)
    seen = [r.revision or 0 for r in replicas if r.service == spec.name]
    return max(seen, default=0) + 1


def _misplaced(why: str) -> bool:
    """A scheduler stop reason that means "this replica must move" (not a scale-down or a duplicate)."""
    return not why.startswith(("surplus", "duplicate of", "service ", "second copy"))


class Engine:
    """Plans and converges services over one pool, with the node reports of this run.

    `guard` is called between steps: it raises when the fleet's lease was lost, so the run stops at a safe
    point. `records` is the fleet's history and decisions; without it (tests of the engine alone) revisions
    come from container labels and every run behaves as `apply`. `parallel` services converge at once."""

    def __init__(self, pool: Pool, reports: list[NodeReport], *, on_event: Callable[[Event], None] | None = None,
                 secrets: Callable[[str], str | None] | None = None, records: Records | None = None,
                 user: str | None = None, guard: Callable[[], None] | None = None,
                 parallel: int = DEFAULT_PARALLEL, held: Sequence[Replica] = (),
                 edge: EdgeSettings | None = None) -> None:
        self.pool = pool
        # Replicas last seen on nodes that do not answer now, within their grace period (`fleet watch`): they
        # count as running where they were, and their nodes take nothing new (see node_states).
        self.held = tuple(held)
        # Services converging at once write their records one at a time (see SerialRecords).
        self.records: Records | None = SerialRecords(records) if records is not None else None
        self.parallel = parallel
        self.user = user or f"{getpass.getuser()}@{socket.gethostname()}"
        self.reports = reports
        self.by_name = {r.node.name: r for r in reports}
        self.addresses = {r.node.name: r.ip_address or r.node.address for r in reports}
        self.on_event = on_event or (lambda e: None)
        self.secrets = secrets
        self.guard = guard or (lambda: None)
        # The edge (shared HTTP/HTTPS ports, certificates, stats password) as the inventory sets it.
        self.lbs = Balancers(pool, reports, Edge(pool, edge or EdgeSettings(), secrets,
                                                 on_note=lambda svc, msg: self.emit("tls", svc, msg)))
        self.rotation = Rotation()
        self.live: list[Replica] = []
        self.seen: tuple[Replica, ...] = ()
        self.errors: dict[str, str] = {}
        self._images: dict[str, set[str]] = {}
        self._configs_written: set[tuple[str, str]] = set()
        # Where node-local volume data is (read with the containers), and the sshfs mounts of network volumes.
        self.volumes: VolumeView | None = None
        self.unrecorded: set[str] = set()  # services the fleet's records do not know (read by `state_of`)
        self.storage = StorageAccess(pool)
        self._image_locks: dict[str, asyncio.Lock] = {}
        # Replicas placed and being started, not yet in `live`: they hold their room and port, so a service
        # placing at the same time never takes them (placing and reserving happen under `_placing`).
        self._pending: list[Replica] = []
        self._placing = asyncio.Condition()
        # Services converging in this run, and those of them waiting for room that others hold for a while.
        self._converging: set[str] = set()
        self._short: set[str] = set()

    def emit(self, step: str, service: str, message: str, node: str | None = None,
             container: str | None = None) -> None:
        self.on_event(Event(step, service, message, node, container))

    # --- reading ----------------------------------------------------------------------------------------
    async def observe(self) -> Observed:
        obs, self.volumes = await asyncio.gather(observe(self.pool, self.reports),
                                                 volume_view(self.pool, self.reports))
        self.held = tuple(r for r in self.held if r.node in obs.errors)  # a node read again holds nothing
        self.seen = obs.replicas + self.held
        self.live = [r for r in self.seen if r.running]
        self.errors = dict(obs.errors)
        frontends = self.rotation.frontends
        self.rotation = Rotation(frontends=frontends)
        for r in self.live:
            self.rotation.put(r)
        return obs

    async def plan(self, specs: Sequence[ServiceSpec]) -> tuple[Plan, Observed]:
        obs = await self.observe()
        for spec in specs:
            if local_volumes(spec):
                await self.state_of(spec.name)  # a service never recorded has no volume data anywhere
        return plan(specs, node_states(self.reports, self.errors, self.held), obs.replicas, self._view()), obs

    def _view(self) -> VolumeView | None:
        """Where node-local volume data is; services the fleet has no record of never ran, so a node that did
        not answer cannot hold their data."""
        if self.volumes is None or self.records is None:
            return self.volumes
        return replace(self.volumes, fresh=frozenset(self.unrecorded))

    async def state_of(self, service: str) -> ServiceState | None:
        if self.records is None:
            return None
        raw = await self.records.state(service)
        if raw is None:
            self.unrecorded.add(service)
            return None
        self.unrecorded.discard(service)
        try:
            return ServiceState.from_json(raw)
        except ValueError as exc:
            raise FleetError(f"{service}: the fleet's record of this service is unreadable: {exc}") from exc

    async def _spec_at(self, service: str, revision: int | None) -> ServiceSpec | None:
        if self.records is None or revision is None:
            return None
        rev = await self.records.get(service, revision)
        return spec_of(rev) if rev is not None else None

    async def target(self, command: Command, spec: ServiceSpec) -> Target:
        """What this run does with `spec` (see `fleet.plan.rollout.decide`)."""
        state = await self.state_of(spec.name)
        if state is None or self.records is None:
            return decide(command, spec, state, None)
        accepted = await self._spec_at(spec.name, state.accepted)
        canary = await self._spec_at(spec.name, state.canary)
        failed = None
        revs = await self.records.list(spec.name)
        bad = [r.revision for r in revs if r.outcome in ("failed", "rolled-back", "aborted")]
        if bad:
            failed = bad[-1]
        return decide(command, spec, state, accepted, canary, failed)

    async def follow_records(self, managed: set[str]) -> None:
        """HAProxy follows the accepted spec of every service on record that this run does not manage."""
        if self.records is None:
            return
        running = {r.service for r in self.live}
        for service in sorted(running - managed):
            state = await self.state_of(service)
            spec = await self._spec_at(service, state.accepted) if state is not None else None
            if spec is not None:
                self.rotation.follow(spec)

    # --- applying ---------------------------------------------------------------------------------------
    async def apply(self, specs: Sequence[ServiceSpec], command: Command = "apply",
                    parallel: int | None = None) -> list[Outcome]:
        """Carry out `command` for every spec; an unschedulable request fails before anything changes."""
        await self.observe()
        return await self.apply_targets([await self.target(command, s) for s in specs], command, parallel)

    async def apply_targets(self, targets: Sequence[Target], command: Command = "apply",
                            parallel: int | None = None) -> list[Outcome]:
        """Converge each target (after `observe`): place, check images, prepare nodes, then the services,
        `parallel` at once (default: the engine's), each with its own batches and its own outcome."""
        active = [t for t in targets if not t.skip]
        await self.follow_records(set())  # what HAProxy serves now, by the accepted specs
        self.check_lb_ports([t.spec for t in active])
        for t in active:
            self.rotation.follow(t.spec)
            if t.canary is not None:
                self.rotation.follow(t.canary[0])
        wanted = [t.spec for t in active]
        seen = [r for r in self.seen if not any(
            t.canary and r.service == t.spec.name and r.spec_hash == t.canary[0].spec_hash() for t in active)]
        # A node that cannot get an image (its image list hangs, the pull fails) is left out of this run and
        # the plan made again without it, so its share goes elsewhere.
        missing: dict[str, str] = {}
        while True:
            the_plan = plan(wanted, node_states(self.reports, self.errors, self.held), seen, self._view())
            if the_plan.unplaced:
                why = "".join(f"\n  {node}: {reason}" for node, reason in sorted(missing.items()))
                # Why each node took no more (measured use included), unless already said above.
                why += "".join(f"\n  {node}: {reason}" for node, reason in the_plan.rejected.items()
                               if node not in missing)
                raise SchedulingError("cannot place every replica; nothing was changed:\n  "
                                      + "\n  ".join(str(u) for u in the_plan.unplaced) + why)
            failed = await self._check_images(the_plan)
            if not failed:
                break
            missing.update(failed)
            self.errors.update(failed)
        await self.sync_hosts([t.spec for t in active])
        gate = asyncio.Semaphore(max(1, parallel or self.parallel))

        async def one(t: Target) -> Outcome:
            async with gate:
                if t.skip:
                    return await self._finish_destroy(t)
                self.guard()
                sp = next((s for s in the_plan.services if s.name == t.spec.name), None)
                cleaned = 0
                for r in sp.cleanup if sp is not None else ():
                    await self._remove(r, "stopped container left behind")
                    cleaned += 1
                self._converging.add(t.spec.name)
                try:
                    outcome = await self.rollout(t, command)
                finally:
                    self._converging.discard(t.spec.name)
                    await self._room_changed()
                return replace(outcome, changed=True) if cleaned else outcome

        # Every service runs to its end, whatever happens to the others: a failure is that service's outcome,
        # and a lost lease stops each one at its next step (the guard), not in the middle of one.
        results = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
        outcomes = []
        for t, res in zip(targets, results, strict=True):
            if isinstance(res, LeaseError) or not isinstance(res, Outcome | FleetError):
                raise res
            outcomes.append(res if isinstance(res, Outcome) else Outcome(t.spec.name, False, reason=str(res)))
        await self.lbs.sync(self.rotation)
        # A service whose certificate could not be had runs, but not as asked: its outcome says why.
        https = self.lbs.edge_problems()
        return [replace(o, ok=False, reason=f"HTTPS: {https[o.service]}") if o.service in https else o
                for o in outcomes]

    def check_lb_ports(self, specs: Sequence[ServiceSpec]) -> None:
        """Refuse (before anything changes) an `lb.port` that something other than fleet's HAProxy listens on
        on an lb node, or that another service's front end keeps."""
        listening = {r.node.name: set(r.facts.listening) for r in self.reports
                     if r.node.has_role("lb") and r.facts is not None}
        owned: dict[str, set[int]] = {}
        for service in {r.service for r in self.live}:
            if service in self.rotation.frontends:
                front = self.rotation.frontends[service]
                port = front.bind_port if front is not None else None
            else:
                label = next((r.lb for r in self.live if r.service == service and r.lb is not None), None)
                port = label.port if label is not None else None
            if port is not None:
                owned[service] = {port}
        by_name = {s.name: s for s in specs}
        edge = self.lbs.edge.settings if self.lbs.edge is not None else EdgeSettings()
        if self.lbs.edge is not None:
            self.lbs.edge.stats(STATS_PORT)  # the stats password is in the keyring (before anything changes)
        shared = {edge.http_port: "edge.http_port", edge.https_port: "edge.https_port"}
        others_routed = any(f is not None and f.hosts for name, f in self.rotation.frontends.items()
                            if name not in by_name)
        problems = [Problem(by_name[name].source_file or "<playbook>", by_name[name].source_line,
                            f"services.{name}.lb.port", message)
                    for name, message in edge_port_problems(specs, shared, others_routed)]
        told = {p.field for p in problems}
        problems += [Problem(by_name[name].source_file or "<playbook>", by_name[name].source_line,
                             f"services.{name}.lb.port", message)
                     for name, message in lb_port_problems(specs, listening, owned)
                     if f"services.{name}.lb.port" not in told]
        if problems:
            raise SpecError(problems)

    async def _revision_run(self, service: str, spec: ServiceSpec, revision: int | None) -> int:
        """The revision this run rolls out: `revision`, else an interrupted one of the same spec (a controller
        killed mid-rollout: the run that finds it carries it on), else a new one. Other revisions left
        in-progress by a killed controller are closed as such (a waiting canary's is not)."""
        assert self.records is not None
        if revision is not None:
            return revision
        spec_json = json.dumps(to_playbook_dict(spec), sort_keys=True)
        state = await self.state_of(service)
        waiting = state.canary if state is not None and state.decision == "canary-waiting" else None
        for rev in await self.records.list(service):
            if rev.outcome != "in-progress" or rev.revision == waiting:
                continue
            if json.loads(rev.spec_json) == json.loads(spec_json):
                return rev.revision
            await self.records.finish(service, rev.revision, "failed",
                                      "interrupted: its controller stopped before the rollout finished")
        return await self.records.record(service, spec_json, spec.spec_hash(), spec.image, self.user)

    async def rollback(self, rev: Revision) -> list[Outcome]:
        """Back to the spec of `rev` (recorded as a new revision), pinned: reconcile keeps it until the playbook
        changes or `apply` runs."""
        assert self.records is not None
        await self.observe()
        spec = spec_of(rev)
        state = await self.state_of(spec.name)
        self.rotation.follow(spec)
        await self.follow_records({spec.name})
        await self.sync_hosts([spec])
        revision = await self._revision_run(spec.name, spec, None)
        try:
            out = await self.converge(spec, revision)
        except RolloutFailed as exc:
            await self.records.finish(spec.name, revision, "failed", str(exc))
            await self.lbs.sync(self.rotation)
            return [Outcome(spec.name, False, reason=str(exc))]
        await self.records.finish(spec.name, revision, "succeeded", f"rollback to revision {rev.revision}")
        await self.records.set_state(spec.name, ServiceState(
            accepted=revision, decision="pinned", intent=state.intent if state is not None else None,
            reason=f"rollback to revision {rev.revision}", by=self.user, at=time.time()).to_json())
        await self.lbs.sync(self.rotation)
        return [out]

    async def _waiting(self, service: str) -> tuple[ServiceState, Revision]:
        assert self.records is not None
        state = await self.state_of(service)
        rev = await self.records.get(service, state.canary) if state is not None and state.canary else None
        if state is None or state.decision != "canary-waiting" or rev is None:
            raise FleetError(f"{service}: no canary is waiting (see `fleet history {service}`)")
        return state, rev

    async def promote(self, service: str) -> tuple[Revision, list[Outcome]]:
        """Roll the rest of the service to the waiting canary's revision, batch by batch."""
        assert self.records is not None
        await self.observe()
        state, rev = await self._waiting(service)
        spec = spec_of(rev)
        spec = replace(spec, update=replace(spec.update, strategy="rolling"))
        self.rotation.follow(spec)
        await self.follow_records({service})
        await self.sync_hosts([spec])
        try:
            out = await self.converge(spec, rev.revision)
        except RolloutFailed as exc:
            await self.lbs.sync(self.rotation)
            return rev, [Outcome(service, False, reason=str(exc))]
        await self.records.finish(service, rev.revision, "succeeded", "promoted by `fleet promote`")
        await self.records.set_state(service, ServiceState(
            accepted=rev.revision, decision="applied", intent=state.intent, by=self.user, at=time.time()).to_json())
        await self.lbs.sync(self.rotation)
        return rev, [out]

    async def abort(self, service: str) -> tuple[Revision, list[Outcome]]:
        """Remove the waiting canary: the service goes back to its accepted revision; reconcile keeps it so."""
        assert self.records is not None
        await self.observe()
        state, rev = await self._waiting(service)
        back = await self._spec_at(service, state.accepted)
        if back is None or state.accepted is None:
            raise FleetError(f"{service}: no accepted revision to go back to (see `fleet history {service}`)")
        back = replace(back, update=replace(back.update, strategy="rolling"))
        self.rotation.follow(back)
        await self.follow_records({service})
        try:
            out = await self.converge(back, state.accepted)
        except RolloutFailed as exc:
            await self.lbs.sync(self.rotation)
            return rev, [Outcome(service, False, reason=str(exc))]
        await self.records.finish(service, rev.revision, "aborted", "aborted by `fleet abort`")
        await self.records.set_state(service, ServiceState(
            accepted=state.accepted, decision="aborted", intent=state.intent, reason="aborted by `fleet abort`",
            by=self.user, at=time.time()).to_json())
        await self.lbs.sync(self.rotation)
        return rev, [out]

    async def rollout(self, t: Target, command: Command = "apply") -> Outcome:
        """Converge one service to its target; a new revision is recorded, and on failure the service goes back
        to its last good revision."""
        spec = t.spec
        if t.heal:
            return await self._heal(t)
        state = await self.state_of(spec.name)
        intent = intent_hash(spec)
        if self.records is None:
            return await self._try(spec, _revision_from_labels(spec, self.live), None, None)
        revision = t.revision
        recorded = revision is None
        if revision is None:
            revision = await self._revision_run(spec.name, spec, None)
        outcome = await self._try(spec, revision, state, intent)
        if outcome.ok and recorded and not outcome.waiting:
            await self.records.finish(spec.name, revision, "succeeded")
        if outcome.ok and not outcome.waiting:
            new_state = after_success(t, revision, intent, self.user, time.time(), state)
            if state is not None and state.replicas is not None and command == "apply":
                new_state = replace(new_state, replicas=None)
            await self.records.set_state(spec.name, new_state.to_json())
        return outcome

    async def _try(self, spec: ServiceSpec, revision: int, state: ServiceState | None,
                   intent: str | None) -> Outcome:
        try:
            return await self.converge(spec, revision)
        except CanaryAborted as exc:
            if self.records is not None and intent is not None:
                await self.records.finish(spec.name, revision, "aborted", str(exc))
                await self.records.set_state(spec.name, after_failure(
                    revision, None, intent, str(exc), self.user, time.time(), state, aborted=True).to_json())
            return Outcome(spec.name, False, reason=str(exc))
        except FleetError as exc:
            # Any failure of the rollout (a replica not ready, a runtime or SSH error, an HAProxy reload) fails
            # the revision with its reason and goes back, never leaving it "running" without one. A lost lease
            # stops the run, and the records cannot say anything when they are what failed.
            if isinstance(exc, LeaseError | RecordsError):
                raise
            reason = str(exc) if isinstance(exc, RolloutFailed) else f"{spec.name}: {exc}"
            if self.records is None or intent is None:
                return Outcome(spec.name, False, reason=reason)
            prev = await self.records.latest_succeeded(spec.name, before=revision)
            if prev is None or prev.spec_hash == spec.spec_hash():
                await self.records.finish(spec.name, revision, "failed", reason)
                await self.records.set_state(spec.name, after_failure(
                    revision, prev.revision if prev else None, intent, reason, self.user, time.time(),
                    state).to_json())
                return Outcome(spec.name, False, reason=reason)
            self.emit("rollback", spec.name, f"{spec.name}: rolling back to revision {prev.revision}: {reason}")
            try:
                await self.converge(replace(spec_of(prev), replicas=spec.replicas), prev.revision)
            except FleetError as exc2:
                await self.records.finish(spec.name, revision, "failed", f"{reason}; rollback failed too: {exc2}")
                await self.records.set_state(spec.name, after_failure(
                    revision, None, intent, reason, self.user, time.time(), state).to_json())
                return Outcome(spec.name, False, reason=f"{reason}; rollback to revision {prev.revision} "
                                                        f"failed: {exc2}")
            await self.records.finish(spec.name, revision, "rolled-back", reason)
            await self.records.set_state(spec.name, after_failure(
                revision, prev.revision, intent, reason, self.user, time.time(), state).to_json())
            return Outcome(spec.name, False, reason=f"{reason}; rolled back to revision {prev.revision}")

    async def _heal(self, t: Target) -> Outcome:
        """Restore the accepted state: nothing new is tried and the history is not written."""
        assert t.revision is not None
        if t.canary is None:
            try:
                out = await self.converge(t.spec, t.revision, heal=True)
            except RolloutFailed as exc:
                return Outcome(t.spec.name, False, reason=str(exc))
            return replace(out, reason=t.note) if t.note else out
        canary_spec, canary_rev = t.canary
        state = await self.state_of(t.spec.name)
        weights = state.canary_weights if state is not None and state.canary_weights else (1, 1)
        try:
            # The canary runs beside the full baseline (it was started as a surge replica).
            base = await self.converge(t.spec, t.revision, heal=True, others=(canary_spec.spec_hash(),),
                                       weight=weights[1])
            can = await self.converge(replace(canary_spec, replicas=1, update=replace(
                canary_spec.update, strategy="rolling")), canary_rev, heal=True, others=(t.spec.spec_hash(),),
                weight=weights[0])
        except RolloutFailed as exc:
            return Outcome(t.spec.name, False, reason=str(exc))
        return Outcome(t.spec.name, True, base.started + can.started, base.stopped + can.stopped,
                       reason=t.note, changed=base.changed or can.changed, waiting=True)

    async def _finish_destroy(self, t: Target) -> Outcome:
        mine = [r for r in self.live if r.service == t.spec.name]
        for r in mine:
            self.rotation.drop(r)
        if mine:
            await self.lbs.sync(self.rotation)
            await asyncio.gather(*(self._stop(r, t.spec.stop_grace_period, "destroyed") for r in mine))
        return Outcome(t.spec.name, True, stopped=len(mine), reason=t.note if not mine else None,
                       changed=bool(mine))

    async def _check_images(self, the_plan: Plan) -> dict[str, str]:
        """Every image a new replica needs is on its node, or pulled now: {node: why not} for the nodes where
        it is not (nothing was changed on any node yet)."""
        wanted: dict[str, set[str]] = {}
        for sp in the_plan.services:
            for a in sp.start:
                wanted.setdefault(a.node, set()).add(sp.spec.image)
            for r in sp.replace:
                wanted.setdefault(r.node, set()).add(sp.spec.image)
        nodes = sorted(wanted)
        results = await asyncio.gather(*(self.ensure_images(n, wanted[n]) for n in nodes), return_exceptions=True)
        failed: dict[str, str] = {}
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, ImageUnavailable):
                failed[node] = str(res)
            elif isinstance(res, BaseException):
                raise res
        return failed

    async def ensure_images(self, node: str, images: set[str]) -> None:
        """Every image present on the node (pulled if need be); each (node, image) is checked once per run."""
        known = self._images.setdefault(node, set())
        # One check (or pull) of an image on a node at a time: two services starting there wait for one pull.
        async with self._image_locks.setdefault(node, asyncio.Lock()):
            for image in sorted(images - known):
                if await ensure_image(self.pool, self.by_name[node], image, timeout=600) == "pulled":
                    self.emit("pull", "", f"pulled {image}", node)
                known.add(image)

    # --- converging one service -------------------------------------------------------------------------
    async def converge(self, spec: ServiceSpec, revision: int, *, heal: bool = False,
                       others: Sequence[str] = (), weight: int = 1) -> Outcome:
        """Bring one service to `spec.replicas` ready replicas of `spec`, following `resume_plan`.

        Replicas whose spec hash is in `others` belong to a canary kept apart and are left alone. Replicas that
        fail their checks (judged over the service's interval × failure_threshold) or must move are replaced
        within the update policy, surge-first where there is room."""
        h = spec.spec_hash()
        # Second copies of one replica of one spec (a node that came back); an old and a new replica sharing an
        # index during a rollout (or a canary beside its baseline) are not copies of each other.
        for r in duplicates([r for r in self.live if r.service == spec.name and r.spec_hash not in others]):
            await self._retire(spec, r, f"second copy of {r.service}[{r.replica}]")
        mine = [r for r in self.live if r.service == spec.name and r.spec_hash not in others]
        ready = await self._judge(spec, mine)
        sp = plan([spec], node_states(self.reports, self.errors, self.held),
                  [r for r in self.seen if r.service != spec.name or r.spec_hash not in others],
                  self._view()).service(spec.name)
        moving = {r.id: why for r, why in sp.stop if _misplaced(why)}
        states = [ReplicaState(r.id, "" if r.id in moving else r.spec_hash, ready[r.id], r.replica) for r in mine]
        u = spec.update
        resume = resume_plan(states, h, spec.replicas, u.max_surge, u.max_unavailable, u.batch_size)
        by_id = {r.id: r for r in mine}
        started = stopped = 0
        if not heal and u.strategy == "canary" and self.lbs.nodes and not resume.keep and any(
                s.ready and s.spec_hash not in ("", h) for s in states):
            canary, paused = await self._canary(spec, revision, [r for r in mine if r.spec_hash != h])
            started += len(canary)
            if paused:
                return Outcome(spec.name, True, started, stopped, reason=paused, waiting=True)
            return await self._more(spec, revision, started, stopped, weight)
        for rid in resume.stop_first:
            await self._retire(spec, by_id[rid], "surplus")
            stopped += 1
        outgoing = {s.id for s in states if s.id not in resume.keep}
        for step in resume.steps:
            self.guard()
            if step.start_new:
                new = await self._start_batch(spec, revision, step.start_new, outgoing, weight)
                started += len(new)
            for rid in step.stop_old:
                r = by_id[rid]
                why = ("failing its health check" if not ready[rid] else moving.get(rid)
                       or ("replaced" if r.spec_hash != h else "surplus"))
                await self._retire(spec, r, why)
                stopped += 1
        for r in self.live:
            if r.service == spec.name and r.spec_hash not in others:
                self.rotation.weight(r, weight)
        changed = bool(started or stopped)
        if changed or not heal:
            n = len([r for r in self.live if r.service == spec.name and r.spec_hash == h])
            self.emit("done", spec.name, f"{spec.name}: {n}/{spec.replicas} replicas at revision {revision}")
        return Outcome(spec.name, True, started, stopped, changed=changed)

    async def _more(self, spec: ServiceSpec, revision: int, started: int, stopped: int, weight: int) -> Outcome:
        """After a promoted canary: the rest of the rolling plan."""
        rest = await self.converge(spec, revision, weight=weight)
        return replace(rest, started=rest.started + started, stopped=rest.stopped + stopped, changed=True)

    async def _judge(self, spec: ServiceSpec, replicas: Sequence[Replica]) -> dict[str, bool]:
        """Which running replicas are ready. Without `health`, every running one is. With it, a replica is
        failing only after `failure_threshold` failed checks in a row, `interval` apart, outside its
        `start_period` (counted from its container's creation)."""
        h = spec.health
        if h is None:
            return {r.id: True for r in replicas}
        current = spec.spec_hash()

        async def verdict(r: Replica) -> bool:
            # Outdated replicas are replaced by the rolling plan anyway; the new spec's check may not fit them.
            # A held replica's node does not answer: it is not judged until its grace ends.
            if r.spec_hash != current or r in self.held:
                return True
            seen = await observe_health(h, address=self.addresses[r.node], port=r.port, exec_in=self._exec_in(r),
                                        started_at=r.created or 0.0, clock=time.time)
            return seen.verdict is not HealthVerdict.UNHEALTHY

        results = await asyncio.gather(*(verdict(r) for r in replicas))
        return {r.id: ok for r, ok in zip(replicas, results, strict=True)}

    async def _canary(self, spec: ServiceSpec, revision: int, old: Sequence[Replica]) -> tuple[list[Replica],
                                                                                                  str | None]:
        """One new replica gets each step's share of traffic (HAProxy weights) for `pause`; its 5xx rate is
        compared with the old replicas' after every window. Promoted on its own, or left waiting (the reason
        is returned and the decision recorded on the fleet)."""
        c = spec.update.canary
        steps, pause = (c.steps, c.pause) if c else ((10, 50), 30.0)
        new = await self._start_batch(spec, revision, 1, {r.id for r in old})
        last = (1, 1)
        for step in canary_weights(steps, len(new), len(old)):
            self.guard()
            for r in new:
                self.rotation.weight(r, step.new_weight)
            for r in old:
                self.rotation.weight(r, step.old_weight)
            last = (step.new_weight, step.old_weight)
            await self.lbs.sync(self.rotation)
            self.emit("canary", spec.name, f"canary at {step.pct}% of traffic (weights {step.new_weight} new / "
                                           f"{step.old_weight} old) for {pause:g}s")
            before = await self.lbs.counters(spec.name)
            deadline = time.monotonic() + pause
            while True:
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                after = await self.lbs.counters(spec.name)
                verdict = self._verdict(spec, before, after, new, old)
                if verdict.ok is False:
                    for r in new:
                        await self._retire(spec, r, "canary aborted")
                    for r in old:
                        self.rotation.weight(r, 1)
                    await self.lbs.sync(self.rotation)
                    raise CanaryAborted(f"{spec.name}: canary aborted at {step.pct}%: {verdict.reason}")
                if time.monotonic() >= deadline:
                    break
        if c is not None and not c.auto_promote:
            reason = (f"{spec.name}: canary at {steps[-1]}% waits: `fleet promote {spec.name}` or "
                      f"`fleet abort {spec.name}`")
            if self.records is not None:
                state = await self.state_of(spec.name)
                await self.records.set_state(spec.name, ServiceState(
                    accepted=state.accepted if state is not None else None, decision="canary-waiting",
                    intent=intent_hash(spec), canary=revision, canary_weights=last, by=self.user,
                    at=time.time()).to_json())
            return new, reason
        for r in [*new, *old]:
            self.rotation.weight(r, 1)
        self.emit("canary", spec.name, f"{spec.name}: canary promoted; rolling the rest")
        return new, None

    def _verdict(self, spec: ServiceSpec, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                 new: Sequence[Replica], old: Sequence[Replica]) -> Verdict:
        def delta(rs: Sequence[Replica]) -> tuple[int, int]:
            bad = sum(after.get(r.id, (0, 0))[0] - before.get(r.id, (0, 0))[0] for r in rs)
            total = sum(after.get(r.id, (0, 0))[1] - before.get(r.id, (0, 0))[1] for r in rs)
            return max(bad, 0), max(total, 0)

        c = spec.update.canary
        (nb, nt), (ob, ot) = delta(new), delta(old)
        return canary_verdict(min(nb, nt), nt, min(ob, ot), ot, c.max_error_rate_delta if c else 1.0)

    # --- one batch --------------------------------------------------------------------------------------
    async def _place(self, spec: ServiceSpec, k: int, outgoing: set[str]) -> list[Assignment]:
        """Place k more replicas of `spec` against the live state: replicas on their way out (outdated, failing,
        misplaced) still hold their room and ports."""
        # The scheduler is asked for the whole service, so staying replicas keep their numbers and the new ones
        # take the lowest free ones; of what it could place, the first k are started now.
        nodes = node_states(self.reports, self.errors, self.held)
        shaped, existing, demands, _ = placement_inputs([spec], nodes, [*self.live, *self._pending],
                                                        hold_outdated=True, outgoing=frozenset(outgoing),
                                                        volumes=self._view())
        placement = place(shaped, existing, demands)
        fresh = sorted((a for a in placement.assignments if a.service == spec.name and a.reason != "keep"),
                       key=lambda a: a.replica)
        if len(fresh) < k:
            raise RolloutFailed(f"{spec.name}: no room for {k} more replica(s) during the update: "
                                + "; ".join(sorted({u.reason for u in placement.unplaced})))
        return fresh[:k]

    async def _start_batch(self, spec: ServiceSpec, revision: int, k: int, outgoing: set[str],
                           weight: int = 1) -> list[Replica]:
        async with self._placing:
            assignments = await self._place_or_wait(spec, k, outgoing)
            held = [Replica(a.node, f"(starting {spec.name}[{a.replica}])", spec.name, a.replica, revision,
                            spec.spec_hash(), a.port, True, spec.resources, spec.image) for a in assignments]
            self._pending += held
        try:
            return await self._start_placed(spec, revision, assignments, weight)
        finally:
            self._pending = [r for r in self._pending if all(r is not h for h in held)]
            await self._room_changed()

    async def _place_or_wait(self, spec: ServiceSpec, k: int, outgoing: set[str]) -> list[Assignment]:
        """`_place`, under `_placing`. With no room now while other services converge, wait: their surge
        replicas and the ones they retire free room as they go (one at a time, a service would have had it).
        Fails as `_place` does once no other service is left that could free any (all done, or all waiting)."""
        while True:
            try:
                return await self._place(spec, k, outgoing)
            except RolloutFailed as exc:
                if not self._converging - self._short - {spec.name}:
                    raise
                if spec.name not in self._short:
                    self.emit("wait", spec.name, f"waiting for room that other services hold: {exc}")
                self._short.add(spec.name)
                try:
                    # Woken when a start or a service ends; a replica retired elsewhere is seen within 1 s.
                    async with asyncio.timeout(1.0):
                        await self._placing.wait()
                except TimeoutError:
                    pass
                finally:
                    self._short.discard(spec.name)

    async def _room_changed(self) -> None:
        async with self._placing:
            self._placing.notify_all()

    async def _start_placed(self, spec: ServiceSpec, revision: int, assignments: Sequence[Assignment],
                            weight: int) -> list[Replica]:
        for node in sorted({a.node for a in assignments}):
            try:
                await self.ensure_images(node, {spec.image})
            except ImageUnavailable as exc:
                self.errors[node] = str(exc)
                raise RolloutFailed(f"{spec.name}: {exc}") from exc
        new = await asyncio.gather(*(self._start(spec, revision, a) for a in assignments), return_exceptions=True)
        ok = [r for r in new if isinstance(r, Replica)]
        failed = [e for e in new if isinstance(e, BaseException)]
        for e in failed:
            if not isinstance(e, FleetError):
                raise e
        if not failed:
            ready = await asyncio.gather(*(self._wait_ready(spec, r) for r in ok))
            failed_reasons = [why for why in ready if why is not None]
        else:
            failed_reasons = [str(e) for e in failed]
        if failed_reasons:
            for r in ok:
                await self._remove(r, "not ready")
            raise RolloutFailed(f"{spec.name}: new replicas did not become ready: " + "; ".join(failed_reasons))
        for r in ok:
            self.live.append(r)
            self.rotation.put(r, weight=weight)
        if self.rotation.routed(spec.name):
            await self.lbs.sync(self.rotation)
            self.emit("routed", spec.name, f"{len(ok)} new replica(s) in the load balancer")
        return ok

    async def _start(self, spec: ServiceSpec, revision: int, a: Assignment) -> Replica:
        report = self.by_name[a.node]
        driver = driver_for(report.node, report.facts)
        dirs = [volume_dir(spec.name, v.source or "") for v in spec.volumes if v.type == "volume"]
        cid = L.container_id(spec.name, a.replica)
        await mount_all(self.storage, spec, report.node, [r.node for r in self.reports], cid)
        if spec.configs:
            await self._configs(spec, report.node)
        if spec.secret_files:
            await self._secret_files(spec, a, cid)
        env_secrets = any(isinstance(v, SecretRef) for v in spec.env.values())
        try:
            env_file = await self._secrets_file(spec, a) if env_secrets else None
        except BaseException:
            await drop_secret_files(self.pool, report.node, cid)
            raise
        if dirs:
            await self.pool.check(report.node, ["mkdir", "-p", *dirs], timeout=30)
            for name in local_volumes(spec):
                self.volumes = self.volumes.with_holder(spec.name, name, a.node) if self.volumes else None
        run = run_spec(spec, revision, a, env_file, container=cid)
        self.emit("start", spec.name, f"starting {run.id} on {a.node}:{a.port}", a.node, run.id)
        try:
            await perform(self.pool, report.node, driver.run(run), timeout=120)
        except BaseException:
            await drop_secret_files(self.pool, report.node, cid)
            await self.storage.release(report.node, cid)
            raise
        finally:
            if env_file is not None:
                # The runtime copied the values into the container's spec when it created it.
                await self.pool.run(report.node, ["rm", "-f", env_file], timeout=30)
        return Replica(a.node, run.id, spec.name, a.replica, revision, spec.spec_hash(), a.port, True,
                       spec.resources, spec.image, created=float(run.labels[L.CREATED]))

    async def _configs(self, spec: ServiceSpec, node: Node) -> None:
        """The service's config files on the node, once per run and spec hash: written over stdin (content and
        mode, size-checked, by rename) under fleet's disk directory, whose directories are 0700 (only root on the
        node reads them; only this service's containers have them mounted)."""
        key = (node.name, spec.spec_hash())
        if key in self._configs_written:
            return
        results = await asyncio.gather(*(
            self.pool.run(node, write_file(config_file(spec, i), c.mode, size=len(c.content.encode())),
                          stdin=c.content, timeout=30) for i, c in enumerate(spec.configs)))
        for c, result in zip(spec.configs, results, strict=True):
            if not result.ok:
                raise FleetError(f"{spec.name}: {node.name}: writing config {c.target} failed: "
                                 f"{result.error or result.stderr.strip()}")
        self._configs_written.add(key)

    async def _secret_files(self, spec: ServiceSpec, a: Assignment, container: str) -> None:
        """Each secret file's value into its own file on the node's tmpfs (stdin, never argv; refused off tmpfs),
        in a 0700 directory of this container, bind-mounted read-only; removed with the container."""
        node = self.by_name[a.node].node
        for i, f in enumerate(spec.secret_files):
            value = self.secrets(f.secret) if self.secrets else None
            if value is None:
                await drop_secret_files(self.pool, node, container)
                raise FleetError(f"{spec.name}: secret {f.secret!r} for file {f.target} is not in the keyring "
                                 f"(set it with `fleet secret set {f.secret}`)")
            data = value.encode()
            result = await self.pool.run(node, write_secret_file(secret_mount(container, i), size=len(data),
                                                                 mode=f.mode), stdin=value, timeout=30)
            if not result.ok:
                await drop_secret_files(self.pool, node, container)
                why = result.stderr.strip() if result.exit_status == NOT_TMPFS_EXIT else (
                    f"writing secret file {f.target} failed: {result.error or result.stderr.strip()}")
                raise FleetError(f"{spec.name}: {a.node}: {why}")

    async def _secrets_file(self, spec: ServiceSpec, a: Assignment) -> str:
        """Secret env values go to a 0600 file on the node through stdin, never through argv."""
        lines = []
        for key, value in sorted(spec.env.items()):
            if isinstance(value, SecretRef):
                secret = self.secrets(value.name) if self.secrets else None
                if secret is None:
                    raise FleetError(f"{spec.name}: secret {value.name!r} for env {key} is not in the keyring "
                                     f"(set it with `fleet secret set {value.name}`)")
                if "\n" in secret:
                    raise FleetError(f"{spec.name}: secret {value.name!r} holds a newline; env files cannot carry it")
                lines.append(f"{key}={secret}\n")
        # On the node's tmpfs (/run/fleet), never its disk; removed once the container exists, and swept by the
        # next run if this one is killed in between.
        path = secret_env_path(spec.name, a.replica, L.random_suffix())
        node = self.by_name[a.node].node
        data = "".join(lines)
        result = await self.pool.run(node, write_secret_file(path, size=len(data.encode())), stdin=data, timeout=30)
        if result.exit_status == NOT_TMPFS_EXIT:
            raise FleetError(f"{spec.name}: {a.node}: {result.stderr.strip()} (secrets are written to a tmpfs only)")
        if not result.ok:
            raise FleetError(f"{spec.name}: {a.node}: writing the secret env file failed: "
                             f"{result.error or result.stderr.strip()}")
        return path

    async def _wait_ready(self, spec: ServiceSpec, r: Replica) -> str | None:
        """None once the replica passes its check `success_threshold` times in a row and then keeps passing,
        in the same process, for `min_ready` (without `health`: once it runs, in the same process, for
        `min_ready`); else why not (deadline passed, or it crashed)."""
        h = spec.health
        deadline = time.monotonic() + spec.update.ready_deadline
        address = self.addresses[r.node]
        history: list[tuple[float, bool]] = []
        checks, last = 0, "no check yet"
        ready_since: float | None = None
        pid: int | None = None
        while time.monotonic() < deadline:
            if h is None:
                running = await self._pid(r, known=pid if pid is not None else -1) is not None
                ok, detail = running, ("running" if running else "not running")
            else:
                result = await check(h, address=address, port=r.port, exec_in=self._exec_in(r))
                ok, detail = result.ok, result.detail
            checks += 1
            history.append((time.monotonic(), ok))
            if ok:
                if (passed_enough(history, h) if h is not None else True) and ready_since is None:
                    ready_since, pid = time.monotonic(), await self._pid(r, known=pid)
                if ready_since is not None and time.monotonic() - ready_since >= spec.update.min_ready:
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
            await asyncio.sleep(0.25)
        return f"{r.id} on {r.node} not ready within {spec.update.ready_deadline:g}s (last check: {last})"

    def _exec_in(self, r: Replica) -> Callable[[list[str], float], Awaitable[int]]:
        """How an exec health check runs inside this replica's container (through the node's runtime)."""
        report = self.by_name[r.node]
        return health_exec(self.pool, report.node, driver_for(report.node, report.facts), r.id)

    async def _pid(self, r: Replica, known: int | None = None) -> int | None:
        """The PID of the replica's running task, None when it is not running; `known` when the node did not
        answer in time (unknown this round: a slow listing must not end a rollout as a crash)."""
        report = self.by_name[r.node]
        try:
            tasks = await perform(self.pool, report.node, driver_for(report.node, report.facts).tasks(),
                                  timeout=LIST_TIMEOUT)
        except (CommandTimeout, ConnectError):
            return known
        pid, status = tasks.get(r.id, (None, Status.UNKNOWN))
        return (pid or -1) if status == Status.RUNNING else None

    async def _retire(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        """Drain (no new connections; existing ones finish, up to the grace period), unroute, then stop."""
        if self.rotation.routed(r.service) and self.lbs.nodes:
            self.rotation.state(r, "drain")
            await self.lbs.set_state(r, "drain")
            self.emit("drain", spec.name, f"draining {r.id} ({why})", r.node, r.id)
            deadline = time.monotonic() + spec.stop_grace_period
            while time.monotonic() < deadline and await self.lbs.connections(r) > 0:
                await asyncio.sleep(0.2)
            self.rotation.drop(r)
            await self.lbs.sync(self.rotation)
            await self.lbs.settle(min(max(spec.stop_grace_period, 1.0), 10.0))
        await self._stop(r, spec.stop_grace_period, why)

    async def _stop(self, r: Replica, grace: float, why: str) -> None:
        report = self.by_name[r.node]
        self.emit("stop", r.service, f"stopping {r.id} on {r.node} ({why})", r.node, r.id)
        await perform(self.pool, report.node, driver_for(report.node, report.facts).stop(r.id, grace),
                      timeout=grace + 30)
        await drop_secret_files(self.pool, report.node, r.id)
        await self.storage.release(report.node, r.id)
        self.live = [x for x in self.live if x.id != r.id]
        self.rotation.drop(r)

    async def _remove(self, r: Replica, why: str) -> None:
        report = self.by_name[r.node]
        self.emit("remove", r.service, f"removing {r.id} on {r.node} ({why})", r.node, r.id)
        await perform(self.pool, report.node, driver_for(report.node, report.facts).stop(r.id, 1.0), timeout=60)
        await drop_secret_files(self.pool, report.node, r.id)
        await self.storage.release(report.node, r.id)
        self.live = [x for x in self.live if x.id != r.id]
        self.rotation.drop(r)

    # --- removing a service -----------------------------------------------------------------------------
    async def destroy(self, service: str, grace: float = 10.0) -> int:
        """Take every replica of `service` out of the load balancers, then stop and remove them. The decision is
        recorded on the fleet first, so replicas on a node that is down now are removed when it returns."""
        await self.observe()
        if self.records is not None:
            state = await self.state_of(service)
            await self.records.set_state(service, ServiceState(
                accepted=state.accepted if state is not None else None, decision="destroyed",
                intent=state.intent if state is not None else None, by=self.user, at=time.time()).to_json())
        await self.follow_records({service})
        mine = [r for r in self.live if r.service == service]
        for r in mine:
            self.rotation.drop(r)
        if mine:
            await self.lbs.sync(self.rotation)
        await asyncio.gather(*(self._stop(r, grace, "destroy") for r in mine))
        return len(mine)

    async def sweep_destroyed(self, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, int]:
        """Replicas of destroyed services that a node which was down still runs: removed, never resurrected."""
        removed: dict[str, int] = {}
        if self.records is None:
            return removed
        for service in sorted({r.service for r in self.live} - set(exclude)):
            state = await self.state_of(service)
            if state is not None and state.decision == "destroyed":
                mine = [r for r in self.live if r.service == service]
                for r in mine:
                    self.rotation.drop(r)
                await self.lbs.sync(self.rotation)
                for r in mine:
                    await self._stop(r, 10.0, "destroyed while its node was unreachable")
                removed[service] = len(mine)
        return removed

    # --- service discovery ------------------------------------------------------------------------------
    def hosts_text(self, specs: Sequence[ServiceSpec]) -> str:
        """The hosts file every container gets: each load-balanced service's name → the fleet's virtual IP when
        the inventory has one (it moves between lb nodes), else the first lb node."""
        vip = self.lbs.vip.vrrp
        lb = vip.virtual_ip if vip is not None else next(
            (r.ip_address or r.node.address for r in self.reports if r.node.has_role("lb") and r.ok), None)
        names = {s.name for s in specs if s.lb} | {r.service for r in self.live if self.rotation.routed(r.service)}
        return hosts_text(lb, sorted(names))

    async def sync_hosts(self, specs: Sequence[ServiceSpec]) -> None:
        """Prepare every worker: hosts file, resolv.conf, pinned network namespace (see runspec.PREPARE_NODE)."""
        text = self.hosts_text(specs)
        workers = [r.node for r in self.reports if r.ok and r.node.has_role("worker")]
        on: dict[str, set[tuple[str, str, str]]] = {}
        for r in (*self.seen, *self.live):
            on.setdefault(r.node, set()).add((r.id, r.service, r.spec_hash))

        async def prepare(n: Node) -> None:
            # A node read by this run has the secret files and configs of containers no longer on it removed.
            mine = on.get(n.name, set()) if n.name not in self.errors else None
            await self.pool.check(n, prepare_node_script(text, mine), stdin=text, timeout=30)

        results = await asyncio.gather(*(prepare(n) for n in workers), return_exceptions=True)
        for n, res in zip(workers, results, strict=True):
            if isinstance(res, FleetError):
                self.errors[n.name] = f"preparing the node failed: {res}"
            elif isinstance(res, BaseException):
                raise res
