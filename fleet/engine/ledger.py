"""The ledger: the fleet's records of each service as one run reads and writes them (revisions begun, finished,
and the service's decision), every decision taken from the pure `fleet.plan.rollout.decide`. `NullLedger` is
the engine without records (its own tests): revisions come from container labels and nothing is written."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from fleet.config.spec import IMAGE_RE, ServiceSpec, from_playbook_dict, to_playbook_dict
from fleet.core.errors import FleetError
from fleet.engine.concurrency import Coalesced, SerialRecords
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import (
    Command,
    PausedTurn,
    ServiceState,
    Target,
    after_abort,
    after_deploy,
    after_destroy,
    after_failure,
    after_promote,
    after_restart,
    after_rollback,
    after_scale,
    after_success,
    canary_waits,
    decide,
)
from fleet.plan.rollout.decide import TurnKind as TurnKind  # where fleet.engine.apply reads it
from fleet.plan.volumes import VolumeView
from fleet.store.history import FinalOutcome, Revision
from fleet.store.protocol import Records


def spec_of(rev: Revision) -> ServiceSpec:
    """The spec a history revision recorded."""
    return from_playbook_dict(rev.service, json.loads(rev.spec_json), f"<history {rev.service}@{rev.revision}>")


def revision_from_labels(spec: ServiceSpec, replicas: Sequence[Replica]) -> int:
    """Without records: the revision of replicas already running `spec`, else one past the newest seen."""
    h = spec.spec_hash()
    same = [r.revision for r in replicas if r.service == spec.name and r.spec_hash == h and r.revision]
    if same:
        return max(same)
    seen = [r.revision or 0 for r in replicas if r.service == spec.name]
    return max(seen, default=0) + 1


def _rolling(spec: ServiceSpec) -> ServiceSpec:
    return replace(spec, update=replace(spec.update, strategy="rolling"))


@dataclass(frozen=True)
class Turn:
    """One of `rollback`, `promote`, `abort`, `restart`, `deploy`: the service converges to `spec` at `revision`
    (None: a new revision of it is begun), then the ledger records the turn's end. `shown` is the revision the
    user asked about (restart and deploy: the accepted one they start from)."""

    kind: TurnKind
    spec: ServiceSpec
    revision: int | None
    shown: Revision
    state: ServiceState | None
    # Rollback and promote may bring a service to the load balancers: its name goes into every hosts file first.
    hosts: bool


class Ledger:
    """The fleet's records for one run. Writes go one at a time (services converge at once: `SerialRecords`)."""

    def __init__(self, records: Records, user: str) -> None:
        self.records = SerialRecords(records)
        self.user = user
        self.unrecorded: set[str] = set()  # services the records do not know (they never ran anywhere)
        # Services whose records decisions about to act asked to read again: read together, one read at a time.
        self._asked: set[str] = set()
        self._rereads = Coalesced(self._reread_asked)

    # --- reading ------------------------------------------------------------------------------------------
    async def reread(self, service: str) -> None:
        """Read the service's records again, fenced under the lease (the newest, and the lease still this run's):
        every decision that acts on a service (converge, scale, rollback, promote, abort, destroy) calls this
        first, so it acts on the records as they are then, not on the copy the run read at its start. Services
        asking at once (converging side by side) share one read (`Coalesced`)."""
        self._asked.add(service)
        await self._rereads()

    async def _reread_asked(self) -> None:
        asked = sorted(self._asked)
        await self.records.reread(*asked)
        self._asked -= set(asked)  # only once read: a read that failed leaves them for the next

    async def state(self, service: str) -> ServiceState | None:
        raw = await self.records.state(service)
        if raw is None:
            self.unrecorded.add(service)
            return None
        self.unrecorded.discard(service)
        try:
            return ServiceState.from_json(raw)
        except ValueError as exc:
            raise FleetError(f"{service}: the fleet's record of this service is unreadable: {exc}") from exc

    async def spec_at(self, service: str, revision: int | None) -> ServiceSpec | None:
        """The spec recorded as `revision` of the service (None for no revision, or one not on record)."""
        if revision is None:
            return None
        rev = await self.records.get(service, revision)
        return spec_of(rev) if rev is not None else None

    async def accepted_spec(self, service: str) -> ServiceSpec | None:
        """The spec of the service's accepted revision (None when it has none on record)."""
        state = await self.state(service)
        return await self.spec_at(service, state.accepted) if state is not None else None

    async def accepted(self, service: str) -> tuple[ServiceState | None, ServiceSpec | None, ServiceSpec | None]:
        """The service's record, the spec it accepted and that of its waiting canary (None where there is none)."""
        state = await self.state(service)
        if state is None:
            return None, None, None
        return state, await self.spec_at(service, state.accepted), await self.spec_at(service, state.canary)

    async def target(self, command: Command, spec: ServiceSpec) -> Target:
        """What this run does with `spec` (see `fleet.plan.rollout.decide`)."""
        state, accepted, canary = await self.accepted(spec.name)
        if state is None:
            return decide(command, spec, None, None)
        bad = [r.revision for r in await self.records.list(spec.name)
               if r.outcome in ("failed", "rolled-back", "aborted")]
        return decide(command, spec, state, accepted, canary, bad[-1] if bad else None)

    def fresh(self, volumes: VolumeView | None) -> VolumeView | None:
        """Where node-local volume data is; services the fleet has no record of never ran, so a node that did
        not answer cannot hold their data."""
        return replace(volumes, fresh=frozenset(self.unrecorded)) if volumes is not None else None

    async def latest_good(self, spec: ServiceSpec, before: int) -> Revision | None:
        return await self.records.latest_succeeded(spec.name, before=before)

    async def unfinished(self, service: str) -> Target | None:
        """The service's newest revision still in progress (a rollout paused or interrupted), but a waiting
        canary's, as the target that carries it on (one `apply --set` began, and a pause stopped, is recorded as
        it would have been); None when there is none."""
        state = await self.state(service)
        waiting = state.canary if state is not None and state.decision == "canary-waiting" else None
        revs = [r for r in await self.records.list(service) if r.outcome == "in-progress" and r.revision != waiting]
        if not revs:
            return None
        pt = state.paused_turn if state is not None else None
        set_from = pt.set_from if pt is not None and pt.kind == "set" and pt.revision == revs[-1].revision else None
        return Target(spec_of(revs[-1]), None, heal=False, set_from=set_from)

    async def destroyed(self, services: Sequence[str]) -> list[str]:
        """Of `services`, those recorded as destroyed."""
        out = []
        for service in services:
            state = await self.state(service)
            if state is not None and state.decision == "destroyed":
                out.append(service)
        return out

    # --- writing ------------------------------------------------------------------------------------------
    async def _finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> None:
        await self.records.finish(service, revision, outcome, reason)

    async def _set(self, service: str, state: ServiceState) -> None:
        await self.records.set_state(service, state.to_json())

    async def begin(self, spec: ServiceSpec, live: Sequence[Replica]) -> int:
        """The revision this run rolls out: an interrupted one of the same spec (a controller killed mid-rollout:
        the run that finds it carries it on), else a new one. Other revisions left in-progress by a killed
        controller are closed as such (a waiting canary's is not)."""
        spec_json = json.dumps(to_playbook_dict(spec), sort_keys=True)
        state = await self.state(spec.name)
        waiting = state.canary if state is not None and state.decision == "canary-waiting" else None
        for rev in await self.records.list(spec.name):
            if rev.outcome != "in-progress" or rev.revision == waiting:
                continue
            if json.loads(rev.spec_json) == json.loads(spec_json):
                return rev.revision
            await self._finish(spec.name, rev.revision, "failed",
                               "interrupted: its controller stopped before the rollout finished")
        return await self.records.record(spec.name, spec_json, spec.spec_hash(), spec.image, self.user)

    async def succeeded(self, t: Target, revision: int, begun: bool, command: Command, state: ServiceState | None,
                        intent: str) -> None:
        """`t` converged at `revision` (begun by this run when `begun`); `apply` drops a count set by `scale`."""
        if begun:
            await self._finish(t.spec.name, revision, "succeeded")
        new_state = after_success(t, revision, intent, self.user, time.time(), state)
        if state is not None and state.replicas is not None and command == "apply":
            new_state = replace(new_state, replicas=None)
        await self._set(t.spec.name, new_state)

    async def failed(self, spec: ServiceSpec, revision: int, outcome: FinalOutcome, reason: str,
                     back_to: int | None, intent: str, state: ServiceState | None, record_reason: str = "") -> None:
        """A new revision ended as `outcome` (the service went back to `back_to`, if any)."""
        await self._finish(spec.name, revision, outcome, record_reason or reason)
        await self._set(spec.name, after_failure(revision, back_to, intent, reason, self.user, time.time(), state,
                                                 aborted=outcome == "aborted"))

    async def canary_waiting(self, spec: ServiceSpec, revision: int, weights: tuple[int, int]) -> None:
        state = await self.state(spec.name)
        await self._set(spec.name, canary_waits(state, spec, revision, weights, self.user, time.time()))

    async def destroy(self, service: str) -> None:
        """Recorded first, so replicas on a node that is down now are removed when it returns."""
        await self._set(service, after_destroy(await self.state(service), self.user, time.time()))

    async def scaled(self, service: str, replicas: int) -> None:
        """A count set by `fleet scale`, kept by reconcile until the next `apply`."""
        state = await self.state(service)
        if state is not None:
            await self._set(service, after_scale(state, replicas))

    # --- rollback, promote, abort -------------------------------------------------------------------------
    async def rollback_target(self, service: str, to: int | None) -> Revision:
        """Revision `to`, default the last good one before the newest."""
        revs = await self.records.list(service)
        if not revs:
            raise FleetError(f"no history for service {service!r} on this fleet")
        if to is not None:
            rev = await self.records.get(service, to)
            if rev is None:
                raise FleetError(f"{service} has no revision {to} (see `fleet history {service}`)")
            return rev
        current = revs[-1].revision
        prev = await self.records.latest_succeeded(service, before=current)
        if prev is None:
            raise FleetError(f"{service}: no succeeded revision before {current} to roll back to")
        return prev

    async def turn(self, kind: TurnKind, service: str, to: int | None = None, image: str | None = None) -> Turn:
        """What `kind` converges the service to: revision `to`'s spec (rollback), the waiting canary's (promote),
        or the accepted one (abort), the last two rolling; restart and deploy: see `again`."""
        if kind in ("restart", "deploy"):
            return await self.again(kind, service, image)
        if kind == "rollback":
            target = await self.rollback_target(service, to)
            return Turn(kind, spec_of(target), None, target, await self.state(service), hosts=True)
        state = await self.state(service)
        rev = await self.records.get(service, state.canary) if state is not None and state.canary else None
        if state is None or state.decision != "canary-waiting" or rev is None:
            raise FleetError(f"{service}: no canary is waiting (see `fleet history {service}`)")
        if kind == "promote":
            return Turn(kind, _rolling(spec_of(rev)), rev.revision, rev, state, hosts=True)
        back = await self.spec_at(service, state.accepted)
        if back is None or state.accepted is None:
            raise FleetError(f"{service}: no accepted revision to go back to (see `fleet history {service}`)")
        return Turn(kind, _rolling(back), state.accepted, rev, state, hosts=False)

    async def again(self, kind: TurnKind, service: str, image: str | None) -> Turn:
        """`restart`: the accepted spec with the next restart generation, so every replica is replaced, surge
        first and health-checked, with the same image and settings; `deploy`: the accepted spec with `image`.
        Both roll (a canary's steps judge a new version; neither is one to judge), at the count reconcile keeps,
        as a new revision of the service."""
        state, accepted, _ = await self.accepted(service)
        if state is None or accepted is None or state.accepted is None:
            raise FleetError(f"{service}: no accepted revision on this fleet to {kind} (`fleet apply` it first)")
        if state.decision == "canary-waiting":
            raise FleetError(f"{service}: canary revision {state.canary} waits: `fleet promote {service}` or "
                             f"`fleet abort {service}` first")
        if state.decision == "destroyed":
            raise FleetError(f"{service} was destroyed: `fleet apply` brings it back")
        spec = replace(accepted, replicas=state.replicas if state.replicas is not None else accepted.replicas)
        if kind == "restart":
            spec = replace(spec, restarts=spec.restarts + 1)
        else:
            if image is None or len(image) > 255 or not IMAGE_RE.match(image):
                raise FleetError(f"--image: expected an image reference such as registry.local/web:v2, got {image!r}")
            spec = replace(spec, image=image, image_digest=None)  # the old tag's digest is not the new image's
        shown = await self.records.get(service, state.accepted)
        assert shown is not None  # `accepted` was read from it
        return Turn(kind, _rolling(spec), None, shown, state, hosts=False)

    async def set_paused(self, service: str, revision: int, set_from: str) -> None:
        """A pause stopped the rollout of an image `apply --set` changed, `revision` in progress: said on the
        record, for `fleet rollout resume` to record it as that apply would (not when a canary waits instead)."""
        state = await self.state(service)
        if state is not None and state.decision != "canary-waiting":
            await self._set(service, replace(state, paused_turn=PausedTurn("set", revision, revision, set_from)))

    async def turn_paused(self, turn: Turn, revision: int) -> None:
        """A pause stopped `turn` before its next batch, `revision` in progress: the service's record says so, for
        `fleet rollout resume` to end it as the turn would (`paused_turn`)."""
        state = await self.state(turn.spec.name)
        if state is not None:
            await self._set(turn.spec.name, replace(state, paused_turn=PausedTurn(turn.kind, revision,
                                                                                  turn.shown.revision)))

    async def paused_turn(self, service: str) -> tuple[Turn, int] | None:
        """The turn a pause stopped midway and the revision it converges to, as the turn had them; None when there
        is none, or when what it was to end is no longer in progress (another run took the service on)."""
        state = await self.state(service)
        pt = state.paused_turn if state is not None else None
        if state is None or pt is None or pt.kind == "set":
            return None
        # An abort ends the waiting canary (`shown`); every other turn its own revision.
        ends = await self.records.get(service, pt.shown if pt.kind == "abort" else pt.revision)
        rev, shown = await self.records.get(service, pt.revision), await self.records.get(service, pt.shown)
        if ends is None or ends.outcome != "in-progress" or rev is None or shown is None:
            return None
        spec = spec_of(rev) if pt.kind == "rollback" else _rolling(spec_of(rev))
        turn = Turn(pt.kind, spec, pt.revision, shown, replace(state, paused_turn=None),
                    hosts=pt.kind in ("rollback", "promote"))
        return turn, pt.revision

    async def turned(self, turn: Turn, revision: int, failure: str | None) -> None:
        """Record how `turn` ended (`failure`: why it did not converge; only the turn's own revision fails)."""
        name, at = turn.spec.name, time.time()
        if failure is not None:
            if turn.kind in ("rollback", "restart", "deploy"):
                await self._finish(name, revision, "failed", failure)
            state = await self.state(name)
            if state is not None and state.paused_turn is not None:  # a resumed turn's pause is over
                await self._set(name, replace(state, paused_turn=None))
            return
        if turn.kind in ("restart", "deploy"):
            assert turn.state is not None  # both start from an accepted revision
            if turn.kind == "restart":
                await self._finish(name, revision, "succeeded", f"restart of revision {turn.shown.revision} "
                                                                "by `fleet restart`")
                await self._set(name, after_restart(turn.state, revision, self.user, at))
            else:
                await self._finish(name, revision, "succeeded", f"image {turn.spec.image} by `fleet deploy`")
                await self._set(name, after_deploy(turn.state, revision, turn.spec.image, self.user, at))
            return
        if turn.kind == "rollback":
            await self._finish(name, revision, "succeeded", f"rollback to revision {turn.shown.revision}")
            await self._set(name, after_rollback(turn.state, revision, turn.shown.revision, self.user, at))
            return
        assert turn.state is not None  # promote and abort start from a waiting canary's record
        if turn.kind == "promote":
            await self._finish(name, turn.shown.revision, "succeeded", "promoted by `fleet promote`")
            await self._set(name, after_promote(turn.state, turn.shown.revision, self.user, at))
        else:
            await self._finish(name, turn.shown.revision, "aborted", "aborted by `fleet abort`")
            await self._set(name, after_abort(turn.state, self.user, at))


