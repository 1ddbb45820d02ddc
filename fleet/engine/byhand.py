"""Operations on a few replicas or one paused rollout, each one run of an `Engine` under the fleet's lease: the
UI's restart of a replica (replaced through the update policy, surge first), `fleet stop` of a service's replica
(drained, then stopped) and `fleet rollout resume` (the paused revision carried on)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fleet.config.spec import ServiceSpec
from fleet.core.errors import FleetError
from fleet.engine.apply import Engine
from fleet.plan.reconcile import Replica
from fleet.results import Outcome, RunResult


def _named(replicas: Sequence[Replica], ref: str) -> Replica | None:
    """The one replica `ref` names: its ID or a unique prefix of it, after `NODE/` or not."""
    node, _, rid = ref.rpartition("/")
    found = [r for r in replicas if (not node or r.node == node) and r.id.startswith(rid)]
    exact = [r for r in found if r.id == rid]
    return exact[0] if exact else found[0] if len(found) == 1 else None


async def renew(engine: Engine, spec: ServiceSpec, revision: int, ref: str) -> RunResult:
    """Replace the running replica `ref` names (its ID, a unique prefix, after `NODE/` or not) of the service at
    its accepted `spec` and `revision`, through its update policy as `fleet restart` does (surge first where it
    allows): the UI's restart of one replica. FleetError, nothing changed, when it names none."""
    await engine.observe()
    r = _named(engine.view.running(spec.name), ref)
    if r is None:
        raise FleetError(f"{spec.name}: no running replica {ref}")
    await engine.follow_records({spec.name})
    engine.view.rotation.follow(spec)
    out = await engine.rollout.converge(spec, revision, heal=True, renew=frozenset({r.id}))
    await engine.ops.route(engine.view.rotation)
    return engine.result([out])


async def retire(engine: Engine, ids: frozenset[str], grace: float | None = None) -> RunResult:
    """`fleet stop` of replicas of services on record: each out of the load balancers first (drained: its
    connections finish, up to its grace period, or `grace`), then stopped; reconcile starts replacements."""
    await engine.observe()
    await engine.follow_records(set())
    converge, live = engine.rollout.converge, engine.view.live
    outcomes = []
    for service in sorted({r.service for r in live if r.id in ids}):
        spec = await engine.ledger.accepted_spec(service)
        mine = [r for r in live if r.id in ids and r.service == service]
        for r in mine:
            if spec is None:  # not on record: nothing routes to it
                await converge.stop(r, grace if grace is not None else 10.0, "stopped by hand")
            else:
                await converge.retire(replace(spec, stop_grace_period=grace) if grace is not None else spec, r,
                                      "stopped by hand")
        outcomes.append(Outcome(service, True, stopped=len(mine)))
    return engine.result(outcomes)


async def resume(engine: Engine, service: str) -> RunResult:
    """Carry on the service's rollout that a pause stopped (its pause lifted first): a turn by hand (`fleet
    deploy`, `restart`, `rollback`, `promote`, `abort`) to the end that turn records; else its newest revision
    still in progress, as a run that finds an interrupted rollout does; nothing to do when there is none."""
    await engine.observe()
    await engine.ledger.reread(service)
    paused = await engine.ledger.paused_turn(service)
    if paused is not None:
        return await engine.carry(*paused)
    target = await engine.ledger.unfinished(service)
    if target is None:
        return engine.result([Outcome(service, True, reason="no rollout in progress to resume", changed=False)])
    return engine.result(await engine.apply_targets([target]))
