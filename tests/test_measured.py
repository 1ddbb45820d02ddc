"""Bin packing on what nodes really use: the node's measured memory (its cgroup's, or /proc/meminfo's), the part
of it fleet's reservations do not cover, and a scheduler that places new replicas only beside it."""

from __future__ import annotations

import json
import pathlib

from fleet.api import report_from
from fleet.cli.nodes import report_json
from fleet.core.model import Node, Resources
from fleet.engine.state import node_states
from fleet.node.facts import NodeFacts, TaskFacts, parse_facts
from fleet.plan.scheduler import Existing, NodeState, ServiceDemand, place

DATA = pathlib.Path(__file__).parent / "data" / "facts"
MiB = 1 << 20
GiB = 1 << 30


def _facts(stdout_lines: list[str]) -> NodeFacts:
    head = ["@runtime=ctr", "@socket=1", "@cgroup=1", "@df", "@files", "/proc/sys/kernel/hostname:n9",
            "/proc/meminfo:MemTotal:  4194304 kB", "/proc/meminfo:MemAvailable: 3145728 kB",
            "/proc/loadavg:1.50 0.40 0.30 1/100 42", "/proc/uptime:100.5 50.0",
            "/proc/self/status:Cpus_allowed_list:\t0-3"]
    return parse_facts("\n".join(head + stdout_lines) + "\n")


def test_recorded_cgroup_node_reads_its_own_memory_with_a_foreign_process():
    """Recorded on lab node n2 (a 1 GiB memory cgroup) while a python process started over SSH held 600 MiB."""
    rec = json.loads((DATA / "lab_node_cgroup_hog.json").read_text())
    facts = parse_facts(rec["stdout"])
    assert (facts.scope, facts.mem_total) == ("cgroup", GiB)
    assert 600 * MiB < facts.mem_used < 700 * MiB
    assert facts.mem_available == facts.mem_total - facts.mem_used
    # The host's load average is not the node's own: no CPU measurement for a cgroup node.
    assert facts.cpu_in_use is None
    assert facts.others == Resources(0.0, facts.mem_used)
    report = report_from(Node("n2", "10.0.0.2"), 0, rec["stdout"], None, 0.1)
    assert report.allocatable == Resources(2.0, GiB)


def test_machine_root_cgroup_without_limit_reads_meminfo():
    facts = _facts(["/sys/fs/cgroup/memory/memory.limit_in_bytes:9223372036854771712",
                    "/sys/fs/cgroup/memory/memory.usage_in_bytes:999999999",
                    "/sys/fs/cgroup/memory/memory.stat:total_inactive_file 1000"])
    assert (facts.scope, facts.mem_total, facts.mem_used) == ("host", 4 * GiB, GiB)
    assert facts.cpu_in_use == 0.3  # loadavg 1.50 0.40 0.30: only the load sustained over all three counts


def test_cgroup_limit_not_below_machine_memory_is_the_machine():
    facts = _facts(["/sys/fs/cgroup/memory/memory.limit_in_bytes:8589934592",
                    "/sys/fs/cgroup/memory/memory.usage_in_bytes:2147483648"])
    assert (facts.scope, facts.mem_total, facts.mem_used) == ("host", 4 * GiB, GiB)


def test_cgroup_v2_limited_node_uses_memory_current_less_inactive_file():
    """Constructed from the kernel's cgroup-v2 file formats, not recorded (this machine runs v1)."""
    facts = _facts(["/sys/fs/cgroup/memory.max:1073741824", "/sys/fs/cgroup/memory.current:314572800",
                    "/sys/fs/cgroup/memory.stat:anon 209715200", "/sys/fs/cgroup/memory.stat:inactive_file 104857600"])
    assert (facts.scope, facts.mem_total, facts.mem_used) == ("cgroup", GiB, 200 * MiB)
    unlimited = _facts(["/sys/fs/cgroup/memory.max:max", "/sys/fs/cgroup/memory.current:314572800"])
    assert unlimited.scope == "host"


def _task(tid: str, usage: int, limit: int | None, cpu: float | None, running: bool = True) -> TaskFacts:
    return TaskFacts(tid, 1, running, usage, limit, 0, cpu, 0)


def _node(tasks: tuple[TaskFacts, ...], used: int, load: float = 0.0, scope: str = "host") -> NodeFacts:
    return NodeFacts("n", 4, 4 * GiB, 4 * GiB - used, (load, load, load), 1.0, 0, 0, "ctr", None, True, 1, tasks,
                     mem_used=used, scope=scope)


