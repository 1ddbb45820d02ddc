"""Rolling updates, automatic rollback, canaries and controller crashes on the real lab, under load.

Every test drives bounded HTTP load through HAProxy on lb1 for the whole change and asserts that not one
request failed (new connections and keep-alive clients alike)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import demo_env, run_fleet, start_fleet
from loadgen import Load

from fleet.engine.haproxy import LbNode
from fleet.transport import Pool

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(lab, tmp_path_factory):
    """Demo images v1 and v2 on every worker, and a private revision history."""
    return demo_env(lab.inventory_path, tmp_path_factory.mktemp("rollout"))


def fleet(env, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=env["env"], timeout=timeout)


def playbook(env, name: str, port: int, version: str = "v1", replicas: int = 4, extra_env: dict | None = None,
             update: str = "{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 1s}") -> str:
    path = Path(env["dir"]) / f"{name}-{version}-{time.monotonic_ns()}.yaml"
    env_lines = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in (extra_env or {}).items())
    path.write_text(f"""services:
  {name}:
    image: fleet.local/demo:{version}
    replicas: {replicas}
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {{http: /healthz, interval: 1s, timeout: 1s, failure_threshold: 2}}
    placement: {{spread_by: zone}}
    lb: {{port: {port}}}
    stop_grace_period: 5s
    update: {update}
