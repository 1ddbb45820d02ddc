"""Registry images are pulled on the node: a real registry (Debian's docker-registry) runs inside lb1, and a
service naming an image in it starts on nodes that never had the image; plain HTTP only where the inventory
says so."""

from __future__ import annotations

import json
import pathlib
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml
from helpers import IN_REPLICA, run_fleet, wait_until
from loadgen import Load
from test_runtime_registry import PASSWORD, bcrypt_line, serving
from test_secrets_lab import controller

from fleet.core import labels as L
from fleet.image.demo import build_demo

pytestmark = pytest.mark.lab


def fleet(inventory: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=inventory, columns=200, timeout=180)


@pytest.fixture()
def registry(lab, tmp_path):
    """docker-registry serving on lb1's address:5000 from inside lb1's namespaces; stopped by PID."""
    yield from serve(lab, tmp_path, 5000)


@pytest.fixture()
def auth_registry(lab, tmp_path):
    """The same on port 5001, asking for credentials: user alice, password PASSWORD (htpasswd)."""
    (tmp_path / "htpasswd").write_text(bcrypt_line("alice", PASSWORD))
    yield from serve(lab, tmp_path, 5001, {"htpasswd": {"realm": "fleet", "path": str(tmp_path / "htpasswd")}})


def serve(lab, tmp_path: pathlib.Path, port: int, auth: dict[str, object] | None = None) -> Iterator[str]:
    address = lab.inventory.node("lb1").address
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({"version": 0.1, "storage": {"filesystem": {
        "rootdirectory": str(tmp_path / "registry")}}, "http": {"addr": f"{address}:{port}"},
        **({"auth": auth} if auth else {})}))
    holder = (pathlib.Path(lab.lab.cfg.dir) / "nodes" / "lb1" / "holder.pid").read_text().strip()
    yield from serving(["nsenter", "-t", holder, "-n", "-m", "-u", "--", "docker-registry", "serve", str(config)],
                       f"{address}:{port}", tmp_path / "registry.log", auth=auth is not None)


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
        # The inventory names the registry: the tag was resolved once, and the nodes run that digest.
        pinned = f"{ref}@{archive.digest}"
        assert [(c["node"], c["image"]) for c in rows] == [("n2", pinned), ("n2", pinned)]
        listed = lab.lab.exec_in("n2", ["ctr", "-n", "fleet", "images", "ls", "-q"]).stdout.split()
        assert pinned in listed
    finally:
        fleet(lab.inventory_path, "destroy", "rg-web", "--grace", "1")


# Serves its own page from a tmpfs: the root filesystem is read-only and the image's User is 1000.
SERVE = ('mkdir -p /tmp/w && echo ok >/tmp/w/healthz && echo "version=$(cat /etc/demo-version) " >/tmp/w/index.html'
         ' && exec httpd -f -p "$PORT" -h /tmp/w')


