"""One service's rollout in a run: converge it to its target (or heal its accepted state), and on failure take it
back to its last good revision; the ledger records how it ended."""

from __future__ import annotations

from dataclasses import replace

from fleet.config.spec import ServiceSpec
from fleet.core.errors import CanaryAborted, FleetError, LeaseError, RecordsError, RolloutFailed
from fleet.engine.converge import Converge, Stage
from fleet.engine.ledger import spec_of
from fleet.plan.rollout.decide import Command, ServiceState, Target, intent_hash
from fleet.results import Outcome


class ServiceRollout:
    """Carries out one `Target` on a stage: a new revision is recorded, tried, and rolled back on failure."""

    def __init__(self, stage: Stage) -> None:
        self.s = stage
        self.converge = Converge(stage)

    async def __call__(self, t: Target, command: Command = "apply") -> Outcome:
        if t.heal:
            return await self._heal(t)
        spec, ledger = t.spec, self.s.ledger
        state = await ledger.state(spec.name)
        intent = intent_hash(spec)
        begun = t.revision is None
        revision = t.revision if t.revision is not None else await ledger.begin(spec, self.s.view.live)
        # The hook runs for a revision none of whose replicas started yet (not for the accepted one again).
        fresh = (state is None or state.accepted != revision) and not any(
            r.spec_hash == spec.spec_hash() for r in self.s.view.running(spec.name))
        if fresh and (why := await self.s.before_deploy(spec, revision)) is not None:
            prev = await ledger.latest_good(spec, before=revision)
            await ledger.failed(spec, revision, "failed", why, prev.revision if prev else None, intent, state)
            return Outcome(spec.name, False, reason=why)
        outcome = await self._try(spec, revision, state, intent)
        if outcome.ok and not outcome.waiting:
            await ledger.succeeded(t, revision, begun, command, state, intent)
        elif outcome.waiting and t.set_from is not None:
            await ledger.set_paused(spec.name, revision, t.set_from)
        return outcome

    async def _try(self, spec: ServiceSpec, revision: int, state: ServiceState | None, intent: str) -> Outcome:
        ledger = self.s.ledger
        try:
            return await self.converge(spec, revision)
        except CanaryAborted as exc:
            await ledger.failed(spec, revision, "aborted", str(exc), None, intent, state)
            return Outcome(spec.name, False, reason=str(exc))
        except FleetError as exc:
            # Any failure of the rollout (a replica not ready, a runtime or SSH error, an HAProxy reload) fails
            # the revision with its reason and goes back, never leaving it "running" without one. A lost lease
            # stops the run, and the records cannot say anything when they are what failed.
            if isinstance(exc, LeaseError | RecordsError):
                raise
            reason = str(exc) if isinstance(exc, RolloutFailed) else f"{spec.name}: {exc}"
            prev = await ledger.latest_good(spec, before=revision)
            if prev is None or prev.spec_hash == spec.spec_hash():
                await ledger.failed(spec, revision, "failed", reason, prev.revision if prev else None, intent, state)
                return Outcome(spec.name, False, reason=reason)
            self.s.emit("rollback", spec.name, f"{spec.name}: rolling back to revision {prev.revision}: {reason}")
            try:
                await self.converge(replace(spec_of(prev), replicas=spec.replicas), prev.revision)
            except FleetError as exc2:
                if isinstance(exc2, LeaseError | RecordsError):
                    raise  # the automatic rollback lost the lease: nothing more is written or done
                await ledger.failed(spec, revision, "failed", reason, None, intent, state,
                                    record_reason=f"{reason}; rollback failed too: {exc2}")
                return Outcome(spec.name, False, reason=f"{reason}; rollback to revision {prev.revision} "
                                                        f"failed: {exc2}")
            await ledger.failed(spec, revision, "rolled-back", reason, prev.revision, intent, state)
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
        state = await self.s.ledger.state(t.spec.name)
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
