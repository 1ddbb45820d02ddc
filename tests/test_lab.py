"""The lab itself: real namespaces, sshd and containerd; repair, teardown after a crash, no collisions."""

from __future__ import annotations

import ipaddress
import os
import pathlib
import signal
import subprocess

import pytest
from conftest import TEST_LAB

from fleet.config.inventory import parse
from fleet.core.errors import LabError
from fleet.lab.lab import Lab, _netns_list
from fleet.lab.render import LabConfig, init_script, inventory_yaml, node_dir
from fleet.node.paths import DEFAULT

pytestmark = pytest.mark.lab


def test_nodes_are_separate_hosts(lab):
    seen = {}
    for node in lab.inventory.nodes:
        out = lab.lab.exec_in(node.name, ["sh", "-c", "hostname; ip -4 -o addr show dev eth0; ls /root -A"]).stdout
        hostname, addr_line = out.splitlines()[:2]
        assert hostname == node.name
        assert f"inet {node.address}/24" in addr_line
        assert ".bashrc" not in out
        seen[node.name] = out
    sockets = {lab.lab.exec_in(n, ["stat", "-c", "%i", "/run/containerd/containerd.sock"]).stdout
               for n in seen}
    assert len(sockets) == len(seen), "every node has its own containerd socket"


def test_each_node_has_its_own_etc_so_the_host_files_are_never_written(lab):
    """A user made on a node (as `fleet node prepare`, the storage user or a sudo test does) exists there only:
    the node's /etc is its own copy, and the host's /etc/passwd and /etc/hosts stay as they were."""
    user = f"{TEST_LAB.prefix}-etc-probe"
    host_passwd = pathlib.Path("/etc/passwd").read_text()
    assert f"\n{user}:" not in host_passwd
    node = lab.inventory.nodes[0].name
    lab.lab.exec_in(node, ["sh", "-c", f"useradd --system --no-create-home --shell /usr/sbin/nologin {user} && "
                                       "echo '192.0.2.99 etc-probe' >>/etc/hosts"])
    try:
        assert lab.lab.exec_in(node, ["id", "-u", user]).stdout.strip().isdigit()
        assert pathlib.Path("/etc/passwd").read_text() == host_passwd
        assert "etc-probe" not in pathlib.Path("/etc/hosts").read_text()
        other = lab.inventory.nodes[1].name
        assert lab.lab.exec_in(other, ["sh", "-c", f"id -u {user} || echo none"]).stdout.strip() == "none"
    finally:
        lab.lab.exec_in(node, ["userdel", user])


def test_inventory_is_valid_and_pins_host_keys(lab):
    inv = lab.inventory
    assert [n.name for n in inv.nodes] == ["n1", "n2", "n3", "lb1"]
    assert inv.node("lb1").roles == ("lb",)
    kh = pathlib.Path(inv.nodes[0].known_hosts or "").read_text()
    for node in inv.nodes:
        assert f"{node.address} ssh-ed25519 " in kh
    assert {n.labels["zone"] for n in inv.nodes if n.has_role("worker")} == {"a", "b", "c"}


def test_ssh_with_openssh_client_and_pinned_key(lab):
    node = lab.inventory.node("n2")
    out = subprocess.run(
        ["ssh", "-i", node.key_files[0], "-o", f"UserKnownHostsFile={node.known_hosts}", "-o",
         "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{node.address}", "hostname"],
        capture_output=True, text=True, timeout=20)
    assert (out.returncode, out.stdout.strip()) == (0, "n2")


def _run_fs(lab, node: str) -> str:
    return lab.lab.exec_in(node, ["stat", "-f", "-c", "%T", DEFAULT.run]).stdout.strip()


def test_every_node_has_its_own_size_limited_tmpfs_on_run_fleet(lab):
    names = [n.name for n in lab.inventory.nodes]
    for name in names:
        assert _run_fs(lab, name) == "tmpfs"
        mounts = lab.lab.exec_in(name, ["cat", "/proc/self/mountinfo"]).stdout
        (line,) = [ln for ln in mounts.splitlines() if ln.split()[4] == DEFAULT.run]
        assert "size=16384k" in line.split(" - ")[1]
    marker = f"{DEFAULT.run}/lab-test-marker"
    lab.lab.exec_in("n1", ["sh", "-c", 'echo secret >"$1"', "sh", marker])
    try:
        assert lab.lab.exec_in("n1", ["cat", marker]).stdout == "secret\n"
        for name in names[1:]:
            assert lab.lab.exec_in(name, ["test", "-e", marker], check=False).returncode == 1, name
        # On this machine's disk the node's /run/fleet is only the empty mountpoint: nothing written reaches it.
        on_disk = pathlib.Path(node_dir(lab.lab.cfg, lab.lab.node("n1"))) / "run" / DEFAULT.run.removeprefix("/run/")
        assert on_disk.is_dir() and list(on_disk.iterdir()) == []
        assert pathlib.Path("/proc/self/mountinfo").read_text().count(" fleet-run ") == 0, "not on the host"
    finally:
        lab.lab.exec_in("n1", ["rm", "-f", marker], check=False)


