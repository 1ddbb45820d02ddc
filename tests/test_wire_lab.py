"""The watcher's socket on the lab: what real nodes answered (facts, containers, HAProxy's view) goes through the
JSON codec and comes back as the direct reads give it, so one-shot commands really use the watcher."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import run_fleet

from fleet.api import Fleet
from fleet.core import labels as L
from fleet.image.demo import build_demo
from fleet.transport import Pool, warm
from fleet.watch.server import serving

pytestmark = pytest.mark.lab


def fleet(lab, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env={**os.environ, "FLEET_INVENTORY": lab.inventory_path}, columns=200, timeout=120)


async def test_real_reads_come_through_the_watchers_socket_as_json(lab, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLEET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("FLEET_NO_WATCHER", raising=False)
    archive = build_demo(f"wire{L.random_suffix(6)}", str(tmp_path / "demo.tar"))
    assert fleet(lab, "image", "push", archive.path).returncode == 0
    book = tmp_path / "wire.yaml"
    book.write_text(f"services:\n  wire:\n    image: {archive.name}\n    replicas: 2\n"
                    "    resources: {cpu: 0.05, memory: 32MiB}\n    lb: {port: 8099}\n")
    try:
        out = fleet(lab, "apply", str(book))
        assert out.returncode == 0, out.stdout + out.stderr
        async with Pool() as pool:
            direct = Fleet(lab.inventory, pool)
            async with serving(direct, lambda event, **f: None):
                nodes = await warm.ask(lab.inventory_path, "nodes")
                status = await warm.ask(lab.inventory_path, "status")
                ps = await warm.ask(lab.inventory_path, "ps", all=True)
            assert nodes is not None and status is not None and ps is not None, "every read went through the socket"
            assert [(r.node, r.status, r.facts.hostname) for r in nodes] == [
                (r.node, r.status, r.facts.hostname if r.facts else None) for r in await direct.nodes()]
            [svc] = [s for s in status.services if s.name == "wire"]
            assert svc.running == 2 and svc.endpoints and all(r.lb_health for r in svc.replicas)
            assert sorted(r.info.id for r in ps.rows) == sorted(r.info.id for r in (await direct.ps(all=True)).rows)
            assert sum(1 for r in ps.rows if r.service == "wire") == 2
    finally:
        fleet(lab, "destroy", "wire", "--grace", "1")
