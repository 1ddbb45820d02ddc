"""The rendered config and the runtime commands against a real HAProxy 2.6, on 127.0.0.1 only.

Backends are tiny Python HTTP servers; every process started here is stopped by its PID in `finally`.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from haproxy_tools import check_config_argv, master_reload, master_show_proc, server_rows, start_argv
from helpers import free_port, free_ports, wait_until, wait_until_async
from loadgen import Load
from sshserver import SSHFarm

from fleet.config.spec import HealthSpec, parse_playbook
from fleet.core.errors import SpecError
from fleet.engine.haproxy import ApplyResult, LbNode
from fleet.engine.probes import check
from fleet.node.haproxy.jail import CAP_MASK
from fleet.node.haproxy.render import (
    LbHealth,
    LbServer,
    LbService,
    LbState,
    RunAs,
    add_server,
    lb_health,
    render,
    reply_error,
    set_server_state,
    show_servers_state,
    show_stat,
)
from fleet.node.haproxy.stats import ServerState, parse_servers_state, parse_show_proc, parse_show_stat
from fleet.plan.healthjudge import http_request
from fleet.transport import Pool

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed"),
]

BACKEND = """
import http.server, os, sys
name, port, sick = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if self.path == "/healthz" and os.path.exists(sick) else 200
        body = name.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # health checks close early; that is fine
Server(("127.0.0.1", port), Handler).serve_forever()
"""
# Answers every request with one status (or, for "stall", nothing at all); logs each request's head, hex-encoded.
STATUS_BACKEND = """
import socketserver, sys, time
code, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data = b""
        self.request.settimeout(5)
        try:
            while b"\\r\\n\\r\\n" not in data:
                chunk = self.request.recv(4096)
                if not chunk:
                    break
                data += chunk
            with open(log, "a") as f:
                f.write(data.hex() + "\\n")
            if code == "stall":
                time.sleep(3)
            else:
                head = f"HTTP/1.1 {code} X\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n"
                self.request.sendall(head.encode())
        except OSError:
            pass
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
Server(("127.0.0.1", port), Handler).serve_forever()
"""
HEALTH = LbHealth("http", "/healthz", interval=0.1, timeout=1.0, fall=2, rise=1)


def cli(path: str, command: str, attempts: int = 60) -> str:
    """One command per connection; the master socket refuses connections briefly while it re-executes, and may
    reset one it had accepted then (seen once under load): both are asked again (a reload asked twice reloads
    twice, which no caller here tells apart from once)."""
    for _ in range(attempts):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(path)
                s.sendall(command.encode() + b"\n")
                s.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks).decode()
        except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
            time.sleep(0.05)
    raise AssertionError(f"cannot reach {path}")


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    wait_until(predicate, timeout, 0.05, what)


def get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


@dataclass
class ScratchLab:
    """A scratch directory on 127.0.0.1 for one test: HAProxy's files and sockets, and the backend processes
    started in it (not the session's lab of nodes)."""

    dir: Path
    procs: list[subprocess.Popen[bytes]]
    ports: dict[str, int]

    def backend(self, name: str) -> int:
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(self.dir / "backend.py"), name, str(port),
                                 str(self.dir / f"{name}.sick")])
        self.procs.append(proc)
        self.ports[name] = port
        wait_for(f"backend {name}", lambda: _listening(port))
        return port

    def answering(self, code: str) -> int:
        """A backend answering every request with status `code` ("stall": never answering)."""
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(self.dir / "status.py"), code, str(port),
                                 str(self.dir / f"{code}-{port}.log")])
        self.procs.append(proc)
        wait_for(f"backend {code}", lambda: _listening(port))
        return port

    def requests(self) -> list[bytes]:
        """Every request head the status backends received (connect-only checks send none)."""
        return [bytes.fromhex(line) for log in sorted(self.dir.glob("*.log"))
                for line in log.read_text().splitlines() if line]

    def sick(self, name: str, sick: bool) -> None:
        flag = self.dir / f"{name}.sick"
        if sick:
            flag.touch()
        else:
            flag.unlink()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def scratch_lab() -> Iterator[ScratchLab]:
    # A short directory: UNIX socket paths are limited to 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="fleet-hx-"))
    (work / "backend.py").write_text(BACKEND)
    (work / "status.py").write_text(STATUS_BACKEND)
    scratch_lab = ScratchLab(work, [], {})
    try:
        yield scratch_lab
    finally:
        for proc in scratch_lab.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in scratch_lab.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(work, ignore_errors=True)


