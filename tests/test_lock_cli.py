"""`fleet lock` output: one line per record node, a summary that follows the majority, no token anywhere."""

from __future__ import annotations

import json

from rich.console import Console

from fleet.cli.lock import holder_of, lease_json, print_leases, summary
from fleet.core.errors import LeaseInfo

ALICE = dict(holder="alice@ci-3", pid=4242, command="fleet apply [web]", since=1000.0, until=1030.0,
             read_at=1010.0, token="a11ce")


def info(node: str, **kw: object) -> LeaseInfo:
    return LeaseInfo(node=node, **{**ALICE, **kw})  # type: ignore[arg-type]


def render(leases, broken: bool = False) -> str:
    out = Console(record=True, width=100)
    print_leases(out, leases, broken=broken)
    return out.export_text()


def test_held_free_expired_and_unreachable_nodes_each_get_a_line():
    leases = [("lb1", info("lb1")), ("lb2", None), ("lb3", info("lb3", read_at=1031.0)),
              ("lb4", "cannot connect to 10.0.0.4:22: connection refused")]
    text = render(leases)
    lines = text.splitlines()
    assert lines[0].startswith('lb1  held by alice@ci-3 (pid 4242, "fleet apply [web]") since ')
    assert lines[0].endswith("(20s left unless renewed)")  # brackets in the command printed as is
    assert lines[1] == "lb2  free"
    assert lines[2].startswith("lb3  free (expired lease of alice@ci-3")
    assert lines[3] == "lb4  unreachable: cannot connect to 10.0.0.4:22: connection refused"
    assert "a11ce" not in text


def test_summary_names_the_holder_only_with_a_majority():
    assert summary([("lb1", info("lb1")), ("lb2", info("lb2")), ("lb3", "down")]).startswith(
        "the fleet's lease is held by alice@ci-3 (pid 4242")
    assert summary([("lb1", info("lb1")), ("lb2", None), ("lb3", None)]) == (
        "the fleet's lease is held by no one: alice@ci-3 holds it only on 1 of 3 record nodes, 2 needed")
    assert summary([("lb1", None), ("lb2", "down"), ("lb3", "down")]) == (
        "the fleet's lease is unknown: only 1 of 3 record nodes answered")
    assert summary([("lb1", None), ("lb2", info("lb2", read_at=2000.0)), ("lb3", "down")]) == (
        "the fleet's lease is free")
    assert holder_of([("lb1", None)]) == (None, 0)


def test_json_never_carries_the_token():
    rows = [lease_json("lb1", info("lb1")), lease_json("lb2", None), lease_json("lb3", "refused")]
    assert rows == [
        {"node": "lb1", "state": "held", "holder": "alice@ci-3", "pid": 4242, "command": "fleet apply [web]",
         "since": 1000.0, "until": 1030.0, "remaining": 20.0},
        {"node": "lb2", "state": "free"},
        {"node": "lb3", "state": "unreachable", "error": "refused"},
    ]
    assert "a11ce" not in json.dumps(rows)


def test_break_reports_what_it_broke():
    text = render([("lb1", info("lb1")), ("lb2", None)], broken=True)
    assert text.splitlines()[0].startswith("lb1  broke the lease of alice@ci-3 (pid 4242")
    assert text.splitlines()[1] == "lb2  was free"