def test_up_rebuilds_a_node_that_lost_its_run_tmpfs(lab):
    """A node built before the tmpfs existed (or whose tmpfs went) is not whole: `up` rebuilds it."""
    before = {s.name: s.holder_pid for s in lab.lab.status()}
    lab.lab.exec_in("n2", ["umount", DEFAULT.run])
    st = {s.name: s for s in lab.lab.status()}
    assert not st["n2"].run_tmpfs and not st["n2"].ready and st["n2"].sshd
    status = lab.lab.up()
    assert all(s.ready and s.run_tmpfs for s in status)
    after = {s.name: s.holder_pid for s in status}
    assert after["n2"] != before["n2"] and after["n1"] == before["n1"]
    assert _run_fs(lab, "n2") == "tmpfs"


def test_up_is_idempotent_and_repairs_a_dead_node(lab):
    before = {s.name: s.holder_pid for s in lab.lab.status()}
    assert all(before.values())
    # Crash one node: kill every process in its network namespace.
    ns = f"{lab.lab.cfg.prefix}-n3"
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                            text=True).stdout.split()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    status = lab.lab.up()
    assert all(s.ready for s in status)
    after = {s.name: s.holder_pid for s in status}
    assert after["n1"] == before["n1"] and after["n2"] == before["n2"], "whole nodes are left alone"
    assert after["n3"] != before["n3"], "the dead node was rebuilt"
    assert _run_fs(lab, "n3") == "tmpfs"


def _processes_in_mount_namespace(ns: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _second_lab(root: str) -> LabConfig:
    """A small lab beside the session's: its prefix plus `z`, its subnet one up in the second octet (the session's
    default 10.241.0.0/24 gives fz... on 10.242.0.0/24), so helpers with their own test labs never collide."""
    net = ipaddress.IPv4Network(TEST_LAB.subnet)
    octets = str(net.network_address).split(".")
    octets[1] = str((int(octets[1]) + 1) % 256)
    return LabConfig(prefix=TEST_LAB.prefix[:5] + "z", subnet=".".join(octets) + f"/{net.prefixlen}", nodes=2, lb=0,
                     root=root)


def test_second_lab_does_not_collide_and_down_after_crash(tmp_path):
    cfg = _second_lab(str(tmp_path))
    p = cfg.prefix
    lab2 = Lab(cfg)
    try:
        lab2.up()
        assert {f"{p}-n1", f"{p}-n2"} <= _netns_list()
        assert all(s.run_tmpfs for s in lab2.status())
        holder = lab2.node_status(lab2.node("n1")).holder_pid
        mntns = os.readlink(f"/proc/{holder}/ns/mnt")
        # Simulate a crashed controller: the record and inventory are lost, processes still run.
        os.unlink(lab2.record_path)
        removed = Lab(cfg).down()
        assert {"n1", "n2", f"{p}-br0"} <= set(removed)
        assert not {f"{p}-n1", f"{p}-n2"} & _netns_list()
        assert not os.path.exists(f"/sys/class/net/{p}-br0")
        assert not os.path.exists(cfg.dir)
        assert _processes_in_mount_namespace(mntns) == [], "the node's mount namespace, with its tmpfs, is gone"
    finally:
        lab2.down()


def test_bad_lab_config_is_refused():
    with pytest.raises(LabError, match="prefix"):
        LabConfig(prefix="Bad-Prefix")
    with pytest.raises(LabError, match="too small"):
        LabConfig(subnet="10.0.0.0/29", nodes=10)
    for size in ("", "0", "16x", "16m;reboot", "-1"):
        with pytest.raises(LabError, match="tmpfs size"):
            LabConfig(run_tmpfs_size=size)


def test_init_script_mounts_the_run_tmpfs_over_the_private_run_before_any_daemon():
    cfg = LabConfig(prefix="fq", run_tmpfs_size="8m")
    text = init_script(cfg, cfg.layout()[0])
    steps = ['mount --bind "$D/etc" /etc', 'mount --bind "$D/run" /run', f"mkdir -p {DEFAULT.run}",
             f"mount -t tmpfs -o size=8m,mode=0755,nosuid,nodev,noexec fleet-run {DEFAULT.run}",
             "containerd --config", "/usr/sbin/sshd"]
    at = [text.index(step) for step in steps]
    assert at == sorted(at)


def test_rendered_inventory_parses():
    cfg = LabConfig(prefix="fq", nodes=4, lb=2)
    inv = parse(inventory_yaml(cfg), "lab.yaml")
    assert [n.name for n in inv.nodes] == ["n1", "n2", "n3", "n4", "lb1", "lb2"]
    assert inv.node("n1").capacity is not None and inv.node("lb1").capacity is None
