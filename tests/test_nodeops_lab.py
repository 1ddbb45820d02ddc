"""Node operations on the real lab: a drain under load through HAProxy, a cordon every controller respects,
labels set by the CLI used by `placement.require`, and a drain that cannot place its replicas elsewhere.

The marks live in the fleet's records on lb1, shared by the whole session's lab: every test puts them back
(uncordon, labels removed) in `finally`."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers import run_fleet
from loadgen import Load
from test_rollout_lab import lb_address
from test_safety_lab import env  # the demo images on every worker, and two controllers with their own state

__all__ = ["env"]

pytestmark = pytest.mark.lab


def fleet(environ: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=environ, timeout=timeout)


def ok(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    out = fleet(environ, *args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def playbook(env, name: str, port: int, replicas: int, placement: str = "{spread_by: zone}") -> str:
    path = Path(env["dir"]) / f"{name}-{time.monotonic_ns()}.yaml"
    path.write_text(f"""services:
  {name}:
    image: fleet.local/demo:v1
    replicas: {replicas}
    resources: {{cpu: 0.05, memory: 32MiB}}
    health: {{http: /healthz, interval: 1s, timeout: 1s, failure_threshold: 2}}
    placement: {placement}
    lb: {{port: {port}}}
    stop_grace_period: 3s
    update: {{max_surge: 1, max_unavailable: 0, ready_deadline: 20s, min_ready: 1s}}
""")
    return str(path)


def where(environ: dict[str, str], name: str) -> list[str]:
    """The nodes of the service's running replicas, sorted."""
    doc = json.loads(ok(environ, "status", "--json").stdout)
    svc = next((s for s in doc["services"] if s["service"] == name), {"replicas": []})
    return sorted(r["node"] for r in svc["replicas"] if r["running"])


def nodes(environ: dict[str, str]) -> dict[str, dict]:
    out = fleet(environ, "nodes", "--json")
    return {n["name"]: n for n in json.loads(out.stdout)["nodes"]}


def test_drain_under_load_moves_every_replica_and_the_node_stays_cordoned_until_uncordon(lab, env):
    name, port = "nd-drain", 19561
    a, b = env["env"], env["env_b"]
    try:
        ok(a, "apply", playbook(env, name, port, replicas=3))
        with Load(lb_address(lab), port, clients=6, max_seconds=90) as load:
            drained = fleet(a, "node", "drain", "n2")
            time.sleep(0.5)
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert "n2 drained (1 replica(s) moved off) and cordoned" in drained.stdout
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        assert load.result.ok > 50
        placed = where(a, name)
        assert "n2" not in placed and len(placed) == 3, placed
        # A second controller (its own state directory) reads the cordon from the fleet.
        seen = nodes(b)
        assert (seen["n2"]["cordoned"], seen["n2"]["draining"]) == (True, False)
        assert (seen["n1"]["cordoned"], seen["n3"]["cordoned"]) == (False, False)
        assert seen["n2"]["node_ops"]["by"] and seen["n2"]["node_ops"]["error"] is None
        # Nothing new goes there, whichever controller places it: a scale-up from the second one spreads over n1, n3.
        ok(b, "apply", playbook(env, name, port, replicas=5))
        placed = where(b, name)
        assert "n2" not in placed and len(placed) == 5, placed
        ok(a, "node", "uncordon", "n2")
        assert nodes(b)["n2"]["cordoned"] is False
        ok(b, "apply", playbook(env, name, port, replicas=6))
        assert where(b, name).count("n2") == 1, "spread fills the empty node first once it is uncordoned"
    finally:
        fleet(a, "node", "uncordon", "n2", "--wait", "60s")
        fleet(a, "destroy", name, "--wait", "60s")


def test_cli_labels_drive_placement_and_a_drain_with_nowhere_to_go_leaves_the_node_cordoned(lab, env):
    name = "nd-ssd"
    a, b = env["env"], env["env_b"]
    try:
        out = ok(a, "node", "label", "n3", "disk=ssd", "--json")
        assert json.loads(out.stdout)["labels"] == {"disk": "ssd", "zone": "c"}
        ok(b, "apply", playbook(env, name, 19562, replicas=2, placement="{require: {disk: ssd}}"))
        assert where(b, name) == ["n3", "n3"], "placement.require uses the label set by the CLI"
        # Only n3 carries disk=ssd: its replicas cannot go elsewhere, so nothing moves and n3 is left cordoned.
        failed = fleet(a, "node", "drain", "n3")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        message = " ".join(failed.stderr.split())
        assert "cannot drain n3" in message and "2 nodes lack label disk=ssd" in message, message
        assert "n3 is draining" in message and "n3 is cordoned; its replicas still run there" in message, message
        assert where(a, name) == ["n3", "n3"]
        seen = nodes(b)["n3"]
        assert (seen["cordoned"], seen["draining"], seen["labels"]) == (True, False, {"disk": "ssd", "zone": "c"})
    finally:
        fleet(a, "node", "uncordon", "n3", "--wait", "60s")
        fleet(a, "node", "label", "n3", "disk-", "--wait", "60s")
        fleet(a, "destroy", name, "--wait", "60s")
    left = nodes(b)
    assert all(not n["cordoned"] and "disk" not in n["labels"] for n in left.values())
    assert all(n["node_ops"]["labels"] == {} and n["node_ops"]["removed"] == [] for n in left.values())
