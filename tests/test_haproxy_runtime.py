"""Server-only config changes as runtime commands (fleet.node.haproxy.runtime), and the servers script's recorded
output (tests/data/haproxy/servers_*.json)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fleet.config.spec import parse_playbook
from fleet.core.errors import LbRuntimeError, ScriptOutputError
from fleet.core.model import Node
from fleet.engine.haproxy import LbStatus
from fleet.engine.lb import Balancers
from fleet.node.haproxy.render import LbHealth, LbServer, LbService, LbState, render
from fleet.node.haproxy.runtime import server_changes, split_servers
from fleet.node.haproxy.scripts import (
    LbPaths,
    batch_commands,
    parse_batch,
    parse_replies,
    parse_script_output,
    servers_script,
)
from fleet.plan.reconcile import Replica
from fleet.transport import Pool

DATA = Path(__file__).parent / "data" / "haproxy"
HEALTH = LbHealth("http", "/healthz", interval=1.0, timeout=1.0, fall=2, rise=1)


def cfg(servers: dict[str, tuple[int, LbState]], health: LbHealth = HEALTH, port: int = 8080,
        api: bool = False) -> str:
    web = LbService("web", port, [LbServer(n, "10.0.0.1", 9000 + int(n[-1]), w, st) for n, (w, st) in servers.items()],
                    health=health)
    more = [LbService("api", 8081, [LbServer("api-1", "10.0.0.2", 9100)], mode="tcp")] if api else []
    return render([web, *more], admin_socket="/run/hx/admin.sock", state_file="/run/hx/state",
                  stats_bind=("127.0.0.1", 8404))


def test_servers_are_split_from_the_rest_of_the_config() -> None:
    split = split_servers(cfg({"web-1": (2, "ready"), "web-2": (1, "maint")}, api=True))
    assert sorted(split.servers) == [("be_api", "api-1"), ("be_web", "web-1"), ("be_web", "web-2")]
    one = split.servers[("be_web", "web-1")]
    assert (one.args, one.weight, one.disabled) == ("10.0.0.1:9001 check inter 1000ms fall 2 rise 1", 2, False)
    assert split.servers[("be_web", "web-2")].disabled
    assert split.servers[("be_api", "api-1")].args == "10.0.0.2:9100 check inter 2000ms fall 3 rise 1"
    assert not any(line.lstrip().startswith("server ") for line in split.skeleton)
    assert split_servers(cfg({"web-1": (1, "ready")}, api=True)).skeleton == split.skeleton


def test_adding_weighting_draining_and_removing_servers_are_runtime_commands() -> None:
    old = cfg({"web-1": (1, "ready"), "web-2": (1, "ready"), "web-3": (1, "ready")})
    new = cfg({"web-1": (5, "ready"), "web-2": (1, "drain"), "web-4": (1, "ready"), "web-5": (1, "maint")})
    assert server_changes(old, new) == [
        "set server be_web/web-3 state maint",
        "del server be_web/web-3",
        "set server be_web/web-1 weight 5",
        "set server be_web/web-2 weight 0",
        "add server be_web/web-4 10.0.0.1:9004 check inter 1000ms fall 2 rise 1 weight 1",
        "enable health be_web/web-4",
        "enable server be_web/web-4",
        "set server be_web/web-4 health up",
        "add server be_web/web-5 10.0.0.1:9005 check inter 1000ms fall 2 rise 1 weight 1",
        "enable health be_web/web-5",
    ]
    # Back from drain (weight 0) and out of maint: ready again.
    assert server_changes(new, cfg({"web-1": (5, "ready"), "web-2": (1, "ready"), "web-4": (1, "ready"),
                                    "web-5": (1, "ready")})) == [
        "set server be_web/web-2 weight 1", "set server be_web/web-2 state ready",
        "set server be_web/web-5 state ready"]
    assert server_changes(old, old) == []


def test_unchecked_servers_are_added_without_enabling_health() -> None:
    none = LbHealth("none")
    assert server_changes(cfg({"web-1": (1, "ready")}, none), cfg({"web-1": (1, "ready"), "web-2": (1, "ready")},
                                                                   none)) == [
        "add server be_web/web-2 10.0.0.1:9002 weight 1", "enable server be_web/web-2"]


@pytest.mark.parametrize("new", [
    cfg({"web-1": (1, "ready")}, port=8090),                                               # a port
    cfg({"web-1": (1, "ready")}, api=True),                                                # a new backend
    cfg({"web-1": (1, "ready")}, LbHealth("http", "/healthz", 2.0, 1.0, 2, 1)),            # check interval
    cfg({"web-1": (1, "ready")}, LbHealth("http", "/ready", 1.0, 1.0, 2, 1)),              # check path
    cfg({"web-1": (1, "ready")}).replace("10.0.0.1:9001", "10.0.0.9:9001"),                # an address
], ids=["port", "backend", "interval", "path", "address"])
def test_anything_but_servers_needs_a_reload(new: str) -> None:
    assert server_changes(cfg({"web-1": (1, "ready")}), new) is None


def case(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((DATA / f"servers_{name}.json").read_text())
    return data


def test_servers_script_updated_output_has_one_reply_per_command() -> None:
    data = case("updated")
    commands = data["commands"]
    assert isinstance(commands, list) and isinstance(data["stdout"], str)
    out = parse_script_output(data["stdout"])
    assert out.result == "updated" and "Configuration file is valid" in out.section("check")
    batch, dels = batch_commands(commands)
    assert dels == ["del server be_web/web-1"] and len(batch) == 6
    replies = parse_batch(batch, out.section("batch") + "\n")
    assert [(r.command, r.text) for r in replies] == [
        ("set server be_web/web-1 state maint", ""),
        ("set server be_web/web-2 weight 4", ""),
        ("add server be_web/web-3 127.0.0.1:28183 check inter 500ms fall 2 rise 1 weight 1", "New server registered."),
        ("enable health be_web/web-3", ""),
        ("enable server be_web/web-3", ""),
        ("set server be_web/web-3 health up", "")]
    assert [(r.text, r.rc) for r in parse_replies(dels, out.section("replies") + "\n")] == [("Server deleted.", 0)]


def test_servers_script_stale_output_carries_the_config_on_the_node() -> None:
    data = case("stale")
    assert isinstance(data["stdout"], str)
    out = parse_script_output(data["stdout"])
    assert out.result == "stale" and "check" not in out.sections
    current = split_servers(out.section("current") + "\n")
    assert current.servers[("be_web", "web-2")].weight == 4 and ("be_web", "web-1") not in current.servers


def test_servers_script_refusal_skips_the_deletions_and_keeps_the_file() -> None:
    data = case("refused")
    commands = data["commands"]
    assert isinstance(commands, list) and isinstance(data["stdout"], str)
    out = parse_script_output(data["stdout"])
    assert out.result == "refused" and out.section("replies") == ""
    batch, dels = batch_commands(commands)
    assert [r.text for r in parse_batch(batch, out.section("batch") + "\n")] == ["", "No such server.", "", ""]
    assert dels == ["del server be_web/web-3"]
    with pytest.raises(ScriptOutputError, match="3 replies for 4"):
        parse_batch(batch, out.section("batch").replace("> No such", "No such") + "\n")


def test_servers_script_takes_commands_and_the_old_hash_in_env() -> None:
    script = servers_script(LbPaths("/srv/hx"), "a" * 64, ["set server be_web/web-1 weight 2"], 120)
    assert script.env["CMDS"] == "set server be_web/web-1 weight 2" and script.env["OLD"] == "a" * 64
    assert script.env["DELS"] == ""
    assert "be_web" not in script.text and script.env["SIZE"] == "120"
    for bad_hash in ("x" * 64, "a" * 63):
        with pytest.raises(ValueError, match="old_sha256"):
            servers_script(LbPaths("/srv/hx"), bad_hash, [], 1)
    with pytest.raises(ValueError, match="runtime command"):
        servers_script(LbPaths("/srv/hx"), "", ["show info; shutdown sessions"], 1)


class RecordingLbNode:
    """Stands in for an LbNode (a fake, labelled as such: what is tested is the order Balancers keeps, which
    needs no HAProxy); it records the runtime commands sent to it."""

    def __init__(self) -> None:
        self.node = Node("lb1", "10.0.0.9")
        self.reloading = asyncio.Lock()
        self.sent: list[str] = []

    async def runtime(self, commands: list[str]) -> list[str]:
        self.sent += commands
        return [""] * len(commands)


async def test_a_runtime_drain_waits_for_a_reload_but_not_for_a_sync_made_at_runtime() -> None:
    spec = parse_playbook("services:\n  web:\n    image: fleet.local/demo:v1\n    lb: {port: 8080}\n",
                          "pb.yaml").services[0]
    r = Replica("w1", "web-0-abc", "web", 0, 1, spec.spec_hash(), 20000, True, spec.resources, spec.image)
    async with Pool(connect_attempts=1, connect_timeout=1) as pool:
        lbs = Balancers(pool, [])
        lb = RecordingLbNode()
        lbs.nodes = [lb]  # type: ignore[list-item]
        async with lbs._sync.lock:  # a sync under way (made at runtime, or preparing a reload)
            await asyncio.wait_for(lbs.drain(r), 1.0)
        assert lb.sent == ["set server be_web/web-0-abc state drain", "show stat -1 4 -1"]
        async with lb.reloading:
            pending = asyncio.create_task(lbs.drain(r))
            await asyncio.sleep(0.1)
            assert len(lb.sent) == 2, "sent while the worker was being replaced"
        await asyncio.wait_for(pending, 1.0)
        assert len(lb.sent) == 4


class StatusLbNode(RecordingLbNode):
    """A RecordingLbNode that also answers `status` (old workers from `old`) and counts its reads; `reloads`
    and `starts` are what the Balancers object made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = self.reloads = self.reads = 0
        self.old: tuple[int, ...] = ()

    async def status(self) -> LbStatus:
        self.reads += 1
        return LbStatus(True, 10, (11,), 0, self.old, self.reloads)


