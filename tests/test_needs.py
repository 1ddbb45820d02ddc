"""A node that lacks what a service needs (runc, the CNI plugins, sshfs) is refused for that service with words
naming `fleet node prepare`; other nodes take its replicas, and replicas already there stay."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from harness import Harness, service, worker

from fleet.config.spec import parse_playbook
from fleet.core.model import Node, Resources
from fleet.engine.nodes import facts_command, report_from
from fleet.node.cni import CNI_PATH
from fleet.node.facts import FACTS_SCRIPT, parse_facts
from fleet.node.haproxy.scripts import LbPaths, apply_script, parse_script_output
from fleet.node.preflight import CNI_DIR, CNI_PLUGINS, lack_text
from fleet.plan.needs import lacking, service_needs
from fleet.plan.reconcile import plan
from fleet.plan.scheduler import Existing, NodeState, ServiceDemand, place

GiB = 1024**3
PLAYBOOK = """services:
  web:
    image: fleet.local/demo:v1
    replicas: 3
  hostnet:
    image: fleet.local/demo:v1
    replicas: 3
    network: host
"""


def node(name: str, *lacks: str) -> NodeState:
    return NodeState(name, Resources(2.0, 2 * GiB), lacks={n: lack_text(name, n) for n in lacks})


def test_what_a_service_needs_follows_its_network_and_volumes() -> None:
    web, hostnet = parse_playbook(PLAYBOOK, "pb.yaml").services
    assert service_needs(web) == {"runc", "cni"} and service_needs(hostnet) == {"runc"}
    vol = parse_playbook("services:\n  db:\n    image: x:1\n    volumes:\n      - {type: sshfs, source: data, "
                         "target: /data}\n", "pb.yaml").services[0]
    assert service_needs(vol) == {"runc", "cni", "sshfs"}


def test_a_node_lacking_cni_plugins_takes_no_bridge_replica_but_a_host_network_one() -> None:
    cni = frozenset({"runc", "cni"})
    wanted = [ServiceDemand("web", 3, Resources(0.1, 64 * 1024**2), needs=cni),
              ServiceDemand("hostnet", 3, Resources(0.1, 64 * 1024**2), needs={"runc"})]
    result = place([node("n1"), node("n2"), node("n3", "cni")], [], wanted)
    on = {s: sorted(a.node for a in result.assignments if a.service == s) for s in ("web", "hostnet")}
    assert on == {"web": ["n1", "n1", "n2"], "hostnet": ["n1", "n2", "n3"]} and not result.unplaced
    # Only n3 left: the replica is unplaced and n3's words say why, naming prepare.
    alone = place([node("n3", "cni", "runc")], [], wanted[:1])
    assert next(u.reason for u in alone.unplaced).endswith("n3 lacks what it needs")
    assert alone.rejected == {"n3": "web: lacks CNI plugins (fleet node prepare n3 installs them); "
                                    "lacks runc (containerd's runtime) (fleet node prepare n3 installs it)"}


def test_a_replica_already_running_on_a_node_that_lacks_a_need_stays() -> None:
    d = ServiceDemand("web", 2, Resources(0.1, 64 * 1024**2), needs={"runc", "cni"})
    running = [Existing("web", 0, "n3", d.resources, 20000)]
    result = place([node("n1"), node("n3", "cni")], running, [d])
    assert [(a.node, a.reason) for a in result.assignments] == [("n3", "keep"), ("n1", "new")]
    assert not result.stops


def test_the_plan_names_the_node_what_it_lacks_and_the_services_it_cannot_start() -> None:
    specs = parse_playbook(PLAYBOOK, "pb.yaml").services
    nodes = [node("n1"), node("n2"), node("n3", "cni", "sshfs")]
    p = plan(specs, nodes, [])
    assert dict(p.lacking) == {"n3": "lacks CNI plugins (fleet node prepare n3 installs them): no replica of web "
                                     "starts there"}
    assert all(a.node != "n3" for a in p.service("web").start)
    assert [a.node for a in p.service("hostnet").start].count("n3") == 1
    # An unhealthy node is reported as such, not as lacking; a node lacking nothing wanted is not named.
    assert lacking([NodeState("n3", Resources(1, GiB), healthy=False, lacks={"cni": "x"})], specs) == {}
    assert lacking([node("n3", "sshfs")], specs) == {}


def _path_without_runc(tmp_path: Path) -> str:
    """A PATH with this machine's tools the facts script uses, but no runc (and sshfs, the CNI plugins as here)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("grep", "df", "mkdir", "mv", "awk", "find", "timeout", "cat", "ctr", "sshfs"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bindir / tool).symlink_to(found)
    return str(bindir)


