"""The fleet's shared state in etcd on the real lab (n1 its one record node), against what the file protocol got
wrong: a run stopped past its lease writes nothing after another took over; `fleet lock break` stops a paused
canary at its next step; a controller whose clock is an hour ahead takes and respects the lease and numbers on;
the first run on a fleet with file records imports them with their numbers. HTTP load through lb1 throughout
every change to a serving service, 0 failed requests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import FLEET_CLI, run_fleet, start_fleet
from loadgen import Load
from test_rollout_lab import _weights, lb_address, playbook

from fleet.image.demo import build_demo
from fleet.node.paths import DEFAULT

pytestmark = pytest.mark.lab

TTL = "4"
SLOW = "{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 3s}"
FAKETIME = shutil.which("faketime")


@pytest.fixture(scope="module")
def env(lab, tmp_path_factory):
    """Demo images v1 and v2 on every worker, and two controllers, each with a home and state of its own."""
    d = tmp_path_factory.mktemp("shared")
    controllers = {}
    for who in ("a", "b"):
        (d / f"home-{who}").mkdir()
        controllers[who] = {**os.environ, "FLEET_INVENTORY": lab.inventory_path, "FLEET_LEASE_TTL": TTL,
                            "HOME": str(d / f"home-{who}"), "FLEET_STATE_DIR": str(d / f"state-{who}")}
    for v in ("v1", "v2"):
        img = build_demo(v, str(d / f"demo-{v}.tar"))
        out = run_fleet("image", "push", img.path, env=controllers["a"], timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    return {"a": controllers["a"], "b": controllers["b"], "dir": d}


def run(environ: dict[str, str], *args: str, timeout: float = 180,
        cli: tuple[str, ...] = FLEET_CLI) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=environ, timeout=timeout, cli=cli)


def history(environ: dict[str, str], name: str) -> list[tuple[int, str, str]]:
    out = run(environ, "history", name, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return [(r["revision"], r["image"], r["outcome"]) for r in json.loads(out.stdout)]


def wait_holder(environ: dict[str, str], pid: int | None, within: float = 40) -> dict[str, object]:
    """The holder of the fleet's lease once it is process `pid` (None: whoever takes it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        holder = json.loads(run(environ, "lock", "status", "--json").stdout).get("holder") or {}
        if holder and (pid is None or holder.get("pid") == pid):
            return holder  # type: ignore[no-any-return]
        time.sleep(0.2)
    pytest.fail(f"{pid or 'no one'} never held the fleet's lease")


def fleet_as_left(lab, name: str) -> dict[str, object]:
    """What a run leaves behind: the records, lb1's HAProxy config and every worker's running tasks."""
    tasks = {}
    for node in lab.workers():
        ns = lab.inventory.node(node).namespace
        rows = lab.lab.exec_in(node, ["ctr", "-n", ns, "tasks", "ls"]).stdout.splitlines()[1:]
        tasks[node] = sorted(r.split()[0] for r in rows if r.startswith(f"{name}-") and "RUNNING" in r)
    records = lab.lab.exec_in("n1", ["etcdctl", "--endpoints=127.0.0.1:2379", "get", "--prefix",
                                     f"/fleet/services/{name}/", "-w", "json"]).stdout
    kvs = sorted((kv["key"], kv["value"], kv["mod_revision"]) for kv in json.loads(records).get("kvs", []))
    return {"records": kvs, "haproxy": lab.lab.exec_in("lb1", ["cat", DEFAULT.haproxy.config]).stdout,
            "tasks": tasks}


