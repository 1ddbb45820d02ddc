"""What a run converges each service to, from the playbook and the fleet's record of the service: pure.

`apply` changes the accepted state: it tries the playbook's spec. `reconcile` restores the accepted state: it
tries the playbook only when the playbook changed since the last `apply` (or `reconcile`) tried it; otherwise it
heals the accepted revision as it is. So a waiting canary stays waiting, `abort` and `rollback` stay done, and a
revision that failed is not retried until the playbook changes again.

The record of a service (`ServiceState`) lives on the fleet (`fleet.store.etcd_records`), written under the lease.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from fleet.config.spec import ServiceSpec, to_playbook_dict

Decision = Literal["applied", "failed", "rolled-back", "aborted", "pinned", "canary-waiting", "destroyed", "deployed"]
DECISIONS: tuple[str, ...] = ("applied", "failed", "rolled-back", "aborted", "pinned", "canary-waiting", "destroyed",
                              "deployed")
Command = Literal["apply", "reconcile"]
TurnKind = Literal["rollback", "promote", "abort", "restart", "deploy"]
TURN_KINDS: tuple[str, ...] = ("rollback", "promote", "abort", "restart", "deploy")


def _digest(data: Mapping[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def intent_hash(spec: ServiceSpec) -> str:
    """Everything the playbook says about the service (replica count included): what `reconcile` compares to
    tell whether the playbook changed since it was last tried. A restart generation is not the playbook's."""
    data = to_playbook_dict(spec)
    data.pop("restarts", None)
    data.pop("image_digest", None)  # stamped by `apply`, never written in a playbook
    return _digest(data)


def revision_key(spec: ServiceSpec) -> str:
    """Everything that makes a revision, the replica count excepted: a change of lb, health, placement, grace
    period or update policy is a new revision even though running containers are kept."""
    data = to_playbook_dict(spec)
    data.pop("replicas", None)
    return _digest(data)


@dataclass(frozen=True)
class PausedTurn:
    """A rollout that a pause stopped before its next batch, which `fleet rollout resume` must end as the command
    that began it ends an unpaused one: a turn by hand (`fleet deploy`, `restart`, `rollback`, `promote`, `abort`),
    or (`set`) a playbook's service whose image `apply --set` changed, recorded as a deploy against the playbook's
    intent `set_from`. It converges to `revision` (left in progress); `shown` is the revision the turn named (the
    accepted one it started from, the one rolled back to, the canary; `set`: its own)."""

    kind: TurnKind | Literal["set"]
    revision: int
    shown: int
    set_from: str = ""

    @classmethod
    def from_json(cls, data: object) -> PausedTurn:
        if not isinstance(data, Mapping) or data.get("kind") not in (*TURN_KINDS, "set") or not all(
                isinstance(data.get(k), int) and not isinstance(data.get(k), bool) for k in ("revision", "shown")):
            raise ValueError(f"paused_turn: expected {{kind, revision, shown}}, got {data!r}")
        return cls(data["kind"], data["revision"], data["shown"], str(data.get("set_from") or ""))


