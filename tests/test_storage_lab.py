"""Storage that follows its service, on the real lab (session lab: 3 workers + 1 lb).

The lab's lb node doubles as the storage node: this module's inventory is the lab's with lb1 given the role
`storage` (with the labels naming the lab's shared authorized_keys file, where an older fleet authorized its
storage key, and the lab's own storage user); the session lab itself is not changed. A node is taken down by
stopping its sshd (containerd and its containers keep running, as on a machine fleet cannot reach); it is started
again in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from helpers import run_fleet
from loadgen import Load

from fleet.api import Fleet
from fleet.core import labels as L
from fleet.core.errors import StorageError, VolumeError
from fleet.core.model import Node
from fleet.image.demo import build_demo
from fleet.lab.render import node_dir
from fleet.node.storage_access import SFTP_USER

pytestmark = pytest.mark.lab

@pytest.fixture(scope="module")
def st(lab, tmp_path_factory) -> dict[str, Any]:
    """Demo images v1 and v2 on every worker, a private history, and an inventory whose lb1 is a storage node."""
    d = tmp_path_factory.mktemp("storage")
    doc = yaml.safe_load(Path(lab.inventory_path).read_text())
    lb = doc["nodes"]["lb1"]
    lb["roles"] = [*lb["roles"], "storage"]
    lb.setdefault("labels", {})["fleet.storage.authorized_keys"] = f"{lab.lab.cfg.dir}/authorized_keys"
    inventory = d / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    environ = {**os.environ, "FLEET_STATE_DIR": str(d / "state"), "FLEET_INVENTORY": str(inventory),
               "FLEET_LEASE_TTL": "5"}
    for v in ("v1", "v2"):
        out = run_fleet("image", "push", build_demo(v, str(d / f"demo-{v}.tar")).path, env=environ, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    return {"env": environ, "dir": d, "inventory": str(inventory)}


def fleet(st: dict[str, Any], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=st["env"], timeout=timeout)


def playbook(st: dict[str, Any], name: str, volumes: list[dict[str, Any]], *, version: str = "v1",
             replicas: int = 1, lb: int | None = None) -> str:
    service: dict[str, Any] = {
        "image": f"fleet.local/demo:{version}", "replicas": replicas,
        "resources": {"cpu": 0.05, "memory": "32MiB"},
        "health": {"http": "/healthz", "interval": "500ms", "timeout": "1s", "failure_threshold": 2},
        "stop_grace_period": "2s",
        "update": {"max_surge": 1, "max_unavailable": 0, "ready_deadline": "20s", "min_ready": "500ms"},
        "volumes": volumes,
    }
    if lb is not None:
        service["lb"] = {"port": lb}
    path = Path(st["dir"]) / f"{name}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump({"services": {name: service}}, sort_keys=False))
    return str(path)


async def _replicas(st: dict[str, Any], service: str) -> list[tuple[str, str, int]]:
    """(node, container id, host port) of the service's running replicas on the nodes that answer."""
    from fleet.config.inventory import load_inventory

    async with Fleet.connect(load_inventory(st["inventory"]), connect_timeout=3, connect_attempts=1) as f:
        result = await f.ps()
    return sorted((r.node, r.info.id, int(r.info.labels[L.PORT])) for r in result.rows if r.service == service)


def replicas(st: dict[str, Any], service: str) -> list[tuple[str, str, int]]:
    return asyncio.run(_replicas(st, service))


def cleanup(st: dict[str, Any], services: list[str], volumes: list[tuple[str, str | None]]) -> list[str]:
    """Destroy the services, then remove the volumes (ref, node), in one process; returns what failed."""
    from fleet.config.inventory import load_inventory

    async def go() -> list[str]:
        failed = []
        async with Fleet.connect(load_inventory(st["inventory"]), connect_timeout=3, connect_attempts=1) as f:
            for service in services:
                await f.destroy(service, grace=1)
            for ref, node in volumes:
                try:
                    await f.volume_rm(ref, node)
                except VolumeError as exc:
                    failed.append(str(exc))
        return failed

    # This run's records cache and lease settings, as the CLI calls of the module have them.
    with mock.patch.dict(os.environ, {k: st["env"][k] for k in ("FLEET_STATE_DIR", "FLEET_LEASE_TTL")}):
        return asyncio.run(go())


