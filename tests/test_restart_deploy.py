"""`fleet restart` and `fleet deploy --image` through tests/harness.py (the real engine, ledger and decisions over
fake replica operations and in-memory records): a restart replaces every replica surge first with the same
image and is recorded as a restart; a deploy becomes the accepted revision that reconcile keeps, `plan` shows
the drift, and `apply` brings the playbook's image back. The lab module test_lbsettings_lab.py shows both under
load on real nodes."""

from __future__ import annotations

import pytest
from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec, from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.core.errors import FleetError, SpecError
from fleet.plan.rollout.decide import intent_hash

V1, V2, V3 = "fleet.local/demo:v1", "fleet.local/demo:v2", "fleet.local/demo:v3"
CANARY = ("    lb: {port: 8080}\n    update: {strategy: canary, canary: {steps: [10, 50], pause: 50ms, "
          "auto_promote: false}}\n")


def web(image: str = V1, replicas: int = 3, extra: str = "") -> ServiceSpec:
    return service("web", replicas, cpu=0.25, image=image, extra=extra)


async def running(h: Harness, spec: ServiceSpec) -> set[str]:
    """`spec` applied (revision 1); the ids of its replicas, the fake's steps cleared."""
    assert (await h.apply(spec)).ok
    h.ops.steps.clear()
    h.ops.peak.clear()
    h.ops.low.clear()
    return {r.id for r in h.ops.of("web")}


async def test_restart_replaces_every_replica_surge_first_with_the_same_image():
    h = Harness([worker("w1"), worker("w2")])
    old = await running(h, web())
    rev, result = await h.fresh_engine().turn("restart", "web")
    assert rev.revision == 1 and result.ok
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"] * 3
    assert {rid for kind, rid in h.steps("web") if kind == "stop"} == old
    assert h.ops.peak["web"] <= 4 and h.ops.low["web"] >= 3  # never one short
    now = h.ops.of("web")
    assert {r.image for r in now} == {V1} and len(now) == 3 and not {r.id for r in now} & old
    [first, second] = await h.memory().list("web")
    assert (second.revision, second.outcome, second.image) == (2, "succeeded", V1)
    assert second.reason == "restart of revision 1 by `fleet restart`" and second.spec_hash != first.spec_hash
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"], state["intent"]) == (2, "applied", intent_hash(web()))


async def test_after_a_restart_reconcile_and_apply_of_the_same_playbook_change_nothing():
    h = Harness([worker("w1")])
    await running(h, web())
    await h.fresh_engine().turn("restart", "web")
    h.ops.steps.clear()
    assert (await h.apply(web(), command="reconcile")).ok and h.steps("web") == []
    assert (await h.apply(web())).ok and h.steps("web") == []
    assert [r.revision for r in await h.memory().list("web")] == [1, 2]
    # A second restart is a new generation: every replica again.
    await h.fresh_engine().turn("restart", "web")
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"] * 3
    # A new image in the playbook rolls once, the restart generation kept (nothing restarted twice).
    h.ops.steps.clear()
    assert (await h.apply(web(V2))).ok
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"] * 3
    h.ops.steps.clear()
    assert (await h.apply(web(V2), command="reconcile")).ok and h.steps("web") == []


async def test_restart_keeps_a_count_set_by_scale():
    h = Harness([worker("w1")])
    await running(h, web())
    assert (await h.fresh_engine().scale(web(), 2)).ok
    h.ops.steps.clear()
    _, result = await h.fresh_engine().turn("restart", "web")
    assert result.ok and len(h.ops.of("web")) == 2
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"] * 2
    assert h.memory().states["web"]["replicas"] == 2


async def test_restart_and_deploy_are_refused_without_an_accepted_revision_or_with_a_waiting_canary():
    h = Harness([worker("w1")], balanced=True)
    with pytest.raises(FleetError, match="no accepted revision on this fleet to restart"):
        await h.fresh_engine().turn("restart", "web")
    await running(h, web(extra=CANARY))
    assert (await h.apply(web(V2, extra=CANARY))).outcomes[0].waiting
    for kind in ("restart", "deploy"):
        with pytest.raises(FleetError, match="canary revision 2 waits"):
            await h.fresh_engine().turn(kind, "web", image=V3)  # type: ignore[arg-type]
    with pytest.raises(FleetError, match="this fleet keeps no records to restart by"):
        await Harness([worker("w1")], records=False).fresh_engine().turn("restart", "web")


