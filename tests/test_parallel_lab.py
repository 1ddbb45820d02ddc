"""Services converging at once on the real lab: one apply creates three services and rolls a fourth that is
serving through HAProxy, all at the same time, without failing a request of the one serving."""

from __future__ import annotations

import json
import time

import pytest
import test_rollout_lab
from loadgen import Load
from test_fields_lab import lb_config
from test_rollout_lab import fleet, lb_address, playbook

pytestmark = pytest.mark.lab

# The module fixture: demo images v1 and v2 on every worker, a private revision history, FLEET_LEASE_TTL=5.
env = test_rollout_lab.env


def test_four_services_converge_at_once_while_the_serving_one_loses_no_request(lab, env):
    serving, port = "pa-web", 19531
    new = {"pa-a": 19532, "pa-b": 19533, "pa-c": 19534}
    names = [serving, *new]
    try:
        out = fleet(env, "apply", playbook(env, serving, port, replicas=2))
        assert out.returncode == 0, out.stdout + out.stderr
        files = [playbook(env, serving, port, "v2", replicas=2),
                 *(playbook(env, name, p, replicas=2) for name, p in new.items())]
        with Load(lb_address(lab), port, clients=6, max_seconds=90) as load:
            time.sleep(0.5)
            out = fleet(env, "apply", "--json", "--parallel", "4", *files)
            time.sleep(0.5)
        assert out.returncode == 0, out.stdout + out.stderr
        r = load.result
        assert r.failed == 0, (r.errors, r.failures[:5])
        assert r.versions.get("v2", 0) > 0, r.versions

        lines = out.stdout.splitlines()
        events = [json.loads(line) for line in lines if line.startswith('{"event"')]
        outcomes = json.loads("\n".join(line for line in lines if not line.startswith('{"event"')))["outcomes"]
        assert {o["service"]: o["ok"] for o in outcomes} == dict.fromkeys(names, True)
        # At once, not one after another: every service started a replica before any of them was done.
        first_start = {e["service"]: e["at"] for e in reversed(events) if e["event"] == "start"}
        first_done = min(e["at"] for e in events if e["event"] == "done")
        assert set(first_start) == set(names)
        assert max(first_start.values()) < first_done, events

        doc = json.loads(fleet(env, "status", "--json").stdout)
        by_service = {s["service"]: [x for x in s["replicas"] if x["running"]] for s in doc["services"]}
        spots = []
        for name in names:
            reps = by_service[name]
            want = "fleet.local/demo:v2" if name == serving else "fleet.local/demo:v1"
            assert len(reps) == 2 and {x["image"] for x in reps} == {want}, reps
            spots += [(x["node"], x["port"]) for x in reps]
        assert len(set(spots)) == len(spots) == 8, spots
        # Every service's HAProxy backend holds its two replicas: no sync lost another's update.
        config = lb_config(lab).split("\n\n")
        for name in names:
            block = next(b for b in config if b.strip().startswith(f"backend be_{name}"))
            assert len([line for line in block.splitlines() if line.strip().startswith("server ")]) == 2, block
    finally:
        for name in names:
            fleet(env, "destroy", name)
