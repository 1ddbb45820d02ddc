"""Jobs on the real lab: a migration hook that writes to a volume runs once before a rollout, a failing hook
stops the rollout with nothing changed, a job that fails twice succeeds on its third try and `fleet job run`
exits with the job's status, and a job scheduled every minute runs exactly once per slot under two watchers and
a cron `fleet reconcile` (on a clock sped up six times by libfaketime: five slots in about 50 s).

One service of two replicas behind HAProxy on lb1 serves under GET load through every hook and job run: not one
request may fail. Every watcher is a subprocess of this test, stopped by its PID."""

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
from helpers import demo_env, run_fleet, start_fleet
from loadgen import Load

from fleet.node.paths import DEFAULT as PATHS

pytestmark = pytest.mark.lab

WEB, PORT = "jb-web", 19571
V1, V2 = "fleet.local/demo:v1", "fleet.local/demo:v2"
# Each run appends a line (its revision, the service's env, its config file) to the job's named volume and prints
# the whole file.
MIGRATE = ('echo "migrated $FLEET_REVISION $IMAGE_NOTE $(cat /etc/migrate.conf)" >> /data/migrations.log; '
           'cat /data/migrations.log')
# Fails on its first two tries (the count kept in its volume), succeeds on the third.
FLAKY = 'n=$(cat /state/n 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > /state/n; echo "try $n"; [ "$n" -ge 3 ]'


def playbook(d: Path, image: str, hook: str) -> str:
    f = d / "jobs.yaml"
    f.write_text(f"""services:
  {WEB}:
    image: {image}
    replicas: 2
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {{http: /healthz, interval: 1s, timeout: 1s, failure_threshold: 2}}
    lb: {{port: {PORT}}}
    env: {{IMAGE_NOTE: "{image}"}}
    before_deploy: {hook}
    stop_grace_period: 3s
    update: {{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 1s}}
jobs:
  jb-migrate:
    image: {V1}
    command: [sh, -c, '{MIGRATE}']
    resources: {{cpu: 0.05, memory: 16MiB}}
    volumes: [{{type: volume, source: data, target: /data}}]
    configs: [{{target: /etc/migrate.conf, content: "schema=2"}}]
  jb-fail:
    image: {V1}
    command: [sh, -c, 'echo "no such table: users" >&2; exit 7']
    resources: {{cpu: 0.05, memory: 16MiB}}
  jb-flaky:
    image: {V1}
    command: [sh, -c, '{FLAKY}']
    resources: {{cpu: 0.05, memory: 16MiB}}
    volumes: [{{type: volume, source: state, target: /state}}]
    retries: 2
    backoff: 200ms
    deadline: 30s
  jb-slow:
    image: {V1}
    command: [sh, -c, 'echo started; exec sleep 60']
    resources: {{cpu: 0.05, memory: 16MiB}}
    deadline: 2s
    stop_grace_period: 1s
  jb-pair:
    image: {V1}
    command: [sh, -c, 'echo "container $FLEET_REPLICA"']
    resources: {{cpu: 0.05, memory: 16MiB}}
    parallelism: 2
  jb-tick:
    image: {V1}
    command: [sh, -c, 'echo tick']
    resources: {{cpu: 0.05, memory: 16MiB}}
    schedule: "* * * * *"
""")
    return str(f)