async def test_settle_asks_the_nodes_again_only_after_a_reload_of_its_own() -> None:
    lbs = Balancers(None, [])  # type: ignore[arg-type]  # no pool: the stand-in answers
    lb = StatusLbNode()
    lbs.nodes = [lb]  # type: ignore[list-item]
    lb.old = (9,)  # a worker of a reload made before this run
    await lbs.settle(0.25)
    assert lb.reads > 1, "waited for the old worker"
    lb.old, reads = (), lb.reads
    await lbs.settle(1.0)
    await lbs.settle(1.0)
    assert lb.reads == reads + 1, "once seen without old workers, not asked again"
    lb.reloads += 1
    lb.old = (11,)
    await lbs.settle(0.25)
    assert lb.reads > reads + 2, "a reload of its own: asked (and waited) again"


class StatLbNode(RecordingLbNode):
    """A RecordingLbNode whose `show stat` reply gives `web-0-abc` `scur` sessions, and that counts its trips."""

    def __init__(self, scur: int) -> None:
        super().__init__()
        self.scur, self.trips = scur, 0

    async def runtime(self, commands: list[str]) -> list[str]:
        self.trips += 1
        await super().runtime(commands)
        stat = f"# pxname,svname,qcur,qmax,scur\nbe_web,web-0-abc,0,0,{self.scur}\nbe_web,web-1-xyz,0,0,7\n"
        return [stat if c.startswith("show stat") else "" for c in commands]


