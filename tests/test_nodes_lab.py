"""`fleet nodes` against the real lab: facts are true, a down node is reported, host keys are pinned."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from helpers import run_fleet

from fleet.api import Fleet
from fleet.config.inventory import load_inventory
from fleet.transport import Pool

pytestmark = pytest.mark.lab


async def test_facts_match_what_the_node_has(lab):
    async with Pool() as pool:
        reports = await Fleet(lab.inventory, pool).nodes()
    assert [r.status for r in reports] == ["ready"] * 4
    for r in reports:
        truth = lab.lab.exec_in(r.node.name, ["sh", "-c",
                                              "hostname; nproc; grep MemTotal /proc/meminfo; df -Pk /var/lib/containerd"
                                              " | tail -1; cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
                                              " 2>/dev/null || echo none"]).stdout.splitlines()
        assert r.facts is not None
        assert r.facts.hostname == truth[0] == r.node.name
        assert r.facts.ncpu == int(truth[1])
        meminfo = int(truth[2].split()[1]) * 1024
        limit = int(truth[4]) if truth[4].isdigit() else None
        if limit is not None and limit < meminfo:  # a lab node in its own memory cgroup: its limit is its memory
            assert (r.facts.scope, r.facts.mem_total) == ("cgroup", limit)
        else:
            assert (r.facts.scope, r.facts.mem_total) == ("host", meminfo)
        assert abs(r.facts.disk_total - int(truth[3].split()[1]) * 1024) == 0
        assert (r.facts.runtime, r.facts.runtime_socket, r.facts.cgroup) == ("ctr", True, 1)
        assert r.facts.listening == frozenset(), "ports are read only when asked"
        assert r.facts.runtime_version and r.facts.runtime_version.startswith("1.6")
        assert r.allocatable is not None
        assert (r.node.capacity is not None) != r.node.has_role("lb"), "workers carry a capacity override"


async def test_listening_ports_read_for_placement(lab):
    async with Pool() as pool:
        reports = await Fleet(lab.inventory, pool).nodes(ports=True)
    for r in reports:
        assert r.facts is not None and 22 in r.facts.listening, r.node.name  # the node's own sshd


def test_cli_nodes_json_and_exit_code(lab):
    out = run_fleet("nodes", "--json", inventory=lab.inventory_path, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [n["name"] for n in doc["nodes"]] == ["n1", "n2", "n3", "lb1"]
    n1 = doc["nodes"][0]
    assert n1["status"] == "ready" and n1["facts"]["cpus"] >= 1
    assert n1["allocatable"] == {"cpu": 1.9, "memory": 2 * 1024**3 - 64 * 1024**2}


def test_unreachable_node_reported_others_ok(lab):
    lab.lab.stop_sshd("n2")
    try:
        out = run_fleet("nodes", inventory=lab.inventory_path, timeout=60)
        assert out.returncode == 1
        address = lab.inventory.node("n2").address
        assert f"n2: unreachable: cannot connect to {address}:22: connection refused" in out.stderr
        assert "3/4 nodes ready" in out.stderr
    finally:
        lab.lab.start_sshd("n2")
    assert run_fleet("nodes", inventory=lab.inventory_path, timeout=60).returncode == 0


def test_changed_host_key_is_refused(lab, tmp_path):
    # Pin n1's address to another node's key: exactly what a changed host key looks like.
    lines = pathlib.Path(lab.inventory.nodes[0].known_hosts or "").read_text().splitlines()
    n1_addr, n3_key = lines[0].split()[0], " ".join(lines[2].split()[1:])
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{n1_addr} {n3_key}\n" + "\n".join(lines[1:]) + "\n")
    inv_text = pathlib.Path(lab.inventory_path).read_text().replace(
        str(lab.inventory.nodes[0].known_hosts), str(kh))
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text(inv_text)
    out = run_fleet("nodes", "--json", inventory=str(inv_path), timeout=60)
    assert out.returncode == 1
    nodes = {n["name"]: n for n in json.loads(out.stdout)["nodes"]}
    assert nodes["n1"]["status"] == "unreachable"
    assert "host key" in nodes["n1"]["reason"] and str(kh) in nodes["n1"]["reason"]
    assert all(nodes[n]["status"] == "ready" for n in ("n2", "n3", "lb1"))


async def test_hostile_arguments_survive_quoting(lab):
    hostile = ["a b", "it's", 'say "hi"', "x; touch /tmp/pwned", "$(id)", "`id`", "line1\nline2", "ünïcødé ☃",
               "--flag", "*", "\\", "", "tab\there"]
    node = lab.inventory.node("n1")
    async with Pool() as pool:
        result = await pool.run(node, ["printf", "%s\\0", *hostile])
    assert result.ok, result
    assert result.stdout.split("\0")[:-1] == hostile
    assert not os.path.exists("/tmp/pwned")


def test_ansible_inventory_reaches_the_lab(lab, tmp_path):
    n = lab.inventory.nodes
    lines = ["[web]"]
    for node in n[:3]:
        lines.append(f"{node.name} ansible_host={node.address} ansible_user=root")
    lines += ["[lb]", f"{n[3].name} ansible_host={n[3].address}", "[all:vars]",
              f"ansible_ssh_private_key_file={n[0].key_files[0]}",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={n[0].known_hosts}'"]
    path = tmp_path / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    inv = load_inventory(str(path))
    assert inv.node("lb1").roles == ("lb",) and inv.node("n1").roles == ("worker",)
    out = run_fleet("nodes", "--json", inventory=str(path), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [x["status"] for x in json.loads(out.stdout)["nodes"]] == ["ready"] * 4
