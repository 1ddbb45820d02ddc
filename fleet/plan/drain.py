"""What `fleet node drain` converges each service to, pure: the service's accepted state as reconcile restores
it, with as many replicas as it runs now; the node's replicas are then misplaced (it is draining) and the
engine's rolling plan moves them, surge first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fleet.config.spec import ServiceSpec
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import ServiceState, Target


def drain_target(service: str, state: ServiceState | None, accepted: ServiceSpec | None,
                 canary: ServiceSpec | None, running: Sequence[Replica]) -> Target | str:
    """The target for `service` (whose replicas `running` are, on every node), or why it cannot be moved.

    Without a playbook the replica count is the one `fleet scale` recorded, else one past the highest replica
    number running (so no running replica is surplus). A destroyed service is finished off (as reconcile does);
    a waiting canary keeps waiting, its replica moved beside the baseline's."""
    if state is not None and state.decision == "destroyed":
        return Target(accepted or _placeholder(service, running), None, heal=True, skip=True)
    if state is None or state.accepted is None or accepted is None:
        return (f"{service}: the fleet's records hold no accepted revision of it (started by `fleet run`, or never "
                f"applied successfully), so there is nothing to move it by: stop it, or apply its playbook")
    waiting = (canary, state.canary) if (state.decision == "canary-waiting" and canary is not None
                                        and state.canary is not None) else None
    skip_hash = waiting[0].spec_hash() if waiting is not None else None
    numbers = [r.replica for r in running if r.service == service and r.running and r.spec_hash != skip_hash]
    count = state.replicas if state.replicas is not None else max(numbers, default=accepted.replicas - 1) + 1
    return Target(replace(accepted, replicas=count), state.accepted, heal=True, canary=waiting)


def _placeholder(service: str, running: Sequence[Replica]) -> ServiceSpec:
    """A destroyed service's spec when its accepted one is gone: only its name and image matter (it is stopped)."""
    image = next((r.image for r in running if r.service == service), "unknown")
    return ServiceSpec(name=service, image=image)