async def test_a_drain_sets_the_state_and_reads_the_sessions_left_in_one_trip() -> None:
    spec = parse_playbook("services:\n  web:\n    image: fleet.local/demo:v1\n    lb: {port: 8080}\n",
                          "pb.yaml").services[0]
    r = Replica("w1", "web-0-abc", "web", 0, 1, spec.spec_hash(), 20000, True, spec.resources, spec.image)
    lbs = Balancers(None, [])  # type: ignore[arg-type]  # no pool: the stand-ins answer
    lbs.nodes = [StatLbNode(2), StatLbNode(1)]  # type: ignore[list-item]
    assert await lbs.drain(r) == 3
    for lb in lbs.nodes:
        assert lb.sent == ["set server be_web/web-0-abc state drain", "show stat -1 4 -1"]  # type: ignore[attr-defined]
        assert lb.trips == 1  # type: ignore[attr-defined]


class BatchLbNode(RecordingLbNode):
    """A RecordingLbNode whose first trip waits for `gate`, whose `show stat` gives replica N of `web` N + 1
    sessions, and that refuses to drain a server named in `refuse` (as HAProxy does a server it does not have)."""

    def __init__(self, refuse: str = "") -> None:
        super().__init__()
        self.gate, self.refuse = asyncio.Event(), refuse
        self.trips: list[list[str]] = []

    async def runtime(self, commands: list[str]) -> list[str]:
        self.trips.append(list(commands))
        if len(self.trips) == 1:
            await self.gate.wait()
        await super().runtime(commands)
        if self.refuse and any(self.refuse in c for c in commands):
            raise LbRuntimeError(self.node.name, f"set server be_web/{self.refuse} state drain", "No such server.")
        stat = "# pxname,svname,qcur,qmax,scur\n" + "".join(f"be_web,web-{n}-abc,0,0,{n + 1}\n" for n in range(4))
        return [stat if c.startswith("show stat") else "" for c in commands]


