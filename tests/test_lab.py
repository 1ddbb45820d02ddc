"""The lab itself: real namespaces, sshd and containerd; repair, teardown after a crash, no collisions."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess

import pytest

from fleet.errors import LabError
from fleet.inventory import parse
from fleet.lab.lab import Lab, _netns_list
from fleet.lab.render import LabConfig, inventory_yaml

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


def test_second_lab_does_not_collide_and_down_after_crash(tmp_path):
    cfg = LabConfig(prefix="fz", subnet="10.242.0.0/24", nodes=2, lb=0, root=str(tmp_path))
    lab2 = Lab(cfg)
    try:
        lab2.up()
        assert {"fz-n1", "fz-n2"} <= _netns_list()
        # Simulate a crashed controller: the record and inventory are lost, processes still run.
        os.unlink(lab2.record_path)
        removed = Lab(cfg).down()
        assert {"n1", "n2", "fz-br0"} <= set(removed)
        assert not {"fz-n1", "fz-n2"} & _netns_list()
        assert not os.path.exists("/sys/class/net/fz-br0")
        assert not os.path.exists(cfg.dir)
    finally:
        lab2.down()


def test_bad_lab_config_is_refused():
    with pytest.raises(LabError, match="prefix"):
        LabConfig(prefix="Bad-Prefix")
    with pytest.raises(LabError, match="too small"):
        LabConfig(subnet="10.0.0.0/29", nodes=10)


def test_rendered_inventory_parses():
    cfg = LabConfig(prefix="fq", nodes=4, lb=2)
    inv = parse(inventory_yaml(cfg), "lab.yaml")
    assert [n.name for n in inv.nodes] == ["n1", "n2", "n3", "n4", "lb1", "lb2"]
    assert inv.node("n1").capacity is not None and inv.node("lb1").capacity is None