def sh(st: dict[str, Any], container: str, script: str) -> str:
    out = fleet(st, "exec", container, "--", "sh", "-c", script)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def get(lab, node: str, port: int, path: str) -> str:
    address = lab.inventory.node(node).address
    with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=5) as resp:
        return resp.read().decode()


class NodeDown:
    """A worker fleet cannot reach: its sshd's listener stopped; started again (same config) on exit."""

    def __init__(self, lab, name: str) -> None:
        self.lab, self.name = lab, name
        self.dir = node_dir(lab.lab.cfg, lab.lab.node(name))

    def __enter__(self) -> NodeDown:
        pid = int(Path(f"{self.dir}/sshd.pid").read_text())
        os.kill(pid, 15)
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.lab.lab.exec_in(self.name, ["/usr/sbin/sshd", "-f", f"{self.dir}/sshd_config", "-E",
                                         f"{self.dir}/sshd.log"])
        address = self.lab.inventory.node(self.name).address
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((address, 22), timeout=1):
                return
            time.sleep(0.05)


def test_local_volume_keeps_its_replicas_on_their_nodes_and_waits_for_a_lost_node(lab, st):
    """Two replicas with a node-local volume: an image update under load through HAProxy (0 failed requests)
    starts each new replica on the node holding its data; then, with one of those nodes down, `apply` reports
    the replica that waits for its data and starts no empty copy elsewhere, while a service the fleet never ran
    starts; `volume rm` is refused while used."""
    name, port = "stv", 19641
    volumes = [{"type": "volume", "source": "data", "target": "/www/data"}]
    try:
        out = fleet(st, "apply", playbook(st, name, volumes, replicas=2, lb=port))
        assert out.returncode == 0, out.stdout + out.stderr
        before = replicas(st, name)
        assert len({n for n, _, _ in before}) == 2
        for node, cid, _ in before:
            sh(st, cid, f"echo {node} > /www/data/where")
        with Load(lab.inventory.node("lb1").address, port, clients=6, max_seconds=90) as load:
            time.sleep(1.0)
            out = fleet(st, "apply", playbook(st, name, volumes, version="v2", replicas=2, lb=port))
            time.sleep(1.0)
        assert out.returncode == 0, out.stdout + out.stderr
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        assert load.result.ok > 50 and load.result.versions.get("v2", 0) > 0
        after = replicas(st, name)
        assert {n for n, _, _ in after} == {n for n, _, _ in before}, "each replica stayed with its data"
        assert not {c for _, c, _ in after} & {c for _, c, _ in before}, "the containers were replaced"
        for node, _, hport in after:
            assert get(lab, node, hport, "/data/where") == f"{node}\n"

        refused = fleet(st, "volume", "rm", f"{name}/data", "--node", after[0][0])
        assert refused.returncode == 1 and "in use by" in refused.stderr, refused.stdout + refused.stderr
        assert lab.lab.exec_in(after[0][0], ["cat", f"/var/lib/fleet/volumes/{name}/data/where"]).stdout

        lost = after[0][0]
        others = {n for n in lab.workers() if n != lost}
        with NodeDown(lab, lost):
            out = fleet(st, "apply", playbook(st, name, volumes, replicas=2, lb=port))
            assert out.returncode != 0
            text = out.stdout + out.stderr
            assert f"{lost} (unreachable)" in text and "not starting empty elsewhere" in text, text
            now = replicas(st, name)
            assert [n for n, _, _ in now if n in others] == [n for n, _, _ in after if n in others], \
                "no empty copy was started on a node that answered"
            # A service the fleet never ran has no data anywhere: it starts although a worker is down.
            out = fleet(st, "apply", playbook(st, "stn", volumes))
            assert out.returncode == 1 and lost in out.stdout + out.stderr, out.stdout + out.stderr
            [(fresh, _, _)] = replicas(st, "stn")
            assert fresh in others
    finally:
        failed = cleanup(st, [name, "stn"], [("stn/data", None), *((f"{name}/data", n) for n, _, _ in before)])
    assert failed == [], "an unused volume is removed"
    for node, _, _ in before:
        assert lab.lab.exec_in(node, ["test", "-e", f"/var/lib/fleet/volumes/{name}/data"],
                               check=False).returncode == 1