def test_facts_script_names_what_the_node_lacks_when_planning(tmp_path: Path) -> None:
    """Run on this machine with a PATH that has no runc."""
    assert CNI_DIR == CNI_PATH and f"for c in {' '.join(CNI_PLUGINS)}; do" in FACTS_SCRIPT
    assert f'[ -x "{CNI_PATH}/$c" ]' in FACTS_SCRIPT
    script = facts_command(Node("n1", "10.0.0.1"), ports=True)
    env = {**script.env, "FLEET_DIR": str(tmp_path), "PATH": _path_without_runc(tmp_path)}
    done = subprocess.run(["/bin/sh", "-c", script.text], capture_output=True, text=True, env=env, timeout=30)
    facts = parse_facts(done.stdout)
    assert "runc" in facts.lacks and "cni" not in facts.lacks, re.findall("@lacks=.*", done.stdout)
    env["PORTS"] = ""
    quiet = subprocess.run(["/bin/sh", "-c", script.text], capture_output=True, text=True, env=env, timeout=30)
    assert "@lacks" not in quiet.stdout and parse_facts(quiet.stdout).lacks == frozenset()


def test_a_node_report_carries_the_words_into_the_schedulers_view(tmp_path: Path) -> None:
    n = Node("n3", "10.0.0.3")
    script = facts_command(n, ports=True)
    env = {**script.env, "FLEET_DIR": str(tmp_path), "PATH": _path_without_runc(tmp_path)}
    out = subprocess.run(["/bin/sh", "-c", script.text], capture_output=True, text=True, env=env, timeout=30).stdout
    report = report_from(n, 0, out.replace("@lacks=", "@lacks= cni"), None, 0.1)
    assert report.facts is not None
    # The tools it misses (its runtime, ctr here, lacks nothing a service may ask since `user` has a wrapper).
    assert dict(report.node_state.lacks) == {
        "cni": "lacks CNI plugins (fleet node prepare n3 installs them)",
        "runc": "lacks runc (containerd's runtime) (fleet node prepare n3 installs it)"}


def test_no_runtime_names_prepare() -> None:
    out = "@runtime=\n@socket=0\n@files\n/proc/meminfo:MemTotal: 1000 kB\n"
    report = report_from(Node("n4", "10.0.0.4"), 0, out, None, 0.1)
    assert report.reason == "neither nerdctl nor ctr is installed (fleet node prepare n4 installs containerd)"


async def test_apply_starts_nothing_on_a_node_lacking_cni_plugins_and_says_so() -> None:
    """The engine's run (tests/harness.py: fake replica operations): w3 lacks the CNI plugins."""
    lacking_cni = worker("w3")
    assert lacking_cni.facts is not None
    lacking_cni = replace(lacking_cni, facts=replace(lacking_cni.facts, lacks=frozenset({"cni"})))
    h = Harness([worker("w1"), worker("w2"), lacking_cni])
    result = await h.apply(service("web", 3, cpu=0.1))
    assert result.ok, result.outcomes
    assert {r.node for r in h.ops.of("web")} == {"w1", "w2"}
    assert [e.message for e in h.events if e.step == "lacks"] == [
        "w3: lacks CNI plugins (fleet node prepare w3 installs them): no replica of web starts there"]


def test_an_lb_node_without_haproxy_says_so_and_nothing_is_written(tmp_path: Path) -> None:
    """The HAProxy apply script on a node with no haproxy: the result `missing` (named with prepare by the
    driver), not a config haproxy refused; it stops before making its directory."""
    script = apply_script(LbPaths(str(tmp_path / "haproxy")), 5)
    env = {**script.env, "HAPROXY": str(tmp_path / "no-haproxy"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["/bin/sh", "-c", script.text], input="x\n", capture_output=True, text=True, env=env,
                          timeout=30)
    assert parse_script_output(done.stdout).result == "missing" and not (tmp_path / "haproxy").exists()
