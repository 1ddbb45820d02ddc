"""Bin packing on measured use, on the real lab: each node is its own memory cgroup, so a foreign process started
over SSH on one node counts on that node only; new replicas go elsewhere, and a rejection names the figure."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_fleet

from fleet.core import labels as L
from fleet.image.demo import build_demo
from fleet.lab import render
from fleet.lab.lab import Lab
from fleet.lab.render import LabConfig
from fleet.transport import Pool

pytestmark = pytest.mark.lab
MiB = 1 << 20
HOG = 700  # MiB a foreign process holds on n2 (a 1 GiB node)


def cli(lab: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=lab.inventory_path, columns=250, timeout=timeout)


def nodes_json(lab: Any) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in json.loads(cli(lab, "nodes", "--json").stdout)["nodes"]}


async def on_node(lab: Any, name: str, argv: list[str]) -> str:
    async with Pool() as pool:
        r = await pool.run(lab.inventory.node(name), argv, timeout=15)
    assert r.exit_status == 0, r.stderr
    return r.stdout


def playbook(tmp_path: Path, name: str, image: str, replicas: int) -> str:
    path = tmp_path / f"{name}-{replicas}.yaml"
    path.write_text(yaml.safe_dump({"services": {name: {
        "image": image, "replicas": replicas, "resources": {"cpu": 0.05, "memory": "300MiB"},
        "health": {"http": "/healthz", "interval": "500ms", "timeout": "1s"}, "stop_grace_period": "1s"}}}))
    return str(path)


def test_foreign_process_on_a_node_keeps_new_replicas_off_it(lab, tmp_path):
    archive = build_demo(f"ms{L.random_suffix(6)}", tmp_path / "demo.tar")
    assert cli(lab, "image", "push", archive.path).returncode == 0
    name = "ms-web"
    before = nodes_json(lab)["n2"]
    assert before["measured"]["scope"] == "cgroup" and before["measured"]["memory_total"] == 1 << 30
    # Over SSH, so the process runs in n2's cgroup: it allocates (and touches) HOG MiB, then sleeps.
    hog = f"import time; b = bytearray({HOG} << 20); open('/tmp/ms-hog', 'w').write('1'); time.sleep(120)"
    pid = asyncio.run(on_node(lab, "n2", ["sh", "-c", f"rm -f /tmp/ms-hog; nohup python3 -c \"{hog}\" "
                                          ">/dev/null 2>&1 & echo $!"])).strip()
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists("/tmp/ms-hog") and time.monotonic() < deadline:
            time.sleep(0.1)
        nodes = nodes_json(lab)
        n2, n3 = nodes["n2"]["measured"], nodes["n3"]["measured"]
        assert n2["memory_used"] > HOG * MiB, n2
        assert n2["others"]["memory"] > HOG * MiB
        assert n3["memory_used"] < 200 * MiB, "the process counts on n2 only"
        out = cli(lab, "apply", playbook(tmp_path, name, archive.name, 3))
        assert out.returncode == 0, out.stdout + out.stderr
        ps = json.loads(cli(lab, "ps", "--json").stdout)["containers"]
        placed = sorted(c["node"] for c in ps if c.get("service") == name)
        assert len(placed) == 3 and "n2" not in placed, placed
        nodes = nodes_json(lab)
        for node in ("n1", "n3"):
            assert nodes[node]["requested"]["memory"] == placed.count(node) * 300 * MiB
        assert nodes["n2"]["requested"]["memory"] == 0
        # More than fits: nothing changes, and n2's rejection names what is in use there.
        too_many = cli(lab, "plan", "--json", playbook(tmp_path, name, archive.name, 12))
        rejected = json.loads(too_many.stdout)["rejected"]
        assert "in use by other processes" in rejected["n2"], rejected
        refused = cli(lab, "apply", playbook(tmp_path, name, archive.name, 12))
        assert refused.returncode != 0 and "n2: ms-web: memory: needs 300 MiB" in refused.stderr + refused.stdout
    finally:
        asyncio.run(on_node(lab, "n2", ["sh", "-c", f"kill {pid}; rm -f /tmp/ms-hog"]))
        cli(lab, "destroy", name)


def test_down_removes_node_cgroups_a_crashed_run_left(tmp_path):
    """A leftover node cgroup (with a child and a live process in it) is killed and removed by prefix, without the
    lab's record; the next `up` would find nothing in its way."""
    cfg = LabConfig(prefix="msx", subnet="10.242.250.0/24", root=str(tmp_path))
    left = f"{render.MEMORY_HIERARCHY}/{render.CGROUP_ROOT}/msx/n7"
    os.makedirs(f"{left}/fleet/c1")
    proc = subprocess.Popen(["sh", "-c", f'echo $$ >{left}/fleet/c1/cgroup.procs && exec sleep 60'])
    try:
        deadline = time.monotonic() + 5
        while not Path(f"{left}/fleet/c1/cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.02)
        Lab(cfg).down()
        assert proc.wait(timeout=10) == -9
        assert not os.path.exists(f"{render.MEMORY_HIERARCHY}/{render.CGROUP_ROOT}/msx")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
