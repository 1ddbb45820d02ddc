"""A watcher round's one command per node (fleet.node.look): the joined script run by a real /bin/sh with stand-in
parts, its gate against the facts recorded on the lab, and the engine's `look` giving what `collect` then `ps`
give. The real script on real nodes: tests/test_watch_lab.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fleet.core.errors import CommandTimeout, RuntimeCommandError
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.engine.containers import ps
from fleet.engine.look import look, look_command
from fleet.engine.nodes import collect, report_from
from fleet.node.facts import parse_facts
from fleet.node.look import GATE, LIST_MARK, RC_MARK, look_script, split
from fleet.node.runtime.base import check
from fleet.node.runtime.ctr import parse_list

DATA = Path(__file__).parent / "data"
FACTS = {p.stem: json.loads(p.read_text()) for p in (DATA / "facts").glob("*.json")}
LISTED = json.loads((DATA / "ctr" / "list.json").read_text())

# Stand-ins for the two parts, run for real inside the joined script: the facts part sets the variables the real
# facts script sets and prints a recorded output; the listing prints a recorded output and exits as told.
STUB_FACTS = Script('RT=$STUB_RT; S=$STUB_SOCK; CP=$STUB_CP; st=$STUB_ST\ncat "$STUB_FACTS"\n'
                    "echo 'facts noise' >&2\nexit 0\n", name="fleet-facts")
STUB_LIST = Script('touch "$STUB_RAN"\nprintf %s "$(cat "$STUB_LIST")$STUB_TAIL"\n'
                   '[ -z "$STUB_ERR" ] || echo "$STUB_ERR" >&2\nexit "$STUB_RC"\n')


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[str]:
    """A unix socket file, as containerd's socket is to the gate's `[ -S ]`."""
    path = str(tmp_path / "c.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    try:
        yield path
    finally:
        s.close()


def run_joined(tmp_path: Path, sock: str, facts: str, listing: str, *, st: str = "S", rc: int = 0,
               err: str = "", tail: str = "\n") -> tuple[CommandResult, bool]:
    """The joined script of the stand-ins, rendered as it is sent and run by /bin/sh: (result, listing ran)."""
    (tmp_path / "facts").write_text(facts)
    (tmp_path / "list").write_text(listing.removesuffix("\n"))
    ran = tmp_path / "ran"
    ran.unlink(missing_ok=True)
    env = {"STUB_RT": "ctr", "STUB_SOCK": sock, "STUB_CP": "77", "STUB_ST": st, "STUB_FACTS": str(tmp_path / "facts"),
           "STUB_LIST": str(tmp_path / "list"), "STUB_RAN": str(ran), "STUB_RC": str(rc), "STUB_ERR": err,
           "STUB_TAIL": tail}
    script = look_script(replace(STUB_FACTS, env=env), {"ctr": STUB_LIST, "nerdctl": Script("exit 9\n")})
    proc = subprocess.run(["/bin/sh", "-c", script.render()], capture_output=True, text=True, timeout=20,
                          env={"PATH": os.environ["PATH"]})
    return CommandResult("n1", proc.returncode, proc.stdout, proc.stderr, 0.1), ran.exists()


def test_joined_output_splits_into_the_facts_and_the_listing_as_each_command_printed_them(tmp_path, sock):
    facts = FACTS["lab_runtime_probed"]["stdout"]
    result, ran = run_joined(tmp_path, sock, facts, LISTED["stdout"])
    parts = split(result)
    assert ran and parts.runtime == "ctr"
    assert (parts.facts.exit_status, parts.facts.stdout) == (0, facts)
    assert parts.listing is not None and parts.listing.stdout == LISTED["stdout"]
    # The facts part's stderr is dropped: what the command says on stderr is the listing's.
    assert (parts.listing.exit_status, parts.listing.stderr) == (0, "")
    assert report_from(Node("n1", "10.0.0.1"), 0, parts.facts.stdout, None, 0.1).ok
    infos = parse_list(parts.listing)
    assert infos == parse_list(CommandResult("n1", 0, LISTED["stdout"], "", 0.1))
    expect = LISTED["expect"]
    assert [(i.id, i.status.value, i.pid) for i in infos] == [(e["id"], e["status"], e["pid"]) for e in expect]


def test_a_failing_listing_is_that_parts_failure_with_its_status_and_stderr(tmp_path, sock):
    facts = FACTS["lab_runtime_probed"]["stdout"]
    result, _ = run_joined(tmp_path, sock, facts, "@@tasks\n", rc=3, err="ctr: failed to dial", tail="")
    parts = split(result)
    assert parts.facts.stdout == facts and report_from(Node("n1", "10.0.0.1"), 0, facts, None, 0.1).ok
    assert parts.listing is not None
    # Exactly what the list command alone returned (`exit 3` in its subshell; its output without a newline).
    assert (parts.listing.exit_status, parts.listing.stdout, parts.listing.stderr) == (
        3, "@@tasks", "ctr: failed to dial\n")
    with pytest.raises(RuntimeCommandError) as joined:
        parse_list(parts.listing)
    with pytest.raises(RuntimeCommandError) as alone:
        check(CommandResult("n1", 3, "@@tasks", "ctr: failed to dial\n", 0.1), "list")
    assert str(joined.value) == str(alone.value)


def test_facts_that_fail_to_parse_make_the_node_an_error_whatever_its_listing(tmp_path, sock):
    result, ran = run_joined(tmp_path, sock, "not facts\n", LISTED["stdout"])
    parts = split(result)
    report = report_from(Node("n1", "10.0.0.1"), parts.facts.exit_status, parts.facts.stdout, None, 0.1)
    assert ran and (report.status, report.reason) == (
        "error", "facts script exited 0: not the output of the facts script")


def test_a_containerd_the_facts_find_stopped_is_not_listed(tmp_path, sock):
    result, ran = run_joined(tmp_path, sock, FACTS["lab_runtime_stopped"]["stdout"], LISTED["stdout"], st="T")
    parts = split(result)
    assert not ran and parts.listing is None and parts.facts == result
    assert LIST_MARK not in result.stdout and RC_MARK not in result.stdout


def gate_says(sock: str, rt: str, cp: str, st: str, rc: str, socket_there: bool) -> bool:
    text = GATE + f'S={sock if socket_there else "/nonexistent.sock"}\nfleet_lists "$1" "$2" "$3" "$4"\n'
    return subprocess.run(["/bin/sh", "-c", text, "gate", rt, cp, st, rc], timeout=10).returncode == 0


def markers(stdout: str) -> dict[str, str]:
    return dict(line[1:].partition("=")[::2] for line in stdout.splitlines()
                if line.startswith("@") and "=" in line and not line.startswith("@task="))


def test_the_gate_lists_exactly_the_nodes_the_facts_parser_finds_ready(sock):
    """The shell's verdict and fleet.engine.nodes.runtime_problem's agree on every recorded state of containerd
    (healthy, probed, stopped, frozen, not running), and on the socket gone and on a PID not known (`?`)."""
    node = Node("n1", "10.0.0.1")
    cases = {k: v["stdout"] for k, v in FACTS.items() if "@containerd=" in v["stdout"]}
    probed = FACTS["lab_runtime_probed"]["stdout"]
    cases["no_socket"] = probed.replace("@socket=1\n", "@socket=0\n").replace("@containerd=20617\n", "@containerd=\n")
    cases["pid_unknown"] = probed.replace("@containerd=20617\n", "@containerd=?\n")
    cases["no_runtime"] = probed.replace("@runtime=ctr\n", "@runtime=\n")
    verdicts = {}
    for name, stdout in cases.items():
        m = markers(stdout)
        probe = m.get("probe", "")
        rc = "124" if probe == "timeout" else "0" if probe == "ok" else probe.removeprefix("failed ")
        shell = gate_says(sock, m["runtime"], m["containerd"], m.get("containerd_state", ""), rc, m["socket"] == "1")
        python = report_from(node, 0, stdout, None, 0.1).ok
        assert shell == python, name
        verdicts[name] = shell
    assert sorted(k for k, v in verdicts.items() if v) == ["lab_node_cgroup_hog", "lab_runtime_probed", "pid_unknown"]


def test_the_joined_script_is_the_facts_script_named_as_it_and_the_same_for_every_node_of_a_namespace():
    a, b = look_command(Node("a", "10.0.0.1"), True), look_command(Node("b", "10.0.0.2"), True)
    assert a is b and a.name == "fleet-facts" and dict(a.env)["NS"] == "fleet" and dict(a.env)["PORTS"] == "1"
    assert look_command(Node("c", "10.0.0.3", namespace="other")).env["NS"] == "other"
    assert subprocess.run(["dash", "-n", "-c", a.text], timeout=10).returncode == 0
    with pytest.raises(ValueError, match="disagree"):
        look_script(Script("exit 0\n", {"NS": "fleet"}), {"ctr": Script("true\n", {"NS": "other"})})


# --- the engine: `look` gives what `collect` then `ps` give ----------------------------------------------------

READY = FACTS["lab_runtime_probed"]["stdout"]
STOPPED = FACTS["lab_runtime_stopped"]["stdout"]


class RecordedPool:
    """A fake pool, labelled as such: each node answers the facts command, the list command and the joined one
    from the same recorded outputs, the joined one as the script prints them (tested above with a real /bin/sh).
    `nodes[name] = (facts stdout, listing)`, the listing a (status, stdout, stderr) or "timeout"."""

    def __init__(self, nodes: dict[str, tuple[str, Any]]) -> None:
        self.nodes = nodes
        self.calls: list[tuple[str, str]] = []

    async def run(self, node: Node, command: Any, *, timeout: float | None = None, **_: Any) -> CommandResult:
        facts, listing = self.nodes[node.name]
        kind = "joined" if LIST_MARK in command.text else "facts" if command.name == "fleet-facts" else "list"
        self.calls.append((node.name, kind))
        late = CommandTimeout(node.name, f"`{command.name}` did not finish within {timeout:g}s")
        if kind == "facts":
            return CommandResult(node.name, 0, facts, "", 0.1)
        if kind == "list":
            if listing == "timeout":
                return CommandResult(node.name, None, "@@container a\n", "", 0.1, late.message, late)
            return CommandResult(node.name, listing[0], listing[1], listing[2], 0.1)
        if not report_from(node, 0, facts, None, 0.1).ok:
            return CommandResult(node.name, 0, facts, "", 0.1)
        out = f"{facts}{LIST_MARK}ctr\n"
        if listing == "timeout":
            return CommandResult(node.name, None, out + "@@container a\n", "", 0.1, late.message, late)
        return CommandResult(node.name, 0, f"{out}{listing[1]}\n{RC_MARK}{listing[0]}\n", listing[2], 0.1)


async def test_look_gives_the_reports_listings_and_errors_of_the_two_commands_in_one_trip_per_node():
    nodes = [Node(f"n{i}", f"10.0.0.{i}") for i in range(1, 6)]
    pool = RecordedPool({
        "n1": (READY, (0, LISTED["stdout"], "")),
        "n2": ("not facts\n", (0, LISTED["stdout"], "")),  # facts fail, the listing works: an error, as before
        "n3": (READY, (1, "", "ctr: failed to dial\n")),  # the listing fails: that node's error, its report ready
        "n4": (STOPPED, (0, LISTED["stdout"], "")),  # not ready: not listed
        "n5": (READY, "timeout"),  # the listing does not finish: its facts stand
    })
    reports, listed = await look(pool, nodes, ports=True)  # type: ignore[arg-type]
    assert [k for _, k in pool.calls] == ["joined"] * 5
    pool.calls.clear()
    before = await collect(pool, nodes, ports=True)  # type: ignore[arg-type]
    alone = await ps(pool, before)  # type: ignore[arg-type]
    assert sorted(k for _, k in pool.calls) == ["facts"] * 5 + ["list"] * 3

    def strip(r: Any) -> Any:
        return replace(r, duration=0.0)

    assert [strip(r) for r in reports] == [strip(r) for r in before]
    assert [r.status for r in reports] == ["ready", "error", "ready", "runtime not answering", "ready"]
    assert listed.rows == alone.rows and {r.node for r in listed.rows} == {"n1"} and len(listed.rows) == 5
    # The same errors, but for the deadline a listing had: the facts' one (10 s), for the whole round trip.
    assert {**alone.errors, "n5": "?"} == {**listed.errors, "n5": "?"}
    assert alone.errors["n5"] == "list containers did not answer within 8s"
    assert listed.errors["n5"] == "list containers did not answer within 10s"
    assert listed.errors["n3"] == "list failed (exit 1): ctr: failed to dial"


async def test_a_ready_node_whose_listing_did_not_come_with_its_facts_is_listed_apart():
    pool = RecordedPool({"n1": (READY, (0, LISTED["stdout"], ""))})

    async def no_listing(node: Node, command: Any, **kw: Any) -> CommandResult:
        result = await RecordedPool.run(pool, node, command, **kw)
        return replace(result, stdout=result.stdout.split(LIST_MARK)[0]) if LIST_MARK in command.text else result

    pool.run = no_listing  # type: ignore[method-assign]
    reports, listed = await look(pool, [Node("n1", "10.0.0.1")])  # type: ignore[arg-type]
    assert [k for _, k in pool.calls] == ["joined", "list"]
    assert reports[0].ok and len(listed.rows) == 5 and not listed.errors


def test_facts_are_the_same_with_an_unknown_marker_after_the_files_or_crlf_line_ends():
    """A marker line after `@files` that means nothing to NodeFacts, or CRLF line ends, change no fact."""
    for name, rec in FACTS.items():
        text = rec["stdout"]
        assert "\n@files\n" in text and "\n@" not in text.partition("\n@files\n")[2], name
        assert parse_facts(text) == parse_facts(text + "@unused=1\n"), name
        assert parse_facts(text) == parse_facts(text.replace("\n", "\r\n")), name