@dataclass(frozen=True)
class ServiceState:
    """The fleet's record of one service: the revision reconcile restores and the last decision about it.

    `intent` is the `intent_hash` of the playbook spec last tried; `replicas` a count set by `fleet scale` (kept
    until the next `apply`); `canary` the revision of a canary waiting for promote/abort, with its HAProxy
    weights; `reason` why the last attempt failed; `paused_turn` a turn by hand a pause stopped midway."""

    accepted: int | None
    decision: Decision
    intent: str | None = None
    replicas: int | None = None
    canary: int | None = None
    canary_weights: tuple[int, int] | None = None
    reason: str = ""
    by: str = ""
    at: float = 0.0
    paused_turn: PausedTurn | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["canary_weights"] = list(self.canary_weights) if self.canary_weights else None
        if self.paused_turn is None:
            del out["paused_turn"]  # the records of a service no pause stopped midway stay as they were
        elif not self.paused_turn.set_from:
            del out["paused_turn"]["set_from"]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceState:
        """Read a record back; unknown fields are ignored, a wrong one raises ValueError naming it."""
        decision = data.get("decision")
        if decision not in DECISIONS:
            raise ValueError(f"decision: expected one of {', '.join(DECISIONS)}, got {decision!r}")

        def opt_int(key: str) -> int | None:
            v = data.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{key}: expected an integer, got {v!r}")
            return v

        weights = data.get("canary_weights")
        if weights is not None and (not isinstance(weights, list) or len(weights) != 2
                                    or not all(isinstance(w, int) for w in weights)):
            raise ValueError(f"canary_weights: expected two integers, got {weights!r}")
        return cls(accepted=opt_int("accepted"), decision=decision, intent=data.get("intent") or None,
                   replicas=opt_int("replicas"), canary=opt_int("canary"),
                   canary_weights=(weights[0], weights[1]) if weights else None,
                   reason=str(data.get("reason") or ""), by=str(data.get("by") or ""),
                   at=float(data.get("at") or 0.0),
                   paused_turn=PausedTurn.from_json(data["paused_turn"]) if data.get("paused_turn") else None)


@dataclass(frozen=True)
class Target:
    """What one run does with one service.

    `spec` is converged to; `revision` is the recorded revision it is (None: record a new one); `heal` means
    restoring the accepted state (nothing new is tried, history is not written); `canary` is the waiting canary's
    spec and revision, whose replicas are kept apart and healed as they are; `note` is one line saying what was
    held back (a failed revision not retried, a pin); `skip` means leave the service alone (destroyed);
    `set_from` the playbook's `intent_hash` when `apply --set` changed its image: recorded as `fleet deploy`."""

    spec: ServiceSpec
    revision: int | None
    heal: bool
    note: str | None = None
    canary: tuple[ServiceSpec, int] | None = None
    skip: bool = False
    set_from: str | None = None


HELD_BACK = {
    "failed": "revision {rev} failed ({reason}); not retried until the playbook changes (or `fleet apply`)",
    "rolled-back": "revision {rev} failed ({reason}); not retried until the playbook changes (or `fleet apply`)",
    "aborted": "canary revision {rev} was aborted; not retried until the playbook changes (or `fleet apply`)",
    "pinned": "pinned to revision {acc} by `fleet rollback`; the playbook waits for the next change or `fleet apply`",
    "deployed": "drift: the playbook says {playbook}, accepted revision {acc} runs {runs} (`fleet deploy`); kept "
                "until the playbook changes or `fleet apply`",
}


def decide(command: Command, spec: ServiceSpec, state: ServiceState | None,
           accepted_spec: ServiceSpec | None, canary_spec: ServiceSpec | None = None,
           failed_revision: int | None = None) -> Target:
    """The target of `command` for the playbook's `spec`, given the service's record.

    `accepted_spec` is the spec of `state.accepted` (from the history), `canary_spec` that of a waiting canary,
    `failed_revision` the newest revision that failed (for the note)."""
    intent = intent_hash(spec)
    same_intent = state is not None and state.intent == intent
    if state is not None and state.decision == "destroyed" and command == "reconcile" and (
            same_intent or state.intent is None):
        return Target(spec, None, heal=True, skip=True,
                      note="destroyed by `fleet destroy`; `fleet apply` (or a changed playbook) brings it back")
    if (command == "reconcile" and state is not None and same_intent and state.accepted is None
            and state.decision in ("failed", "rolled-back", "aborted")):
        return Target(spec, None, heal=True, skip=True, note=HELD_BACK[state.decision].format(
            rev=failed_revision or "?", reason=state.reason or "see `fleet history`", acc="-"))
    follows = state is not None and same_intent and accepted_spec is not None and state.accepted is not None
    if (command == "reconcile" and follows) or (
            command == "apply" and state is not None and state.decision == "canary-waiting" and follows):
        assert state is not None and accepted_spec is not None and state.accepted is not None
        healed = replace(accepted_spec, replicas=state.replicas if state.replicas is not None else spec.replicas)
        canary = (canary_spec, state.canary) if (
            state.decision == "canary-waiting" and canary_spec is not None and state.canary is not None) else None
        note = None
        template = HELD_BACK.get(state.decision)
        if template is not None and command == "reconcile":
            note = template.format(rev=failed_revision or "?", reason=state.reason or "see `fleet history`",
                                   acc=state.accepted, playbook=spec.image, runs=accepted_spec.image)
        if canary is not None and command == "apply":
            note = (f"canary revision {state.canary} waits: `fleet promote {spec.name}` or "
                    f"`fleet abort {spec.name}`")
        return Target(healed, state.accepted, heal=True, note=note, canary=canary)
    if accepted_spec is not None and accepted_spec.restarts and not spec.restarts:
        # A restart generation stays with the service: the playbook cannot say it, and a run that tries the
        # playbook must not undo (or redo) a `fleet restart`.
        spec = replace(spec, restarts=accepted_spec.restarts)
    same_revision = (state is not None and state.accepted is not None and accepted_spec is not None
                     and revision_key(accepted_spec) == revision_key(spec))
    return Target(spec, state.accepted if same_revision and state is not None else None, heal=False)