def test_credentials_from_the_secret_store_pinned_tag_rerolled_under_load(lab, lab_etcd, auth_registry, tmp_path):
    env = controller(lab, tmp_path / "home")
    lab_etcd.clear()
    assert fleet_env(env, "controller", "init").returncode == 0
    ref = f"{auth_registry}/demo:app"

    def publish(version: str) -> str:
        """The demo image `version` (User 1000) pushed to the registry as `ref` (the test's own push from n1, its
        password in argv there); n1 keeps no copy, so every node pulls. Its digest."""
        archive = build_demo(version, str(tmp_path / f"{version}.tar"), user="1000")
        assert fleet_env(env, "image", "push", archive.path, "--nodes", "n1").returncode == 0
        for argv in (["tag", "--force", archive.name, ref],
                     ["push", "--plain-http", "--user", f"alice:{PASSWORD}", ref], ["rm", ref, archive.name]):
            out = lab.lab.exec_in("n1", ["ctr", "-n", "fleet", "images", *argv], check=False)
            assert out.returncode == 0, out.stderr
        return archive.digest

    first = publish(f"ra{L.random_suffix(5)}")
    inv = yaml.safe_load(pathlib.Path(lab.inventory_path).read_text())
    inv["registries"] = {auth_registry: {"username": "alice", "password": {"secret": "rg-pass"}, "insecure": True}}
    inv["image_retention"] = 1
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(inv))
    env["FLEET_INVENTORY"] = str(inventory)
    lb_port = 18741
    service = {"image": ref, "replicas": 2, "command": ["sh", "-c", SERVE], "read_only": True,
               "volumes": [{"type": "tmpfs", "target": "/tmp", "size": "1MiB"}], "cap_drop": ["ALL"],
               "resources": {"cpu": 0.05, "memory": "32MiB"}, "stop_grace_period": "1s",
               "health": {"http": "/healthz", "interval": "500ms"}, "update": {"min_ready": "1s"},
               "lb": {"port": lb_port}}
    pb = tmp_path / "pb.yaml"
    pb.write_text(yaml.safe_dump({"services": {"rg-app": service}}))
    outputs = []
    try:
        # A wrong password: refused before any node is touched, naming the registry and the user.
        assert fleet_env(env, "secret", "set", "rg-pass", stdin="wrong-password\n").returncode == 0
        refused = fleet_env(env, "apply", str(pb))
        outputs.append(refused.stdout + refused.stderr)
        assert refused.returncode != 0
        assert f"registry {auth_registry} refused the credentials as alice" in outputs[-1]
        assert "rg-app" not in fleet_env(env, "ps", "--json").stdout
        # The password from the secret store: pulled on the nodes, the tag pinned to its digest.
        assert fleet_env(env, "secret", "set", "rg-pass", stdin=PASSWORD + "\n").returncode == 0
        out = fleet_env(env, "apply", str(pb))
        outputs.append(out.stdout + out.stderr)
        assert out.returncode == 0, outputs[-1]
        rows = running(env)
        assert {c["image"] for c in rows} == {f"{ref}@{first}"} and len(rows) == 2
        # Confined: uid 1000 (the image's), the root filesystem read-only, no capabilities.
        c = rows[0]
        probe = lab.lab.exec_in(c["node"], [*IN_REPLICA.split(), c["id"],
                                            "sh", "-c", "id -u; grep CapEff /proc/self/status; touch /x"],
                                check=False)
        assert probe.stdout.split()[:3] == ["1000", "CapEff:", "0000000000000000"], probe.stdout + probe.stderr
        assert "Read-only file system" in probe.stdout + probe.stderr
        # The tag pushed again with other content: plan shows the new digest, apply rolls it under load.
        second = publish(f"rb{L.random_suffix(5)}")
        plan = fleet_env(env, "plan", str(pb))
        outputs.append(plan.stdout + plan.stderr)
        assert f"{ref}@{second}" in plan.stdout.replace("\n", "") and "changes pending" in plan.stdout, plan.stdout
        address = lab.inventory.node("lb1").address
        with Load(address, lb_port, clients=4, max_seconds=90) as load:
            wait_until(lambda: load.result.ok > 20 or None, 20, 0.2, "requests served")
            out = fleet_env(env, "apply", str(pb))
            time.sleep(1.0)
        outputs.append(out.stdout + out.stderr)
        assert out.returncode == 0, outputs[-1]
        r = load.result
        assert r.failed == 0, (r.errors, r.failures[:5])
        assert len(r.versions) == 2, r.versions
        now = running(env)
        assert {c["image"] for c in now} == {f"{ref}@{second}"}
        # image_retention 1: the first digest, which no revision within the last one and no container uses, is gone.
        for node in lab.workers():
            listed = lab.lab.exec_in(node, ["ctr", "-n", "fleet", "images", "ls", "-q"]).stdout.split()
            assert f"{ref}@{first}" not in listed, (node, listed)
            if node in {c["node"] for c in now}:
                assert f"{ref}@{second}" in listed
        history = json.loads(fleet_env(env, "history", "rg-app", "--json").stdout)
        assert [h["spec"]["image_digest"] for h in history][-2:] == [first, second], history
        # The password is in no output, no process list of a node, no file fleet keeps on one (the pattern on stdin).
        for node in lab.workers():
            assert PASSWORD not in lab.lab.exec_in(node, ["ps", "-eo", "args"]).stdout
            files = lab.lab.exec_in(node, ["sh", "-c", "grep -rlF -f /dev/stdin /run/fleet /var/lib/fleet; true"],
                                    input=PASSWORD + "\n", check=False)
            assert files.stdout == "", files.stdout
        assert not any(PASSWORD in o for o in outputs)
        # `user:` on these ctr nodes (whose `ctr run` has no --user): through fleet's runc wrapper, the image's
        # uid 1000 overridden by the name `nobody` from the image's /etc/passwd, main process and exec alike.
        (tmp_path / "user.yaml").write_text(yaml.safe_dump({"services": {"rg-user": {
            **service, "replicas": 1, "user": "nobody", "lb": {"port": lb_port + 1}}}}))
        user = fleet_env(env, "apply", str(tmp_path / "user.yaml"))
        outputs.append(user.stdout + user.stderr)
        assert user.returncode == 0, outputs[-1]
        (u,) = [c for c in json.loads(fleet_env(env, "ps", "--json").stdout)["containers"]
                if c.get("service") == "rg-user"]
        probe = lab.lab.exec_in(u["node"], ["sh", "-c", f"pid=$(ctr -n fleet tasks ls | awk '$1 == \"{u['id']}\" "
                                            "{print $2}'); grep ^Uid /proc/$pid/status; "
                                            f"{IN_REPLICA} {u['id']} id -u"], check=False)
        assert probe.stdout.split()[:2] == ["Uid:", "65534"] and probe.stdout.split()[-1] == "65534", (
            probe.stdout + probe.stderr)
    finally:
        fleet_env(env, "destroy", "rg-app", "--grace", "1")
        fleet_env(env, "destroy", "rg-user", "--grace", "1")


def fleet_env(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=env, input=stdin, columns=250, timeout=180)


def running(env: dict[str, str]) -> list[dict[str, object]]:
    return [c for c in json.loads(fleet_env(env, "ps", "--json").stdout)["containers"] if c.get("service") == "rg-app"]