def test_sshfs_volume_moves_with_its_replica_and_backup_restore_keeps_the_bytes(lab, st):
    """An sshfs volume on the storage node: data written through one replica is read back through the replica
    that replaced it on another node after its node went down; a backup restored into a new volume gives the
    same bytes; the mount is released when its container stops."""
    name = "sts"
    volumes = [{"type": "sshfs", "source": "shared", "target": "/www/shared"}]
    path = playbook(st, name, volumes)
    backup, again = Path(st["dir"]) / "shared.tar", Path(st["dir"]) / "restored.tar"
    first: list[tuple[str, str, int]] = []
    try:
        out = fleet(st, "apply", path)
        assert out.returncode == 0, out.stdout + out.stderr
        first = replicas(st, name)
        [(node, cid, _)] = first
        mounts = lab.lab.exec_in(node, ["cat", "/proc/self/mountinfo"]).stdout
        assert f"/run/fleet/mnt/{cid}/shared" in mounts and "fuse.sshfs" in mounts
        sh(st, cid, "echo written-on-$FLEET_NODE > /www/shared/note; "
                    "dd if=/dev/urandom of=/www/shared/blob bs=1024 count=256 2>/dev/null")
        with NodeDown(lab, node):
            out = fleet(st, "apply", path)
            # Exit 1 (partial): the run converged on the nodes that answered and names the one that did not.
            assert out.returncode == 1 and node in out.stdout + out.stderr, out.stdout + out.stderr
            [(moved, _, hport)] = [r for r in replicas(st, name) if r[0] != node]
            assert get(lab, moved, hport, "/shared/note") == f"written-on-{node}\n"
        inspected = json.loads(fleet(st, "volume", "inspect", f"{name}/shared").stdout)
        assert inspected["path"] == f"/var/lib/fleet/storage/{name}/shared" and inspected["node"] == "lb1"
        listed = json.loads(fleet(st, "volume", "ls", "--json").stdout)
        [row] = [v for v in listed["volumes"] if v["volume"] == f"{name}/shared"]
        assert row["type"] == "sshfs" and row["node"] == "lb1" and row["size"] >= 256 * 1024
        assert any(u.startswith(f"{moved}/") for u in row["used_by"])

        out = fleet(st, "volume", "backup", f"{name}/shared", "-o", str(backup))
        assert out.returncode == 0, out.stdout + out.stderr
        out = fleet(st, "volume", "restore", "stcopy/data", str(backup), "--node", "n3")
        assert out.returncode == 0, out.stdout + out.stderr
        assert fleet(st, "volume", "restore", "stcopy/data", str(backup), "--node", "n3").returncode == 1, \
            "a volume holding data is not overwritten"
        out = fleet(st, "volume", "backup", "stcopy/data", "-o", str(again))
        assert out.returncode == 0, out.stdout + out.stderr
        files, copy = _files(backup), _files(again)
        assert files == copy and set(files) == {"note", "blob"} and len(files["blob"]) == 256 * 1024
        assert lab.lab.exec_in("n3", ["cat", "/var/lib/fleet/volumes/stcopy/data/note"]).stdout == \
            f"written-on-{node}\n"
    finally:
        cleanup(st, [name], [("stcopy/data", "n3")])
    for node, cid, _ in first:
        # The node that was down still ran the first replica: the next run that reached it stopped it (a second
        # copy) or `destroy` did; either way its sshfs mount went with it.
        mounts = lab.lab.exec_in(node, ["cat", "/proc/self/mountinfo"]).stdout
        assert f"/run/fleet/mnt/{cid}" not in mounts
    assert cleanup(st, [], [(f"{name}/shared", None)]) == []


