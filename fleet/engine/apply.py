"""A run over the fleet: observe once, plan every service at once, run their rollouts side by side, keep the load
balancers in step and collect one outcome per service. Every changing operation of the façade (apply, scale,
drain, destroy, rollback, promote, abort) and `fleet plan`'s preview is one operation of `Engine`.

Every step is read back from or written to the nodes (container labels), the load balancers and the fleet's
records; nothing else is kept, so a controller killed at any point is picked up by the next run. The rooms:
`ledger` (records), `replicas` (replica operations), `rooms` (shared placement), `converge` and `rollout` (one
service), `prepare` (checks and node preparation before anything changes).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from fleet.config.spec import ServiceSpec
from fleet.core.edge import EdgeSettings
from fleet.core.errors import FleetError, ImageUnavailable, LeaseError, RolloutFailed, SchedulingError
from fleet.engine.concurrency import DEFAULT_PARALLEL
from fleet.engine.converge import Stage
from fleet.engine.edge import Edge
from fleet.engine.guarded import Guard, Guarded, confirm
from fleet.engine.lb import Balancers
from fleet.engine.lbview import config_diff, proposed_configs
from fleet.engine.ledger import Ledger, NullLedger, Turn, TurnKind
from fleet.engine.ledger import spec_of as spec_of  # where fleet.engine.status reads it
from fleet.engine.nodefiles import NodeFiles
from fleet.engine.nodes import NodeReport
from fleet.engine.prepare import check_lb_ports
from fleet.engine.replicas import NodeReplicas, ReplicaOps
from fleet.engine.retention import prune
from fleet.engine.rollout import ServiceRollout
from fleet.engine.rooms import RoomBook
from fleet.engine.state import Observed
from fleet.engine.view import RunView
from fleet.engine.volumes import revoke_departed
from fleet.plan.drain import drain_target
from fleet.plan.needs import lacking
from fleet.plan.reconcile import Plan, Replica, plan
from fleet.plan.rollout.decide import Command, Target, config_changes, with_image
from fleet.plan.rollout.pause import Pause
from fleet.plan.volumes import local_volumes
from fleet.results import Event, Outcome, PlanView, RunResult
from fleet.store.history import Revision
from fleet.store.protocol import Records as Records  # where fleet.engine.status reads it
from fleet.transport import Pool


class Engine:
    """Plans and converges services over one pool, with the node reports of this run.

    `guard` is awaited between steps and before each action on nodes (`Guarded`): it raises when the fleet's
    lease was lost, so the run stops at a safe point. `records` is the fleet's history and decisions; without
    it (tests of the engine alone) revisions come from container labels and every run behaves as `apply`.
    `parallel` services converge at once. `ops` replaces the replica operations over SSH (tests/harness.py)."""

    def __init__(self, pool: Pool, reports: list[NodeReport], *, on_event: Callable[[Event], None] | None = None,
                 secrets: Callable[[str], str | None] | None = None, records: Records | None = None,
                 user: str | None = None, guard: Guard | None = None,
                 parallel: int = DEFAULT_PARALLEL, held: Sequence[Replica] = (),
                 edge: EdgeSettings | None = None, ops: ReplicaOps | None = None, image_retention: int | None = None,
                 paused: Callable[[str], Awaitable[Pause | None]] | None = None) -> None:
        self.pool = pool
        self.image_retention = image_retention  # old images removed past this many revisions (engine.retention)
        self.view = RunView(reports, tuple(held))
        user = user or f"{getpass.getuser()}@{socket.gethostname()}"
        self.ledger = Ledger(records, user) if records is not None else NullLedger(user)
        self.parallel = parallel
        self.on_event = on_event or (lambda e: None)
        # The edge (shared HTTP/HTTPS ports, certificates, stats password) as the inventory sets it.
        self.lbs = Balancers(pool, reports, Edge(pool, edge or EdgeSettings(), secrets,
                                                 on_note=lambda svc, msg: self.emit("tls", svc, msg)))
        inner = ops or NodeReplicas(pool, self.view, self.lbs, NodeFiles(pool, secrets), self.on_event)
        self.ops: ReplicaOps = Guarded(inner, guard) if guard is not None else inner
        self.book = RoomBook(self.view, self.on_event)
        self.stage = Stage(self.view, self.ops, self.book, self.ledger, self.on_event, guard or (lambda: None))
        if paused is not None:
            self.stage.paused = paused
        self.rollout = ServiceRollout(self.stage)

    def emit(self, step: str, service: str, message: str) -> None:
        self.on_event(Event(step, service, message))

    def result(self, outcomes: Sequence[Outcome]) -> RunResult:
        """The run's outcomes, with the nodes that could not take part (unreachable lb nodes among them)."""
        return RunResult(list(outcomes), {**self.view.errors, **{n: "unreachable lb node"
                                                                 for n in self.lbs.unreachable}})

    # --- reading ----------------------------------------------------------------------------------------
    async def observe(self) -> Observed:
        view = self.view
        obs, view.volumes = await self.ops.observe()
        view.held = tuple(r for r in view.held if r.node in obs.errors)  # a node read again holds nothing
        view.seen = obs.replicas + view.held
        view.live = [r for r in view.seen if r.running]
        view.errors = dict(obs.errors)
        view.rotation = replace(view.rotation, entries={})
        for r in view.live:
            view.rotation.put(r)
        return obs

    async def plan(self, specs: Sequence[ServiceSpec]) -> tuple[Plan, Observed]:
        obs = await self.observe()
        for spec in specs:
            if local_volumes(spec):
                await self.ledger.state(spec.name)  # a service never recorded has no volume data anywhere
        return plan(specs, self.view.nodes(), obs.replicas, self.ledger.fresh(self.view.volumes)), obs

    async def preview(self, specs: Sequence[ServiceSpec]) -> PlanView:
        """`fleet plan`: what `apply` would change, per service and per lb node's HAProxy config; read-only."""
        p, obs = await self.plan(specs)
        await self.follow_records(set())
        check_lb_ports(self.view, self.lbs, specs)
        changes: dict[str, list[str]] = {}
        notes: dict[str, str] = {}
        for spec in specs:
            changes[spec.name] = config_changes(await self.ledger.accepted_spec(spec.name), spec)
            target = await self.ledger.target("reconcile", spec)
            if target.note:
                notes[spec.name] = target.note
        lb_diff = {node: diff for node, (now, after) in (await proposed_configs(self, self.view.rotation,
                                                                                 specs)).items()
                   if (diff := config_diff(node, now, after))}
        return PlanView(p, dict(obs.errors), changes, notes, lb_diff)

    async def follow_records(self, managed: set[str]) -> None:
        """HAProxy follows the accepted spec of every service on record that this run does not manage."""
        for service in sorted({r.service for r in self.view.live} - managed):
            spec = await self.ledger.accepted_spec(service)
            if spec is not None:
                self.view.rotation.follow(spec)

    # --- applying ---------------------------------------------------------------------------------------
    async def apply(self, specs: Sequence[ServiceSpec], command: Command = "apply", parallel: int | None = None,
                    skipped: Mapping[str, str] | None = None, images: Mapping[str, str] | None = None) -> RunResult:
        """Carry out `command` for every spec (an unschedulable request fails before anything changes), then
        remove what destroyed services left on nodes that were down; `skipped` services are named, not run;
        `images` replace the playbook's image of those services (`apply --set`, recorded as `fleet deploy`)."""
        await self.observe()
        await _revoke_departed(self.pool, self.view.reports, self.emit)
        for node, why in lacking(self.view.nodes(), specs).items():
            self.emit("lacks", "", f"{node}: {why}")
        outcomes = [Outcome(name, False, reason=why, changed=False) for name, why in (skipped or {}).items()]
        tried = {s.name: (s, playbook) for s, playbook in (with_image(s, images) for s in specs)}

        async def target(s: ServiceSpec, playbook: str | None) -> Target:
            return replace(await self.ledger.target(command, s), set_from=playbook)

        outcomes += await self.apply_targets([await target(*pair) for pair in tried.values()], command, parallel,
                                             again=lambda t: target(*tried[t.spec.name]))
        outcomes += await self.sweep({s.name for s in specs})
        if self.image_retention is not None and isinstance(self.ledger, Ledger):
            await prune(self.pool, self.view.reports, self.ledger.records, self.image_retention, self.on_event)
        return self.result(outcomes)

    async def apply_targets(self, targets: Sequence[Target], command: Command = "apply",
                            parallel: int | None = None,
                            again: Callable[[Target], Awaitable[Target]] | None = None) -> list[Outcome]:
        """Converge each target (after `observe`): place, check images, prepare nodes, then the services,
        `parallel` at once (default: the engine's), each with its own batches and its own outcome. `again`
        decides a service's target anew when its turn comes, from its records read again under the lease (a
        service waits its turn behind others: what it was decided on may have changed meanwhile)."""
        view = self.view
        active = [t for t in targets if not t.skip]
        await self.follow_records(set())  # what HAProxy serves now, by the accepted specs
        check_lb_ports(view, self.lbs, [t.spec for t in active])
        for t in active:
            view.rotation.follow(t.spec)
            if t.canary is not None:
                view.rotation.follow(t.canary[0])
        the_plan = await self._place_all(active)
        await self.ops.prepare([t.spec for t in active])
        gate = asyncio.Semaphore(max(1, parallel or self.parallel))

        async def one(t: Target) -> Outcome:
            async with gate:
                if again is not None:
                    t = await self._again(t, again)
                if t.skip:
                    return await self._finish_destroy(t)
                await confirm(self.stage.guard)
                sp = next((s for s in the_plan.services if s.name == t.spec.name), None)
                cleaned = 0
                for r in sp.cleanup if sp is not None else ():
                    await self.ops.remove(r, "stopped container left behind")
                    view.gone(r)
                    cleaned += 1
                async with self.book.rolling([t.spec.name]):
                    outcome = await self.rollout(t, command)
                return replace(outcome, changed=True) if cleaned else outcome

        # Every service runs to its end, whatever happens to the others: a failure is that service's outcome,
        # and a lost lease stops each one at its next step (the guard), not in the middle of one.
        results = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
        outcomes = []
        for t, res in zip(targets, results, strict=True):
            if isinstance(res, LeaseError) or not isinstance(res, Outcome | FleetError):
                raise res
            outcomes.append(res if isinstance(res, Outcome) else Outcome(t.spec.name, False, reason=str(res)))
        await self.ops.route(view.rotation)
        # A service whose certificate could not be had runs, but not as asked: its outcome says why.
        https = self.lbs.edge_problems()
        return [replace(o, ok=False, reason=f"HTTPS: {https[o.service]}") if o.service in https else o
                for o in outcomes]

    async def _again(self, t: Target, again: Callable[[Target], Awaitable[Target]]) -> Target:
        """`t` decided again on its service's records as they are now (read fenced: the lease is still ours)."""
        await self.ledger.reread(t.spec.name)
        fresh = await again(t)
        if fresh != t:
            now = "destroyed" if fresh.skip else f"{fresh.spec.replicas} replicas of {fresh.spec.image}" + (
                f" (revision {fresh.revision})" if fresh.revision is not None else "")
            self.emit("records", t.spec.name, f"{t.spec.name}: its record changed since this run read it: "
                                              f"converging to it as it is now ({now})")
            self.view.rotation.follow(fresh.spec)
        return fresh

    async def _place_all(self, active: Sequence[Target]) -> Plan:
        """One plan for every service at once, with its images on its nodes. A node that cannot get an image
        (its image list hangs, the pull fails) is left out of this run and the plan made again without it, so
        its share goes elsewhere. SchedulingError when the request cannot be placed: nothing was changed."""
        view = self.view
        wanted = [t.spec for t in active]
        seen = [r for r in view.seen if not any(
            t.canary and r.service == t.spec.name and r.spec_hash == t.canary[0].spec_hash() for t in active)]
        missing: dict[str, str] = {}
        while True:
            the_plan = plan(wanted, view.nodes(), seen, self.ledger.fresh(view.volumes))
            if the_plan.unplaced:
                why = "".join(f"\n  {node}: {reason}" for node, reason in sorted(missing.items()))
                # Why each node took no more (measured use included), unless already said above.
                why += "".join(f"\n  {node}: {reason}" for node, reason in the_plan.rejected.items()
                               if node not in missing)
                raise SchedulingError("cannot place every replica; nothing was changed:\n  "
                                      + "\n  ".join(str(u) for u in the_plan.unplaced) + why)
            failed = await _missing_images(self.ops, the_plan)
            if not failed:
                return the_plan
            missing.update(failed)
            view.errors.update(failed)

    async def scale(self, spec: ServiceSpec, replicas: int) -> RunResult:
        """Run `replicas` of the service now; the count holds (reconcile keeps it) until the next `apply`."""
        await self.observe()
        await self.ledger.reread(spec.name)
        # The accepted spec at the new count (or the playbook's, where reconcile would try it).
        target = await self.ledger.target("reconcile", spec)
        base = target.spec if target.heal and not target.skip else spec
        outcomes = await self.apply_targets([replace(target, spec=replace(base, replicas=replicas))])
        if not target.heal or all(o.ok for o in outcomes):
            await self.ledger.scaled(spec.name, replicas)
        return self.result(outcomes)

    async def drain(self, node: str) -> RunResult:
        """Every service with a replica on `node` (marked draining) converges to its accepted state, as
        reconcile does: the node's replicas are misplaced and move, surge first. A service the records cannot
        move is refused; one whose replicas are still there after is not ok."""
        await self.observe()
        targets: list[Target] = []
        refused: list[Outcome] = []
        for service in sorted({r.service for r in self.view.live if r.node == node}):
            await self.ledger.reread(service)
            state, accepted, canary = await self.ledger.accepted(service)
            target = drain_target(service, state, accepted, canary, self.view.live)
            if isinstance(target, str):
                refused.append(Outcome(service, False, reason=target))
            else:
                targets.append(target)
        outcomes = await self.apply_targets(targets, "reconcile") if targets else []
        # What converged must have left the node: say so if anything is still there.
        left = {r.service for r in self.view.live if r.node == node}
        outcomes = [o if not (o.ok and o.service in left) else replace(
            o, ok=False, reason=f"replicas of {o.service} still run on {node}") for o in outcomes]
        return self.result([*outcomes, *refused])

    # --- rollback, promote, abort -------------------------------------------------------------------------
    async def turn(self, kind: TurnKind, service: str, to: int | None = None,
                   image: str | None = None) -> tuple[Revision, RunResult]:
        """`rollback` (to revision `to`, default the last good one; pinned: reconcile keeps it), `promote` (roll
        the rest to the waiting canary's revision), `abort` (remove the waiting canary; back to the accepted
        revision, kept so), `restart` (every replica anew, same image and settings) or `deploy` (the accepted
        revision with `image`; reconcile keeps it): converge the service to the turn's spec, then record how it
        ended."""
        await self.observe()
        await self.ledger.reread(service)
        turn = await self.ledger.turn(kind, service, to, image)
        return turn.shown, await self.carry(turn)

    async def carry(self, turn: Turn, revision: int | None = None) -> RunResult:
        """Converge the service to `turn`'s spec at `revision` (None: the turn's, else a new one begun after the
        deploy hook), then record how it ended; a pause leaves it in progress, said on its record."""
        service, view = turn.spec.name, self.view
        view.rotation.follow(turn.spec)
        await self.follow_records({service})
        if turn.hosts:
            await self.ops.prepare([turn.spec])
        if revision is None:
            revision = turn.revision if turn.revision is not None else await self.ledger.begin(turn.spec, view.live)
            if turn.kind == "deploy" and (why := await self.stage.before_deploy(turn.spec, revision)) is not None:
                await self.ledger.turned(turn, revision, why)
                return self.result([Outcome(service, False, reason=why)])
        try:
            out = await self.rollout.converge(turn.spec, revision)
        except RolloutFailed as exc:
            await self.ledger.turned(turn, revision, str(exc))
            out = Outcome(service, False, reason=str(exc))
        else:  # paused: the revision stays in progress for `fleet rollout resume`
            await (self.ledger.turn_paused(turn, revision) if out.waiting else self.ledger.turned(turn, revision, None))
        await self.ops.route(view.rotation)
        return self.result([out])

    # --- removing a service -----------------------------------------------------------------------------
    async def destroy(self, service: str, grace: float = 10.0) -> RunResult:
        """Take every replica of `service` out of the load balancers, then stop and remove them. The decision is
        recorded on the fleet first, so replicas on a node that is down now are removed when it returns."""
        await self.observe()
        await self.ledger.reread(service)
        await self.ledger.destroy(service)
        await self.follow_records({service})
        n = await self._stop_all(service, grace, "destroy")
        return self.result([Outcome(service, True, stopped=n)])

    async def _stop_all(self, service: str, grace: float, why: str, *, sweeping: bool = False) -> int:
        """Unroute every replica of `service`, then stop them (all at once, or one by one when `sweeping`)."""
        mine = [r for r in self.view.live if r.service == service]
        for r in mine:
            self.view.rotation.drop(r)
        if mine or sweeping:
            await self.ops.route(self.view.rotation)
        if sweeping:
            for r in mine:
                await self.rollout.converge.stop(r, grace, why)
        else:
            await asyncio.gather(*(self.rollout.converge.stop(r, grace, why) for r in mine))
        return len(mine)

    async def sweep(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[Outcome]:
        """Replicas of destroyed services that a node which was down still runs: removed, never resurrected."""
        removed = []
        for service in await self.ledger.destroyed(sorted({r.service for r in self.view.live} - set(exclude))):
            n = await self._stop_all(service, 10.0, "destroyed while its node was unreachable", sweeping=True)
            removed.append(Outcome(service, True, stopped=n))
        return removed

    async def _finish_destroy(self, t: Target) -> Outcome:
        n = await self._stop_all(t.spec.name, t.spec.stop_grace_period, "destroyed")
        return Outcome(t.spec.name, True, stopped=n, reason=t.note if not n else None, changed=bool(n))


async def _revoke_departed(pool: Pool, reports: Sequence[NodeReport], emit: Callable[..., None]) -> None:
    """Storage keys of workers no longer in the inventory are taken off every storage node (said as events);
    a storage node that cannot be asked is named with the command that does it later."""
    revoked, errors = await revoke_departed(pool, reports)
    for storage, workers in sorted(revoked.items()):
        for worker in workers:
            emit("revoke", "", f"{storage}: storage key of {worker} revoked ({worker} is no longer in the "
                               "inventory)")
    for storage, why in sorted(errors.items()):
        emit("revoke", "", f"storage node {storage} not checked for keys of nodes that left the inventory ({why}): "
                           "run `fleet volume revoke NODE` for such a node once it answers")


async def _missing_images(ops: ReplicaOps, the_plan: Plan) -> dict[str, str]:
    """Every image a new replica needs is on its node, or pulled now: {node: why not} for the nodes where
    it is not (nothing was changed on any node yet)."""
    wanted: dict[str, set[str]] = {}
    for sp in the_plan.services:
        for a in sp.start:
            wanted.setdefault(a.node, set()).add(sp.spec.image_ref)
        for r in sp.replace:
            wanted.setdefault(r.node, set()).add(sp.spec.image_ref)
    nodes = sorted(wanted)
    results = await asyncio.gather(*(ops.ensure_images(n, wanted[n]) for n in nodes), return_exceptions=True)
    failed: dict[str, str] = {}
    for node, res in zip(nodes, results, strict=True):
        if isinstance(res, ImageUnavailable):
            failed[node] = str(res)
        elif isinstance(res, BaseException):
            raise res
    return failed