def config_changes(old: ServiceSpec | None, new: ServiceSpec) -> list[str]:
    """What changed between the accepted spec and the playbook's, field by field, for `fleet plan`: the
    changes that keep running containers (lb, health, placement, grace period, update policy) included."""
    if old is None:
        return []
    a, b = to_playbook_dict(old), to_playbook_dict(new)
    out = []
    for key in sorted((set(a) | set(b)) - {"restarts"}):  # a restart generation is not the playbook's
        if a.get(key) != b.get(key):
            if key == "configs":
                out += _file_changes("config", a.get(key) or [], b.get(key) or [], "target")
            elif key == "secrets":
                out += _file_changes("secret file", a.get(key) or [], b.get(key) or [], "file")
            elif key == "secret_digests":
                old_d, new_d = a.get(key) or {}, b.get(key) or {}
                out += [f"secret {n} changed" if n in old_d else f"secret {n}: its rotation is now tracked"
                        for n in sorted(new_d) if old_d.get(n) != new_d[n] and (n in old_d or not old_d)]
            elif key == "env":
                names = sorted(k for k in set(a.get(key, {})) | set(b.get(key, {}))
                               if a.get(key, {}).get(k) != b.get(key, {}).get(k))
                out.append(f"env: {', '.join(names)} changed")
            elif key in ("lb", "health", "placement", "update", "resources") and isinstance(a.get(key), dict) \
                    and isinstance(b.get(key), dict):
                sub = sorted(k for k in set(a[key]) | set(b[key]) if a[key].get(k) != b[key].get(k))
                out.append("; ".join(f"{key}.{k}: {_short(a[key].get(k))} → {_short(b[key].get(k))}" for k in sub))
            else:
                out.append(f"{key}: {_short(a.get(key))} → {_short(b.get(key))}")
    return out


def _file_changes(what: str, old: list[dict[str, Any]], new: list[dict[str, Any]], key: str) -> list[str]:
    """`config /etc/app.conf changed` (content or mode), `... added`, `... removed`, by target path."""
    a, b = {f[key]: f for f in old}, {f[key]: f for f in new}
    return [f"{what} {t} " + ("added" if t not in a else "removed" if t not in b else "changed")
            for t in sorted(set(a) | set(b)) if a.get(t) != b.get(t)]


def _short(value: Any) -> str:
    text = "none" if value is None else json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) \
        else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def after_success(target: Target, revision: int, intent: str, by: str, at: float,
                  state: ServiceState | None) -> ServiceState:
    """The record once `target` converged at `revision`; an image set by `apply --set` is recorded as `fleet
    deploy` records one, against the playbook's intent: reconcile keeps it, `fleet plan` shows the drift."""
    if target.heal and state is not None:
        return state
    if target.set_from is not None:
        return ServiceState(accepted=revision, decision="deployed", intent=target.set_from,
                            reason=f"image {target.spec.image} by `fleet apply --set`", by=by, at=at)
    return ServiceState(accepted=revision, decision="applied", intent=intent, by=by, at=at)