""" + (f"    env:\n{env_lines}" if env_lines else ""))
    return str(path)


def status(env, name: str) -> dict:
    out = fleet(env, "status", "--json")
    doc = json.loads(out.stdout)
    return next((s for s in doc["services"] if s["service"] == name), {"replicas": []})


def history(env, name: str) -> list[dict]:
    return json.loads(fleet(env, "history", name, "--json").stdout)


def lb_address(lab) -> str:
    return lab.inventory.node("lb1").address


def test_rolling_update_under_load_loses_no_request(lab, env):
    name, port = "ro-roll", 19511
    try:
        assert fleet(env, "apply", playbook(env, name, port)).returncode == 0
        with Load(lb_address(lab), port, clients=6, max_seconds=90) as load:
            time.sleep(1.0)
            started = time.monotonic()
            out = fleet(env, "apply", playbook(env, name, port, "v2"))
            took = time.monotonic() - started
            time.sleep(1.0)
        assert out.returncode == 0, out.stdout + out.stderr
        r = load.result
        assert r.failed == 0, (r.errors, r.failures[:5])
        assert r.versions.get("v1", 0) > 0 and r.versions.get("v2", 0) > 0 and r.ok > 200
        st = status(env, name)
        assert [x["image"] for x in st["replicas"]] == ["fleet.local/demo:v2"] * 4
        assert len({x["node"] for x in st["replicas"]}) == 3, "4 replicas spread over the 3 workers"
        assert sorted(x["replica"] for x in st["replicas"]) == [0, 1, 2, 3]
        assert took < 60
    finally:
        fleet(env, "destroy", name)


def test_failing_version_is_rolled_back_without_failed_requests(lab, env):
    name, port = "ro-bad", 19512
    try:
        assert fleet(env, "apply", playbook(env, name, port, replicas=3)).returncode == 0
        bad = playbook(env, name, port, "v2", replicas=3, extra_env={"DEMO_HEALTH": "fail"},
                       update="{max_surge: 1, max_unavailable: 0, ready_deadline: 5s}")
        with Load(lb_address(lab), port, clients=4, max_seconds=60) as load:
            out = fleet(env, "apply", bad)
            time.sleep(0.5)
        assert out.returncode == 1, out.stdout
        assert "rolled back to revision 1" in out.stdout
        assert load.result.failed == 0, load.result.errors
        assert set(load.result.versions) == {"v1"}
        revs = history(env, name)
        assert [r["outcome"] for r in revs] == ["succeeded", "rolled-back"]
        assert "not ready within 5s" in revs[-1]["reason"] and "HTTP 404" in revs[-1]["reason"]
        assert {x["image"] for x in status(env, name)["replicas"]} == {"fleet.local/demo:v1"}
    finally:
        fleet(env, "destroy", name)


def test_slow_start_is_waited_for_and_crash_after_start_is_caught(lab, env):
    name, port = "ro-slow", 19513
    try:
        assert fleet(env, "apply", playbook(env, name, port, replicas=2)).returncode == 0
        slow = playbook(env, name, port, "v2", replicas=2, extra_env={"DEMO_START_DELAY": "3"},
                        update="{max_surge: 1, max_unavailable: 0, ready_deadline: 30s, min_ready: 1s}")
        started = time.monotonic()
        out = fleet(env, "apply", slow)
        assert out.returncode == 0, out.stdout + out.stderr
        assert time.monotonic() - started >= 3 * 2, "each batch waited for its slow replica"
        crash = playbook(env, name, port, "v1", replicas=2, extra_env={"DEMO_CRASH_AFTER": "1"},
                         update="{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 4s}")
        with Load(lb_address(lab), port, clients=4, max_seconds=60) as load:
            out = fleet(env, "apply", crash)
        assert out.returncode == 1, out.stdout
        assert load.result.failed == 0, load.result.errors
        reason = history(env, name)[-1]["reason"]
        assert "crashed" in reason or "failed again" in reason or "restarted" in reason, reason
        assert {x["image"] for x in status(env, name)["replicas"]} == {"fleet.local/demo:v2"}
    finally:
        fleet(env, "destroy", name)


def test_rollback_to_an_earlier_revision(lab, env):
    name, port = "ro-back", 19514
    try:
        assert fleet(env, "apply", playbook(env, name, port, replicas=2)).returncode == 0
        assert fleet(env, "apply", playbook(env, name, port, "v2", replicas=2)).returncode == 0
        with Load(lb_address(lab), port, clients=4, max_seconds=60) as load:
            out = fleet(env, "rollback", name, "--to", "1")
        assert out.returncode == 0, out.stdout + out.stderr
        assert load.result.failed == 0, load.result.errors
        assert {x["image"] for x in status(env, name)["replicas"]} == {"fleet.local/demo:v1"}
        revs = history(env, name)
        assert [r["image"] for r in revs] == ["fleet.local/demo:v1", "fleet.local/demo:v2", "fleet.local/demo:v1"]
        assert revs[-1]["outcome"] == "succeeded"
    finally:
        fleet(env, "destroy", name)


def _weights(lab, name: str) -> dict[str, int]:
    async def go() -> dict[str, int]:
        async with Pool() as pool:
            rows = await LbNode(pool, lab.inventory.node("lb1")).stats()
        return {r.name: r.weight for r in rows if r.proxy == f"be_{name}" and r.kind == "server"}

    return asyncio.run(go())


def test_canary_weights_in_haproxy_then_abort_and_auto_abort_on_errors(lab, env):
    name, port = "ro-can", 19515
    canary = "{strategy: canary, canary: {steps: [25, 50], pause: 2s, auto_promote: false, max_error_rate_delta: 5}}"
    try:
        assert fleet(env, "apply", playbook(env, name, port, replicas=3)).returncode == 0
        with Load(lb_address(lab), port, clients=4, max_seconds=60) as load:
            out = fleet(env, "apply", playbook(env, name, port, "v2", replicas=3, update=canary))
            assert out.returncode == 0, out.stdout + out.stderr
            assert "waits" in out.stdout
            reps = status(env, name)["replicas"]
            new = [x["id"] for x in reps if x["image"].endswith("v2")]
            old = [x["id"] for x in reps if x["image"].endswith("v1")]
            assert len(new) == 1 and len(old) == 3
            w = _weights(lab, name)
            assert w[new[0]] == 3 and all(w[o] == 1 for o in old), w  # 3/(3+3) = 50 % to the canary
            out = fleet(env, "abort", name)
            assert out.returncode == 0, out.stdout + out.stderr
        assert load.result.failed == 0, load.result.errors
        assert load.result.versions.get("v2", 0) > 0, "the canary took traffic"
        assert {x["image"] for x in status(env, name)["replicas"]} == {"fleet.local/demo:v1"}
        assert [r["outcome"] for r in history(env, name)] == ["succeeded", "aborted"]
        # A canary that serves errors is aborted on its own.
        noisy = playbook(env, name, port, "v2", replicas=3, extra_env={"DEMO_ERROR_RATE": "60"},
                         update=canary.replace("auto_promote: false", "auto_promote: true"))
        with Load(lb_address(lab), port, clients=4, max_seconds=60) as load:
            out = fleet(env, "apply", noisy)
        assert out.returncode == 1, out.stdout
        assert "canary aborted at 25%" in out.stdout
        assert history(env, name)[-1]["outcome"] == "aborted"
        assert set(load.result.errors) <= {"HTTP 500"}, "only the canary's own injected errors"
        assert {x["image"] for x in status(env, name)["replicas"]} == {"fleet.local/demo:v1"}
    finally:
        fleet(env, "destroy", name)


def test_controller_killed_mid_rollout_converges_while_serving(lab, env):
    name, port = "ro-kill", 19516
    try:
        assert fleet(env, "apply", playbook(env, name, port)).returncode == 0
        v2 = playbook(env, name, port, "v2")
        with Load(lb_address(lab), port, clients=6, max_seconds=120) as load:
            for kill_at in (1.0, 2.5, 4.0):
                # A killed run leaves the fleet's lease to expire (FLEET_LEASE_TTL=5): the next one waits for it.
                proc = start_fleet("apply", "--wait", "30s", v2, env=env["env"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                time.sleep(kill_at)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            out = fleet(env, "apply", "--wait", "30s", v2)
            time.sleep(0.5)
        assert out.returncode == 0, out.stdout + out.stderr
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        reps = status(env, name)["replicas"]
        assert [x["image"] for x in reps] == ["fleet.local/demo:v2"] * 4
        assert sorted(x["replica"] for x in reps) == [0, 1, 2, 3], "no second copy of a replica"
        assert all(x["running"] for x in reps)
        assert fleet(env, "plan", v2).returncode == 0, "converged: nothing left to do"
    finally:
        fleet(env, "destroy", name)
