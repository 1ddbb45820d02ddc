"""The HAProxy driver on the real lab's lb1 over SSH: start, no-op, hitless reload, refusal, runtime API, stop.

Backends are busybox httpd processes started inside worker nodes and stopped by PID; haproxy is stopped in finally.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until_async

from fleet.engine.haproxy import ApplyResult, LbConfigError, LbNode, LbReloadError, LbRuntimeError
from fleet.node.haproxy.render import LbHealth, LbServer, LbService
from fleet.node.haproxy.scripts import (
    APPLY,
    LbPaths,
    ScriptOutputError,
    alert_lines,
    apply_script,
    parse_replies,
    parse_script_output,
    parse_session,
    runtime_input,
)
from fleet.node.haproxy.stats import parse_show_proc
from fleet.transport import Pool

DATA = Path(__file__).parent / "data" / "haproxy"
HEALTH = LbHealth("http", "/healthz", interval=0.2, timeout=1.0, fall=2, rise=1)
PORT, SPARE_PORT = 18081, 18082
FRONT, FRONT2 = 19081, 19082

BACKEND = r"""
set -eu
dir=$1 name=$2 bind=$3 healthy=$4
mkdir -p "$dir"
printf '%s\n' "$name" >"$dir/index.html"
rm -f "$dir/healthz"
if [ "$healthy" = 1 ]; then echo ok >"$dir/healthz"; fi
busybox httpd -f -p "$bind" -h "$dir" </dev/null >/dev/null 2>&1 &
echo $!
"""


# ---- pure: the scripts' wire formats ------------------------------------------------------------------------


def test_script_output_sections_and_result_are_parsed() -> None:
    case = json.loads((DATA / "driver_apply_reloaded.json").read_text())
    out = parse_script_output(case["stdout"])
    assert out.result == case["expect"]["result"]
    before, after = parse_show_proc(out.section("before")), parse_show_proc(out.section("after"))
    assert list(before.worker_pids) == case["expect"]["before_workers"]
    assert list(after.worker_pids) == case["expect"]["after_workers"]
    assert after.failed_reloads == before.failed_reloads == 0
    assert "Loading success." in out.section("log")
    with pytest.raises(ScriptOutputError):
        parse_script_output("@@fleet check\nConfiguration file is valid\n")


def test_start_output_names_the_new_master_and_worker() -> None:
    case = json.loads((DATA / "driver_apply_started.json").read_text())
    out = parse_script_output(case["stdout"])
    assert out.result == case["expect"]["result"]
    assert list(parse_show_proc(out.section("after")).worker_pids) == case["expect"]["after_workers"]
    assert alert_lines(out.section("check")) == []


def test_invalid_config_output_yields_the_alert_lines() -> None:
    case = json.loads((DATA / "driver_apply_invalid.json").read_text())
    out = parse_script_output(case["stdout"])
    assert out.result == "invalid"
    assert alert_lines(out.section("check")) == case["expect"]["alerts"]


def test_a_runtime_session_gives_each_command_its_reply_or_what_the_unreachable_socket_said() -> None:
    cmds = ["set server be_web/n1 state drain", "show servers state be_x"]
    # `prompt` mode: the reply to `prompt` (nothing), then each command's reply, each followed by a prompt.
    replies = parse_session(cmds, "\n> \n> Can't find backend.\n\n> \n\x1e 0\n")
    assert [(r.text, r.rc) for r in replies] == [("", 0), ("Can't find backend.", 0)]
    said = 'socat[9] E connect(5, AF=1 "/run/fleet/admin.sock", 23): No such file or directory'
    assert [(r.text, r.rc) for r in parse_session(cmds, f"{said}\n\x1e 1\n")] == [(said, 1), (said, 1)]
    with pytest.raises(ScriptOutputError):
        parse_session([*cmds, "show stat"], "\n> \n> Can't find backend.\n\n> \n\x1e 0\n")


def test_runtime_replies_split_per_command_and_commands_are_single_lines() -> None:
    cmds = ["set server be_web/n1 state drain", "get weight be_web/n1", "show servers state be_x"]
    text = "\n\x1e 0\n7 (initial 1)\n\x1e 0\nCan't find backend.\n\x1e 0\n"
    replies = parse_replies(cmds, text)
    assert [(r.text, r.rc) for r in replies] == [("", 0), ("7 (initial 1)", 0), ("Can't find backend.", 0)]
    with pytest.raises(ScriptOutputError):
        parse_replies([*cmds, "show stat"], text)
    assert runtime_input(cmds[:2]) == "set server be_web/n1 state drain\nget weight be_web/n1\n"
    for bad in ["show stat; shutdown sessions server be/x", "show stat\nshow info", ""]:
        with pytest.raises(ValueError):
            runtime_input([bad])


def test_paths_travel_in_env_not_in_the_script_text() -> None:
    script = apply_script(LbPaths("/srv/lb-1/haproxy"))
    assert script.text == APPLY and "/srv/lb-1" not in script.text
    assert script.env["CFG"] == "/srv/lb-1/haproxy/haproxy.cfg"
    assert script.env["MASTER"] == "/srv/lb-1/haproxy/run/master.sock"
    for bad in ["relative/dir", "/srv/a b", "/srv/$(reboot)", "/srv/../etc"]:
        with pytest.raises(ValueError):
            LbPaths(bad)


# ---- the real lab ---------------------------------------------------------------------------------------------


def fetch(address: str, port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}:{port}/", timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode().strip()


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 8.0) -> None:
    await wait_until_async(check, timeout, 0.1, what)


@pytest.fixture(scope="module")
def backends(lab: Any) -> Iterator[dict[str, str]]:
    """n1, n2 (healthy) and n3 (no /healthz) on PORT; n3 also serves a healthy `n3-spare` on SPARE_PORT."""
    addr = {n.name: n.address for n in lab.inventory.nodes}
    started: list[tuple[str, str]] = []
    specs = [("n1", "n1", PORT, True), ("n2", "n2", PORT, True), ("n3", "n3", PORT, False),
             ("n3", "n3-spare", SPARE_PORT, True)]
    try:
        for node, name, port, healthy in specs:
            out = lab.lab.exec_in(node, ["sh", "-c", BACKEND, "backend", f"/var/lib/fleet/test-www-{port}", name,
                                         f"{addr[node]}:{port}", "1" if healthy else "0"])
            started.append((node, out.stdout.strip()))
        yield addr
    finally:
        for node, pid in started:
            lab.lab.exec_in(node, ["kill", pid], check=False)


def web(addr: dict[str, str], names: tuple[str, ...] = ("n1", "n2"), **extra: Any) -> LbService:
    return LbService("web", FRONT, tuple(LbServer(n, addr[n], PORT, **extra) for n in names),
                     bind_address=addr["lb1"], health=HEALTH)


async def health(lb: LbNode) -> dict[str, str]:
    return {r.name: r.health for r in await lb.stats() if r.proxy == "be_web" and r.kind == "server"}


def haproxy_pids_in_netns(lab: Any, node: str) -> list[int]:
    import subprocess

    ns = f"{lab.lab.cfg.prefix}-{node}"
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "haproxy":
                found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.lab
async def test_apply_starts_noops_reloads_hitlessly_refuses_bad_config_and_stops(
        lab: Any, backends: dict[str, str]) -> None:
    lb1 = backends["lb1"]
    async with Pool() as pool:
        lb = LbNode(pool, lab.inventory.node("lb1"))
        try:
            # Earlier tests' services leave HAProxy running on lb1 (destroying a service does not stop it).
            await lb.stop()
            text = lb.render([web(backends)])
            first = await lb.apply(text)
            assert (first.changed, first.started, first.reloaded) == (True, True, False)
            status = await lb.status()
            assert status.running and status.master_pid == first.master_pid and status.workers == first.workers
            assert len(status.workers) == 1 and status.failed_reloads == 0

            async def both_up() -> bool:
                return await health(lb) == {"n1": "up", "n2": "up"}
            await wait_for("n1 and n2 UP", both_up)
            assert Counter(fetch(lb1, FRONT) for _ in range(20)) == {"n1": 10, "n2": 10}

            assert await lb.apply(text) == ApplyResult(False, False, False)
            assert (await lb.status()).workers == first.workers, "an identical config must not reload"

            # Hitless reload: requests run without pause while a changed config (one more frontend) is loaded.
            changed = lb.render([web(backends), LbService("api", FRONT2, (LbServer("n1", backends["n1"], PORT),),
                                                          bind_address=lb1, health=HEALTH)])
            stop = threading.Event()
            done: list[str] = []
            failures: list[str] = []

            def hammer() -> None:
                deadline = time.monotonic() + 10
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        done.append(fetch(lb1, FRONT))
                    except (OSError, urllib.error.URLError) as exc:
                        failures.append(repr(exc))

            thread = threading.Thread(target=hammer)
            thread.start()
            try:
                await asyncio.sleep(0.3)
                second = await lb.apply(changed)
                await asyncio.sleep(0.3)
            finally:
                stop.set()
                thread.join()
            assert (second.changed, second.started, second.reloaded) == (True, False, True)
            assert second.master_pid == first.master_pid and second.workers != first.workers
            assert failures == [] and len(done) > 20 and set(done) == {"n1", "n2"}
            assert fetch(lb1, FRONT2) == "n1"

            # A config haproxy refuses changes nothing: same worker, same file, still serving.
            with pytest.raises(LbConfigError) as refused:
                await lb.apply(changed + "    bogus_keyword\n")
            assert any("bogus_keyword" in a for a in refused.value.alerts), refused.value.alerts
            assert "bogus_keyword" in str(refused.value)
            after = await lb.status()
            assert after.workers == second.workers and after.failed_reloads == 0
            on_node = lab.lab.exec_in("lb1", ["cat", "/var/lib/fleet/haproxy/haproxy.cfg"]).stdout
            assert on_node == changed
            assert fetch(lb1, FRONT) in {"n1", "n2"}
            assert haproxy_pids_in_netns(lab, "lb1"), "haproxy runs inside lb1's network namespace"

            # Valid but unloadable (lb1's sshd holds port 22): the reload fails, the old worker keeps serving.
            clash = lb.render([web(backends), LbService("clash", 22, (LbServer("n1", backends["n1"], PORT),),
                                                        bind_address=lb1, health=HEALTH)])
            with pytest.raises(LbReloadError, match="cannot bind socket"):
                await lb.apply(clash)
            after = await lb.status()
            assert after.workers == second.workers and after.failed_reloads == 1
            assert lab.lab.exec_in("lb1", ["cat", "/var/lib/fleet/haproxy/haproxy.cfg"]).stdout == changed
            assert fetch(lb1, FRONT) in {"n1", "n2"} and fetch(lb1, FRONT2) == "n1"
        finally:
            stopped = await lb.stop()
        assert stopped is True
        assert haproxy_pids_in_netns(lab, "lb1") == []
        assert (await lb.status()).running is False
        assert await lb.stop() is False


@pytest.mark.lab
async def test_runtime_drain_weight_add_del_and_failing_health(lab: Any, backends: dict[str, str]) -> None:
    lb1 = backends["lb1"]
    async with Pool() as pool:
        lb = LbNode(pool, lab.inventory.node("lb1"))
        try:
            started = await lb.apply(lb.render([web(backends, ("n1", "n2", "n3"))]))
            assert started.started

            async def settled() -> bool:
                return await health(lb) == {"n1": "up", "n2": "up", "n3": "down"}
            await wait_for("n1, n2 UP and n3 (no /healthz) DOWN", settled)

            async def n3_check() -> tuple[str, int | None] | None:
                row = {r.name: r for r in await lb.stats() if r.proxy == "be_web"}["n3"]
                return None if row.check_running else (row.check_status, row.check_code)
            assert await wait_until_async(n3_check, 8.0, 0.1, "n3's row between two checks") == ("L7STS", 404)
            assert Counter(fetch(lb1, FRONT) for _ in range(20)) == {"n1": 10, "n2": 10}

            await lb.set_state("be_web", "n1", "drain")
            assert (await health(lb))["n1"] == "drain"
            assert Counter(fetch(lb1, FRONT) for _ in range(10)) == {"n2": 10}
            await lb.set_state("be_web", "n1", "ready")

            await lb.set_weight("be_web", "n2", 3)
            rows = {r.name: r for r in await lb.stats() if r.proxy == "be_web"}
            assert (rows["n1"].weight, rows["n2"].weight) == (1, 3)
            state = {s.server: s for s in await lb.servers_state("be_web")}
            assert (state["n2"].user_weight, state["n2"].initial_weight) == (3, 1)
            assert Counter(fetch(lb1, FRONT) for _ in range(8)) == {"n1": 2, "n2": 6}

            await lb.add_server("be_web", LbServer("n3-spare", backends["n3"], SPARE_PORT), HEALTH)

            async def spare_up() -> bool:
                return (await health(lb)).get("n3-spare") == "up"
            await wait_for("runtime server n3-spare UP", spare_up)
            assert "n3-spare" in Counter(fetch(lb1, FRONT) for _ in range(10))

            await lb.del_server("be_web", "n3-spare")
            assert "n3-spare" not in await health(lb)
            assert "n3-spare" not in Counter(fetch(lb1, FRONT) for _ in range(10))

            with pytest.raises(LbRuntimeError) as refused:
                await lb.set_state("be_web", "nope", "drain")
            assert refused.value.command == "set server be_web/nope state drain"
            assert "No such server" in refused.value.reply
        finally:
            await lb.stop()
        with pytest.raises(LbRuntimeError, match="unreachable"):
            await lb.stats()