def test_a_run_stopped_past_its_lease_writes_nothing_after_another_took_over(lab, env):
    name, port = "ss-stop", 19541
    a, b = env["a"], env["b"]
    try:
        assert run(a, "apply", playbook(env, name, port, replicas=3)).returncode == 0
        with Load(lb_address(lab), port, clients=6, max_seconds=150) as load:
            first = start_fleet("apply", playbook(env, name, port, "v2", replicas=3, update=SLOW), env=a)
            wait_holder(b, first.pid)
            time.sleep(2.0)  # mid-rollout: a new replica starting or proving itself ready
            first.send_signal(signal.SIGSTOP)
            try:
                # Past the ttl on etcd's clock, the second controller takes the lease and rolls the service its way.
                second = run(b, "apply", "--wait", "60s", playbook(env, name, port, replicas=2))
                assert second.returncode == 0, second.stdout + second.stderr
                left = fleet_as_left(lab, name)
            finally:
                first.send_signal(signal.SIGCONT)
            out, err = first.communicate(timeout=90)
            time.sleep(1.0)
        assert first.returncode not in (0, None), out + err
        assert "lease" in err, err
        # Nothing the first run did after resuming reached the records, HAProxy or the nodes.
        assert fleet_as_left(lab, name) == left
        assert sum(len(t) for t in left["tasks"].values()) == 2  # type: ignore[union-attr]
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        revs = history(b, name)
        assert revs == history(a, name)
        assert revs[0] == (1, "fleet.local/demo:v1", "succeeded") and revs[1][:2] == (2, "fleet.local/demo:v2")
        assert revs[1][2] != "succeeded"  # the stopped run's revision never finished as its own
    finally:
        run(a, "destroy", name, "--wait", "60s")


def test_lock_break_during_a_canary_pause_stops_the_paused_run_at_its_next_step(lab, env):
    name, port = "ss-can", 19542
    a, b = env["a"], env["b"]
    canary = "{strategy: canary, canary: {steps: [10, 50], pause: 15s, auto_promote: true, max_error_rate_delta: 50}}"
    try:
        assert run(a, "apply", playbook(env, name, port, replicas=3)).returncode == 0
        with Load(lb_address(lab), port, clients=4, max_seconds=120) as load:
            paused = start_fleet("apply", playbook(env, name, port, "v2", replicas=3, update=canary), env=a)
            deadline = time.monotonic() + 60
            while len(set(_weights(lab, name).values())) < 2:  # the first step (10%): weights differ, its pause begun
                assert time.monotonic() < deadline and paused.poll() is None, "the canary never took traffic"
                time.sleep(0.2)
            broke = run(b, "lock", "break", "--yes")  # well inside the first step's pause
            assert broke.returncode == 0 and f"pid {paused.pid}" in broke.stdout, broke.stdout + broke.stderr
            out, err = paused.communicate(timeout=60)
            time.sleep(1.0)
        assert paused.returncode not in (0, None) and "lease" in err, out + err
        assert "50%" not in out + err  # it stopped before its next step
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        # Nothing written after the break: the canary's revision is still the one begun.
        assert history(b, name) == [(1, "fleet.local/demo:v1", "succeeded"), (2, "fleet.local/demo:v2", "in-progress")]
        assert json.loads(run(b, "lock", "status", "--json").stdout)["held"] is False
    finally:
        run(a, "destroy", name, "--wait", "60s")


# A controller that takes the fleet's lease through the API, says so, and gives it back when told (a line on stdin).
HOLDER = r"""
import asyncio, sys
from fleet.api import Fleet
from fleet.config.inventory import load_inventory

async def main(path):
    async with Fleet.connect(load_inventory(path), command="fleet hold") as fleet:
        async with fleet.leased() as lease:
            print("held", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await lease.check()
    print("released", flush=True)

asyncio.run(main(sys.argv[1]))
"""


def hold(environ: dict[str, str], inventory: str, *prefix: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*prefix, sys.executable, "-c", HOLDER, inventory], env=environ, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.communicate(timeout=30)
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0 and "released" in out, out + err


