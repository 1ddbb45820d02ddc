"""Several actors on one fleet: controllers racing, a holder killed, replicas paused, decisions that reconcile keeps.

Real lab (sshd, containerd, HAProxy), bounded HTTP load through lb1 for every change to a serving service."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import run_fleet, start_fleet, wait_until
from loadgen import Load
from test_rollout_lab import _weights, lb_address, playbook, status

from fleet.image.demo import build_demo
from fleet.lab.lab import _cgroup_pids, _read_pid, node_dir

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(lab, tmp_path_factory):
    """Demo images v1 and v2 on every worker, and two controllers: each its own state directory."""
    d = tmp_path_factory.mktemp("safety")
    base = {**os.environ, "FLEET_INVENTORY": lab.inventory_path, "FLEET_LEASE_TTL": "5"}
    a = {**base, "FLEET_STATE_DIR": str(d / "state-a")}
    b = {**base, "FLEET_STATE_DIR": str(d / "state-b")}
    for v in ("v1", "v2"):
        img = build_demo(v, str(d / f"demo-{v}.tar"))
        out = run_fleet("image", "push", img.path, env=a, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    return {"env": a, "env_b": b, "dir": d}


def run(environ: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=environ, timeout=timeout)


def start(environ: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return start_fleet(*args, env=environ)


def history(environ: dict[str, str], name: str) -> list[dict]:
    out = run(environ, "history", name, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return [{k: r[k] for k in ("revision", "image", "spec_hash", "outcome")} for r in json.loads(out.stdout)]


def replicas(env, name: str) -> list[dict]:
    return status(env, name)["replicas"]


def no_duplicates(reps: list[dict]) -> bool:
    indexes = [r["replica"] for r in reps]
    return len(indexes) == len(set(indexes))


def tasks(lab, node: str, name: str) -> list[str]:
    """IDs of the running tasks of service `name` on a lab node."""
    ns = lab.inventory.node(node).namespace
    out = lab.lab.exec_in(node, ["ctr", "-n", ns, "tasks", "ls"]).stdout.splitlines()[1:]
    return [cols[0] for cols in (line.split() for line in out)
            if len(cols) >= 3 and cols[0].startswith(f"{name}-") and cols[2] == "RUNNING"]


def serves(address: str, port: int) -> bool:
    """The LB answers 200 (HAProxy's 503, while no server of the backend is up, is "not yet")."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:  # an HTTPError (the 503) is an OSError too
        return False


def freeze(lab, node: str, task: str, sig: int = signal.SIGSTOP) -> None:
    """SIGSTOP (or SIGCONT) every process of a container, found in its cgroup (nodes share the host's PID
    namespace). containerd still reports the task RUNNING: its restart monitor leaves it alone, as it would a
    process stuck in a long GC pause or on a dead NFS mount."""
    for pid in _cgroup_pids(lab.inventory.node(node).namespace, task):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def test_two_controllers_apply_and_reconcile_at_once_under_load(lab, env):
    name, port = "sf-race", 19521
    a, b = env["env"], env["env_b"]
    try:
        assert run(a, "apply", playbook(env, name, port, replicas=3)).returncode == 0
        v2 = playbook(env, name, port, "v2", replicas=3)
        with Load(lb_address(lab), port, clients=6, max_seconds=120) as load:
            first = start(a, "apply", "--wait", "90s", v2)
            second = start(b, "reconcile", "--wait", "90s", v2)
            outs = [p.communicate(timeout=150) for p in (first, second)]
            time.sleep(0.5)
        assert first.returncode == 0, outs[0]
        assert second.returncode == 0, outs[1]
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        reps = replicas(env, name)
        assert [r["image"] for r in reps] == ["fleet.local/demo:v2"] * 3 and no_duplicates(reps)
        # One history, kept on the fleet: both controllers see the same revisions with the same numbers.
        ha, hb = history(a, name), history(b, name)
        assert ha == hb
        assert [(r["revision"], r["image"], r["outcome"]) for r in ha] == [
            (1, "fleet.local/demo:v1", "succeeded"), (2, "fleet.local/demo:v2", "succeeded")]
    finally:
        run(a, "destroy", name, "--wait", "60s")


def test_holder_killed_frees_the_lease_at_expiry_and_the_other_proceeds(lab, env):
    name, port = "sf-kill", 19522
    a, b = env["env"], env["env_b"]
    try:
        assert run(a, "apply", playbook(env, name, port, replicas=3)).returncode == 0
        # Each new replica ready for 4 s before the next: the holder is still rolling (holding the lease) while the
        # other controller's CLI runs start, seconds each on a loaded machine.
        v2 = playbook(env, name, port, "v2", replicas=3,
                      update="{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 4s}")
        with Load(lb_address(lab), port, clients=6, max_seconds=120) as load:
            holder = start(a, "apply", v2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                lock = run(b, "lock", "status", "--json")
                if '"pid"' in lock.stdout and str(holder.pid) in lock.stdout:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"the first controller never held the lease: {lock.stdout}")
            held = run(b, "reconcile", v2)
            assert held.returncode == 75, held.stdout + held.stderr
            assert str(holder.pid) in held.stderr
            holder.send_signal(signal.SIGKILL)
            holder.communicate(timeout=10)
            killed_at = time.monotonic()
            out = run(b, "reconcile", "--wait", "60s", v2)
            waited = time.monotonic() - killed_at
            time.sleep(0.5)
        assert out.returncode == 0, out.stdout + out.stderr
        assert waited < 40, "the lease expired (ttl 5 s) and the second controller went on"
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        reps = replicas(env, name)
        assert [r["image"] for r in reps] == ["fleet.local/demo:v2"] * 3 and no_duplicates(reps)
        revs = history(b, name)
        assert revs == history(a, name)
        assert revs[-1]["image"] == "fleet.local/demo:v2" and revs[-1]["outcome"] == "succeeded"
        assert all(r["outcome"] != "in-progress" for r in revs)
    finally:
        run(a, "destroy", name, "--wait", "60s")


def test_paused_replicas_are_replaced_before_any_is_stopped(lab, env):
    name, port = "sf-pause", 19523
    a = env["env"]
    paused: list[tuple[str, str]] = []
    try:
        assert run(a, "apply", playbook(env, name, port, replicas=2)).returncode == 0
        pb = playbook(env, name, port, replicas=2)
        for node in lab.workers():
            paused += [(node, t) for t in tasks(lab, node, name)]
        assert len(paused) == 2
        for node, task in paused:
            freeze(lab, node, task)
        rec = start(a, "reconcile", "--json", pb)
        # A second actor at work: cron on another controller reconciles too; it waits for the lease.
        time.sleep(1.0)
        other = start(env["env_b"], "reconcile", "--wait", "90s", pb)
        # Long enough for reconcile to judge them (interval 1 s x failure_threshold 2, 1 s timeouts), and until a
        # replacement is routed: only a replacement can answer through the LB while both old replicas are frozen.
        # Resumed before that (a fixed 7 s on a loaded machine), the old replicas are still DOWN in HAProxy until their
        # rise checks pass, and the LB answers 503 meanwhile whatever fleet does.
        time.sleep(7.0)
        wait_until(lambda: serves(lb_address(lab), port), 60, 0.2, "a replacement to answer through the LB")
        for node, task in paused:
            freeze(lab, node, task, signal.SIGCONT)
        resumed = time.time()
        with Load(lb_address(lab), port, clients=4, max_seconds=90) as load:
            out, err = rec.communicate(timeout=120)
            other_out, other_err = other.communicate(timeout=120)
            time.sleep(0.5)
        assert rec.returncode == 0, out + err
        assert other.returncode == 0, other_out + other_err
        assert [f for f in load.result.failures if f[0] >= resumed] == [], load.result.errors
        events = [json.loads(line) for line in out.splitlines() if line.startswith('{"event"')]
        ready_at = [i for i, e in enumerate(events) if e["event"] == "ready"]
        stops = [i for i, e in enumerate(events) if e["event"] == "stop"]
        assert len(stops) == 2 and len(ready_at) == 2, (out, err)
        # Surge-first: each stop of a failing replica comes after a replacement became ready.
        assert all(sum(1 for r in ready_at if r < s) >= k + 1 for k, s in enumerate(stops)), events
        reps = replicas(env, name)
        assert len(reps) == 2 and no_duplicates(reps) and all(r["running"] for r in reps)
        assert not {t for _, t in paused} & {r["id"] for r in reps}, "the frozen ones were replaced"
    finally:
        for node, task in paused:
            freeze(lab, node, task, signal.SIGCONT)
        run(a, "destroy", name, "--wait", "60s")


def test_reconcile_keeps_a_waiting_canary_abort_rollback_and_failed_revisions(lab, env):
    name, port = "sf-keep", 19524
    a, b = env["env"], env["env_b"]
    canary = "{strategy: canary, canary: {steps: [25], pause: 1s, auto_promote: false}}"
    v1 = playbook(env, name, port, replicas=3)
    v2c = playbook(env, name, port, "v2", replicas=3, update=canary)
    try:
        assert run(a, "apply", v1).returncode == 0
        with Load(lb_address(lab), port, clients=4, max_seconds=150) as load:
            out = run(a, "apply", v2c)
            assert out.returncode == 0 and "waits" in out.stdout, out.stdout + out.stderr
            before = sorted((r["id"], r["image"]) for r in replicas(env, name))
            weights = _weights(lab, name)
            for _ in range(3):
                rec = run(b, "reconcile", v2c)
                assert rec.returncode == 0, rec.stdout + rec.stderr
            assert sorted((r["id"], r["image"]) for r in replicas(env, name)) == before, "canary kept as it was"
            assert _weights(lab, name) == weights
            assert history(b, name)[-1]["outcome"] == "in-progress"
            # abort stands: reconcile with the same playbook does not try the canary again.
            assert run(b, "abort", name).returncode == 0
            rec = run(a, "reconcile", v2c)
            assert rec.returncode == 0 and "not retried" in rec.stdout, rec.stdout + rec.stderr
            assert {r["image"] for r in replicas(env, name)} == {"fleet.local/demo:v1"}
            # rollback stands: v2 applied, rolled back to revision 1, reconcile keeps revision 1's spec.
            v2 = playbook(env, name, port, "v2", replicas=3)
            assert run(a, "apply", v2).returncode == 0
            assert run(a, "rollback", name, "--to", "1").returncode == 0
            rec = run(b, "reconcile", v2)
            assert rec.returncode == 0, rec.stdout + rec.stderr
            assert {r["image"] for r in replicas(env, name)} == {"fleet.local/demo:v1"}
            # A failed revision is not retried by reconcile until the playbook changes again.
            bad = playbook(env, name, port, "v2", replicas=3, extra_env={"DEMO_HEALTH": "fail"},
                           update="{max_surge: 1, max_unavailable: 0, ready_deadline: 4s}")
            assert run(a, "apply", bad).returncode == 1
            count = len(history(a, name))
            started = time.monotonic()
            rec = run(b, "reconcile", bad)
            assert rec.returncode == 0 and "not retried" in rec.stdout, rec.stdout + rec.stderr
            assert time.monotonic() - started < 15, "nothing was started"
            assert len(history(a, name)) == count
            time.sleep(0.5)
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        assert {r["image"] for r in replicas(env, name)} == {"fleet.local/demo:v1"}
        # Quiet when nothing changed: a healthy, accepted service prints nothing.
        assert run(a, "apply", v1).returncode == 0
        rec = run(b, "reconcile", v1)
        assert rec.returncode == 0 and rec.stdout.strip() == "", rec.stdout
    finally:
        run(a, "destroy", name, "--wait", "60s")


def test_frozen_containerd_on_one_worker_degrades_apply_not_the_others(lab, env):
    name, port = "sf-frozen", 19525
    a = env["env"]
    frozen = "n3"
    pid = _read_pid(f"{node_dir(lab.lab.cfg, lab.lab.node(frozen))}/containerd.pid")
    assert pid
    try:
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        out = run(a, "apply", playbook(env, name, port, replicas=3), timeout=150)
        took = time.monotonic() - started
        assert out.returncode == 1, out.stdout + out.stderr
        assert frozen in out.stdout + out.stderr
        assert took < 90, f"apply took {took:.0f}s"
        reps = replicas(env, name)
        assert len(reps) == 3 and frozen not in {r["node"] for r in reps}
        nodes = run(a, "nodes", "--json", timeout=60)
        assert nodes.returncode == 1
        status = {r["name"]: r["status"] for r in json.loads(nodes.stdout)["nodes"]}
        assert status[frozen] == "runtime not answering", status
        assert all(st == "ready" for name, st in status.items() if name != frozen), status
    finally:
        os.kill(pid, signal.SIGCONT)
        run(a, "destroy", name, "--wait", "60s")


def test_destroy_with_a_node_down_finishes_when_it_returns_and_never_resurrects(lab, env):
    name, port = "sf-gone", 19526
    a, b = env["env"], env["env_b"]
    pb = playbook(env, name, port, replicas=3)
    try:
        assert run(a, "apply", pb).returncode == 0
        on_n3 = [r["id"] for r in replicas(env, name) if r["node"] == "n3"]
        assert on_n3, "spread over the three workers"
        lab.lab.stop_sshd("n3")
        try:
            out = run(a, "destroy", name, "--grace", "2")
            assert out.returncode == 1, out.stdout + out.stderr
            assert "n3" in out.stdout and "removed when it answers again" in out.stdout
            # A reconcile while n3 is still away does not bring the service back on n1/n2.
            rec = run(b, "reconcile", pb)
            assert rec.returncode == 1 and "n3" in rec.stdout + rec.stderr, rec.stdout + rec.stderr
            assert {r["node"] for r in replicas(env, name)} <= {"n3"}
        finally:
            lab.lab.start_sshd("n3")
        assert tasks(lab, "n3", name) == on_n3, "its replica kept running while it was unreachable"
        rec = run(b, "reconcile", pb)
        assert rec.returncode == 0, rec.stdout + rec.stderr
        assert tasks(lab, "n3", name) == [] and replicas(env, name) == []
        # Destroyed stays destroyed for reconcile; `apply` brings it back.
        assert run(b, "reconcile", pb).returncode == 0 and replicas(env, name) == []
        assert run(a, "apply", pb).returncode == 0 and len(replicas(env, name)) == 3
    finally:
        run(a, "destroy", name, "--wait", "60s")


def test_exec_health_runs_inside_the_container_and_a_failing_one_is_rolled_back(lab, env):
    name, port = "sf-exec", 19527
    a = env["env"]
    good = '{exec: [sh, -c, "wget -q -O /dev/null http://127.0.0.1:$PORT/healthz"], interval: 1s, timeout: 2s}'
    pb = Path(env["dir"]) / f"{name}.yaml"

    def write(version: str, check: str) -> str:
        pb.write_text(f"""services:
  {name}:
    image: fleet.local/demo:{version}
    replicas: 2
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {check}
    lb: {{port: {port}}}
    stop_grace_period: 3s
    update: {{max_surge: 1, max_unavailable: 0, ready_deadline: 6s, min_ready: 1s}}
""")
        return str(pb)

    try:
        out = run(a, "apply", write("v1", good))
        assert out.returncode == 0, out.stdout + out.stderr
        with Load(lb_address(lab), port, clients=4, max_seconds=60) as load:
            out = run(a, "apply", write("v2", "{exec: [\"false\"], interval: 1s, timeout: 2s}"))
            time.sleep(0.5)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "rolled back to revision 1" in out.stdout and "exit" in out.stdout, out.stdout
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        assert {r["image"] for r in replicas(env, name)} == {"fleet.local/demo:v1"}
    finally:
        run(a, "destroy", name, "--wait", "60s")


def test_lb_port_taken_on_the_lb_node_is_refused_before_anything_changes(lab, env):
    name = "sf-port"
    a = env["env"]
    pb = playbook(env, name, 22)  # sshd listens on 22 on lb1
    try:
        for cmd in ("plan", "apply"):
            out = run(a, cmd, pb)
            assert out.returncode == 2, out.stdout + out.stderr
            assert "lb.port 22 is already in use on lb1 (not by fleet's HAProxy)" in out.stderr, out.stderr
            assert "Traceback" not in out.stderr
        assert replicas(env, name) == [], "nothing was started"
    finally:
        run(a, "destroy", name, "--wait", "60s")
