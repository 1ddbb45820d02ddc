"""`fleet nodes` without the lab: facts parsed from output recorded on it, node reports, their table, and an
inventory the CLI refuses."""

from __future__ import annotations

import json
import pathlib

from helpers import run_fleet
from rich.console import Console

from fleet.api import NodeReport, report_from
from fleet.cli.nodes import table
from fleet.config.inventory import parse
from fleet.core.model import Inventory, Node
from fleet.node.facts import parse_facts

DATA = pathlib.Path(__file__).parent / "data" / "facts"


def test_bad_inventory_names_file_and_line(tmp_path):
    path = tmp_path / "inv.yaml"
    path.write_text("nodes:\n  a:\n    address: 10.0.0.1\n    port: many\n")
    out = run_fleet("nodes", inventory=str(path), timeout=60)
    assert out.returncode == 2
    assert f"{path}:4: nodes.a.port:" in out.stderr


def test_no_runtime_and_render():
    node = Node("x", "10.9.9.9")
    recorded = json.loads((DATA / "lab_node_idle.json").read_text())
    no_ctr = recorded["stdout"].replace("@runtime=ctr", "@runtime=")
    stopped = json.loads((DATA / "lab_runtime_stopped.json").read_text())["stdout"]
    reports = [report_from(node, 0, recorded["stdout"], None, 0.1), report_from(node, 0, no_ctr, None, 0.1),
               report_from(node, None, "", "cannot connect to 10.9.9.9:22: connection refused", 0.1),
               report_from(node, 0, stopped, None, 0.1)]
    assert [r.status for r in reports] == ["ready", "no runtime", "unreachable", "runtime not answering"]
    console = Console(record=True, width=100)
    console.print(table(reports))
    text = console.export_text()
    assert "no runtime" in text and "unreachable" in text and "ctr 1.6.20" in text
    assert "runtime not" in text and "answering" in text  # wrapped in 100 columns, one line when wider
    wide = Console(record=True, width=160)
    wide.print(table(reports))
    assert "runtime not answering" in wide.export_text()
    assert "…" not in text, "the table fits 100 columns"


def test_runtime_health_from_recorded_facts():
    """Recorded on the lab: containerd healthy, stopped (SIGSTOP), killed (stale socket), frozen (cgroup freezer)."""
    node = Node("x", "10.9.9.9")
    seen = {}
    for path in sorted(DATA.glob("lab_runtime_*.json")):
        rec = json.loads(path.read_text())
        report = report_from(node, 0, rec["stdout"], None, 0.1)
        assert report.status == rec["status"], (path.name, report.reason)
        assert report.ok == (rec["status"] == "ready")
        seen[path.stem] = report.reason
    assert set(seen) == {"lab_runtime_probed", "lab_runtime_stopped", "lab_runtime_not_running", "lab_runtime_frozen"}
    assert seen["lab_runtime_probed"] is None
    assert seen["lab_runtime_stopped"] == "containerd (pid 20633) is stopped (SIGSTOP): it cannot answer"
    assert seen["lab_runtime_not_running"] == (
        "containerd is not running (nothing listens on /run/containerd/containerd.sock)")
    assert seen["lab_runtime_frozen"] == "containerd (pid 20617, state D) did not answer `ctr version` within 3s"


def test_runtime_state_unknown_falls_back_to_the_socket():
    """Not root (`?`) or an older facts script (no marker): containerd's process is unknown; the socket decides."""
    node = Node("x", "10.9.9.9")
    idle = json.loads((DATA / "lab_node_idle.json").read_text())["stdout"]
    assert "@containerd" not in idle
    unknown = idle.replace("@socket=1\n", "@socket=1\n@containerd=?\n")
    no_socket = idle.replace("@socket=1\n", "@socket=0\n@containerd=\n")
    reports = [report_from(node, 0, text, None, 0.1) for text in (idle, unknown, no_socket)]
    assert [(r.status, r.facts and r.facts.runtime_known) for r in reports] == [
        ("ready", False), ("ready", False), ("no runtime", True)]
    assert reports[2].reason == "containerd is not running (no /run/containerd/containerd.sock)"


def test_recorded_facts_parse():
    for path in DATA.glob("*.json"):
        rec = json.loads(path.read_text())
        facts = parse_facts(rec["stdout"])
        for key, value in rec["expect"].items():
            got = len(facts.tasks) if key == "tasks" else getattr(facts, key)
            assert got == value, (path.name, key)


def test_ansible_yaml_and_fleet_yaml_same_nodes():
    fleet_inv = parse("nodes:\n  a: {address: 10.0.0.1, user: u}\n", "f.yaml")
    ans_inv = parse("all:\n  hosts:\n    a: {ansible_host: 10.0.0.1, ansible_user: u}\n", "a.yaml")
    assert isinstance(fleet_inv, Inventory) and isinstance(ans_inv, Inventory)
    assert (fleet_inv.nodes[0].address, fleet_inv.nodes[0].user) == (ans_inv.nodes[0].address, ans_inv.nodes[0].user)


def test_report_allocatable_caps_and_reserves():
    from fleet.core.model import Resources
    node = Node("x", "h", capacity=Resources(1.0, 1024**3), reserved=Resources(0.1, 64 * 1024**2))
    recorded = json.loads((DATA / "lab_node_idle.json").read_text())
    r: NodeReport = report_from(node, 0, recorded["stdout"], None, 0.1)
    assert r.allocatable == Resources(0.9, 1024**3 - 64 * 1024**2)


def test_cgroup_v2_task_files_parse():
    """cgroup v2 is what stock Debian 12 nodes run; this lab runs v1, so the v2 branch is checked on output
    constructed from the kernel's cgroup-v2 file formats (Documentation/admin-guide/cgroup-v2.rst), not recorded."""
    base = "/run/containerd/io.containerd.runtime.v2.task/fleet/web-0-abc123"
    cg = "/sys/fs/cgroup/fleet/web-0-abc123"
    out = "\n".join([
        "@runtime=ctr", "@socket=1", "@cgroup=2", "@task=web-0-abc123", "@df",
        "Filesystem 1024-blocks Used Available Capacity Mounted on",
        "/dev/vda 1000 400 600 40% /var/lib/containerd", "@files",
        "/proc/sys/kernel/hostname:node7", "/proc/meminfo:MemTotal:  2048 kB", "/proc/meminfo:MemAvailable: 1024 kB",
        "/proc/loadavg:0.50 0.40 0.30 1/100 42", "/proc/uptime:100.5 50.0", "/proc/self/status:Cpus_allowed_list:\t0-3",
        "/proc/net/tcp:   0: 00000000:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
        f"{base}/init.pid:4242", "/proc/4242/stat:4242 (start.sh) S 1 4242",
        f"{cg}/memory.current:1048576", f"{cg}/memory.max:33554432",
        f"{cg}/memory.events:low 0", f"{cg}/memory.events:oom 1", f"{cg}/memory.events:oom_kill 1",
        f"{cg}/cpu.stat:usage_usec 2500", f"{cg}/cpu.stat:user_usec 2000", f"{cg}/cpu.max:50000 100000",
    ]) + "\n"
    facts = parse_facts(out)
    assert (facts.ncpu, facts.mem_total, facts.cgroup, facts.hostname) == (4, 2048 * 1024, 2, "node7")
    assert facts.listening == frozenset({20000})
    (task,) = facts.tasks
    assert (task.running, task.pid, task.mem_usage, task.mem_limit) == (True, 4242, 1048576, 33554432)
    assert (task.cpu_ns, task.cpu_limit, task.oom_kills) == (2_500_000, 0.5, 1)
