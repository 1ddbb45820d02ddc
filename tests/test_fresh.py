"""Fresh nodes and offline prepare, fast: the cached root filesystem's recipe and its rule that a half-built one
is never used (a real debootstrap that fails), a fresh node's files (its upper directory, sshd drop-in, init script,
inventory), the offline planning on recorded apt output (tests/data/preflight, each saying where it came from) and
the manifest, check's verdict on a containerd fleet started itself (recorded on a fresh lab node), the prepare
script starting containerd where there is no systemd (against a stand-in containerd, labelled below), and a node
that is no worker needing no containerd."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from fleet.core.errors import LabError, ScriptOutputError
from fleet.core.model import Node
from fleet.engine.calls import on_ready_nodes, runtime_not_needed
from fleet.lab import fresh, render
from fleet.lab.render import LabConfig
from fleet.lab.rootfs import Recipe, cached_path, ensure_rootfs, setup_script
from fleet.node.offline import (
    apt_argv,
    manifest_text,
    parse_node_state,
    parse_print_uris,
    read_manifest,
    release,
)
from fleet.node.preflight import judge, parse_found
from fleet.node.provision import Plan, offline_plan, parse_prepared, plan_for, prepare_script
from fleet.results.nodes import NodeReport

DATA = Path(__file__).parent / "data" / "preflight"


def recorded(name: str) -> dict[str, object]:
    doc = json.loads((DATA / f"{name}.json").read_text())
    assert doc["source"]
    return doc  # type: ignore[no-any-return]


# ---- the root filesystem ---------------------------------------------------------------------------------------


def test_the_recipe_names_its_cache_and_the_debootstrap_it_runs() -> None:
    r = Recipe()
    assert r.debootstrap_argv("/x") == ["debootstrap", "--variant=minbase", "--include=openssh-server,sudo",
                                        "bookworm", "/x", "http://deb.debian.org/debian"]
    assert r.key.startswith("bookworm-minbase-") and r.key == Recipe().key
    assert Recipe(include=("openssh-server", "sudo", "curl")).key != r.key
    assert Recipe(steps=2).key != r.key
    script = setup_script(r)
    assert "NOPASSWD: ALL" in script and "rm -f /etc/ssh/ssh_host_*" in script and "/var/lib/apt/lists" in script


def test_a_cached_root_is_used_as_it_is(tmp_path: Path) -> None:
    r = Recipe(mirror="file:///nonexistent")
    path = Path(cached_path(r, str(tmp_path)))
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "os-release").write_text("ID=debian\n")
    assert ensure_rootfs(r, str(tmp_path)) == (str(path), 0.0)


def test_a_half_built_root_is_never_used_and_a_dead_builds_leftover_goes(tmp_path: Path) -> None:
    """Real debootstrap, given a mirror that is not there: it fails at once. The root is not cached, its own
    build directory is gone, and a leftover of a build whose process is gone is removed; one of a live build stays."""
    r = Recipe(mirror="file:///nonexistent")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"rootfs-{r.key}.tmp-{dead.pid}"
    (stale / "etc").mkdir(parents=True)
    (stale / "etc" / "os-release").write_text("half\n")  # half-built: never taken for the cache
    live = tmp_path / f"rootfs-{r.key}.tmp-{os.getppid()}"
    live.mkdir()
    with pytest.raises(LabError, match="debootstrap failed"):
        ensure_rootfs(r, str(tmp_path), timeout=60)
    assert not Path(cached_path(r, str(tmp_path))).exists() and not stale.exists() and live.exists()
    assert not (tmp_path / f"rootfs-{r.key}.tmp-{os.getpid()}").exists()


# ---- a fresh node's files ----------------------------------------------------------------------------------------


def _fake_root(tmp_path: Path) -> Path:
    """A stand-in for the cached root filesystem: just the files seed reads and the directories it mirrors."""
    root = tmp_path / "rootfs"
    (root / "etc" / "ssh" / "sshd_config.d").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\ndeploy:x:1000:1000::/home/deploy:/bin/bash\n")
    (root / "home" / "deploy" / ".ssh").mkdir(parents=True)
    os.chown(root / "home" / "deploy", 1000, 1000)
    os.chown(root / "home" / "deploy" / ".ssh", 1000, 1000)
    os.chmod(root / "home" / "deploy" / ".ssh", 0o700)
    return root


def test_a_fresh_nodes_upper_directory_keeps_the_roots_owners_and_adds_its_own_files(tmp_path: Path) -> None:
    cfg = LabConfig(prefix="tf", root=str(tmp_path / "labs"), nodes=1, lb=0, fresh=True)
    node = cfg.layout()[0]
    d = Path(render.node_dir(cfg, node))
    (d / "ssh").mkdir(parents=True)
    (d / "ssh" / "ssh_host_ed25519_key").write_text("PRIVATE\n")
    (d / "ssh" / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAA n1\n")
    Path(cfg.dir, "authorized_keys").write_text("ssh-ed25519 BBBB lab\n")
    (d / "upper" / "stale").mkdir(parents=True)
    fresh.seed(cfg, node, str(_fake_root(tmp_path)))
    up = d / "upper"
    assert not (up / "stale").exists() and (d / "work").is_dir() and (d / "merged").is_dir()
    keys = up / "home" / "deploy" / ".ssh" / "authorized_keys"
    assert keys.read_text() == "ssh-ed25519 BBBB lab\n"
    assert (keys.stat().st_uid, stat.S_IMODE(keys.stat().st_mode)) == (1000, 0o600)
    ssh = (up / "home" / "deploy" / ".ssh").stat()
    assert (ssh.st_uid, stat.S_IMODE(ssh.st_mode)) == (1000, 0o700)
    assert (up / "home" / "deploy").stat().st_uid == 1000
    assert (up / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n127.0.1.1 n1\n"
    assert stat.S_IMODE((up / "etc" / "ssh" / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    dropin = (up / "etc" / "ssh" / "sshd_config.d" / "fleet-lab.conf").read_text()
    assert "PermitRootLogin no\n" in dropin and f"ListenAddress {node.address}\n" in dropin


def test_a_fresh_nodes_init_pivots_into_its_overlay_and_the_inventory_logs_in_with_sudo() -> None:
    cfg = LabConfig(prefix="tf", nodes=1, lb=1, fresh=True)
    node = cfg.layout()[0]
    text = render.fresh_init_script(cfg, node, "/var/cache/fleet-lab/rootfs-x", memory_cgroup=True)
    order = ["echo $$", "mount -t cgroup -o memory", "mount -t overlay fleet-node -o lowerdir=/var/cache/fleet-lab/"
             "rootfs-x,", 'mount -t proc proc "$R/proc"', "mount -t tmpfs", 'mount --bind "$D/containerd"',
             "pivot_root . .oldroot", "umount -l /.oldroot", "/usr/sbin/sshd -E", "exec sleep infinity"]
    at = [text.index(step) for step in order]
    assert at == sorted(at), text
    doc = yaml.safe_load(render.inventory_yaml(cfg))
    assert doc["defaults"]["user"] == "deploy" and doc["defaults"]["become"] is True
    plain = yaml.safe_load(render.inventory_yaml(LabConfig(prefix="tf")))
    assert plain["defaults"]["user"] == "root" and "become" not in plain["defaults"]


# ---- offline: what a node lacks, worked out on the controller ------------------------------------------------------


def test_apt_is_asked_against_the_nodes_status_and_architecture() -> None:
    argv = apt_argv(("haproxy", "socat"), "/tmp/s/status", "arm64", "/tmp/a/", download=False)
    assert argv == ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "--print-uris", "-o",
                    "Debug::NoLocking=1", "-o", "Dir::State::status=/tmp/s/status", "-o", "APT::Architecture=arm64",
                    "-o", "Dir::Cache::Archives=/tmp/a/", "haproxy", "socat"]
    assert "--download-only" in apt_argv(("runc",), "s", "amd64", "d/", download=True)


def test_print_uris_gives_every_file_the_node_lacks_with_or_without_a_checksum() -> None:
    doc = recorded("apt_print_uris_lb")
    assert parse_print_uris(str(doc["stdout"])) == doc["expect"]
    assert parse_print_uris("") == [] and parse_print_uris("E: Unable to locate package nope\n") == []


def test_the_nodes_state_is_its_architecture_then_its_status_file() -> None:
    state = parse_node_state("amd64\n@@status\nPackage: dpkg\nStatus: install ok installed\n")
    assert state.arch == "amd64" and state.status.startswith("Package: dpkg")
    with pytest.raises(ScriptOutputError):
        parse_node_state("sh: 1: dpkg: not found\n")
    assert release('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n') == "debian 12"


def test_offline_follows_the_manifest_for_a_node_it_names() -> None:
    files = ["haproxy_2.6.12-1+deb12u4_amd64.deb", "liblua5.3-0_5.3.6-2_amd64.deb", "socat_1.7.4.4-2_amd64.deb",
             "iproute2_6.1.0-3_amd64.deb", "libmnl0_1.0.4-3_amd64.deb"]
    manifest = read_manifest(manifest_text({"lb1": {"packages": ["haproxy", "socat"], "files": files[:3]}}))
    plan = offline_plan(Plan("lb1", ("haproxy", "socat"), ("dirs",)), files, "./debs", manifest)
    assert plan.debs == tuple(files[:3]) and plan.blocked is None  # not iproute2's library, which is for n1
    assert prepare_script(plan).args == tuple(f"/var/lib/fleet/packages/{f}" for f in files[:3])
    more = offline_plan(Plan("lb1", ("haproxy", "keepalived", "socat")), files, "./debs", manifest)
    assert more.blocked is not None and "now needs haproxy, keepalived, socat" in more.blocked
    gone = offline_plan(Plan("lb1", ("haproxy",)), files[1:], "./debs", manifest)
    assert gone.blocked == ("haproxy_2.6.12-1+deb12u4_amd64.deb listed for lb1 is not in ./debs (run `fleet node "
                            "prepare --download ./debs lb1` again)")
    # A node the manifest does not name: as before, its packages' files and every non-fleet file.
    other = offline_plan(Plan("n1", ("iproute2",)), files, "./debs", manifest)
    assert other.debs == ("iproute2_6.1.0-3_amd64.deb", "liblua5.3-0_5.3.6-2_amd64.deb", "libmnl0_1.0.4-3_amd64.deb")
    with pytest.raises(ScriptOutputError, match=r"fleet-offline\.json"):
        read_manifest("[1, 2]")


# ---- containerd where there is no init system -----------------------------------------------------------------------


def test_check_on_a_fresh_node_names_containerd_as_fleets_own() -> None:
    found = parse_found(str(recorded("debian12_fresh_no_init")["stdout"]))
    assert found.init == "process_api" and found.containerd_alive and found.containerd_pid == 12239
    check = judge("n1", ("worker", "records"), found, offset=0.0, become=True)
    assert check.ok, check.missing
    item = next(i for i in check.items if i.name == "containerd running")
    assert item.detail == "yes, started by fleet (PID 12239, log /var/lib/fleet/containerd/containerd.log)"
    from dataclasses import replace

    gone = judge("n1", ("worker",), replace(found, containerd_alive=False), offset=0.0, become=True)
    assert [i.name for i in gone.missing] == ["containerd running"]
    assert plan_for(gone).fixes == ("start-containerd",)
    never = judge("n1", ("worker",), replace(found, containerd_pid=None, containerd_socket=False), offset=0.0,
                  become=True)
    (item,) = never.missing
    assert item.detail == ("no: installed but /run/containerd/containerd.sock is missing; no init system here (PID 1 "
                           "is process_api): `fleet node prepare` starts it itself")


STAND_IN = """#!/usr/bin/python3
# A stand-in for containerd (a fake: a real one would take this machine's /run/containerd): it listens on the
# socket the prepare script waits for, as containerd does, and stays until killed.
import os, socket, sys, time
path = os.environ["CSOCK"]
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
print("stand-in containerd listening", flush=True)
time.sleep(600)
"""


def test_prepare_starts_containerd_itself_where_there_is_no_systemd_and_again_once_it_died(tmp_path: Path) -> None:
    assert not os.path.isdir("/run/systemd/system"), "this test needs a machine without systemd"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "containerd").write_text(STAND_IN)
    (bindir / "containerd").chmod(0o755)
    script = prepare_script(Plan("n1", (), ("start-containerd",)))
    env = {**script.env, "CSOCK": str(tmp_path / "c.sock"), "CPID": str(tmp_path / "cd" / "containerd.pid"),
           "CLOG": str(tmp_path / "cd" / "containerd.log"), "PATH": f"{bindir}:/usr/bin:/bin"}

    def run() -> tuple[str, int]:
        done = subprocess.run(["/bin/sh", "-c", script.text, script.name], capture_output=True, text=True, env=env,
                              timeout=30)
        prepared = parse_prepared(done.stdout, done.returncode, done.stderr)
        assert prepared.error is None, prepared.error
        return " ".join(prepared.changed), int((tmp_path / "cd" / "containerd.pid").read_text())

    pids = []
    try:
        changed, pid = run()
        pids.append(pid)
        assert changed.startswith("started containerd (no init system here: fleet runs it, PID file ")
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "containerd"
        assert os.getsid(pid) == pid  # its own session: nothing of the SSH session's holds it
        assert "stand-in containerd listening" in (tmp_path / "cd" / "containerd.log").read_text()
        assert run()[0] == ""  # running: nothing to do
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
            time.sleep(0.02)
        assert (tmp_path / "c.sock").exists()  # the socket file of a dead containerd stays: not taken for running
        changed, again = run()
        pids.append(again)
        assert again != pid and changed.startswith("started containerd")
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


# ---- a node that is no worker needs no containerd --------------------------------------------------------------------


async def test_a_node_that_is_no_worker_without_containerd_is_no_error() -> None:
    lb = NodeReport(Node("lb1", "10.0.0.1", roles=("lb",)), "no runtime", "neither nerdctl nor ctr", None, 0.0)
    worker = NodeReport(Node("n1", "10.0.0.2"), "no runtime", "neither nerdctl nor ctr", None, 0.0)
    down = NodeReport(Node("lb2", "10.0.0.3", roles=("lb",)), "unreachable", "connection refused", None, 0.0)
    assert runtime_not_needed(lb) and not runtime_not_needed(worker) and not runtime_not_needed(down)
    found, errors = await on_ready_nodes(None, [lb, worker, down],  # type: ignore[arg-type]
                                         lambda d: d.list_containers())
    assert found == {}
    assert errors == {"n1": "no runtime: neither nerdctl nor ctr", "lb2": "unreachable: connection refused"}


async def test_download_asks_this_machines_apt_against_each_nodes_own_status(tmp_path: Path) -> None:
    """Over real in-process SSH servers running /bin/sh here (so a node's dpkg status is this machine's): a node
    lacking runc by its check gets apt's answer for its status (runc is installed there: no file to fetch, and
    nothing is fetched from a mirror); a node of another release, and one that could not be checked, are refused
    by name; the manifest is written."""
    from sshserver import SSHFarm

    from fleet.core.model import Inventory
    from fleet.engine.offline import download_debs
    from fleet.node.preflight import Item, NodeCheck
    from fleet.transport import Pool

    lacks = (Item("runc", False, "missing (containerd's runtime)", "runc"),)
    async with SSHFarm(tmp_path / "f") as farm:
        await farm.start(3)
        inv = Inventory("inv.yaml", (farm.node("n1"), farm.node("n2"), farm.node("n3")))
        here = release(Path("/etc/os-release").read_text())
        checks = [NodeCheck("n1", ("worker",), lacks, os=here), NodeCheck("n2", ("worker",), lacks, os="ubuntu 24.04"),
                  NodeCheck("n3", ("worker",), error="n3: connection refused")]
        async with Pool() as pool:
            results = await download_debs(pool, inv, checks, str(tmp_path / "debs"))
    assert [(r.node, r.packages, r.files, r.error) for r in results] == [
        ("n1", ("runc",), (), None),
        ("n2", ("runc",), (), f"the node runs ubuntu 24.04, this controller {here}: download on a machine of the "
                              "node's release"),
        ("n3", (), (), "cannot check it: n3: connection refused")]
    assert read_manifest((tmp_path / "debs" / "fleet-offline.json").read_text()) == {}