def test_a_storage_node_that_is_down_fails_the_start_naming_it_and_leaves_nothing(lab, st):
    """The inventory's storage node `nas` does not answer (nothing listens on its port): `apply` fails within
    its deadlines with an error naming the node and its address, and no replica of the service is left."""
    name = "stx"
    doc = yaml.safe_load(Path(st["inventory"]).read_text())
    doc["nodes"]["nas"] = {"address": lab.inventory.node("lb1").address, "port": 2222, "roles": ["storage"]}
    inventory = Path(st["dir"]) / "inventory-nas.yaml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**st["env"], "FLEET_INVENTORY": str(inventory)}
    path = playbook(st, name, [{"type": "sshfs", "source": "shared", "target": "/www/shared", "storage": "nas"}])
    try:
        started = time.monotonic()
        out = run_fleet("apply", path, env=env, timeout=120)
        text = out.stdout + out.stderr
        assert out.returncode == 1, text
        assert f"storage node nas ({lab.inventory.node('lb1').address}:2222) could not be used" in text, text
        assert time.monotonic() - started < 60
        assert replicas(st, name) == []
    finally:
        run_fleet("destroy", name, "--grace", "1", env=env, timeout=120)


def test_a_worker_refuses_a_storage_node_whose_host_key_is_not_the_pinned_one(lab, st):
    """The worker checks the storage node's host key against the one the controller pinned and sends it: given
    another key (here: n1's), the worker's sshfs refuses to connect, the error names the worker and the storage
    node, and no mountpoint is left. (The controller's own connection uses the real pin; only what it sends the
    worker is changed, by overriding that one method.)"""
    from fleet.config.inventory import load_inventory
    from fleet.engine.volumes import StorageAccess

    inventory = load_inventory(st["inventory"])
    lb1, n1 = inventory.node("lb1"), inventory.node("n1")
    pinned = Path(lb1.known_hosts or "").read_text().splitlines()
    other = next(" ".join(line.split()[1:3]) for line in pinned if line.startswith(n1.address + " "))

    class WrongPin(StorageAccess):
        def _host_keys(self, storage: Node) -> str:
            return f"{storage.address} {other}\n"

    async def go() -> None:
        async with Fleet.connect(inventory, connect_timeout=5) as f:
            with pytest.raises(StorageError) as exc:
                await WrongPin(f.pool).mount(n1, lb1, "stz", "shared", "stz-0-pin")
            text = str(exc.value)
            assert f"n1: mounting volume stz/shared from storage node lb1 ({lb1.address}:22) failed" in text, text
            assert "Host key verification failed" in text, text

    try:
        asyncio.run(go())
        assert lab.lab.exec_in("n1", ["test", "-e", "/run/fleet/mnt/stz-0-pin"], check=False).returncode == 1
    finally:
        lab.lab.exec_in("lb1", ["rm", "-rf", "/var/lib/fleet/storage/stz"], check=False)


