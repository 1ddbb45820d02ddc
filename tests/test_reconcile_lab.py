"""Self-healing with `fleet reconcile` on the real lab: a replica that was removed or fails its health check is
replaced, a dead node's replicas are rescheduled and, when it comes back, the second copies are retired."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_fleet

from fleet.core import labels as L
from fleet.image.demo import build_demo

pytestmark = pytest.mark.lab


def cli(lab: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=lab.inventory_path, columns=250, timeout=timeout)


@pytest.fixture(scope="module")
def image(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = build_demo(f"rc{L.random_suffix(6)}", tmp_path_factory.mktemp("img") / "demo.tar")
    out = cli(lab, "image", "push", archive.path)
    assert out.returncode == 0, out.stdout + out.stderr
    return archive.name


def playbook(tmp_path: Path, name: str, image: str, replicas: int, port: int) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"services": {name: {
        "image": image, "replicas": replicas, "resources": {"cpu": 0.05, "memory": "32MiB"},
        "health": {"http": "/healthz", "interval": "500ms", "timeout": "1s", "failure_threshold": 2},
        "update": {"min_ready": "0s"}, "stop_grace_period": "2s", "lb": {"port": port}}}}))
    return str(path)


def replicas(lab: Any, name: str) -> list[dict[str, Any]]:
    doc = json.loads(cli(lab, "ps", "--json", "--all").stdout)
    return sorted((c for c in doc["containers"] if c.get("service") == name), key=lambda c: (c["replica"], c["node"]))


def ctr(lab: Any, node: str, *args: str) -> str:
    return lab.lab.exec_in(node, ["ctr", "-n", "fleet", *args], check=False).stdout


def test_removed_and_unhealthy_replicas_are_replaced(lab, image, tmp_path):
    name = "rc-heal"
    pb = playbook(tmp_path, name, image, 3, 18301)
    try:
        assert cli(lab, "apply", pb).returncode == 0
        before = replicas(lab, name)
        assert len(before) == 3
        # One replica removed behind fleet's back, another one made to fail its check (its page files gone).
        gone, sick = before[0], before[1]
        ctr(lab, gone["node"], "tasks", "kill", "-s", "SIGKILL", gone["id"])
        ctr(lab, gone["node"], "containers", "label", gone["id"], "containerd.io/restart.status=")
        time.sleep(0.5)
        ctr(lab, gone["node"], "tasks", "rm", "-f", gone["id"])
        ctr(lab, gone["node"], "containers", "rm", gone["id"])
        ctr(lab, sick["node"], "tasks", "exec", "--exec-id", "break", sick["id"], "rm", "-f", "/www/healthz")
        plan = cli(lab, "plan", pb)
        assert plan.returncode == 3, plan.stdout
        out = cli(lab, "reconcile", pb)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"stopping {sick['id']}" in out.stdout and "failing its health check" in out.stdout
        after = replicas(lab, name)
        assert sorted(c["replica"] for c in after) == [0, 1, 2]
        assert all(c["status"].startswith("running") for c in after)
        ids = {c["id"] for c in after}
        assert gone["id"] not in ids and sick["id"] not in ids and before[2]["id"] in ids
        assert cli(lab, "plan", pb).returncode == 0
    finally:
        cli(lab, "destroy", name, "--grace", "1")


def test_dead_node_rescheduled_and_stale_copies_retired_when_it_returns(lab, image, tmp_path):
    name = "rc-move"
    pb = playbook(tmp_path, name, image, 3, 18302)
    try:
        assert cli(lab, "apply", pb).returncode == 0
        on_n3 = [c for c in replicas(lab, name) if c["node"] == "n3"]
        assert on_n3, "spread put a replica on n3"
        lab.lab.stop_sshd("n3")
        try:
            out = cli(lab, "reconcile", pb)
            assert out.returncode == 1, "a node did not answer: partial"
            assert "n3" in out.stdout
            live = replicas(lab, name)
            assert len(live) == 3 and all(c["node"] != "n3" for c in live)
        finally:
            lab.lab.start_sshd("n3")
        # n3 is back with its old copies still running: each replica number now runs twice. Reconcile keeps
        # one copy of each, the one on the least crowded node, so the spread over the zones comes back.
        out = cli(lab, "reconcile", pb)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "second copy of rc-move[" in out.stdout
        final = replicas(lab, name)
        assert sorted(c["replica"] for c in final) == [0, 1, 2], final
        assert {c["node"] for c in final} == {"n1", "n2", "n3"}
        assert cli(lab, "plan", pb).returncode == 0
    finally:
        cli(lab, "destroy", name, "--grace", "1")
