"""FleetSource: the TUI's questions and actions mapped onto the Fleet façade, checked against a façade double that
records each call (the façade itself is tested on the lab; here only the mapping is under test)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tui_source import FLEET, HOLDER, ready, revision, unreachable

from fleet.api import Event, Outcome, RunResult
from fleet.config.spec import load_playbooks, to_playbook_dict
from fleet.core.errors import FleetError, LeaseHeld
from fleet.core.model import Inventory
from fleet.tui import Action, FleetSource


class Records:
    def __init__(self, states: dict[str, dict[str, Any]], specs: dict[tuple[str, int], str]) -> None:
        self.states, self.specs, self.gets, self.refreshed = states, specs, 0, 0

    async def refresh(self) -> None:
        self.refreshed += 1

    async def state(self, service: str) -> dict[str, Any] | None:
        return self.states.get(service)

    async def get(self, service: str, rev: int):
        self.gets += 1
        if (service, rev) not in self.specs:
            return None
        r = revision(service, rev, "succeeded")
        return type(r)(**{**r.__dict__, "spec_json": self.specs[(service, rev)]})


class FakeFleet:
    """Records every façade call the source makes; answers with fixed values."""

    def __init__(self, records: Records, *, node_verbs: bool = True, lease_held: bool = False) -> None:
        self.inventory = Inventory("/etc/fleet/inventory.yaml", ())
        self.on_event: Any = None
        self.command = "fleet ui"
        self.calls: list[tuple[Any, ...]] = []
        self._records = records
        self.lease_held = lease_held
        if node_verbs:
            self.cordon = self._node("cordon")
            self.uncordon = self._node("uncordon")
            self.drain = self._node("drain", RunResult([Outcome("web", True, 1, 1)]))

    def _node(self, verb: str, result: Any = None):
        async def call(node: str) -> Any:
            self.calls.append((verb, node, self.command))
            return result
        return call

    def records(self) -> Records:
        return self._records

    async def nodes(self, *, ports: bool = False):
        self.calls.append(("nodes",))
        return [ready("n1"), unreachable("n2")]

    async def status(self, reports):
        self.calls.append(("status", tuple(r.node.name for r in reports)))
        return FLEET

    async def history(self, service: str):
        return [revision(service, 1, "succeeded")]

    @contextlib.asynccontextmanager
    async def logs(self, ref: str, *, follow: bool, tail: int) -> AsyncIterator[Any]:
        self.calls.append(("logs", ref, follow, tail))

        async def gen():
            yield ("n1/web-1", "hello")

        class Lines:
            def __aiter__(self):
                return gen()

        yield Lines()

    def _leased(self, *call: Any) -> None:
        self.calls.append((*call, self.command))
        if self.lease_held:
            raise LeaseHeld(HOLDER)
        if self.on_event is not None:
            self.on_event(Event("done", call[1] if isinstance(call[1], str) else call[1].name, "converged"))

    async def converge_accepted(self, service: str, replicas: int | None = None, *, first: Any = None) -> RunResult:
        # The façade reads the accepted spec under the lease; what the records hold then is what counts, and
        # `first` runs only after that read.
        self._leased("converge_accepted", service, replicas)
        if self._records.states.get(service, {}).get("decision") == "destroyed":
            raise FleetError(f"{service}: no accepted revision on this fleet's records now (it was destroyed)")
        if first is not None:
            await first()
        return RunResult([Outcome(service, True, 1, 0)])

    async def renew(self, service: str, ref: str) -> RunResult:
        # Under the lease: the records read there decide; the replica is replaced through the update policy.
        self._leased("renew", service, ref)
        if self._records.states.get(service, {}).get("decision") == "destroyed":
            raise FleetError(f"{service}: no accepted revision on this fleet's records now (it was destroyed)")
        if ref == "n1/bad":
            raise FleetError(f"{service}: no running replica {ref}")
        return RunResult([Outcome(service, True, 1, 1)])

    async def apply(self, specs, command: str = "apply") -> RunResult:
        self._leased("apply", specs[0], command)
        return RunResult([Outcome(specs[0].name, True, 1, 0)])

    async def rollback(self, service: str, to: int | None = None):
        self._leased("rollback", service, to)
        return revision(service, to or 1, "succeeded"), RunResult([Outcome(service, True, 2, 2)],
                                                                    {"n2": "unreachable lb node"})

    async def promote(self, service: str):
        self._leased("promote", service)
        return revision(service, 4, "succeeded"), RunResult([Outcome(service, True, 2, 2)])

    async def abort(self, service: str):
        self._leased("abort", service)
        return revision(service, 3, "succeeded"), RunResult([Outcome(service, False, 0, 1, reason="boom")])

    async def destroy(self, service: str) -> RunResult:
        self._leased("destroy", service)
        return RunResult([Outcome(service, True, stopped=3)])

    async def stop(self, ref: str):
        self.calls.append(("stop", ref))
        # (row, StopResult) when stopped, (row, why) when not
        return [("row", object())] if ref != "n1/bad" else [("row", "cannot stop: no such task")]

    async def exec(self, ref: str, argv, on_line) -> int:
        self.calls.append(("exec", ref, tuple(argv)))
        on_line("hi")
        return 3


@pytest.fixture(autouse=True)
def _converge_on_the_double(monkeypatch: pytest.MonkeyPatch) -> None:
    """`fleet.api.converge_accepted(fleet, …)` is the façade's; here it goes to the double's method of that name."""
    async def through(fleet: Any, service: str, replicas: int | None = None, *, first: Any = None) -> RunResult:
        return await fleet.converge_accepted(service, replicas, first=first)
    monkeypatch.setattr("fleet.tui.source.converge_accepted", through)


@pytest.fixture
def web_json(tmp_path: Path) -> str:
    pb = tmp_path / "web.yaml"
    pb.write_text("services:\n  web:\n    image: fleet.local/demo:v1\n    replicas: 4\n    lb: {port: 8080}\n")
    return json.dumps(to_playbook_dict(load_playbooks([str(pb)])[0]))


def make(web_json: str, **kw: Any) -> tuple[FleetSource, FakeFleet]:
    states = {"web": {"accepted": 3, "decision": "applied"},
              "api": {"accepted": 3, "decision": "canary-waiting", "replicas": 5, "canary": 4}}
    fleet = FakeFleet(Records(states, {("web", 3): web_json}), **kw)
    return FleetSource(fleet), fleet  # type: ignore[arg-type]


async def test_collect_reads_nodes_status_and_records_and_keeps_revisions(web_json):
    source, fleet = make(web_json)
    partial: list[Any] = []
    snap = await source.collect(partial.append)
    assert fleet.calls == [("nodes",), ("status", ("n1", "n2"))]
    # The nodes first (the first screen), then everything; the records are read again on every refresh.
    assert [p.nodes for p in partial] == [snap.nodes] and partial[0].status is None
    assert fleet.records().refreshed == 1
    assert dict(snap.errors) == {"n2": "unreachable: connect: timed out after 5s"}
    # web's count is its accepted spec's; api's is the one `scale` set; api's spec is not needed.
    assert snap.records["web"].wanted == 4 and snap.records["web"].accepted == 3
    assert (snap.records["api"].wanted, snap.records["api"].canary, snap.records["api"].decision) == (
        5, 4, "canary-waiting")
    gets = fleet.records().gets
    await source.collect()
    assert fleet.records().gets == gets  # a recorded revision never changes: read once
    assert fleet.records().refreshed == 2


async def test_collect_uses_a_watcher_when_one_answers(web_json):
    asked: list[tuple[str, str]] = []

    async def watcher(path: str, op: str) -> Any:
        asked.append((path, op))
        return [ready("n1")] if op == "nodes" else FLEET

    source, fleet = make(web_json)
    source.watcher = watcher
    snap = await source.collect()
    assert asked == [("/etc/fleet/inventory.yaml", "nodes"), ("/etc/fleet/inventory.yaml", "status")]
    assert fleet.calls == [] and snap.via == "fleet watch" and [r.node.name for r in snap.nodes] == ["n1"]

    async def silent(path: str, op: str) -> Any:
        return None

    source.watcher = silent
    snap = await source.collect()
    assert fleet.calls[0] == ("nodes",) and snap.via == ""


async def test_scale_converges_the_accepted_spec_read_under_the_lease_named_for_the_ui(web_json):
    source, fleet = make(web_json)
    lines: list[str] = []
    result = await source.act(Action("scale", "web", count=6, current=4), lines.append)
    # The service by name: the façade reads its accepted spec under the lease, not the snapshot's.
    assert fleet.calls[-1] == ("converge_accepted", "web", 6, "fleet ui: scale web 6")
    assert result.ok and result.summary == "web: scaled to 6"
    assert result.lines == ("web: ok, started 1, stopped 0",)
    # The engine's events reach the source's ring through the façade's on_event.
    assert [e.message for e in source.events] == ["converged"]


async def test_scale_without_an_accepted_revision_is_refused_before_the_lease(web_json):
    source, fleet = make(web_json)
    with pytest.raises(FleetError, match="no accepted revision"):
        await source.act(Action("scale", "db", count=2), print)
    assert [c for c in fleet.calls if c[0] == "converge_accepted"] == []


async def test_scale_of_a_service_destroyed_since_the_snapshot_is_refused_not_brought_back(web_json):
    source, fleet = make(web_json)
    await source.collect()  # the snapshot: web accepted at revision 3
    fleet.records().states["web"] = {"accepted": 3, "decision": "destroyed"}  # another controller destroys it
    with pytest.raises(FleetError, match="it was destroyed"):
        await source.act(Action("scale", "web", count=6, current=4), print)
    with pytest.raises(FleetError, match="it was destroyed"):
        await source.act(Action("restart", "n1/web-1-abc", service="web"), print)
    assert [c for c in fleet.calls if c[0] == "stop"] == []  # its replica was left alone


async def test_restart_replaces_the_replica_through_the_update_policy_under_the_lease(web_json):
    source, fleet = make(web_json)
    result = await source.act(Action("restart", "n1/web-1-abc", service="web"), print)
    # One call of the façade, under the lease: never a bare stop before its replacement runs.
    assert fleet.calls == [("renew", "web", "n1/web-1-abc", "fleet ui: restart n1/web-1-abc")]
    assert result.ok and result.summary == "n1/web-1-abc: restarted"
    with pytest.raises(FleetError, match="no running replica n1/bad"):
        await source.act(Action("restart", "n1/bad", service="web"), print)


@pytest.mark.parametrize(("action", "call", "ok", "summary"), [
    (Action("rollback", "web", revision=1), ("rollback", "web", 1), False,
     "web: rolled back to revision 1 (with failures)"),
    (Action("rollback", "web"), ("rollback", "web", None), False, "web: rolled back to revision 1 (with failures)"),
    (Action("promote", "web"), ("promote", "web"), True, "web: promoted revision 4"),
    (Action("abort", "web"), ("abort", "web"), False, "web: aborted revision 3 (with failures)"),
    (Action("destroy", "web"), ("destroy", "web"), True, "web: destroyed"),
    (Action("cordon", "n1"), ("cordon", "n1"), True, "n1: cordoned"),
    (Action("uncordon", "n1"), ("uncordon", "n1"), True, "n1: uncordoned"),
    (Action("drain", "n1"), ("drain", "n1"), True, "n1: drained"),
])
async def test_each_action_calls_its_facade_method(web_json, action, call, ok, summary):
    source, fleet = make(web_json)
    result = await source.act(action, print)
    assert fleet.calls[-1][:-1] == call
    assert fleet.calls[-1][-1].startswith(f"fleet ui: {action.verb} {action.target}")
    assert (result.ok, result.summary) == (ok, summary)


async def test_exec_streams_output_and_reports_the_exit_code(web_json):
    source, fleet = make(web_json)
    lines: list[str] = []
    result = await source.act(Action("exec", "n1/web-1", argv=("sh", "-c", "exit 3")), lines.append)
    assert fleet.calls[-1] == ("exec", "n1/web-1", ("sh", "-c", "exit 3"))
    assert lines == ["hi"] and not result.ok and result.summary == "n1/web-1: `sh -c exit 3` exited 3"


async def test_lease_held_reaches_the_app_as_is(web_json):
    source, _ = make(web_json, lease_held=True)
    with pytest.raises(LeaseHeld) as caught:
        await source.act(Action("destroy", "web"), print)
    assert caught.value.info.holder == "bob@ops-2"


async def test_node_verbs_only_when_the_facade_has_them(web_json):
    with_verbs, _ = make(web_json)
    without, _ = make(web_json, node_verbs=False)
    assert all(with_verbs.can(v) for v in ("cordon", "uncordon", "drain", "scale", "exec"))
    assert [v for v in ("cordon", "uncordon", "drain", "scale") if without.can(v)] == ["scale"]


async def test_logs_pass_follow_and_tail_to_the_facade(web_json):
    source, fleet = make(web_json)
    async with source.logs("web", follow=True, tail=50) as lines:
        got = [x async for x in lines]
    assert fleet.calls == [("logs", "web", True, 50)] and got == [("n1/web-1", "hello")]


def test_every_action_describes_what_will_happen():
    described = {v: Action(v, "web", service="web", count=3, current=2, revision=1, argv=("ls",)).describe()  # type: ignore[arg-type]
                 for v in ("scale", "restart", "rollback", "promote", "abort", "destroy", "cordon", "uncordon",
                           "drain", "exec")}
    assert all("web" in text for text in described.values())
    assert described["scale"].startswith("Scale web from 2 to 3 replica(s)")
    assert described["rollback"].startswith("Roll web back to revision 1")
    assert "cannot be undone" in described["destroy"]
    assert Action("rollback", "web").describe().startswith("Roll web back to the last good revision")
    assert not Action("exec", "web").leased and Action("scale", "web").leased