def test_the_storage_key_reaches_only_its_export_and_one_worker_is_revoked(lab, st):
    """Issue 21: a worker's key logs in as the lab's storage user, confined by sshd to SFTP in the export: `ls /`
    shows the service directories only, `get /etc/shadow` (or through `..`) fails, a command is refused; files
    written through the mount belong to the storage user on lb1 and show as root's (uid 0) on the worker; the
    root key an older fleet authorized is gone; `fleet volume revoke n1` refuses n1's next login while
    the mount already made keeps serving."""
    from fleet.config.inventory import load_inventory
    from fleet.engine.volumes import StorageAccess

    inventory = load_inventory(st["inventory"])
    lb1, n1 = inventory.node("lb1"), inventory.node("n1")
    # The default storage user, made in lb1's own /etc (each lab node has its own copy): the host's is untouched.
    user, cid = SFTP_USER, "stk-0-confined"
    ssh_opts = ["-i", "/run/fleet/storage/lb1.key", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "UserKnownHostsFile=/run/fleet/storage/lb1.known_hosts", "-o", "GlobalKnownHostsFile=/dev/null"]

    def sftp(batch: str) -> subprocess.CompletedProcess[str]:
        return lab.lab.exec_in("n1", ["sftp", "-b", "-", *ssh_opts, f"{user}@{lb1.address}"], input=batch,
                               check=False)

    async def access(what: str) -> str | None:
        async with Fleet.connect(inventory, connect_timeout=5) as f:
            a = StorageAccess(f.pool)
            return await (a.mount(n1, lb1, "stk", "shared", cid) if what == "mount" else a.release(n1, cid))

    # What an older fleet left: its one storage key, authorized for root (SFTP only), and its key directory.
    auth = Path(f"{lab.lab.cfg.dir}/authorized_keys")
    auth.write_text(auth.read_text() + 'restrict,command="internal-sftp -d /var/lib/fleet/storage" ssh-ed25519 '
                    + "A" * 68 + " fleet-storage\n")
    lab.lab.exec_in("lb1", ["mkdir", "-p", "/var/lib/fleet/storage-key"])
    try:
        mp = asyncio.run(access("mount"))
        assert " fleet-storage" not in auth.read_text() and "ssh-ed25519" in auth.read_text()
        assert lab.lab.exec_in("lb1", ["test", "-e", "/var/lib/fleet/storage-key"], check=False).returncode == 1
        assert lab.lab.exec_in("n1", ["sh", "-c", f"echo hello >{mp}/f && stat -c %u {mp}/f"]).stdout == "0\n"
        owner = lab.lab.exec_in("lb1", ["stat", "-c", "%U %a", "/var/lib/fleet/storage/stk/shared/f",
                                        "/var/lib/fleet/storage/stk/shared", "/var/lib/fleet/storage"]).stdout
        assert owner.split("\n")[:3] == [f"{user} 644", f"{user} 700", "root 755"], owner
        listed = sftp("ls -1 /\nls -1 /stk\n")
        assert listed.returncode == 0, listed.stderr
        names = {line.strip().rstrip("/").rsplit("/", 1)[-1] for line in listed.stdout.splitlines()
                 if line.strip() and not line.startswith("sftp>")}
        assert "stk" in names and "shared" in names and not names & {"etc", "root", "var", "usr"}, listed.stdout
        for path in ("/etc/shadow", "../../../../etc/shadow", "/root/.ssh/authorized_keys"):
            got = sftp(f"get {path} /tmp/fleet-test-stolen\n")
            assert got.returncode != 0 and "not found" in got.stderr, (path, got.stdout, got.stderr)
        assert lab.lab.exec_in("n1", ["test", "-e", "/tmp/fleet-test-stolen"], check=False).returncode == 1
        shell = lab.lab.exec_in("n1", ["ssh", *ssh_opts, f"{user}@{lb1.address}", "id"], check=False)
        assert shell.returncode != 0 and "uid=" not in shell.stdout, shell.stdout + shell.stderr

        out = fleet(st, "volume", "revoke", "n1")
        assert out.returncode == 0 and "lb1: revoked the key of n1" in out.stdout, out.stdout + out.stderr
        denied = sftp("ls /\n")
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied.stderr
        assert lab.lab.exec_in("n1", ["cat", f"{mp}/f"]).stdout == "hello\n", "the mount made before stays"
        again = fleet(st, "volume", "revoke", "n1")
        assert again.returncode == 0 and "lb1: no key for n1" in again.stdout, again.stdout + again.stderr
    finally:
        asyncio.run(access("release"))
        lab.lab.exec_in("lb1", ["rm", "-rf", "/var/lib/fleet/storage/stk"], check=False)


def _files(path: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}