async def test_deploy_makes_the_new_image_the_accepted_revision_that_reconcile_keeps():
    h = Harness([worker("w1"), worker("w2")])
    await running(h, web())
    rev, result = await h.fresh_engine().turn("deploy", "web", image=V2)
    assert rev.revision == 1 and result.ok
    assert [kind for kind, _ in h.steps("web")] == ["start", "ready", "stop"] * 3
    assert {r.image for r in h.ops.of("web")} == {V2} and h.ops.low["web"] >= 3
    last = (await h.memory().list("web"))[-1]
    assert (last.revision, last.outcome, last.image, last.reason) == (2, "succeeded", V2,
                                                                      f"image {V2} by `fleet deploy`")
    state = h.memory().states["web"]
    assert (state["accepted"], state["decision"], state["intent"]) == (2, "deployed", intent_hash(web()))
    h.ops.steps.clear()
    [kept] = (await h.apply(web(), command="reconcile")).outcomes
    assert kept.ok and h.steps("web") == [] and {r.image for r in h.ops.of("web")} == {V2}
    drift = f"drift: the playbook says {V1}, accepted revision 2 runs {V2} (`fleet deploy`)"
    assert kept.reason is not None and kept.reason.startswith(drift)
    view = await h.fresh_engine().preview([web()])
    assert view.notes["web"].startswith(drift) and view.changes["web"] == [f"image: {V2} → {V1}"]


async def test_apply_or_a_changed_playbook_after_a_deploy_brings_the_playbook_back():
    h = Harness([worker("w1")])
    await running(h, web())
    await h.fresh_engine().turn("deploy", "web", image=V2)
    h.ops.steps.clear()
    assert (await h.apply(web(V3), command="reconcile")).ok  # the playbook changed: reconcile tries it
    assert {r.image for r in h.ops.of("web")} == {V3}
    await h.fresh_engine().turn("deploy", "web", image=V2)
    assert (await h.apply(web(V3))).ok  # apply makes the playbook the truth again
    assert {r.image for r in h.ops.of("web")} == {V3} and h.memory().states["web"]["decision"] == "applied"


async def test_a_deploy_that_never_becomes_ready_leaves_the_accepted_revision_running():
    h = Harness([worker("w1")])
    await running(h, web())
    h.ops.not_ready[V2] = "exited with status 1"
    _, result = await h.fresh_engine().turn("deploy", "web", image=V2)
    [outcome] = result.outcomes
    assert not outcome.ok and outcome.reason is not None and "exited with status 1" in outcome.reason
    assert {r.image for r in h.ops.of("web")} == {V1} and len(h.ops.of("web")) == 3
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "failed")]
    assert (h.memory().states["web"]["accepted"], h.memory().states["web"]["decision"]) == (1, "applied")


async def test_deploy_refuses_an_image_reference_it_cannot_run():
    h = Harness([worker("w1")])
    await running(h, web())
    with pytest.raises(FleetError, match="--image: expected an image reference"):
        await h.fresh_engine().turn("deploy", "web", image="Bad Image;rm")
    assert h.steps("web") == [] and [r.revision for r in await h.memory().list("web")] == [1]


def test_a_restart_generation_is_recorded_but_never_written_in_a_playbook():
    spec = web()
    assert "restarts" not in to_playbook_dict(spec)
    restarted = from_playbook_dict("web", {**to_playbook_dict(spec), "restarts": 3})
    assert restarted.restarts == 3 and restarted.spec_hash() != spec.spec_hash()
    assert intent_hash(restarted) == intent_hash(spec)
    with pytest.raises(SpecError, match=r"pb.yaml:4: services.web.restarts: fleet records this itself"):
        parse_playbook("services:\n  web:\n    image: busybox\n    restarts: 1\n", "pb.yaml")