def test_real_haproxy_serves_checks_drains_adds_and_reloads(scratch_lab: ScratchLab) -> None:
    web1, web2, web3 = scratch_lab.backend("web-1"), scratch_lab.backend("web-2"), scratch_lab.backend("web-3")
    front, stats_port, *ports = free_ports(5)
    admin, master = str(scratch_lab.dir / "admin.sock"), str(scratch_lab.dir / "master.sock")
    cfg, state = str(scratch_lab.dir / "haproxy.cfg"), str(scratch_lab.dir / "state")
    others = [LbService(f"alg-{b}", p, [], balance=b, bind_address="127.0.0.1", health=HEALTH)
              for b, p in zip(("leastconn", "source", "random"), ports, strict=True)]
    web = LbService("web", front, [LbServer("web-1", "127.0.0.1", web1), LbServer("web-2", "127.0.0.1", web2)],
                    bind_address="127.0.0.1", health=HEALTH)
    text = render([web, *others], admin_socket=admin, state_file=state, stats_bind=("127.0.0.1", stats_port))
    Path(cfg).write_text(text)

    check = subprocess.run([HAPROXY, *check_config_argv(cfg)[1:]], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert [ln for ln in check.stderr.splitlines() if "WARNING" in ln and "server state file" not in ln] == []

    scratch_lab.procs.append(subprocess.Popen([HAPROXY, *start_argv(cfg, master,
                                                                    str(scratch_lab.dir / "haproxy.pid"))[1:]],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def servers() -> dict[tuple[str, str], str]:
        return {k: r.health for k, r in server_rows(parse_show_stat(cli(admin, show_stat()))).items()}

    wait_for("both servers UP", lambda: servers().get(("be_web", "web-1")) == servers().get(("be_web", "web-2"))
             == "up")
    assert Counter(get(front) for _ in range(20)) == {"web-1": 10, "web-2": 10}

    scratch_lab.sick("web-2", True)
    wait_for("web-2 DOWN", lambda: servers()[("be_web", "web-2")] == "down")

    def web2_check() -> tuple[str, int | None] | None:
        row = server_rows(parse_show_stat(cli(admin, show_stat())))[("be_web", "web-2")]
        return None if row.check_running else (row.check_status, row.check_code)
    assert wait_until(web2_check, 8.0, 0.05, "web-2's row between two checks") == ("L7STS", 500)
    assert Counter(get(front) for _ in range(10)) == {"web-1": 10}

    scratch_lab.sick("web-2", False)
    wait_for("web-2 UP again", lambda: servers()[("be_web", "web-2")] == "up")
    assert reply_error(cli(admin, set_server_state("be_web", "web-1", "drain"))) is None
    assert servers()[("be_web", "web-1")] == "drain"
    states = {(s.backend, s.server): s for s in parse_servers_state(cli(admin, show_servers_state("be_web")))}
    assert states[("be_web", "web-1")].state == "drain" and states[("be_web", "web-1")].running
    assert Counter(get(front) for _ in range(10)) == {"web-2": 10}

    for command in add_server("be_web", LbServer("web-3", "127.0.0.1", web3), HEALTH):
        assert reply_error(cli(admin, command)) is None, command
    wait_for("web-3 UP", lambda: servers().get(("be_web", "web-3")) == "up")
    assert Counter(get(front) for _ in range(10)) == {"web-2": 5, "web-3": 5}
    for svc in others:  # every balance algorithm fleet renders accepts runtime servers
        replies = [reply_error(cli(admin, c)) for c in add_server(f"be_{svc.name}",
                                                                  LbServer("x-1", "127.0.0.1", web3), HEALTH)]
        assert replies == [None, None, None], svc.balance

    before = parse_show_proc(cli(master, master_show_proc()))
    assert len(before.worker_pids) == 1 and before.failed_reloads == 0
    Path(state).write_text(cli(admin, show_servers_state()))
    assert cli(master, master_reload()).strip() == ""
    wait_for("a new worker", lambda: parse_show_proc(cli(master, master_show_proc())).worker_pids
             not in ((), before.worker_pids))
    after = parse_show_proc(cli(master, master_show_proc()))
    assert after.failed_reloads == 0 and after.master.reloads == before.master.reloads + 1
    # The drain survived the reload through the state file; web-3 was runtime-only and is gone.
    wait_for("stats after reload", lambda: ("be_web", "web-1") in servers())
    assert servers()[("be_web", "web-1")] == "drain" and ("be_web", "web-3") not in servers()
    assert Counter(get(front) for _ in range(4)) == {"web-2": 4}

    with pytest.raises(ValueError, match="server"):
        render([LbService("web", front, [LbServer("web-1\n    bind 127.0.0.1:1", "127.0.0.1", web1)])],
               admin_socket=admin, state_file=state)
    with pytest.raises(SpecError, match="invalid service name"):
        parse_playbook('services:\n  "web\\n    bind 127.0.0.1:1":\n    image: busybox\n', "hostile.yaml")
    assert Path(cfg).read_text() == text


def test_haproxy_check_refuses_a_broken_config_and_accepts_ipv6_and_every_mode(tmp_path: Path) -> None:
    services = [
        LbService("web", 18080, [LbServer("web-1", "127.0.0.1", 1, state="drain"),
                                 LbServer("web-2", "::1", 2, state="maint")], health=HEALTH, bind_address="::1"),
        LbService("db", 18081, [LbServer("db-1", "127.0.0.1", 3)], mode="tcp", balance="source",
                  health=LbHealth("tcp"), bind_address="127.0.0.1"),
        LbService("raw", 18082, [LbServer("raw-1", "127.0.0.1", 4)], mode="tcp", health=LbHealth("none")),
    ]
    cfg = tmp_path / "ok.cfg"
    cfg.write_text(render(services, admin_socket=str(tmp_path / "a.sock"), state_file=str(tmp_path / "state"),
                          stats_bind=("127.0.0.1", 18404)))
    ok = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert [ln for ln in ok.stderr.splitlines() if "WARNING" in ln and "server state file" not in ln] == []
    bad = tmp_path / "bad.cfg"
    bad.write_text(cfg.read_text() + "    bogus_keyword\n")
    broken = subprocess.run([HAPROXY, "-c", "-f", str(bad)], capture_output=True, text=True, timeout=30)
    assert broken.returncode == 1 and "bogus_keyword" in broken.stderr


async def test_haproxy_sees_each_server_up_or_down_exactly_as_the_controllers_check(scratch_lab: ScratchLab) -> None:
    http = HealthSpec("http", "/healthz", interval=0.2, timeout=0.5, failure_threshold=2, success_threshold=2)
    exe = HealthSpec("exec", command=("/bin/check",), interval=0.2, timeout=0.5, failure_threshold=2)
    tcp = HealthSpec("tcp", interval=0.2, timeout=0.5, failure_threshold=2)
    codes = ["200", "204", "302", "399", "400", "404", "500", "stall"]
    http_ports = {f"c-{code}": scratch_lab.answering(code) for code in codes}
    closed, codes_port, cmd_port = free_ports(3)
    tcp_ports = {"t-listening": scratch_lab.answering("200"), "t-closed": closed}
    services = [
        LbService("codes", codes_port, [LbServer(n, "127.0.0.1", p) for n, p in http_ports.items()],
                  bind_address="127.0.0.1", health=lb_health(http)),
        # An exec-checked service: HAProxy can only connect to the replica's port.
        LbService("cmd", cmd_port, [LbServer(n, "127.0.0.1", p) for n, p in tcp_ports.items()],
                  bind_address="127.0.0.1", health=lb_health(exe)),
    ]
    admin, cfg = str(scratch_lab.dir / "admin.sock"), str(scratch_lab.dir / "haproxy.cfg")
    Path(cfg).write_text(render(services, admin_socket=admin, state_file=str(scratch_lab.dir / "state")))
    scratch_lab.procs.append(subprocess.Popen([HAPROXY, *start_argv(cfg, str(scratch_lab.dir / "master.sock"),
                                                                    str(scratch_lab.dir / "haproxy.pid"))[1:]],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    controller = {}
    for ports, health in ((http_ports, http), (tcp_ports, tcp)):
        for name, port in ports.items():
            controller[name] = (await check(health, address="127.0.0.1", port=port, exec_in=None)).ok
    assert controller == {"c-200": True, "c-204": True, "c-302": True, "c-399": True, "c-400": False,
                          "c-404": False, "c-500": False, "c-stall": False, "t-listening": True, "t-closed": False}

    def haproxy() -> dict[str, bool]:
        rows = server_rows(parse_show_stat(cli(admin, show_stat())))
        return {server: row.health == "up" for (_, server), row in rows.items()}

    wait_for("HAProxy to agree with the controller", lambda: haproxy() == controller)
    time.sleep(5 * http.interval)  # and it stays so: these were settled verdicts, not a start-up state
    assert haproxy() == controller

    def results() -> dict[str, tuple[str, int | None]]:
        # A server's row counts when its check is not running (the code may read 0 until it ends: seen under load).
        stats = server_rows(parse_show_stat(cli(admin, show_stat())))
        return {server: (row.check_status, row.check_code) for (_, server), row in stats.items()
                if not row.check_running}

    rows: dict[str, tuple[str, int | None]] = {}

    def settled() -> bool:
        rows.update(results())
        return {"c-302", "c-404", "c-stall", "t-listening", "t-closed"} <= rows.keys()

    wait_for("each check's last result read between two checks", settled)
    assert rows["c-302"] == ("L7OK", 302) and rows["c-404"] == ("L7STS", 404) and rows["c-stall"][0] == "L7TOUT"
    assert rows["t-listening"][0] == "L4OK" and rows["t-closed"][0] == "L4CON"
    # Both sides sent the very same request: the controller's and HAProxy's checks are indistinguishable.
    requests = scratch_lab.requests()
    assert len(requests) > 2 * len(codes) and set(requests) == {http_request("/healthz")}


def _runtime_state(rows: list[ServerState], backend: str) -> dict[str, tuple[str, int | None, str, int]]:
    """Per server of the backend: address, port, admin state and weight, the runtime state a reload keeps."""
    return {s.server: (s.address, s.port, s.state, s.user_weight) for s in rows if s.backend == backend}


async def test_server_only_changes_need_no_reload_and_the_file_reloads_to_the_same_state(
        scratch_lab: ScratchLab, farm: SSHFarm, pool: Pool) -> None:
    """Through LbNode.update over SSH (an in-process server running /bin/sh here): adding, weighting, draining
    and removing servers is done at runtime with the same worker, under load with no failed request; the
    file written beside it then gives the same servers, weights and states after a reload and after a restart."""
    ports = {n: scratch_lab.backend(n) for n in ("web-1", "web-2", "web-3", "web-4")}
    front, other = free_ports(2)
    lb = LbNode(pool, farm.node("n1"), base_dir=str(scratch_lab.dir / "hx"), haproxy=HAPROXY)

    def config(servers: dict[str, tuple[int, LbState]], extra: bool = False) -> str:
        web = LbService("web", front, [LbServer(n, "127.0.0.1", ports[n], w, st) for n, (w, st) in servers.items()],
                        bind_address="127.0.0.1", health=HEALTH)
        more = [LbService("api", other, [LbServer("web-1", "127.0.0.1", ports["web-1"])], bind_address="127.0.0.1",
                          health=HEALTH)] if extra else []
        return lb.render([web, *more])

    async def state() -> dict[str, tuple[str, int | None, str, int]]:
        return _runtime_state(await lb.servers_state("be_web"), "be_web")

    async def health() -> dict[str, str]:
        return {r.name: r.health for r in await lb.stats() if r.proxy == "be_web"}

    async def until(what: str, wanted: dict[str, str]) -> None:
        await wait_until_async(lambda: _eq(health(), wanted), 10.0, 0.1, what)

    try:
        first = await lb.update(config({"web-1": (1, "ready"), "web-2": (1, "ready")}))
        assert first.started and (lb.starts, lb.reloads, lb.updates) == (1, 0, 0)
        await until("web-1 and web-2 UP", {"web-1": "up", "web-2": "up"})
        workers = (await lb.status()).workers
        steps: list[dict[str, tuple[int, LbState]]] = [
            {"web-1": (1, "ready"), "web-2": (3, "ready"), "web-3": (1, "ready")},   # add, weight
            {"web-1": (1, "ready"), "web-2": (3, "drain"), "web-3": (2, "ready")},   # drain, weight
            {"web-1": (1, "drain"), "web-3": (2, "ready"), "web-4": (1, "ready")},   # remove, add, drain
        ]
        with Load("127.0.0.1", front, clients=2, max_seconds=60) as load:
            for i, servers in enumerate(steps):
                result = await lb.update(config(servers))
                assert result.updated and result.changed and not result.reloaded, (i, result)
                up = {n: "drain" if st == "drain" else "up" for n, (_, st) in servers.items()}
                await until(f"step {i}: {up}", up)
                await asyncio.sleep(0.3)
        assert load.result.failed == 0 and load.result.ok > 50, load.result.errors
        status = await lb.status()
        assert status.workers == workers and status.reloads == 0 and (lb.reloads, lb.updates) == (0, 3)
        final = config(steps[-1])
        on_node = (await lb.runtime(["show servers state be_web"]))[0]
        assert Path(lb.paths.config).read_text() == final
        runtime = await state()
        assert runtime == {"web-1": ("127.0.0.1", ports["web-1"], "drain", 0),
                           "web-3": ("127.0.0.1", ports["web-3"], "ready", 2),
                           "web-4": ("127.0.0.1", ports["web-4"], "ready", 1)}, on_node
        assert Counter(get(front) for _ in range(9)) == {"web-3": 6, "web-4": 3}
        assert await lb.update(final) == ApplyResult(False, False, False), "the same config again does nothing"

        # A real config change reloads; the servers come back as they were at runtime, matched by name although
        # their ids differ (web-3 and web-4 were added with ids 3 and 4, the file numbers them 2 and 3, so web-3's
        # old id is web-4's new one): a drain made at runtime only (as the engine does before the config follows)
        # lands on web-4 again.
        await lb.set_state("be_web", "web-4", "drain")
        ids = {s.server: s.server_id for s in await lb.servers_state("be_web")}
        assert ids == {"web-1": 1, "web-3": 3, "web-4": 4}
        with Load("127.0.0.1", front, clients=2, max_seconds=60) as load:
            reloaded = await lb.update(config(steps[-1], extra=True))
            await asyncio.sleep(0.5)
        assert reloaded.reloaded and lb.reloads == 1 and load.result.failed == 0, load.result.errors
        assert {s.server: s.server_id for s in await lb.servers_state("be_web")} == {"web-1": 1, "web-3": 2,
                                                                                     "web-4": 3}
        assert await state() == {**runtime, "web-4": ("127.0.0.1", ports["web-4"], "drain", 1)}
        await lb.set_state("be_web", "web-4", "ready")
        assert await state() == runtime
        # A fresh start reads the file alone (no state file): the same again.
        await lb.stop()
        started = await LbNode(pool, farm.node("n1"), base_dir=lb.paths.base, haproxy=HAPROXY).apply(final)
        assert started.started
        assert await state() == runtime
        await until("the same servers after a restart", {"web-1": "drain", "web-3": "up", "web-4": "up"})
        assert Counter(get(front) for _ in range(9)) == {"web-3": 6, "web-4": 3}

        # Runtime state that strayed from the file (a server deleted behind fleet's back): HAProxy refuses the
        # weight change, the file is left alone, and a reload makes the change instead.
        await lb.del_server("be_web", "web-3")
        result = await lb.update(config({**steps[-1], "web-3": (3, "ready")}))
        assert result.reloaded and lb.reloads == 2 and lb.updates == 3
        assert (await state())["web-3"] == ("127.0.0.1", ports["web-3"], "ready", 3)
    finally:
        await lb.stop()


async def _eq(got: Awaitable[dict[str, str]], wanted: dict[str, str]) -> bool:
    return await got == wanted


def _proc(pid: int) -> dict[str, str]:
    return {k: v.strip() for k, v in (ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines())}


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_become_node_runs_haproxy_as_its_user_in_its_jail_replacing_a_root_master_with_no_failed_request(
        scratch_lab: ScratchLab, farm: SSHFarm, pool: Pool) -> None:
    """Through `become` (real sudo): a root master started the old way (config with user/group/chroot, sockets
    beside it) is replaced by a jailed one under load with no failed request (the old one hands its listeners
    over, then finishes and exits); the new master and its workers run as haproxy with CAP_NET_BIND_SERVICE and
    CAP_SYS_CHROOT only, the master's root the jail, the workers' the empty chroot; a reload keeps the master and
    fails no request; the files HAProxy reads are root's, group haproxy, 0640."""
    port = scratch_lab.backend("web-1")
    front, other = free_ports(2)
    d = scratch_lab.dir / "hx"
    d.mkdir(mode=0o700)
    uid, gid = pwd.getpwnam("haproxy").pw_uid, grp.getgrnam("haproxy").gr_gid
    lb = LbNode(pool, farm.node("n1", become=True), base_dir=str(d), haproxy=HAPROXY)
    web = LbService("web", front, [LbServer("web-1", "127.0.0.1", port)], bind_address="127.0.0.1", health=HEALTH)
    chroot = RunAs("haproxy", "haproxy", str(d / "empty"))
    # The layout an older fleet left: root master, sockets beside the config, user/group in the config.
    old_text = render([web], admin_socket=str(d / "admin.sock"), state_file=lb.state_file, run_as=chroot).replace(
        "\nglobal\n", "\nglobal\n    user haproxy\n    group haproxy\n", 1)
    (d / "empty").mkdir(mode=0o555)
    (d / "haproxy.cfg").write_text(old_text)
    with open(d / "haproxy.log", "ab") as log:
        old = subprocess.Popen([HAPROXY, "-W", "-S", str(d / "master.sock"), "-f", str(d / "haproxy.cfg"), "-p",
                                str(d / "haproxy.pid")], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               start_new_session=True)
    scratch_lab.procs.append(old)
    try:
        wait_for("the old master's worker", lambda: len(_children(old.pid)) == 1 or old.poll() is not None)
        assert old.poll() is None, (d / "haproxy.log").read_text()
        wait_for("web-1 behind the old master", lambda: get(front) == "web-1")
        # Status finds the old master by its pid file and asks it on its old socket.
        found = await lb.status()
        assert found.running and found.master_pid == old.pid and found.workers == tuple(_children(old.pid))
        new_text = render([web], admin_socket=lb.admin_socket, state_file=lb.state_file, run_as=chroot)
        with Load("127.0.0.1", front, clients=4, max_seconds=60) as load:
            await asyncio.sleep(0.5)
            upgraded = await lb.apply(new_text)
            await asyncio.sleep(0.5)
        assert upgraded.started and any("ran as root" in w for w in upgraded.warnings), upgraded
        assert load.result.failed == 0 and load.result.ok > 50, (load.result.errors, load.result.failures[:5])
        replaced = load.result
        master = int((d / "haproxy.pid").read_text())
        assert master == upgraded.master_pid != old.pid
        assert old.wait(timeout=20) == 0, "the old master finishes its connections and exits"
        assert not (d / "master.sock").exists() and not (d / "admin.sock").exists()

        def jailed(pid: int, root: str) -> None:
            st = _proc(pid)
            assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(gid)] * 4, st
            for cap in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
                assert int(st[cap], 16) == CAP_MASK, (pid, cap, st[cap])
            assert st["NoNewPrivs"] == "1" and os.readlink(f"/proc/{pid}/root") == root

        jailed(master, "/")
        assert not os.path.exists(f"/proc/{master}/root/etc/shadow")
        assert "usr" in os.listdir(f"/proc/{master}/root") and "root" not in os.listdir(f"/proc/{master}/root")
        workers = _children(master)
        assert workers
        for w in workers:
            jailed(w, str(d / "empty"))
        for path, owner, mode in ((d, (0, gid), 0o750), (d / "haproxy.cfg", (0, gid), 0o640),
                                  (d / "run", (uid, gid), 0o700), (d / "run" / "admin.sock", (uid, gid), 0o600)):
            st = path.stat()
            assert ((st.st_uid, st.st_gid), st.st_mode & 0o777) == (owner, mode), path

        api = LbService("api", other, [LbServer("web-1", "127.0.0.1", port)], bind_address="127.0.0.1", health=HEALTH)
        with Load("127.0.0.1", front, clients=4, max_seconds=60) as load:
            await asyncio.sleep(0.3)
            reloaded = await lb.apply(render([web, api], admin_socket=lb.admin_socket, state_file=lb.state_file,
                                             run_as=chroot))
            await asyncio.sleep(0.3)
        assert reloaded.reloaded and reloaded.master_pid == master, reloaded
        assert load.result.failed == 0 and load.result.ok > 20, load.result.errors
        assert get(other) == "web-1"
        for pid in _children(master):
            jailed(pid, str(d / "empty"))
        jailed(master, "/")
        print(f"\nroot master replaced: {replaced.ok} ok / {replaced.failed} failed; reload: {load.result.ok} ok / "
              f"{load.result.failed} failed")
    finally:
        await lb.stop()


async def test_a_root_master_that_cannot_hand_its_listeners_over_is_stopped_and_a_jailed_one_started(
        scratch_lab: ScratchLab, farm: SSHFarm, pool: Pool) -> None:
    """An older root master without a master socket (no hand-over possible): apply says so, stops it and starts
    the jailed master on the freed port."""
    port = scratch_lab.backend("web-1")
    front = free_port()
    d = scratch_lab.dir / "hx"
    d.mkdir(mode=0o700)
    lb = LbNode(pool, farm.node("n1"), base_dir=str(d), haproxy=HAPROXY)
    web = LbService("web", front, [LbServer("web-1", "127.0.0.1", port)], bind_address="127.0.0.1", health=HEALTH)
    (d / "haproxy.cfg").write_text(render([web], admin_socket=str(d / "admin.sock"), state_file=lb.state_file))
    with open(d / "haproxy.log", "ab") as log:
        old = subprocess.Popen([HAPROXY, "-W", "-f", str(d / "haproxy.cfg"), "-p", str(d / "haproxy.pid")],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    scratch_lab.procs.append(old)
    try:
        wait_until(lambda: get(front) == "web-1", 8.0, 0.05, "web-1 behind the old master", ignore=(OSError,))
        started = await lb.apply(render([web], admin_socket=lb.admin_socket, state_file=lb.state_file))
        assert started.started and any("no listener hand-over" in w for w in started.warnings), started
        old.wait(timeout=10)  # raises while the old master still runs
        assert _proc(started.master_pid or 0)["Uid"].split()[0] == str(pwd.getpwnam("haproxy").pw_uid)
        assert get(front) == "web-1"
    finally:
        await lb.stop()