class NullLedger(Ledger):
    """No records (the engine alone, in its tests): no service has a record, revisions come from the replicas'
    labels, and nothing is written; every run behaves as `apply`."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.unrecorded = set()

    async def reread(self, service: str) -> None:
        return None

    async def state(self, service: str) -> ServiceState | None:
        return None

    async def spec_at(self, service: str, revision: int | None) -> ServiceSpec | None:
        return None

    def fresh(self, volumes: VolumeView | None) -> VolumeView | None:
        return volumes

    async def latest_good(self, spec: ServiceSpec, before: int) -> Revision | None:
        return None

    async def destroyed(self, services: Sequence[str]) -> list[str]:
        return []

    async def unfinished(self, service: str) -> Target | None:
        return None

    async def _finish(self, service: str, revision: int, outcome: FinalOutcome, reason: str = "") -> None:
        return None

    async def _set(self, service: str, state: ServiceState) -> None:
        return None

    async def begin(self, spec: ServiceSpec, live: Sequence[Replica]) -> int:
        return revision_from_labels(spec, live)

    async def rollback_target(self, service: str, to: int | None) -> Revision:
        raise FleetError(f"{service}: this fleet keeps no records to roll back by")

    async def turn(self, kind: TurnKind, service: str, to: int | None = None, image: str | None = None) -> Turn:
        raise FleetError(f"{service}: this fleet keeps no records to {kind} by")