@pytest.mark.skipif(FAKETIME is None, reason="faketime is not installed (apt-get install faketime)")
def test_a_controller_an_hour_ahead_takes_and_respects_the_lease_and_numbers_on(lab, env):
    name, port = "ss-clock", 19543
    a, b = env["a"], env["b"]
    ahead = (str(FAKETIME), "-f", "+1h")
    holders: list[subprocess.Popen[str]] = []
    try:
        assert run(a, "apply", playbook(env, name, port, replicas=1)).returncode == 0
        with Load(lb_address(lab), port, clients=2, max_seconds=120) as load:
            # Held by the controller an hour ahead: the other is refused, and the lease has its ttl left (etcd's
            # clock), not an hour more or less.
            holders.append(hold(b, lab.inventory_path, *ahead))
            refused = run(a, "apply", playbook(env, name, port, "v2", replicas=1))
            assert refused.returncode == 75 and "fleet hold" in refused.stderr, refused.stdout + refused.stderr
            remaining = json.loads(run(a, "lock", "status", "--json").stdout)["holder"]["remaining"]
            assert 0 < remaining <= float(TTL), remaining
            release(holders[-1])
            # And the other way round: it respects a lease taken by a controller on time.
            holders.append(hold(a, lab.inventory_path))
            held = run(b, "reconcile", playbook(env, name, port, replicas=1), cli=(*ahead, *FLEET_CLI))
            assert held.returncode == 75 and "fleet hold" in held.stderr, held.stdout + held.stderr
            release(holders[-1])
            # Revisions number on, whichever clock the controller that records one has.
            for who, version in ((b, "v2"), (a, "v1"), (b, "v2")):
                cli = (*ahead, *FLEET_CLI) if who is b else FLEET_CLI
                out = run(who, "apply", playbook(env, name, port, version, replicas=1), cli=cli)
                assert out.returncode == 0, out.stdout + out.stderr
            time.sleep(1.0)
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        revs = history(a, name)
        assert revs == history(b, name)
        assert [(r[0], r[1]) for r in revs] == [(1, "fleet.local/demo:v1"), (2, "fleet.local/demo:v2"),
                                              (3, "fleet.local/demo:v1"), (4, "fleet.local/demo:v2")]
    finally:
        for proc in holders:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        run(a, "destroy", name, "--wait", "60s")


def _old_revision(name: str, number: int, image: str) -> str:
    return json.dumps({"format": 1, "kind": "revision", "service": name, "revision": number,
                       "spec_hash": f"old{number}", "image": image, "user": "old@ctl", "created_at": 1000.0 + number,
                       "finished_at": 1001.0 + number, "outcome": "succeeded", "reason": "", "spec_json": "{}",
                       "updated_at": 1002.0 + number})


def test_the_first_run_on_file_records_imports_them_with_their_numbers(lab, env):
    name, port = "ss-mig", 19544
    a, b = env["a"], env["b"]
    records = f"{DEFAULT.base}/records"
    marks = json.dumps({"format": 1, "kind": "state", "service": "fleet.nodes", "updated_at": 5.0, "state": {
        "format": 1, "nodes": {"n3": {"labels": {"migrated": "yes"}, "by": "old@ctl", "at": 4.0}}}})
    # A fleet of the former version: its records in files on lb1 (its record node then), no import done yet.
    lab.lab.exec_in("n1", ["etcdctl", "--endpoints=127.0.0.1:2379", "del", "/fleet/migrated"])
    script = (f"mkdir -p {records}/{name} {records}/fleet.nodes && "
              f"printf '%s\\n' \"$1\" > {records}/{name}/rev-1.json && "
              f"printf '%s\\n' \"$2\" > {records}/{name}/rev-2.json && "
              f"printf '%s\\n' \"$3\" > {records}/fleet.nodes/state.json")
    lab.lab.exec_in("lb1", ["sh", "-c", script, "sh", _old_revision(name, 1, "fleet.local/demo:v0"),
                            _old_revision(name, 2, "fleet.local/demo:v1"), marks])
    try:
        out = run(a, "apply", playbook(env, name, port, replicas=1))  # a new service: nothing served before
        assert out.returncode == 0, out.stdout + out.stderr
        assert history(b, name) == [(1, "fleet.local/demo:v0", "succeeded"), (2, "fleet.local/demo:v1", "succeeded"),
                                    (3, "fleet.local/demo:v1", "succeeded")]
        n3 = next(n for n in json.loads(run(b, "nodes", "--json").stdout)["nodes"] if n["name"] == "n3")
        assert n3["labels"].get("migrated") == "yes" and n3["node_ops"]["by"] == "old@ctl", n3
        # The old files are gone once the import was read back.
        gone = lab.lab.exec_in("lb1", ["sh", "-c", f"test -e {records} && echo left || echo gone"]).stdout
        assert gone.strip() == "gone"
    finally:
        run(a, "node", "label", "n3", "migrated-")
        run(a, "destroy", name, "--wait", "60s")
