"""Per-service load balancer settings, `fleet restart` and `fleet deploy --image` on the real lab, under load.

One service of three replicas behind HAProxy on lb1, with bounded HTTP GET load through it for every change:
replicas SIGKILLed (by the PID of their task, as `ctr tasks ls` gives it; nodes share the host's PID namespace)
fail no request now that GETs are retried on another replica; a restart replaces every replica, surge first;
a deploy from CI rolls a new image that reconcile keeps and `plan` shows as drift. Not one request may fail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_fleet
from loadgen import Load

from fleet.engine.lb import ADMIN_SOCKET
from fleet.image.demo import build_demo
from fleet.node.haproxy.render import show_stat
from fleet.node.haproxy.stats import parse_show_stat
from fleet.node.runtime.ctr import CtrDriver

pytestmark = pytest.mark.lab

NAME, PORT = "lbs-web", 19561
V1, V2 = "fleet.local/demo:v1", "fleet.local/demo:v2"


@pytest.fixture(scope="module")
def env(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Demo images v1 and v2 on every worker, a private history, and the service applied at v1 (destroyed
    after the module's tests)."""
    d = tmp_path_factory.mktemp("lbsettings")
    environ = {**os.environ, "FLEET_STATE_DIR": str(d / "state"), "FLEET_INVENTORY": lab.inventory_path,
               "FLEET_LEASE_TTL": "5"}
    for v in ("v1", "v2"):
        img = build_demo(v, str(d / f"demo-{v}.tar"))
        out = run_fleet("image", "push", img.path, env=environ, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    pb = d / "web.yaml"
    pb.write_text(f"""services:
  {NAME}:
    image: {V1}
    replicas: 3
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {{http: /healthz, interval: 1s, timeout: 1s, failure_threshold: 2}}
    placement: {{spread_by: zone}}
    lb:
      port: {PORT}
      retries: 2
      timeouts: {{server: 10s, tunnel: 2m}}
      maintenance: "{NAME} is down for maintenance"
    stop_grace_period: 5s
    update: {{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 1s}}
""")
    e = {"env": environ, "dir": d, "playbook": str(pb), "lb": lab.inventory.node("lb1").address}
    out = fleet(e, "apply", str(pb))
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        yield e
    finally:
        fleet(e, "destroy", NAME)


def fleet(env: dict[str, Any], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=env["env"], timeout=timeout)


def replicas(env: dict[str, Any]) -> list[dict[str, Any]]:
    doc = json.loads(fleet(env, "status", "--json").stdout)
    svc = next((s for s in doc["services"] if s["service"] == NAME), {"replicas": []})
    return list(svc["replicas"])


def task_pids(lab: Any) -> list[tuple[str, str, int]]:
    """(node, task, PID) of every running task of the service, as `ctr tasks ls` lists them on each worker."""
    out = []
    for node in lab.workers():
        ns = lab.inventory.node(node).namespace
        lines = lab.lab.exec_in(node, ["ctr", "-n", ns, "tasks", "ls"]).stdout.splitlines()[1:]
        out += [(node, cols[0], int(cols[1])) for cols in (ln.split() for ln in lines)
                if len(cols) >= 3 and cols[0].startswith(f"{NAME}-") and cols[2] == "RUNNING"]
    return out


def retried(lab: Any) -> int:
    """Retries and redispatches HAProxy on lb1 counted for the service's servers (read without SSH)."""
    out = lab.lab.exec_in("lb1", ["sh", "-c", f"echo '{show_stat()}' | socat stdio unix-connect:{ADMIN_SOCKET}"])
    return sum(row.wretr + row.wredis for row in parse_show_stat(out.stdout) if row.proxy == f"be_{NAME}")


def test_replicas_sigkilled_under_get_load_fail_no_request(lab: Any, env: dict[str, Any]) -> None:
    killed: list[str] = []
    before = retried(lab)
    with Load(env["lb"], PORT, clients=6, max_seconds=60) as load:
        time.sleep(1.0)
        for _ in range(2):
            _, task, pid = next(t for t in sorted(task_pids(lab)) if t[1] not in killed)
            os.kill(pid, signal.SIGKILL)
            killed.append(task)
            time.sleep(3.0)  # HAProxy's check (1 s, 2 failures) takes it out meanwhile; retries cover the gap
    r = load.result
    retries = retried(lab) - before
    print(f"\nkilled {killed}; requests ok {r.ok}, failed {r.failed} {r.errors}; HAProxy retries {retries}")
    assert len(set(killed)) == 2 and r.ok > 100
    assert r.failed == 0, (r.errors, r.failures[:5])
    assert retries > 0, "the requests the killed replicas had or were sent were tried again elsewhere"
    out = fleet(env, "reconcile", env["playbook"])  # the killed replicas back (containerd may have restarted them)
    assert out.returncode == 0, out.stdout + out.stderr


def test_restart_replaces_every_replica_surge_first_under_load(env: dict[str, Any]) -> None:
    before = {r["id"] for r in replicas(env)}
    assert len(before) == 3
    with Load(env["lb"], PORT, clients=6, max_seconds=120) as load:
        time.sleep(0.5)
        started = time.monotonic()
        out = fleet(env, "restart", NAME)
        took = time.monotonic() - started
        time.sleep(0.5)
    assert out.returncode == 0, out.stdout + out.stderr
    r = load.result
    print(f"\nrestart took {took:.1f} s; requests ok {r.ok}, failed {r.failed} {r.errors}")
    assert r.failed == 0, (r.errors, r.failures[:5])
    after = replicas(env)
    assert len(after) == 3 and all(x["running"] for x in after) and not {x["id"] for x in after} & before
    assert {x["image"] for x in after} == {V1}
    last = json.loads(fleet(env, "history", NAME, "--json").stdout)[-1]
    assert last["outcome"] == "succeeded" and last["reason"].startswith("restart of revision")


def test_deploy_from_ci_is_kept_by_reconcile_and_shown_as_drift(env: dict[str, Any]) -> None:
    with Load(env["lb"], PORT, clients=6, max_seconds=120) as load:
        time.sleep(0.5)
        started = time.monotonic()
        out = fleet(env, "deploy", NAME, "--image", V2)
        took = time.monotonic() - started
        kept = fleet(env, "reconcile", env["playbook"])
        time.sleep(0.5)
    assert out.returncode == 0, out.stdout + out.stderr
    assert kept.returncode == 0, kept.stdout + kept.stderr
    r = load.result
    print(f"\ndeploy took {took:.1f} s; requests ok {r.ok}, failed {r.failed} {r.errors}; versions {r.versions}")
    assert r.failed == 0, (r.errors, r.failures[:5])
    assert r.versions.get("v1", 0) > 0 and r.versions.get("v2", 0) > 0
    assert {x["image"] for x in replicas(env)} == {V2}, "reconcile of the unchanged playbook kept the deploy"
    plan = fleet(env, "plan", env["playbook"])
    text = " ".join(plan.stdout.split())
    assert f"the playbook says {V1}" in text and f"runs {V2}" in text, plan.stdout + plan.stderr
    history = json.loads(fleet(env, "history", NAME, "--json").stdout)
    assert (history[-1]["image"], history[-1]["reason"]) == (V2, f"image {V2} by `fleet deploy`")


def test_the_settings_reach_haproxy_on_the_lb_node(lab: Any, env: dict[str, Any]) -> None:
    out = fleet(env, "lb", "show", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    config = next(c["config"] for c in json.loads(out.stdout) if c["node"] == "lb1")
    backend = config.split(f"\nbackend be_{NAME}\n")[1].split("\n\n")[0]
    for line in ("timeout server 10000ms", "timeout tunnel 120000ms", "retry-on conn-failure empty-response",
                 "disable-l7-retry unless { method GET HEAD OPTIONS }", f'"{NAME} is down for maintenance"'):
        assert line in backend, backend
    assert Path(env["playbook"]).exists()


def test_a_per_node_service_runs_on_every_worker_and_a_stopped_or_removed_replica_is_drained(
        lab: Any, env: dict[str, Any]) -> None:
    # No retries: a replica stopped (`fleet stop`) or removed (`fleet rm`) without its drain would fail the
    # requests in flight to it.
    name, port = "lbs-each", 19562
    pb = Path(env["dir"]) / "each.yaml"
    pb.write_text(f"""services:
  {name}:
    image: {V1}
    replicas: per-node
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {{http: /healthz, interval: 1s, timeout: 1s, failure_threshold: 2}}
    lb: {{port: {port}, retries: 0}}
    stop_grace_period: 2s
""")

    def each(e: dict[str, Any] = env) -> list[dict[str, Any]]:
        doc = json.loads(fleet(e, "status", "--json").stdout)
        return next((s["replicas"] for s in doc["services"] if s["service"] == name), [])

    try:
        out = fleet(env, "apply", str(pb))
        assert out.returncode == 0, out.stdout + out.stderr
        first = each()
        assert sorted(r["node"] for r in first) == sorted(lab.workers()), first
        victim, removed = first[0], first[1]
        with Load(env["lb"], port, clients=6, max_seconds=60) as load:
            time.sleep(1.0)
            stopped = fleet(env, "stop", victim["id"])
            time.sleep(0.5)
            gone = fleet(env, "rm", removed["id"])
            time.sleep(0.5)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert gone.returncode == 0 and f"{removed['id']}: removed" in gone.stdout, gone.stdout + gone.stderr
        r = load.result
        print(f"\nstopped {victim['id']} on {victim['node']}, removed {removed['id']} on {removed['node']}: "
              f"requests ok {r.ok}, failed {r.failed} {r.errors}")
        assert r.ok > 50 and r.failed == 0, (r.errors, r.failures[:5])
        assert not {victim["id"], removed["id"]} & {x["id"] for x in each()}
        listed = json.loads(fleet(env, "ps", "--all", "--json").stdout)["containers"]
        assert not {victim["id"], removed["id"]} & {c["id"] for c in listed}, "stop and rm left no container"
        out = fleet(env, "reconcile", str(pb))
        assert out.returncode == 0, out.stdout + out.stderr
        assert sorted(x["node"] for x in each()) == sorted(lab.workers()), "its node got one back"

        # A worker leaves the inventory: it is looked at no more, its replica no longer routed, the others are not
        # touched. Rebuilt while it is out (its container gone), it joins again and gets its replica back.
        out_node = lab.workers()[-1]
        doc = yaml.safe_load(Path(lab.inventory_path).read_text())
        del doc["nodes"][out_node]
        smaller = Path(env["dir"]) / "without.yaml"
        smaller.write_text(yaml.safe_dump(doc))
        without = {**env, "env": {**env["env"], "FLEET_INVENTORY": str(smaller)}}
        before = {x["node"]: x["id"] for x in each()}
        with Load(env["lb"], port, clients=6, max_seconds=90) as load:
            time.sleep(0.5)
            left = fleet(without, "reconcile", str(pb))
            time.sleep(0.5)
            after_leave = {x["node"]: x["id"] for x in each(without)}
            # Gone as a rebuilt node has it: off containerd's restart monitor, killed and deleted at once.
            gone = lab.lab.exec_in(out_node, ["sh", "-c", CtrDriver(namespace="fleet").remove(before[out_node]).line()],
                                   check=False)
            assert gone.returncode == 0, gone.stderr
            listed = lab.lab.exec_in(out_node, ["ctr", "-n", "fleet", "containers", "ls", "-q"]).stdout.split()
            assert before[out_node] not in listed, listed
            joined = fleet(env, "reconcile", str(pb))
            time.sleep(0.5)
        assert left.returncode == 0 and joined.returncode == 0, left.stdout + left.stderr + joined.stdout
        r = load.result
        print(f"\n{out_node} left and joined again: requests ok {r.ok}, failed {r.failed} {r.errors}")
        assert r.ok > 50 and r.failed == 0, (r.errors, r.failures[:5])
        assert after_leave == {n: i for n, i in before.items() if n != out_node}
        back = {x["node"]: x["id"] for x in each()}
        assert sorted(back) == sorted(lab.workers()) and back[out_node] != before[out_node]
        assert {n: i for n, i in back.items() if n != out_node} == after_leave, "the others were not touched"
    finally:
        fleet(env, "destroy", name)
