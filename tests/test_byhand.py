"""Replicas by hand through tests/harness.py (the real engine over fake replica operations and in-memory records):
the UI's restart of one replica replaces it through the update policy, surge first (its replacement ready before
it is drained and stopped); `fleet stop` of a service's replica drains it before stopping it and starts nothing."""

from __future__ import annotations

import pytest
from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec
from fleet.core.errors import FleetError
from fleet.engine import byhand

V1 = "fleet.local/demo:v1"


def web(update: str = "") -> ServiceSpec:
    return service("web", 3, cpu=0.25, image=V1, extra=f"    lb: {{port: 8080}}\n{update}")


async def running(h: Harness, spec: ServiceSpec) -> None:
    assert (await h.apply(spec)).ok
    h.ops.steps.clear()
    h.ops.peak.clear()
    h.ops.low.clear()


@pytest.mark.parametrize(("update", "order"), [
    ("", ["start", "ready", "drain", "stop"]),  # max_surge 1: the replacement first
    ("    update: {max_surge: 0, max_unavailable: 1}\n", ["drain", "stop", "start", "ready"]),
])
async def test_renew_replaces_one_replica_through_the_update_policy(update: str, order: list[str]):
    h = Harness([worker("w1"), worker("w2")], balanced=True)
    await running(h, web(update))
    target = h.ops.of("web")[1]
    others = {r.id for r in h.ops.of("web")} - {target.id}
    result = await byhand.renew(h.fresh_engine(), web(update), 1, f"{target.node}/{target.id[:9]}")
    assert result.ok
    assert [kind for kind, _ in h.steps("web")] == order
    assert [rid for kind, rid in h.steps("web") if kind in ("drain", "stop")] == [target.id, target.id]
    assert others < {r.id for r in h.ops.of("web")} and len(h.ops.of("web")) == 3
    if not update:
        assert h.ops.low["web"] == 3  # never one short
    with pytest.raises(FleetError, match="no running replica w9/nope"):
        await byhand.renew(h.fresh_engine(), web(update), 1, "w9/nope")


async def test_retire_drains_a_service_replica_before_stopping_it_and_starts_nothing():
    h = Harness([worker("w1")], balanced=True)
    await running(h, web())
    target = h.ops.of("web")[0]
    result = await byhand.retire(h.fresh_engine(), frozenset({target.id}), grace=1.0)
    assert result.ok and result.outcomes[0].stopped == 1
    assert h.steps("web") == [("drain", target.id), ("stop", target.id)]
    assert len(h.ops.of("web")) == 2
    # Its route is gone from what HAProxy is told before it stops.
    routed = [detail for kind, name, detail in h.ops.steps if kind == "route" and name == "web"]
    assert routed and target.id not in routed[-1]