def _replica(spec_text: str, n: int) -> Replica:
    spec = parse_playbook(spec_text, "pb.yaml").services[0]
    return Replica("w1", f"web-{n}-abc", "web", n, 1, spec.spec_hash(), 20000 + n, True, spec.resources, spec.image)


async def _four_drains(lb: BatchLbNode) -> list[int]:
    """Replicas 0-3 of `web` drained: the first alone, the three others asked while it is under way."""
    text = "services:\n  web:\n    image: fleet.local/demo:v1\n    replicas: 4\n    lb: {port: 8080}\n"
    lbs = Balancers(None, [])  # type: ignore[arg-type]  # no pool: the stand-in answers
    lbs.nodes = [lb]  # type: ignore[list-item]
    first = asyncio.create_task(lbs.drain(_replica(text, 0)))
    await asyncio.sleep(0.01)
    rest = [asyncio.create_task(lbs.drain(_replica(text, n))) for n in (1, 2, 3)]
    await asyncio.sleep(0.01)
    lb.gate.set()
    return await asyncio.gather(first, *rest)


async def test_drains_asked_while_one_is_under_way_go_together_in_the_next_trip() -> None:
    lb = BatchLbNode()
    # Each drain gets its own replica's sessions; the three asked meanwhile shared one trip, and one `show stat`.
    assert await _four_drains(lb) == [1, 2, 3, 4]
    assert lb.trips == [["set server be_web/web-0-abc state drain", "show stat -1 4 -1"],
                        [*(f"set server be_web/web-{n}-abc state drain" for n in (1, 2, 3)), "show stat -1 4 -1"]]


async def test_a_refused_drain_in_a_batch_fails_only_its_own_caller() -> None:
    lb = BatchLbNode(refuse="web-2-abc")
    # The batch of three was refused as a whole; each went again alone: web-2's node gave no answer (0 sessions
    # counted, as for a node that fails), the others their sessions.
    assert await _four_drains(lb) == [1, 2, 0, 4]
    assert [len(t) for t in lb.trips] == [2, 4, 2, 2, 2]