def test_others_count_each_container_within_its_reservation_once():
    tasks = (_task("a", 100 * MiB, 256 * MiB, 0.5),  # below its reservation: all of it is fleet's
             _task("b", 300 * MiB, 256 * MiB, 0.5),  # cannot really exceed its limit; counted up to it
             _task("c", 50 * MiB, None, None),  # no reservation: its use counts as measured
             _task("d", 400 * MiB, 512 * MiB, 1.0, running=False))  # stopped: reserves nothing
    facts = _node(tasks, used=1000 * MiB, load=2.5)
    assert facts.requested == Resources(1.0, 512 * MiB)
    assert facts.others == Resources(1.5, 1000 * MiB - 100 * MiB - 256 * MiB)
    # Reservations plus what they do not cover is never below what is measured, nor below the reservations.
    assert facts.requested.memory + facts.others.memory >= facts.mem_used
    idle = _node(tasks, used=200 * MiB, load=0.2)
    assert idle.others == Resources(0.0, 0)
    assert _node(tasks, used=1000 * MiB, load=9.0).others.cpu == 3.0  # load counts up to the node's CPUs
    assert _node(tasks, used=1000 * MiB, load=9.0, scope="cgroup").others.cpu == 0.0


def test_node_states_carry_measured_others_and_nodes_json_shows_both():
    rec = json.loads((DATA / "lab_node_cgroup_hog.json").read_text())
    node = Node("n2", "10.0.0.2", roles=("worker",))
    report = report_from(node, 0, rec["stdout"], None, 0.1)
    (state,) = node_states([report])
    assert state.others == report.facts.others and state.others.memory > 600 * MiB
    doc = report_json(report)
    assert doc["requested"] == {"cpu": 0, "memory": 0}
    assert doc["measured"]["memory_used"] == report.facts.mem_used
    assert doc["measured"]["scope"] == "cgroup" and doc["measured"]["cpu_load"] is None
    assert doc["measured"]["others"]["memory"] == state.others.memory


def _nodes(busy: int) -> list[NodeState]:
    return [NodeState("n1", Resources(2.0, 2 * GiB)),
            NodeState("n2", Resources(2.0, 2 * GiB), others=Resources(0.0, busy)),
            NodeState("n3", Resources(2.0, 2 * GiB))]


def test_new_replicas_go_beside_measured_use():
    web = ServiceDemand("web", 3, Resources(0.1, 512 * MiB))
    calm = place(_nodes(100 * MiB), [], [web])
    assert sorted(a.node for a in calm.assignments) == ["n1", "n2", "n3"]
    busy = place(_nodes(int(1.7 * GiB)), [], [web])
    assert not busy.unplaced and "n2" not in {a.node for a in busy.assignments}


def test_rejection_names_the_measured_figure():
    big = ServiceDemand("big", 1, Resources(0.1, 1536 * MiB), required_labels={})
    nodes = [NodeState("n1", Resources(2.0, 2 * GiB), others=Resources(0.0, int(1.7 * GiB)))]
    placement = place(nodes, [], [big])
    (unplaced,) = placement.unplaced
    assert "most free on an eligible node" in unplaced.reason
    assert placement.rejected["n1"] == ("big: memory: needs 1.5 GiB, 307 MiB free; "
                                        "1.7 GiB in use by other processes")
    cpu = place([NodeState("n1", Resources(2.0, 2 * GiB), others=Resources(1.5, 0))], [],
                [ServiceDemand("c", 1, Resources(1.0, MiB))])
    assert cpu.unplaced and "cpu 1500m in use beyond fleet's requests (load)" in cpu.rejected["n1"]


def test_replicas_already_there_are_not_moved_for_measured_use():
    web = ServiceDemand("web", 2, Resources(0.1, 512 * MiB))
    here = [Existing("web", 0, "n2", Resources(0.1, 512 * MiB), 20000),
            Existing("web", 1, "n2", Resources(0.1, 512 * MiB), 20001)]
    placement = place(_nodes(int(1.9 * GiB)), here, [web])
    assert [(a.node, a.reason) for a in placement.assignments] == [("n2", "keep"), ("n2", "keep")]
    assert not placement.stops


def test_node_states_built_once_per_report_and_node_errors_make_it_unhealthy():
    rec = json.loads((DATA / "lab_node_cgroup_hog.json").read_text())
    report = report_from(Node("n2", "10.0.0.2", roles=("worker",)), 0, rec["stdout"], None, 0.1)
    (first,) = node_states([report])
    (again,) = node_states([report])
    assert first is again and first.healthy
    (errored,) = node_states([report], {"n2": "listing failed"})
    assert not errored.healthy and errored.others == first.others and errored.capacity == first.capacity
    assert report.node_state.healthy  # the report's own view is not changed by one run's errors
