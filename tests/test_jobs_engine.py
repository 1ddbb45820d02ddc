"""Deploy hooks through tests/harness.py (the real engine, ledger and decisions over fake replica operations and
in-memory records): a service's `before_deploy` runs once per new revision before any of its replicas starts;
a failing one stops the rollout with nothing changed and the history saying why; a scale, a heal or an
unchanged apply does not run it. The lab module test_jobs_lab.py runs real jobs."""

from __future__ import annotations

from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec
from fleet.engine.apply import Engine
from fleet.results.jobs import Attempt, JobRun, from_doc

V1, V2 = "fleet.local/demo:v1", "fleet.local/demo:v2"


def web(image: str = V1, replicas: int = 2) -> ServiceSpec:
    return service("web", replicas, cpu=0.25, image=image, extra="    before_deploy: migrate\n")


class Hook:
    """A stand-in for fleet.engine.jobs.JobHook: records each call and the replicas started before it."""

    def __init__(self, h: Harness, fail: bool = False) -> None:
        self.h, self.fail = h, fail
        self.calls: list[tuple[str, int, str, int]] = []

    async def __call__(self, spec: ServiceSpec, revision: int) -> str | None:
        self.calls.append((spec.name, revision, spec.image, len(self.h.steps("web", ("start",)))))
        return f"{spec.name}: before_deploy job migrate failed (exit 3)" if self.fail else None


def hooked(h: Harness, hook: Hook) -> Engine:
    engine = h.fresh_engine()
    engine.stage.hook = hook
    return engine


async def test_hook_runs_once_before_any_replica_of_the_new_revision():
    h = Harness([worker("w1"), worker("w2")])
    hook = Hook(h)
    assert (await hooked(h, hook).apply([web()])).ok
    assert hook.calls == [("web", 1, V1, 0)]
    assert len(h.ops.of("web")) == 2
    # The same playbook again, and a reconcile: no new revision, no hook.
    assert (await hooked(h, hook).apply([web()])).ok
    assert (await hooked(h, hook).apply([web()], "reconcile")).ok
    assert len(hook.calls) == 1
    # A scale keeps the revision: no hook either.
    assert (await hooked(h, hook).scale(web(), 3)).ok
    assert len(hook.calls) == 1 and len(h.ops.of("web")) == 3
    # A new image is a new revision: the hook runs with it, before its first replica.
    h.ops.steps.clear()
    assert (await hooked(h, hook).apply([web(V2, 3)])).ok
    assert hook.calls[1] == ("web", 2, V2, 0)


async def test_failing_hook_stops_the_rollout_with_nothing_changed():
    h = Harness([worker("w1"), worker("w2")])
    assert (await hooked(h, Hook(h)).apply([web()])).ok
    before = {r.id for r in h.ops.of("web")}
    h.ops.steps.clear()
    result = await hooked(h, Hook(h, fail=True)).apply([web(V2)])
    assert not result.ok and "before_deploy job migrate failed" in (result.outcomes[0].reason or "")
    assert h.steps("web") == [] and {r.id for r in h.ops.of("web")} == before
    _, second = await h.memory().list("web")
    assert (second.revision, second.outcome, second.image) == (2, "failed", V2)
    assert "before_deploy job migrate failed" in second.reason
    assert h.memory().states["web"]["accepted"] == 1
    # The failed revision is not retried by reconcile.
    hook = Hook(h)
    await hooked(h, hook).apply([web(V2)], "reconcile")
    assert hook.calls == [] and {r.id for r in h.ops.of("web")} == before


async def test_failing_hook_stops_a_deploy_by_image():
    h = Harness([worker("w1")])
    assert (await hooked(h, Hook(h)).apply([web()])).ok
    before = {r.id for r in h.ops.of("web")}
    h.ops.steps.clear()
    hook = Hook(h, fail=True)
    _, result = await hooked(h, hook).turn("deploy", "web", image=V2)
    assert not result.ok and hook.calls == [("web", 2, V2, 0)]
    assert h.steps("web") == [] and {r.id for r in h.ops.of("web")} == before


async def test_hook_not_known_to_the_run_fails_safe():
    h = Harness([worker("w1")])
    result = await h.apply(web())
    assert not result.ok and "is not known to this run" in (result.outcomes[0].reason or "")
    assert h.steps("web") == []


def test_job_run_record_round_trip():
    run = JobRun("migrate", "20261205T030000Z-abcd", "schedule", "me@host", "fleet watch", V1, 10.0,
                 "succeeded", 12.5, 0, slot="2026-12-05T03:00Z",
                 attempts=(Attempt(1, 1, "n1", "migrate-1-x", "/log", 10.0, 12.0, 0),))
    assert from_doc(run.to_doc()) == run and run.duration == 2.5 and run.last is not None
