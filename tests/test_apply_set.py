"""`fleet apply --set SERVICE.image=REF` through tests/harness.py (the real engine, ledger and decisions over fake
replica operations and in-memory records): the set image rolls and is recorded as `fleet deploy` records one, so
reconcile of the unchanged playbook keeps it and `plan` shows the playbook's image as drift; a plain apply brings
the playbook back. Services not named are applied as the playbook says."""

from __future__ import annotations

from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec
from fleet.plan.rollout.decide import intent_hash

V1, V2, V3 = "fleet.local/demo:v1", "fleet.local/demo:v2", "fleet.local/demo:v3"


def web(image: str = V1) -> ServiceSpec:
    return service("web", 2, cpu=0.25, image=image)


async def test_apply_set_image_is_recorded_as_a_deploy_kept_by_reconcile_and_shown_as_drift():
    h = Harness([worker("w1")])
    api = service("api", 1, cpu=0.25, image=V1)
    assert (await h.apply(web(), api)).ok
    h.ops.steps.clear()
    result = await h.fresh_engine().apply([web(), service("api", 1, cpu=0.25, image=V3)], "apply",
                                          images={"web": V2})
    assert result.ok
    assert {r.image for r in h.ops.of("web")} == {V2} and {r.image for r in h.ops.of("api")} == {V3}
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"], state["intent"]) == (2, "deployed", intent_hash(web()))
    assert state["reason"] == f"image {V2} by `fleet apply --set`"
    assert h.memory().states["api"]["decision"] == "applied"
    assert [(r.revision, r.image, r.outcome) for r in await h.memory().list("web")] == [
        (1, V1, "succeeded"), (2, V2, "succeeded")]
    h.ops.steps.clear()
    [kept] = (await h.apply(web(), command="reconcile")).outcomes
    assert kept.ok and h.steps("web") == [] and {r.image for r in h.ops.of("web")} == {V2}
    view = await h.fresh_engine().preview([web()])
    assert view.notes["web"].startswith(f"drift: the playbook says {V1}, accepted revision 2 runs {V2}")
    assert view.changes["web"] == [f"image: {V2} → {V1}"]
    # A plain apply makes the playbook the truth again.
    assert (await h.apply(web())).ok
    assert {r.image for r in h.ops.of("web")} == {V1} and h.memory().states["web"]["decision"] == "applied"


async def test_apply_set_to_the_playbooks_own_image_is_a_plain_apply():
    h = Harness([worker("w1")])
    assert (await h.fresh_engine().apply([web()], "apply", images={"web": V1})).ok
    assert h.memory().states["web"]["decision"] == "applied"
