"""Converging one service to one spec: the steps of the pure `resume_plan` (and of a canary's traffic steps)
carried out through the replica operations, each batch placed through the room book."""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

from fleet.config.spec import ServiceSpec
from fleet.core.errors import CanaryAborted, FleetError, ImageUnavailable, LeaseError, RolloutFailed
from fleet.engine.guarded import Guard, confirm
from fleet.engine.ledger import Ledger
from fleet.engine.replicas import ReplicaOps
from fleet.engine.rooms import RoomBook
from fleet.engine.view import Emit, RunView
from fleet.plan.reconcile import Replica, duplicates, plan
from fleet.plan.rollout.pause import Pause
from fleet.plan.rollout.strategy import (
    ReplicaState,
    Verdict,
    WindowEnd,
    canary_verdict,
    canary_weights,
    resume_plan,
    window_end,
)
from fleet.plan.scheduler import Assignment
from fleet.results import Event, Outcome


def _misplaced(why: str) -> bool:
    """A scheduler stop reason that means "this replica must move" (not a scale-down or a duplicate)."""
    return not why.startswith(("surplus", "duplicate of", "service ", "second copy"))


async def _unpaused(service: str) -> Pause | None:
    return None


@dataclass
class Stage:
    """What every service's rollout in one run shares. `guard` is awaited between steps (and `ops` awaits it
    before each action on nodes): it raises when the fleet's lease was lost, so the run stops at a safe point."""

    view: RunView
    ops: ReplicaOps
    book: RoomBook
    ledger: Ledger
    on_event: Emit
    guard: Guard
    # The service's pause (`fleet rollout pause`), read afresh before each batch of a rollout.
    paused: Callable[[str], Awaitable[Pause | None]] = _unpaused

    # A service's `before_deploy` job (fleet.engine.jobs.JobHook): None when it ran well, else why not.
    hook: Callable[[ServiceSpec, int], Awaitable[str | None]] | None = None

    async def before_deploy(self, spec: ServiceSpec, revision: int) -> str | None:
        """Run the service's `before_deploy` job for `revision` (none: None); why the rollout must not start."""
        if spec.before_deploy is None:
            return None
        if self.hook is None:
            return (f"{spec.name}: before_deploy job {spec.before_deploy!r} is not known to this run (name the "
                    "playbooks that define it); the rollout did not start")
        return await self.hook(spec, revision)

    def emit(self, step: str, service: str, message: str, node: str | None = None,
             container: str | None = None) -> None:
        self.on_event(Event(step, service, message, node, container))


