"""The command line for everyday use, without the lab: selection by name, node and label; output that never lies
(-o json|yaml|wide|name, no column dropped at 80 columns, full tab-separated values on a pipe, reasons on stderr);
`fleet describe` rendered from values as the façade returns them."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from helpers import free_port, run_fleet
from rich.console import Console
from sshserver import SSHFarm
from test_cli_conventions import _complete
from test_nodeops import report
from typer.testing import CliRunner

from fleet.cli import common, describe, nodes, output, ps, rollout, status
from fleet.cli.main import app
from fleet.config.spec import load_playbooks, parse_playbook, to_playbook_dict
from fleet.core.errors import SpecError
from fleet.core.labels import ContainerLabels
from fleet.core.model import Resources
from fleet.core.nodeops import NodeMark
from fleet.node.runtime.base import ContainerInfo, Status
from fleet.node.runtime.ctr import CtrDriver
from fleet.node.runtime.nerdctl import NerdctlDriver
from fleet.plan.reconcile import Replica
from fleet.results import FleetStatus, PsResult, PsRow, ReplicaStatus, Revision, ServiceStatus

LONG = "worker-eu-west-1a-production-frontend-tier-01"  # 45 characters
assert len(LONG) == 45
HEADERS = [c.header for c in nodes.COLUMNS if not c.wide]


def terminal(width: int) -> Console:
    return Console(record=True, width=width, force_terminal=True, color_system=None)


def piped() -> Console:
    return Console(file=io.StringIO(), width=80)


# ---- fleet nodes at 80 columns and on a pipe ------------------------------------------------------------------

def test_nodes_at_80_columns_keep_every_column_and_the_full_name() -> None:
    reports = [report(LONG, NodeMark(cordoned=True)), report("n2", why="no record node answered")]
    blocks = terminal(60)  # narrower still: one block per node, a line per column
    output.print_listing(nodes.listing(reports), out=blocks)
    narrow = blocks.export_text()
    assert narrow.count("\nSTATUS ") == 2 and LONG in narrow.split()
    out = terminal(80)
    output.print_listing(nodes.listing(reports), out=out)
    text = out.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    assert LONG in text.split()
    for header in HEADERS:
        assert header in text.split(), header
    # Too wide for one table: a few, each led by the full name, or one block per node when that takes more.
    parts = text.split("\n\n")
    assert all(part.splitlines()[1].startswith(LONG + " ") for part in parts) or text.count("\nSTATUS ") == 2
    assert "cordoned" in text


def test_nodes_too_wide_for_80_columns_are_cut_into_tables_each_led_by_the_name() -> None:
    reports = [report("n1", labels={"zone": "eu-west-1a"}), report("node-2", NodeMark(cordoned=True))]
    out = terminal(80)
    output.print_listing(nodes.listing(reports), out=out)
    text = out.export_text()
    tables = text.split("\n\n")
    assert len(tables) == 2 and all(len(line) <= 80 for line in text.splitlines())
    headers = [t.splitlines()[0].split() for t in tables]
    assert [h[0] for h in headers] == ["NODE", "NODE"]
    assert headers[0][1:] + headers[1][1:] == [h for h in HEADERS if h != "NODE"]  # every column, in order
    assert [[line.split()[0] for line in t.splitlines()[1:]] for t in tables] == [["n1", "node-2"]] * 2


def test_nodes_that_fit_are_a_table_whose_cells_may_wrap_but_are_never_cut() -> None:
    reports = [report("n1"), report("n2", NodeMark(cordoned=True, labels={"disk": "ssd"}))]
    out = terminal(100)
    output.print_listing(nodes.listing(reports), out=out)
    text = out.export_text()
    assert text.splitlines()[0].split() == HEADERS
    assert "…" not in text and "disk=ssd" in text


def test_nodes_on_a_pipe_are_tab_separated_full_values() -> None:
    reports = [report(LONG, labels={"zone": "eu-west-1a"}), report("n2")]
    out = piped()
    output.print_listing(nodes.listing(reports), out=out)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].split("\t") == [h for h in HEADERS if h != "SCHED"]
    first = dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=True))
    assert (first["NODE"], first["ZONE"], first["RUNTIME"]) == (LONG, "eu-west-1a", "ctr 1.6.20")
    wide = piped()
    output.print_listing(nodes.listing(reports, wide=True), wide=True, out=wide)
    header = wide.file.getvalue().splitlines()[0].split("\t")  # type: ignore[attr-defined]
    assert header == [c.header for c in nodes.COLUMNS]
    assert "zone=eu-west-1a" in wide.file.getvalue()  # type: ignore[attr-defined]


def _inventory(tmp_path: Path, *names: str, port: int | None = None) -> str:
    """Nodes on a loopback port nothing listens on: each is unreachable at once."""
    path = tmp_path / "inventory.yaml"
    port = port or free_port()
    path.write_text("nodes:\n" + "".join(f"  {n}: {{address: 127.0.0.1, port: {port}, roles: [worker]}}\n"
                                         for n in names))
    return str(path)


def test_fleet_nodes_piped_names_every_column_and_the_full_name_reasons_on_stderr(tmp_path: Path) -> None:
    port = free_port()
    inv = _inventory(tmp_path, LONG, "n2", port=port)
    out = run_fleet("nodes", inventory=inv, timeout=60)
    assert out.returncode == common.EXIT_PARTIAL, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["NODE", "ADDRESS", "STATUS"]
    assert set(HEADERS) <= set(lines[0].split("\t"))
    assert [line.split("\t")[0] for line in lines[1:]] == [LONG, "n2"]
    assert all(line.split("\t")[2] == "unreachable" for line in lines[1:])
    assert f"{LONG}: unreachable: cannot connect to 127.0.0.1:{port}" in out.stderr
    assert "0/2 nodes ready" in out.stderr and "nodes ready" not in out.stdout


def test_fleet_nodes_selects_by_name_and_prints_names(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, "n1", "n2", "n3")
    out = run_fleet("nodes", "n3", "n1", "-o", "name", inventory=inv, timeout=60)
    assert (out.returncode, out.stdout) == (common.EXIT_PARTIAL, "node/n1\nnode/n3\n"), out.stderr
    doc = yaml.safe_load(run_fleet("nodes", "n2", "-o", "yaml", inventory=inv, timeout=60).stdout)
    assert [n["name"] for n in doc["nodes"]] == ["n2"] and doc["nodes"][0]["status"] == "unreachable"


@pytest.mark.parametrize(("args", "message"), [
    (["nodes", "n4"], "no node 'n4' (did you mean 'n3' or 'n2' or 'n1'?)"),  # best first (difflib)
    (["nodes", "web-1"], "no node 'web-1' (there are: n1, n2, n3)"),
    (["status", "--node", "n0"], "no node 'n0' (did you mean"),
    (["ps", "--node", "m1"], "no node 'm1' (did you mean 'n1'"),
    (["logs", "web", "--node", "n9"], "no node 'n9' (did you mean"),
    (["nodes", "--json", "-o", "yaml"], "--json and -o yaml: choose one"),
    (["nodes", "--selector", "zone"], "--selector: expected key=value, got 'zone'"),
])
def test_an_unknown_node_or_a_bad_selection_is_a_usage_error_before_any_connection(
        tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-i", _inventory(tmp_path, "n1", "n2", "n3")])
    assert result.exit_code == common.EXIT_USAGE, result.output
    assert message in " ".join(result.output.split())


def test_an_unknown_service_suggests_one_the_playbooks_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "web.yaml").write_text("services:\n  web: {image: 'demo:v1', replicas: 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_PLAYBOOKS", raising=False)
    inv = _inventory(tmp_path, "n1")
    for command in ("status", "ps"):
        result = CliRunner().invoke(app, [command, "wbe", "-i", inv])
        assert result.exit_code == common.EXIT_USAGE, result.output
        assert "no service 'wbe' (did you mean 'web'?)" in result.output


def test_bad_output_format_is_refused_naming_the_choices() -> None:
    result = CliRunner().invoke(app, ["status", "-o", "xml"])
    assert result.exit_code == common.EXIT_USAGE
    assert "xml" in result.output and "json" in result.output


# ---- selection on values ----------------------------------------------------------------------------------------

def _replica(service: str, node: str, index: int, revision: int = 3, running: bool = True) -> Replica:
    return Replica(node, f"{service}-{index}-r{revision}-abc", service, index, revision, "f00d" * 4, 20000 + index,
                   running, Resources(0.25, 64 << 20), "fleet.local/demo:v2")


def fleet_status() -> FleetStatus:
    web = ServiceStatus("web", (ReplicaStatus(_replica("web", "n1", 1), "10.0.0.1", {"lb1": "up"}),
                                ReplicaStatus(_replica("web", "n2", 2), "10.0.0.2", {"lb1": "down"})),
                        ("10.0.0.9:8080",), requests=(120, 3))
    api = ServiceStatus("api", (ReplicaStatus(_replica("api", "n2", 1), "10.0.0.2", {"lb1": "up"}),), ())
    return FleetStatus((api, web), errors={"n3": "unreachable"}, lb_errors={})


def test_status_selection_keeps_the_named_services_and_the_replicas_on_the_nodes() -> None:
    st = fleet_status()
    only_web = status.select(st, ["web"], None)
    assert [s.name for s in only_web.services] == ["web"] and len(only_web.services[0].replicas) == 2
    on_n1 = status.select(st, [], {"n1"})
    assert [(s.name, [r.replica.node for r in s.replicas]) for s in on_n1.services] == [("web", ["n1"])]
    assert on_n1.errors == {}  # n3 was not asked about
    assert status.select(st, ["api"], {"n1"}).services[0].replicas == ()  # named: shown, with none there


def test_status_rows_carry_the_service_on_every_line_and_wide_names_the_lb_node() -> None:
    out = piped()
    output.print_listing(status.listing(fleet_status(), wide=True), wide=True, out=out)
    lines = [line.split("\t") for line in out.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert lines[0][:3] == ["SERVICE", "REPLICA", "NODE"] and "CONTAINER" in lines[0] and "ENDPOINT" in lines[0]
    assert [row[0] for row in lines[1:]] == ["api", "web", "web"]
    assert "lb1:down" in lines[3] and "web-2-r3-abc" in lines[3] and "fleet.local/demo:v2" in lines[3]


def _ps_row(node: str, service: str | None, cid: str, running: bool = True) -> PsRow:
    info = ContainerInfo(cid, "docker.io/library/busybox:1.36", {}, Status.RUNNING if running else Status.STOPPED)
    return PsRow(node, info, ContainerLabels(service, revision=1, replica=1) if service else None)


def test_ps_selection_by_service_and_node() -> None:
    rows = [_ps_row("n1", "web", "a"), _ps_row("n2", "web", "b"), _ps_row("n1", None, "c"), _ps_row("n2", "api", "d")]
    assert [r.info.id for r in ps.select(rows, ["web"], None)] == ["a", "b"]
    assert [r.info.id for r in ps.select(rows, [], {"n1"})] == ["a", "c"]
    assert [r.info.id for r in ps.select(rows, ["web", "api"], {"n2"})] == ["b", "d"]


def test_labels_select_nodes_with_every_pair() -> None:
    wanted = output.parse_selector(["zone=eu,disk=ssd", "tier=web"])
    assert wanted == {"zone": "eu", "disk": "ssd", "tier": "web"}
    picked = nodes.select([report("a", labels={"zone": "eu", "disk": "ssd", "tier": "web"}),
                           report("b", labels={"zone": "eu", "disk": "hdd", "tier": "web"}),
                           report("c", NodeMark(labels={"disk": "ssd", "tier": "web"}), {"zone": "eu"})],
                          [], wanted)
    assert [r.node.name for r in picked] == ["a", "c"]  # c's disk label comes from `fleet node label`


def test_suggestions_name_close_names_or_list_what_there_is() -> None:
    assert output.unknown("service", "wbe", ["web", "api"]) == "no service 'wbe' (did you mean 'web'?)"
    assert output.unknown("service", "zzz", ["web", "api"]) == "no service 'zzz' (there are: api, web)"
    assert output.unknown("service", "zzz", []) == "no service 'zzz' (there is no service)"


# ---- describe --------------------------------------------------------------------------------------------------

def _revision(n: int, outcome: str, image: str = "fleet.local/demo:v2", reason: str = "") -> Revision:
    spec = parse_playbook(f"services:\n  web:\n    image: {image}\n    replicas: 2\n    lb: {{port: 8080}}\n",
                          "pb.yaml").services[0]
    return Revision("web", n, spec.spec_hash(), image, "ann@ops", 1_700_000_000.0 + n, 1_700_000_060.0 + n,
                    outcome, reason, json.dumps(to_playbook_dict(spec)))  # type: ignore[arg-type]


def service_view() -> describe.ServiceView:
    revs = [_revision(1, "succeeded", "fleet.local/demo:v1"), _revision(2, "failed", "fleet.local/demo:bad",
                                                                         "web-1 never became ready"),
            _revision(3, "succeeded")]
    state = {"accepted": 3, "decision": "applied", "by": "ann@ops", "at": time.time(), "reason": ""}
    return describe.ServiceView("web", state, revs, status.select(fleet_status(), ["web"], None))


def test_describe_service_json_has_the_accepted_spec_replicas_health_and_revisions() -> None:
    doc = describe.service_json(service_view())
    assert (doc["kind"], doc["name"], doc["accepted_revision"]) == ("service", "web", 3)
    assert doc["spec"]["image"] == "fleet.local/demo:v2" and doc["spec"]["lb"]["port"] == 8080
    assert [(r["node"], r["lb"]) for r in doc["replicas"]] == [("n1", {"lb1": "up"}), ("n2", {"lb1": "down"})]
    assert (doc["running"], doc["healthy"], doc["requests"]) == (2, 1, {"total": 120, "5xx": 3})
    assert [(r["revision"], r["outcome"]) for r in doc["revisions"]] == [(1, "succeeded"), (2, "failed"),
                                                                          (3, "succeeded")]
    assert "spec_json" not in doc["revisions"][0]
    json.dumps(doc)


def test_describe_service_text_shows_every_part() -> None:
    out = terminal(120)
    out.print(describe.service_view(service_view(), out))
    text = out.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120
    words = " ".join(text.split())  # a cell may wrap
    for part in ("Accepted", "revision 3 (fleet.local/demo:v2)", "Decision", "applied by ann@ops",
                 "2 running, 1 healthy", "120 (3 5xx)", "Spec at revision 3", "image: fleet.local/demo:v2",
                 "lb1:down", "web-2-r3-abc", "web-1 never became", "n3: unreachable"):
        assert part in words, part


def test_describe_node_shows_facts_marks_and_its_containers() -> None:
    r = report("n1", NodeMark(cordoned=True, labels={"disk": "ssd"}, by="ann@ops", at=1_700_000_000.0),
               {"zone": "a"})
    containers = PsResult((_ps_row("n1", "web", "web-1-r3-abc"), _ps_row("n1", None, "foreign-1")))
    view = describe.NodeView(r, containers)
    out = terminal(120)
    out.print(describe.node_view(view, out))
    text = out.export_text()
    for part in ("Node", "n1", "cordoned", "disk=ssd", "zone=a", "Marked by", "ann@ops", "Hostname", "Runtime",
                 "Containers (2)", "web-1-r3-abc", "foreign-1", "(foreign)"):
        assert part in text, part
    doc = describe.node_json(view)
    assert (doc["kind"], doc["name"], doc["cordoned"]) == ("node", "n1", True)
    assert [c["id"] for c in doc["containers"]] == ["web-1-r3-abc", "foreign-1"]


def test_describe_refuses_listing_formats() -> None:
    result = CliRunner().invoke(app, ["describe", "web", "-o", "wide"])
    assert result.exit_code == common.EXIT_USAGE and "use json or yaml" in result.output


def test_history_listing_and_names() -> None:
    revs = service_view().revisions
    out = piped()
    output.print_listing(rollout.listing(revs), out=out)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].split("\t") == ["REV", "IMAGE", "SPEC", "USER", "STARTED", "FINISHED", "OUTCOME", "REASON"]
    assert lines[2].split("\t")[-1] == "web-1 never became ready"
    assert [line.split("\t")[0] for line in lines[1:]] == ["1", "2", "3"]


# ---- errors that say what to do --------------------------------------------------------------------------------

async def test_an_unknown_host_key_is_reported_with_the_ssh_keyscan_line(tmp_path: Path) -> None:
    """A real SSH server; HOME has no ~/.ssh/known_hosts and the inventory pins no file."""
    home = tmp_path / "home"
    home.mkdir()
    async with SSHFarm(tmp_path / "farm") as farm:
        (node,) = await farm.start(1)
        inv = tmp_path / "inventory.yaml"
        inv.write_text(f"nodes:\n  n1: {{address: 127.0.0.1, port: {node.port}, user: fleet, "
                       f"key: {farm.client_key_path}, roles: [worker]}}\n")
        env = {**os.environ, "HOME": str(home), "FLEET_NO_WATCHER": "1"}
        out = await asyncio.to_thread(run_fleet, "nodes", inventory=str(inv), env=env, timeout=60)
        assert farm.servers["n1"].commands == []
    assert out.returncode == common.EXIT_PARTIAL, out.stderr
    assert f"n1: unreachable: host key for 127.0.0.1 (port {node.port}) is not in ~/.ssh/known_hosts" in out.stderr
    assert f"pin it with `ssh-keyscan -p {node.port} 127.0.0.1 >> ~/.ssh/known_hosts`" in out.stderr


def test_a_misspelled_playbook_field_gets_a_suggestion_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text("services:\n  web:\n    image: demo:v1\n    replica: 3\n    lb: {prot: 8080}\n"
                    "    update: {stratgy: rolling}\n    zzzz: 1\n")
    with pytest.raises(SpecError) as info:
        load_playbooks([str(path)])
    assert [str(p) for p in info.value.problems] == [
        f"{path}:4: services.web.replica: unknown field (did you mean 'replicas'?)",
        f"{path}:5: services.web.lb.prot: unknown field (did you mean 'port' or 'ports'?)",
        f"{path}:6: services.web.update.stratgy: unknown field (did you mean 'strategy'?)",
        f"{path}:7: services.web.zzzz: unknown field",
    ]


# ---- exec on a terminal -------------------------------------------------------------------------------------------

def test_exec_tty_needs_a_terminal_and_asks_the_runtime_for_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["exec", "-it", "web", "-i", _inventory(tmp_path, "n1"), "--", "sh"])
    assert result.exit_code == common.EXIT_USAGE
    assert "-t: the input is not a terminal" in result.output
    argv = CtrDriver().exec_argv("web-1", ["sh"], "e1", tty=True)
    assert argv[argv.index("exec"):] == ["exec", "--tty", "--exec-id", "e1", "web-1", "sh"]
    assert "--tty" not in CtrDriver().exec_argv("web-1", ["sh"], "e1")
    assert NerdctlDriver().exec_argv("web-1", ["sh"], tty=True)[-5:] == ["exec", "-i", "-t", "web-1", "sh"]


def test_describe_completes_nodes_and_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "web.yaml").write_text("services:\n  web: {image: 'demo:v1', replicas: 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_PLAYBOOKS", raising=False)
    inv = _inventory(tmp_path, "n1", "worker-1")
    assert _complete("fleet describe ", FLEET_INVENTORY=inv) == ["n1", "web", "worker-1"]
    assert _complete("fleet describe w", FLEET_INVENTORY=inv) == ["web", "worker-1"]


def test_nodes_measured_column_is_the_sustained_load_the_scheduler_counts() -> None:
    """A burst raises the 1-minute average alone: MEASURED shows the load the scheduler counts (the lowest of
    the three averages), as `--json`'s `cpu_load` does."""
    r = report("n1")
    assert r.facts is not None
    facts = dataclasses.replace(r.facts, load=(3.0, 1.25, 0.5), scope="host")
    out = piped()
    output.print_listing(nodes.listing([dataclasses.replace(r, facts=facts)]), out=out)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    row = dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=True))
    assert row["MEASURED"].split("/")[0] == "0.50" == format(facts.cpu_in_use, ".2f")
