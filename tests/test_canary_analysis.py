"""Canary analysis with a minimum of requests, and the tcp canary, through tests/harness.py (the real engine and
ledger over fake replica operations whose HAProxy counters a test sets): a window that saw too few requests is
extended once by its length, then the canary fails saying how many it saw; a tcp canary is judged on its
connection errors and its health check. The window rule itself is pure (`window_end`)."""

from __future__ import annotations

from harness import Harness, service, worker

from fleet.config.spec import ServiceSpec, from_playbook_dict, to_playbook_dict
from fleet.plan.rollout.decide import revision_key
from fleet.plan.rollout.strategy import Verdict, canary_verdict, window_end

V1, V2 = "fleet.local/demo:v1", "fleet.local/demo:v2"


def web(image: str, mode: str = "http", min_requests: int | None = None, health: str = "") -> ServiceSpec:
    more = f", min_requests: {min_requests}" if min_requests is not None else ""
    return service("web", 3, cpu=0.25, image=image, extra=(
        f"    lb: {{port: 8080, mode: {mode}}}\n{health}"
        f"    update: {{strategy: canary, canary: {{steps: [50], pause: 50ms{more}}}}}\n"))


async def rolled(h: Harness, spec: ServiceSpec) -> None:
    assert (await h.apply(spec)).ok
    h.ops.steps.clear()
    h.events.clear()


def test_window_end_extends_once_then_fails_and_never_promotes_on_too_few_requests():
    quiet = canary_verdict(0, 7, 0, 300, 1.0, min_requests=20)
    assert quiet.ok is None
    assert window_end(quiet, 7, 20, extended=False).action == "extend"
    failed = window_end(quiet, 7, 20, extended=True)
    assert failed.action == "fail" and failed.reason.startswith("only 7 requests in the window")
    busy = canary_verdict(0, 40, 0, 300, 1.0, min_requests=20)
    assert window_end(busy, 40, 20, extended=True).action == "next"
    bad = Verdict(False, 50.0, 0.0, "canary 5xx 50%")
    assert window_end(bad, 40, 20, extended=False).action == "fail"
    assert "connection errors" in canary_verdict(5, 40, 0, 300, 1.0, what="connection errors").reason


async def test_a_quiet_canary_window_is_extended_once_then_the_canary_fails_saying_so():
    h = Harness([worker("w1")], balanced=True)
    await rolled(h, web(V1, min_requests=50))
    h.ops.traffic[V2] = 1  # one request per look: about 1 a window of 50 ms
    [out] = (await h.apply(web(V2, min_requests=50))).outcomes
    assert not out.ok and out.reason is not None
    assert "canary aborted at 50%: only " in out.reason and "requests in the window, extended once" in out.reason
    assert any("extending it once" in e.message for e in h.events if e.step == "canary")
    assert {r.image for r in h.ops.of("web")} == {V1} and len(h.ops.of("web")) == 3
    assert h.memory().outcomes("web") == [(1, "succeeded"), (2, "aborted")]


async def test_a_canary_with_enough_requests_after_the_extension_is_promoted():
    h = Harness([worker("w1")], balanced=True)
    await rolled(h, web(V1))
    h.ops.traffic[V2] = 12  # 12 a look: under 20 at the first look, enough once the window is extended
    [out] = (await h.apply(web(V2))).outcomes
    assert out.ok, out
    assert {r.image for r in h.ops.of("web")} == {V2}


async def test_a_tcp_canary_is_judged_on_connection_errors_and_on_its_health_check():
    h = Harness([worker("w1")], balanced=True)
    await rolled(h, web(V1, mode="tcp"))
    h.ops.error_rate[V2] = 0.3  # connection errors, as Balancers.counters gives a tcp server's
    [out] = (await h.apply(web(V2, mode="tcp"))).outcomes
    assert not out.ok and out.reason is not None and "canary connection errors 30.00%" in out.reason
    # No errors, but the canary fails its health check: aborted too.
    h2 = Harness([worker("w1")], balanced=True)
    check = "    health: {tcp: true, interval: 1s}\n"
    await rolled(h2, web(V1, mode="tcp", health=check))
    h2.ops.unhealthy.add(V2)
    [out2] = (await h2.apply(web(V2, mode="tcp", health=check))).outcomes
    assert not out2.ok and out2.reason is not None and "fails its health check" in out2.reason
    assert {r.image for r in h2.ops.of("web")} == {V1}


def test_min_requests_is_written_only_when_set_so_recorded_revisions_stay_the_same():
    default, set_ = web(V1), web(V1, min_requests=50)
    assert "min_requests" not in to_playbook_dict(default)["update"]["canary"]
    assert to_playbook_dict(set_)["update"]["canary"]["min_requests"] == 50
    assert from_playbook_dict("web", to_playbook_dict(set_)).update == set_.update
    assert revision_key(default) != revision_key(set_)