class Converge:
    """Brings services to their specs, step by step, over one stage."""

    def __init__(self, stage: Stage) -> None:
        self.s = stage

    async def __call__(self, spec: ServiceSpec, revision: int, *, heal: bool = False,
                       others: Sequence[str] = (), weight: int = 1, renew: frozenset[str] = frozenset()) -> Outcome:
        """Bring one service to `spec.replicas` ready replicas of `spec`, following `resume_plan`.

        Replicas whose spec hash is in `others` belong to a canary kept apart and are left alone. Replicas that
        fail their checks (judged over the service's interval × failure_threshold) or must move are replaced
        within the update policy, surge-first where there is room; so are those named in `renew` (a replica
        restarted by hand)."""
        s, view = self.s, self.s.view
        h = spec.spec_hash()
        # Second copies of one replica of one spec (a node that came back); an old and a new replica sharing an
        # index during a rollout (or a canary beside its baseline) are not copies of each other.
        for r in duplicates(view.running(spec.name, others)):
            await self.retire(spec, r, f"second copy of {r.service}[{r.replica}]")
        mine = view.running(spec.name, others)
        ready = await s.ops.judge(spec, mine)
        sp = plan([spec], view.nodes(), [r for r in view.seen if r.service != spec.name or r.spec_hash not in others],
                  s.ledger.fresh(view.volumes)).service(spec.name)
        moving = {r.id: why for r, why in sp.stop if _misplaced(why)} | {rid: "restarted" for rid in renew}
        if spec.per_node:  # one node at a time: old replicas go in node order, as new ones are placed
            spec, mine = sp.spec, sorted(mine, key=lambda r: (r.node, r.replica))
        states = [ReplicaState(r.id, "" if r.id in moving else r.spec_hash, ready[r.id], r.replica) for r in mine]
        u = spec.update
        resume = resume_plan(states, h, spec.replicas, u.max_surge, u.max_unavailable,
                             1 if spec.per_node else u.batch_size)
        by_id = {r.id: r for r in mine}
        started = stopped = 0
        if not heal and u.strategy == "canary" and s.ops.balanced and not resume.keep and any(
                st.ready and st.spec_hash not in ("", h) for st in states):
            canary, paused = await self._canary(spec, revision, [r for r in mine if r.spec_hash != h])
            if paused:
                return Outcome(spec.name, True, len(canary), stopped, reason=paused, waiting=True)
            rest = await self(spec, revision, weight=weight)  # after a promoted canary: the rest of the plan
            return replace(rest, started=rest.started + len(canary), changed=True)
        for rid in resume.stop_first:
            await self.retire(spec, by_id[rid], "surplus")
            stopped += 1
        outgoing = {st.id for st in states if st.id not in resume.keep}
        # Replicas stopped (their process gone, out of the load balancers) whose container and files are removed
        # while the next batch starts; all removed before the service's outcome (or its failure) is given.
        behind: list[asyncio.Task[None]] = []
        try:
            for step in resume.steps:
                if (pause := await self._step_gate(spec.name, heal)) is not None:
                    s.emit("paused", spec.name, f"{spec.name}: {pause.reason()}")
                    return Outcome(spec.name, True, started, stopped, reason=pause.reason(), waiting=True,
                                   changed=bool(started or stopped))
                if step.start_new:
                    new = await self.start_batch(spec, revision, step.start_new, outgoing, weight)
                    started += len(new)
                for rid in step.stop_old:
                    r = by_id[rid]
                    why = ("failing its health check" if not ready[rid] else moving.get(rid)
                           or ("replaced" if r.spec_hash != h else "surplus"))
                    if step.start_new and not spec.volumes:
                        await self.drain(spec, r, why)
                        finish = await self._unroute_and_halt(spec, r, why)
                        behind.append(self._finish_behind(r, finish))
                    else:
                        await self.retire(spec, r, why)
                    stopped += 1
        finally:
            await _all_stopped(behind)
        for r in view.running(spec.name, others):
            view.rotation.weight(r, weight)
        changed = bool(started or stopped)
        if changed or not heal:
            n = len([r for r in view.live if r.service == spec.name and r.spec_hash == h])
            s.emit("done", spec.name, f"{spec.name}: {n}/{spec.replicas} replicas at revision {revision}")
        return Outcome(spec.name, True, started, stopped, changed=changed)

    async def _canary(self, spec: ServiceSpec, revision: int, old: Sequence[Replica]) -> tuple[list[Replica],
                                                                                                  str | None]:
        """One new replica gets each step's share of traffic (HAProxy weights) for `pause`; its 5xx rate is
        compared with the old replicas' after every window. Promoted on its own, or left waiting (the reason
        is returned and the decision recorded on the fleet)."""
        s, rotation = self.s, self.s.view.rotation
        c = spec.update.canary
        steps, pause = (c.steps, c.pause) if c else ((10, 50), 30.0)
        new = await self.start_batch(spec, revision, 1, {r.id for r in old})
        last = (1, 1)
        for step in canary_weights(steps, len(new), len(old)):
            await confirm(s.guard)
            for r in new:
                rotation.weight(r, step.new_weight)
            for r in old:
                rotation.weight(r, step.old_weight)
            last = (step.new_weight, step.old_weight)
            await s.ops.route(rotation)
            s.emit("canary", spec.name, f"canary at {step.pct}% of traffic (weights {step.new_weight} new / "
                                        f"{step.old_weight} old) for {pause:g}s")
            before = await s.ops.counters(spec.name)
            deadline, extended = time.monotonic() + pause, False
            while True:
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                verdict, seen = _verdict(spec, before, await s.ops.counters(spec.name), new, old)
                if verdict.ok is False:
                    await self._abort(spec, new, old, step.pct, verdict.reason)
                if time.monotonic() < deadline:
                    continue
                end = window_end(verdict, seen, c.min_requests if c else 20, extended)
                if end.action == "next" and spec.lb is not None and spec.lb.mode == "tcp" and not all(
                        (await s.ops.judge(spec, new)).values()):
                    end = WindowEnd("fail", "the canary fails its health check")  # a tcp canary's other signal
                if end.action == "fail":
                    await self._abort(spec, new, old, step.pct, end.reason)
                if end.action == "next":
                    break
                s.emit("canary", spec.name, f"{spec.name}: {end.reason}")
                deadline, extended = time.monotonic() + pause, True
        if c is not None and not c.auto_promote:
            reason = (f"{spec.name}: canary at {steps[-1]}% waits: `fleet promote {spec.name}` or "
                      f"`fleet abort {spec.name}`")
            await s.ledger.canary_waiting(spec, revision, last)
            return new, reason
        for r in [*new, *old]:
            rotation.weight(r, 1)
        s.emit("canary", spec.name, f"{spec.name}: canary promoted; rolling the rest")
        return new, None

    async def _abort(self, spec: ServiceSpec, new: Sequence[Replica], old: Sequence[Replica], pct: int,
                     why: str) -> NoReturn:
        """The canary's replicas out, the old ones back to full weight; CanaryAborted says why."""
        for r in new:
            await self.retire(spec, r, "canary aborted")
        for r in old:
            self.s.view.rotation.weight(r, 1)
        await self.s.ops.route(self.s.view.rotation)
        raise CanaryAborted(f"{spec.name}: canary aborted at {pct}%: {why}")

    # --- one batch --------------------------------------------------------------------------------------
    async def _step_gate(self, service: str, heal: bool) -> Pause | None:
        """Before each batch: the lease confirmed (it raises when lost) and, unless healing, the service's pause
        read afresh; both ask etcd, so at once (one round trip's wait, not two)."""
        if heal:
            await confirm(self.s.guard)
            return None
        pending = self.s.guard()
        if not inspect.isawaitable(pending):  # a guard that asks nothing (the harness's)
            return await self.s.paused(service)
        lease, pause = await asyncio.gather(pending, self.s.paused(service), return_exceptions=True)
        if isinstance(lease, BaseException):  # a lost lease first: it, not the read beside it, stops the run
            raise lease
        if isinstance(pause, BaseException):
            raise pause
        return pause

    async def start_batch(self, spec: ServiceSpec, revision: int, k: int, outgoing: set[str],
                          weight: int = 1) -> list[Replica]:
        """k new replicas of `spec`, placed, started, ready and routed; none of them left running on failure."""
        async with self.s.book.reserve(spec, revision, k, outgoing, self.s.ledger.fresh(self.s.view.volumes)) as at:
            return await self._start_placed(spec, revision, at, weight)

    async def _start_placed(self, spec: ServiceSpec, revision: int, assignments: Sequence[Assignment],
                            weight: int) -> list[Replica]:
        s, view = self.s, self.s.view
        for node in sorted({a.node for a in assignments}):
            try:
                await s.ops.ensure_images(node, {spec.image_ref})
            except ImageUnavailable as exc:
                view.errors[node] = str(exc)
                raise RolloutFailed(f"{spec.name}: {exc}") from exc
        with s.book.starts():
            new = await asyncio.gather(*(s.ops.start(spec, revision, a) for a in assignments),
                                       return_exceptions=True)
        ok = [r for r in new if isinstance(r, Replica)]
        failed = [e for e in new if isinstance(e, BaseException)]
        for e in failed:
            if not isinstance(e, FleetError) or isinstance(e, LeaseError):
                raise e  # a lost lease stops the run; it is never a replica's failure
        if not failed:
            ready = await asyncio.gather(*(s.ops.wait_ready(spec, r) for r in ok))
            failed_reasons = [why for why in ready if why is not None]
        else:
            failed_reasons = [str(e) for e in failed]
        if failed_reasons:
            for r in ok:
                await s.ops.remove(r, "not ready")
                view.gone(r)
            raise RolloutFailed(f"{spec.name}: new replicas did not become ready: " + "; ".join(failed_reasons))
        for r in ok:
            view.live.append(r)
            view.rotation.put(r, weight=weight)
        if view.rotation.routed(spec.name):
            await s.ops.route(view.rotation)
            s.emit("routed", spec.name, f"{len(ok)} new replica(s) in the load balancer")
        return ok

    async def retire(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        """Drain (no new connections; existing ones finish, up to the grace period), unroute, then stop."""
        await self.drain(spec, r, why)
        await self.unroute(spec, r)
        await self.stop(r, spec.stop_grace_period, why)

    async def drain(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        """No new connections to `r`; the wait for its own to finish (it still runs, and holds its room)."""
        s, rotation = self.s, self.s.view.rotation
        if rotation.routed(r.service) and s.ops.balanced:
            rotation.state(r, "drain")
            await s.ops.drain(spec, r, why)

    async def unroute(self, spec: ServiceSpec, r: Replica) -> None:
        """`r`, drained, out of the load balancers (and any worker of theirs from before a reload gone)."""
        s, rotation = self.s, self.s.view.rotation
        if rotation.routed(r.service) and s.ops.balanced:
            rotation.drop(r)
            await s.ops.route(rotation, settle=min(max(spec.stop_grace_period, 1.0), 10.0))

    async def _unroute_and_halt(self, spec: ServiceSpec, r: Replica, why: str) -> Callable[[], Awaitable[None]]:
        """`r`, drained, out of the load balancers and its process stopped (see `halt`). Drained, it gets no new
        request from a worker that knows the drain: when no lb node can have another (`settled`), the stop runs
        beside the removal (one round trip less before the next batch); else after it, as `retire` does."""
        s = self.s
        if not s.ops.settled:
            await self.unroute(spec, r)
            return await s.ops.halt(r, spec.stop_grace_period, why)
        _, finish = await asyncio.gather(self.unroute(spec, r), s.ops.halt(r, spec.stop_grace_period, why))
        return finish

    def _finish_behind(self, r: Replica, finish: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Remove what `r`, stopped (drained, out of the load balancers, its process gone), leaves on its node
        while the rollout goes on, once no container is being started (see `RoomBook.behind`). The update
        policy's bounds count running processes and routed servers: it is neither. Until it is gone it holds its
        room, and the room book waits for it rather than failing a placement that needs that room."""
        book = self.s.book
        book.stopping[r.service] = book.stopping.get(r.service, 0) + 1

        async def remove() -> None:
            try:
                await book.behind()
                await finish()
                self.s.view.gone(r)
            finally:
                book.stopping[r.service] -= 1
                await book.changed()

        return asyncio.create_task(remove())

    async def stop(self, r: Replica, grace: float, why: str) -> None:
        await self.s.ops.stop(r, grace, why)
        self.s.view.gone(r)


async def _all_stopped(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Wait for every stop; the first one that failed raises (unless the rollout already fails for its reason)."""
    if not tasks:
        return
    results = await asyncio.gather(*tasks, return_exceptions=True)
    if sys.exc_info()[1] is None:
        for res in results:
            if isinstance(res, BaseException):
                raise res


def _verdict(spec: ServiceSpec, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
             new: Sequence[Replica], old: Sequence[Replica]) -> tuple[Verdict, int]:
    """The window's verdict so far, and how many requests (tcp: connections) the canary saw in it."""
    def delta(rs: Sequence[Replica]) -> tuple[int, int]:
        bad = sum(after.get(r.id, (0, 0))[0] - before.get(r.id, (0, 0))[0] for r in rs)
        total = sum(after.get(r.id, (0, 0))[1] - before.get(r.id, (0, 0))[1] for r in rs)
        return max(bad, 0), max(total, 0)

    c = spec.update.canary
    (nb, nt), (ob, ot) = delta(new), delta(old)
    what = "connection errors" if spec.lb is not None and spec.lb.mode == "tcp" else "5xx"
    return canary_verdict(min(nb, nt), nt, min(ob, ot), ot, c.max_error_rate_delta if c else 1.0,
                          c.min_requests if c else 20, what), nt
