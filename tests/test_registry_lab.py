"""Registry images are pulled on the node: a real registry (Debian's docker-registry) runs inside lb1, and a
service naming an image in it starts on nodes that never had the image; plain HTTP only where the inventory
says so."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time
import urllib.request

import pytest
import yaml
from helpers import run_fleet

from fleet.core import labels as L
from fleet.image.demo import build_demo

pytestmark = pytest.mark.lab


def fleet(inventory: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=inventory, columns=200, timeout=180)


@pytest.fixture()
def registry(lab, tmp_path):
    """docker-registry serving on lb1's address:5000 from inside lb1's namespaces; stopped by PID."""
    address = lab.inventory.node("lb1").address
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({"version": 0.1, "storage": {"filesystem": {
        "rootdirectory": str(tmp_path / "registry")}}, "http": {"addr": f"{address}:5000"}}))
    holder = (pathlib.Path(lab.lab.cfg.dir) / "nodes" / "lb1" / "holder.pid").read_text().strip()
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(["nsenter", "-t", holder, "-n", "-m", "-u", "--", "docker-registry", "serve",
                             str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            try:
                direct.open(f"http://{address}:5000/v2/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "registry.log").read_text()[-500:]) from None
                time.sleep(0.2)
        yield f"{address}:5000"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_registry_image_pulled_on_nodes_plain_http_only_when_allowed(lab, registry, tmp_path):
    tag = f"rg{L.random_suffix(6)}"
    archive = build_demo(tag, str(tmp_path / "demo.tar"))
    ref = f"{registry}/demo:{tag}"
    assert fleet(lab.inventory_path, "image", "push", archive.path, "--nodes", "n1").returncode == 0
    for argv in (["tag", archive.name, ref], ["push", "--plain-http", ref]):
        out = lab.lab.exec_in("n1", ["ctr", "-n", "fleet", "images", *argv], check=False)
        assert out.returncode == 0, out.stderr
    pb = tmp_path / "pb.yaml"
    pb.write_text(yaml.safe_dump({"services": {"rg-web": {
        "image": ref, "replicas": 2, "resources": {"cpu": 0.05, "memory": "32MiB"},
        "health": {"http": "/healthz", "interval": "500ms"}, "update": {"min_ready": "0s"},
        "placement": {"require": {"zone": "b"}, "strategy": "pack"}}}}))
    try:
        # The lab inventory allows no plain-HTTP registry: the pull fails over HTTPS and nothing starts.
        refused = fleet(lab.inventory_path, "apply", str(pb))
        assert refused.returncode != 0
        assert "http: server gave HTTP response to HTTPS client" in refused.stdout + refused.stderr
        assert "rg-web" not in fleet(lab.inventory_path, "ps", "--json").stdout
        inv = yaml.safe_load(pathlib.Path(lab.inventory_path).read_text())
        inv["defaults"]["insecure_registries"] = [registry]
        allowed = tmp_path / "inventory.yaml"
        allowed.write_text(yaml.safe_dump(inv))
        out = fleet(str(allowed), "apply", str(pb))
        assert out.returncode == 0, out.stdout + out.stderr
        rows = [c for c in json.loads(fleet(str(allowed), "ps", "--json").stdout)["containers"]
                if c.get("service") == "rg-web"]
        assert [(c["node"], c["image"]) for c in rows] == [("n2", ref), ("n2", ref)]
        listed = lab.lab.exec_in("n2", ["ctr", "-n", "fleet", "images", "ls", "-q"]).stdout.split()
        assert ref in listed
    finally:
        fleet(lab.inventory_path, "destroy", "rg-web", "--grace", "1")