@pytest.fixture(scope="module")
def env(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Demo images v1 and v2 on every worker; the service at v1 (its hook run once); destroyed at the end."""
    d = tmp_path_factory.mktemp("jobs")
    e = demo_env(lab.inventory_path, d)
    e.update(lab=lab, lb=lab.inventory.node("lb1").address)
    out = fleet(e, "apply", playbook(d, V1, "jb-migrate"))
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        yield e
    finally:
        fleet(e, "destroy", WEB)


def fleet(e: dict[str, Any], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=e["env"], timeout=timeout)


def runs(e: dict[str, Any], job: str) -> list[dict[str, Any]]:
    out = fleet(e, "job", "ls", job, "--json", "--last", "1000")
    assert out.returncode == 0, out.stdout + out.stderr
    return list(json.loads(out.stdout))


def replicas(e: dict[str, Any]) -> dict[str, str]:
    doc = json.loads(fleet(e, "status", "--json").stdout)
    svc = next((s for s in doc["services"] if s["service"] == WEB), {"replicas": []})
    return {r["id"]: r["image"] for r in svc["replicas"]}


def etcd_keys(e: dict[str, Any], prefix: str) -> list[str]:
    out = e["lab"].lab.exec_in("n1", ["etcdctl", "--endpoints=127.0.0.1:2379", "get", "--prefix", "--keys-only",
                                      prefix])
    return [k for k in out.stdout.split() if k]


def test_migration_hook_runs_once_before_the_rollout_under_load(env: dict[str, Any]) -> None:
    (first,) = runs(env, "jb-migrate")  # the fixture's apply ran it once, for revision 1
    assert (first["trigger"], first["service"], first["revision"], first["status"]) == (
        "before_deploy", WEB, 1, "succeeded")
    with Load(env["lb"], PORT, clients=4, max_seconds=90) as load:
        time.sleep(0.5)
        out = fleet(env, "apply", playbook(env["dir"], V2, "jb-migrate"))
    r = load.result
    print(f"\nrequests ok {r.ok}, failed {r.failed}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert r.failed == 0 and r.ok > 20, (r.errors, r.failures[:5])
    hooks = runs(env, "jb-migrate")
    assert [(h["revision"], h["status"]) for h in hooks] == [(1, "succeeded"), (2, "succeeded")]
    second = hooks[-1]
    # It ran with the new revision's image and the service's env, before any replica of revision 2 started.
    assert second["image"] == V2 and second["finished_at"] is not None
    node = second["attempts"][-1]["node"]
    text = env["lab"].lab.exec_in(node, ["cat", f"{PATHS.volume('jb-migrate', 'data')}/migrations.log"]).stdout
    assert text.splitlines() == [f"migrated 1 {V1} schema=2", f"migrated 2 {V2} schema=2"]
    assert set(replicas(env).values()) == {V2}
    logs = fleet(env, "job", "logs", "jb-migrate")
    assert logs.returncode == 0 and f"migrated 2 {V2} schema=2" in logs.stdout, logs.stdout + logs.stderr


def test_failing_hook_stops_the_rollout_with_nothing_changed(env: dict[str, Any]) -> None:
    before = replicas(env)
    with Load(env["lb"], PORT, clients=4, max_seconds=60) as load:
        out = fleet(env, "apply", playbook(env["dir"], V1, "jb-fail"))
    r = load.result
    assert out.returncode == 1, out.stdout + out.stderr
    assert "before_deploy job jb-fail failed" in out.stdout and "no such table: users" in out.stdout
    assert r.failed == 0 and r.ok > 0, (r.errors, r.failures[:5])
    assert replicas(env) == before, "no replica was started or stopped"
    hist = fleet(env, "history", WEB, "--json")
    last = json.loads(hist.stdout)[-1]
    assert last["outcome"] == "failed" and "before_deploy job jb-fail failed" in last["reason"]
    (failed,) = runs(env, "jb-fail")
    assert (failed["status"], failed["exit_status"]) == ("failed", 7)


def test_job_fails_twice_then_succeeds_and_run_exits_with_its_status(env: dict[str, Any]) -> None:
    with Load(env["lb"], PORT, clients=4, max_seconds=60) as load:
        ok = fleet(env, "job", "run", "jb-flaky", "-f", str(env["dir"] / "jobs.yaml"))
        bad = fleet(env, "job", "run", "jb-fail", "-f", str(env["dir"] / "jobs.yaml"))
        slow = fleet(env, "job", "run", "jb-slow", "-f", str(env["dir"] / "jobs.yaml"))
        pair = fleet(env, "job", "run", "jb-pair", "-f", str(env["dir"] / "jobs.yaml"))
    r = load.result
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines() == ["try 1", "try 2", "try 3"]
    assert bad.returncode == 7 and "no such table: users" in bad.stdout, bad.stdout + bad.stderr
    # Past its deadline a job is stopped (SIGTERM: sleep ignores it as PID 1, so SIGKILL after its grace).
    assert slow.returncode in (137, 143) and slow.stdout == "started\n", slow.stdout + slow.stderr
    # Two containers at once, each placed like a replica (spread: two nodes), their lines prefixed.
    assert pair.returncode == 0 and sorted(pair.stdout.splitlines()) == ["[0] container 0", "[1] container 1"], (
        pair.stdout + pair.stderr)
    (both,) = runs(env, "jb-pair")
    assert len({a["node"] for a in both["attempts"]}) == 2 and both["status"] == "succeeded"
    (killed,) = runs(env, "jb-slow")
    assert "deadline (2s) passed" in killed["reason"] and killed["status"] == "failed"
    assert r.failed == 0 and r.ok > 0, (r.errors, r.failures[:5])
    flaky = runs(env, "jb-flaky")[-1]
    assert flaky["status"] == "succeeded" and [a["exit_status"] for a in flaky["attempts"]] == [1, 1, 0]
    # The containers are gone, their log files kept.
    ps = fleet(env, "ps", "--all", "--json")
    assert "jb-flaky" not in ps.stdout and "jb-fail" not in ps.stdout, ps.stdout
    table = fleet(env, "job", "ls")
    assert table.returncode == 0 and "jb-flaky" in table.stdout and "succeeded" in table.stdout, table.stdout
    logs = fleet(env, "job", "logs", "jb-flaky")
    assert [ln for ln in logs.stdout.splitlines() if ln.startswith("try")] == ["try 1", "try 2", "try 3"]


RATE = 6  # the fake clock's speed: a minute's slot every 10 real seconds


def faketime_env(base: dict[str, str], t0: float) -> dict[str, str]:
    """libfaketime at RATE times the real rate, every process on one fake timeline that started at `t0`: a process
    started at `s` gets the offset (RATE - 1)(s - t0), so its clock reads t0 + RATE (now - t0). Only the wall
    clock is sped (FAKETIME_DONT_FAKE_MONOTONIC): asyncio, timeouts and the leases' renewals keep real time;
    etcd's lease ttls run on the members' own clocks."""
    offset = (RATE - 1) * (time.time() - t0)
    return {**base, "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "FAKETIME": f"+{offset:.3f}s x{RATE}", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}


def test_scheduled_job_runs_once_per_slot_under_two_watchers_and_cron(env: dict[str, Any], tmp_path: Path) -> None:
    pb = playbook(env["dir"], V2, "jb-migrate")  # the accepted revision: reconcile changes no replica
    t0 = time.time()
    procs: list[subprocess.Popen[str]] = []
    logs = []
    try:
        for name in ("a", "b"):
            log = (tmp_path / f"watch-{name}.log").open("w")
            logs.append(log)
            procs.append(start_fleet("watch", "--no-socket", "--no-events", pb, env=faketime_env(env["env"], t0),
                                     stdout=log, stderr=subprocess.STDOUT))
        with Load(env["lb"], PORT, clients=4, max_seconds=120) as load:
            deadline = time.time() + 100
            while time.time() < deadline:
                # `fleet reconcile` from cron, on the same fake clock, about once a (fake) minute.
                out = run_fleet("reconcile", pb, "--wait", "30s", env=faketime_env(env["env"], t0), timeout=120)
                assert out.returncode == 0, out.stdout + out.stderr
                if sum(t["status"] == "succeeded" for t in runs(env, "jb-tick")) >= 5:
                    break
                time.sleep(4)
        r = load.result
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for log in logs:
            log.close()
    watched = "".join((tmp_path / f"watch-{n}.log").read_text()[-2000:] for n in ("a", "b"))
    slots = etcd_keys(env, "/fleet/jobs/jb-tick/slots/")
    ticks = runs(env, "jb-tick")
    ran = [t for t in ticks if t["status"] == "succeeded"]
    print(f"\nslots {len(slots)}: {[s.rsplit('/', 1)[-1] for s in slots]}; runs {len(ticks)} "
          f"({len(ran)} succeeded, by {sorted({t['command'] for t in ticks})}); requests ok {r.ok}, failed {r.failed}")
    for t in ticks:
        print(f"  {t['slot']} {t['status']:9} {t['command'][:40]:40} {t['reason']}")
    assert len(slots) >= 5, watched
    # Every claimed slot was run (or recorded missed) exactly once, by whichever controller claimed it.
    per_slot = [t["slot"] for t in ticks]
    assert sorted(per_slot) == sorted(set(per_slot)), "a slot ran twice"
    assert {s.rsplit("/", 1)[-1] for s in slots} == set(per_slot)
    # A slot is missed only when the next one came before any controller could run it (catch_up: last runs the
    # newest late): at RATE times the speed a fake minute is 60/RATE real seconds, and the controllers share one
    # lease; a run the watchers' SIGTERM cut short is recorded failed (interrupted), its container removed.
    assert len(ran) >= 5 and all(t["exit_status"] == 0 for t in ran)
    assert "jb-tick" not in fleet(env, "ps", "--all", "--json").stdout, "no run left a container behind"
    assert r.failed == 0, (r.errors, r.failures[:5])