def with_image(spec: ServiceSpec, images: Mapping[str, str] | None) -> tuple[ServiceSpec, str | None]:
    """The spec `apply` tries for the playbook's `spec` given `--set SERVICE.image=REF` (`images`), and the
    playbook's `intent_hash` when its image was set (None: the playbook as it is)."""
    image = (images or {}).get(spec.name)
    if image is None or image == spec.image:
        return spec, None
    return replace(spec, image=image), intent_hash(spec)


def after_failure(revision: int, back_to: int | None, intent: str, reason: str, by: str, at: float,
                  state: ServiceState | None, aborted: bool = False) -> ServiceState:
    """The record once a new revision failed (and the service went back to `back_to`, if any)."""
    accepted = back_to if back_to is not None else (state.accepted if state is not None else None)
    decision: Decision = "aborted" if aborted else ("rolled-back" if back_to is not None else "failed")
    return ServiceState(accepted=accepted, decision=decision, intent=intent, reason=reason, by=by, at=at)


def after_rollback(state: ServiceState | None, revision: int, to: int, by: str, at: float) -> ServiceState:
    """The record once `fleet rollback` converged to revision `to`'s spec (recorded as `revision`): pinned."""
    return ServiceState(accepted=revision, decision="pinned", intent=state.intent if state is not None else None,
                        reason=f"rollback to revision {to}", by=by, at=at)


def after_promote(state: ServiceState, revision: int, by: str, at: float) -> ServiceState:
    """The record once the waiting canary's `revision` was rolled to every replica."""
    return ServiceState(accepted=revision, decision="applied", intent=state.intent, by=by, at=at)


def after_abort(state: ServiceState, by: str, at: float) -> ServiceState:
    """The record once the waiting canary was removed: back to the accepted revision, kept so."""
    return ServiceState(accepted=state.accepted, decision="aborted", intent=state.intent,
                        reason="aborted by `fleet abort`", by=by, at=at)


def canary_waits(state: ServiceState | None, spec: ServiceSpec, revision: int, weights: tuple[int, int],
                 by: str, at: float) -> ServiceState:
    """The record of a canary left waiting for `fleet promote` or `fleet abort`, at its last HAProxy weights."""
    return ServiceState(accepted=state.accepted if state is not None else None, decision="canary-waiting",
                        intent=intent_hash(spec), canary=revision, canary_weights=weights, by=by, at=at)


def after_destroy(state: ServiceState | None, by: str, at: float) -> ServiceState:
    """The record of a destroyed service: its accepted revision kept, so `fleet rollback` can bring it back."""
    return ServiceState(accepted=state.accepted if state is not None else None, decision="destroyed",
                        intent=state.intent if state is not None else None, by=by, at=at)


def after_scale(state: ServiceState, replicas: int) -> ServiceState:
    """The record once `fleet scale` ran the service at `replicas`: reconcile keeps that count until `apply`."""
    return replace(state, replicas=replicas)


def after_restart(state: ServiceState, revision: int, by: str, at: float) -> ServiceState:
    """The record once `fleet restart` rolled every replica anew as `revision` (the accepted spec with the next
    restart generation): the same decision, intent and count, at the new revision."""
    return replace(state, accepted=revision, by=by, at=at, paused_turn=None)


def after_deploy(state: ServiceState, revision: int, image: str, by: str, at: float) -> ServiceState:
    """The record once `fleet deploy` rolled the service to `image` as `revision`: reconcile keeps it while the
    playbook is unchanged (its intent stays the one last tried), and `fleet plan` shows the drift."""
    return ServiceState(accepted=revision, decision="deployed", intent=state.intent, replicas=state.replicas,
                        reason=f"image {image} by `fleet deploy`", by=by, at=at)
