"""Per-service load balancer settings (`lb.timeouts`, `sticky`, `maintenance`, `retries`): the playbook's rules
with errors naming file, line and field, the rendered lines, `haproxy -c` on them, and a real HAProxy on
127.0.0.1 in front of small Python backends showing what each setting does (a few seconds, no lab of nodes):
GETs never fail when one server closes every request with no answer, a POST is not replayed, a sticky cookie
holds and a server added at runtime gets one, and the maintenance page answers while no server is up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, wait_until

from fleet.config.spec import from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.config.spec.values import LbTimeouts
from fleet.core.errors import SpecError
from fleet.node.haproxy.render import LbHealth, LbServer, LbService, lb_service, render, reply_error
from fleet.node.haproxy.runtime import server_changes
from fleet.node.haproxy.stats import parse_show_proc
from fleet.plan.rollout.decide import intent_hash, revision_key

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")

FULL = """services:
  web:
    image: fleet.local/demo:v1
    lb:
      port: 8080
      timeouts: {client: 1m, server: 90s, tunnel: 1h, connect: 500ms}
      sticky: cookie
      maintenance: "Down for maintenance, back soon"
      retries: 3
"""


def lb_spec(body: str) -> str:
    return f"services:\n  web:\n    image: busybox\n    lb:\n      port: 8080\n      {body}\n"


# ---- the playbook -------------------------------------------------------------------------------------------


def test_lb_settings_are_read_through_the_duration_parser_and_recorded_back_exactly() -> None:
    spec = parse_playbook(FULL, "pb.yaml").services[0]
    assert spec.lb is not None
    assert spec.lb.timeouts == LbTimeouts(client=60.0, server=90.0, tunnel=3600.0, connect=0.5)
    assert (spec.lb.sticky, spec.lb.maintenance, spec.lb.retries) == ("cookie", "Down for maintenance, back soon", 3)
    assert from_playbook_dict("web", to_playbook_dict(spec)) == spec


def test_a_service_without_lb_settings_records_what_it_always_did() -> None:
    plain = parse_playbook(lb_spec("balance: roundrobin"), "pb.yaml").services[0]
    assert to_playbook_dict(plain)["lb"] == {"mode": "http", "balance": "roundrobin", "port": 8080}
    # The settings change the revision (what HAProxy does), never the containers.
    tuned = parse_playbook(lb_spec("retries: 0"), "pb.yaml").services[0]
    assert tuned.spec_hash() == plain.spec_hash()
    assert revision_key(tuned) != revision_key(plain) and intent_hash(tuned) != intent_hash(plain)


@pytest.mark.parametrize(("body", "message"), [
    ("timeouts: {client: soon}", "pb.yaml:6: services.web.lb.timeouts.client: expected a duration"),
    ("timeouts: {tunnel: 0s}", "pb.yaml:6: services.web.lb.timeouts.tunnel: must be more than 0"),
    ("timeouts: {server: 25h}", "pb.yaml:6: services.web.lb.timeouts.server:"),
    ("timeouts: {idle: 1s}", "pb.yaml:6: services.web.lb.timeouts.idle: unknown field"),
    ("sticky: ip", "pb.yaml:6: services.web.lb.sticky: expected 'cookie', got 'ip'"),
    ('maintenance: "50% off"', "pb.yaml:6: services.web.lb.maintenance: expected 1-512 characters"),
    ('maintenance: "a\\"\\n    bind :1"', "pb.yaml:6: services.web.lb.maintenance: expected 1-512 characters"),
    ("retries: 11", "pb.yaml:6: services.web.lb.retries: Input should be less than or equal to 10"),
    ("retries: two", "pb.yaml:6: services.web.lb.retries: expected an integer, got 'two'"),
    ("mode: tcp\n      sticky: cookie", "pb.yaml:4: services.web.lb: sticky and maintenance need mode http"),
])
def test_a_bad_lb_setting_names_its_file_line_and_field(body: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_playbook(lb_spec(body), "pb.yaml")
    assert message in str(err.value)


def test_a_client_timeout_needs_the_services_own_frontend() -> None:
    with pytest.raises(SpecError, match=r"pb.yaml:4: services.web.lb: timeouts.client applies to the service's "
                                        r"own frontend"):
        parse_playbook("services:\n  web:\n    image: busybox\n    lb:\n      hosts: [a.test]\n"
                       "      timeouts: {client: 1s}\n", "pb.yaml")


# ---- the rendered config ------------------------------------------------------------------------------------


def _section(text: str, header: str) -> list[str]:
    return text.split(f"\n{header}\n")[1].split("\n\n")[0].splitlines()


KW = {"admin_socket": "/run/fleet/haproxy/admin.sock", "state_file": "/run/fleet/haproxy/state"}


def test_every_setting_is_rendered_in_the_services_own_sections() -> None:
    spec = parse_playbook(FULL, "pb.yaml").services[0]
    text = render([lb_service(spec, [LbServer("web-1", "10.0.0.1", 18081)])], **KW)
    assert "    timeout client 60000ms" in _section(text, "frontend fe_web")
    assert _section(text, "backend be_web")[:12] == [
        "    mode http",
        "    balance roundrobin",
        "    timeout connect 500ms",
        "    timeout server 90000ms",
        "    timeout tunnel 3600000ms",
        '    http-request return status 503 content-type "text/plain; charset=utf-8" string "Down for maintenance, '
        'back soon" hdr Retry-After 10 hdr Cache-Control no-store if { nbsrv() eq 0 }',
        "    retries 3",
        "    retry-on conn-failure empty-response response-timeout 502 503",
        "    http-request disable-l7-retry unless { method GET HEAD OPTIONS }",
        "    option redispatch 1",
        "    cookie fleet_web insert indirect nocache dynamic",
        "    dynamic-cookie-key fleet-web",
    ]


def test_no_retries_and_tcp_services_render_no_l7_retry() -> None:
    off = render([LbService("web", 8080, (), retries=0)], **KW)
    assert "    retries 0" in _section(off, "backend be_web") and "retry-on" not in off
    tcp = render([LbService("db", 5432, (), mode="tcp", retries=4)], **KW)
    assert "    retries 4" in _section(tcp, "backend be_db") and "retry-on" not in tcp


def test_render_refuses_what_the_playbook_refuses() -> None:
    with pytest.raises(ValueError, match="maintenance"):
        render([LbService("web", 8080, (), maintenance='x" \n    bind :1')], **KW)
    with pytest.raises(ValueError, match="sticky"):
        render([LbService("db", 5432, (), mode="tcp", sticky=True)], **KW)
    with pytest.raises(ValueError, match="retries"):
        render([LbService("web", 8080, (), retries=11)], **KW)
    with pytest.raises(ValueError, match=r"timeouts\.tunnel"):
        render([LbService("web", 8080, (), timeouts=LbTimeouts(tunnel=0))], **KW)


def test_a_server_added_to_a_sticky_backend_at_runtime_gets_its_cookie() -> None:
    one = [LbServer("web-1", "10.0.0.1", 1)]
    two = [*one, LbServer("web-2", "10.0.0.2", 1)]
    sticky = [render([LbService("web", 8080, s, sticky=True)], **KW) for s in (one, two)]
    plain = [render([LbService("web", 8080, s)], **KW) for s in (one, two)]
    assert (server_changes(*sticky) or [])[-1] == "enable dynamic-cookie backend be_web"
    assert not any("dynamic-cookie" in c for c in server_changes(*plain) or [])
    assert server_changes(plain[0], sticky[1]) is None  # turning sticky on is a reload


@needs_haproxy
def test_haproxy_accepts_every_setting_with_no_warning(tmp_path: Path) -> None:
    spec = parse_playbook(FULL, "pb.yaml").services[0]
    services = [lb_service(spec, [LbServer("web-1", "127.0.0.1", 1), LbServer("web-2", "::1", 2)]),
                LbService("db", 5432, [LbServer("db-1", "127.0.0.1", 3)], mode="tcp", retries=0,
                          timeouts=LbTimeouts(server=1.5, tunnel=7200, connect=0.2, client=3600)),
                LbService("api", None, [LbServer("api-1", "127.0.0.1", 4)], hosts=("api.test",), sticky=True,
                          timeouts=LbTimeouts(tunnel=90))]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render(services, admin_socket=str(tmp_path / "a.sock"), state_file=str(tmp_path / "state")))
    ok = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert [ln for ln in ok.stderr.splitlines() if "WARNING" in ln and "server state file" not in ln] == []


# ---- a real HAProxy -----------------------------------------------------------------------------------------

# Answers with its name, or (named "dead") closes every request but a health check with no answer: what a
# replica killed mid-request gives HAProxy. Logs "NAME METHOD PATH" per request.
BACKEND = """
import socketserver, sys
name, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data = b""
        self.request.settimeout(5)
        try:
            while b"\\r\\n\\r\\n" not in data:
                chunk = self.request.recv(4096)
                if not chunk:
                    return
                data += chunk
            method, path = data.split(b" ")[:2]
            with open(log, "a") as f:
                f.write(f"{name} {method.decode()} {path.decode()}\\n")
            if name == "dead" and path != b"/healthz":
                return
            if name == "ws" and path != b"/healthz":  # a websocket's upgrade, then an echo of what comes
                self.request.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n"
                                     b"Connection: Upgrade\\r\\n"
                                     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\\r\\n\\r\\n")
                self.request.settimeout(None)
                while chunk := self.request.recv(4096):
                    self.request.sendall(chunk)
                return
            body = name.encode()
            self.request.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s"
                                 % (len(body), body))
        except OSError:
            pass
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
Server(("127.0.0.1", port), Handler).serve_forever()
"""


class Scratch:
    """HAProxy and its backends on 127.0.0.1, in a short temporary directory (UNIX socket paths are short)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-lbs-"))
        (self.dir / "backend.py").write_text(BACKEND)
        self.log = self.dir / "requests.log"
        self.log.touch()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.front = free_port()
        self.admin = str(self.dir / "admin.sock")

    def backend(self, name: str) -> LbServer:
        port = free_port()
        self.procs.append(subprocess.Popen([sys.executable, str(self.dir / "backend.py"), name, str(port),
                                            str(self.log)]))
        wait_until(lambda: _listening(port), 10, 0.05, f"backend {name}")
        return LbServer(name, "127.0.0.1", port)

    def config(self, servers: list[LbServer], **settings: object) -> str:
        svc = LbService("web", self.front, servers, bind_address="127.0.0.1", health=LbHealth("tcp", None, 0.2,
                                                                                            None, 1, 1),
                        **settings)  # type: ignore[arg-type]
        return render([svc], admin_socket=self.admin, state_file=str(self.dir / "state"))

    def start(self, text: str) -> None:
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(text)
        self.procs.append(subprocess.Popen([HAPROXY, "-W", "-S", str(self.dir / "master.sock"), "-f", str(cfg)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: _listening(self.front) and os.path.exists(self.admin), 10, 0.05, "haproxy")

    def cli(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.admin)
            s.sendall(command.encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: s.recv(65536), b"")).decode()

    def request(self, method: str = "GET", path: str = "/", cookie: str | None = None) -> tuple[int, str, str]:
        """(status, body, Set-Cookie header). The request goes in one write, head and body together: HAProxy can
        replay a request only when the whole of it is in its buffer as it first sends it, which a client
        writing the body after the head (http.client) makes a matter of timing."""
        body = b"x=1" if method == "POST" else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
        head += f"Cookie: {cookie}\r\n" if cookie else ""
        with socket.create_connection(("127.0.0.1", self.front), timeout=10) as s:
            s.sendall(head.encode() + b"\r\n" + body)
            raw = b"".join(iter(lambda: s.recv(65536), b""))
        top, _, content = raw.partition(b"\r\n\r\n")
        lines = top.decode().split("\r\n")
        headers = dict(ln.split(": ", 1) for ln in lines[1:] if ": " in ln)
        set_cookie = next((v for k, v in headers.items() if k.lower() == "set-cookie"), "")
        return int(lines[0].split()[1]), content.decode(), set_cookie

    def reload(self) -> None:
        """A hitless reload through the master CLI; returns once the new worker serves."""
        master = str(self.dir / "master.sock")

        def ask(command: str) -> str:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(master)
                s.sendall(command.encode() + b"\n")
                s.shutdown(socket.SHUT_WR)
                return b"".join(iter(lambda: s.recv(65536), b"")).decode()

        before = wait_until(lambda: parse_show_proc(ask("show proc")).worker_pids, 10, 0.1, "the worker",
                            ignore=(OSError,))
        ask("reload")  # prints nothing; the master re-executes, refusing connections for a few tens of ms
        wait_until(lambda: parse_show_proc(ask("show proc")).worker_pids not in ((), before), 10, 0.1,
                   "a new worker", ignore=(OSError,))

    def upgraded(self) -> socket.socket:
        """A connection through HAProxy upgraded to a websocket (101), echoing what is sent."""
        s = socket.create_connection(("127.0.0.1", self.front), timeout=10)
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return s

    def seen(self) -> list[str]:
        return [ln for ln in self.log.read_text().splitlines() if not ln.endswith(" /healthz")]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    s = Scratch()
    try:
        yield s
    finally:
        s.close()


@needs_haproxy
def test_gets_are_retried_on_another_server_and_a_post_is_never_replayed(scratch: Scratch) -> None:
    dead, good = scratch.backend("dead"), scratch.backend("good")
    scratch.start(scratch.config([dead, good]))
    gets = Counter(scratch.request("GET", f"/g{i}")[:2] for i in range(20))
    assert gets == {(200, "good"): 20}
    # Round robin sent about half of them to the dead server first, and each of those went on to the good one.
    first_tries = [ln for ln in scratch.seen() if ln.startswith("dead GET")]
    assert len(first_tries) >= 5 and all(f"good GET {ln.split()[2]}" in scratch.seen() for ln in first_tries)
    posts = [scratch.request("POST", f"/p{i}")[0] for i in range(6)]
    post_lines = [ln for ln in scratch.seen() if " POST " in ln]
    # Each POST reached exactly one server: the dead one's answer (none) is a 502, never a replay.
    assert len(post_lines) == 6 and len({ln.split()[2] for ln in post_lines}) == 6
    assert posts.count(502) == sum(ln.startswith("dead POST") for ln in post_lines) >= 1
    assert posts.count(200) == sum(ln.startswith("good POST") for ln in post_lines) >= 1


@needs_haproxy
def test_haproxy_26_replays_a_post_unless_fleet_forbids_it(scratch: Scratch) -> None:
    """What the `disable-l7-retry` line is for: without it HAProxy 2.6 retries a POST on an empty answer."""
    dead, good = scratch.backend("dead"), scratch.backend("good")
    text = scratch.config([dead, good])
    scratch.start(text.replace("    http-request disable-l7-retry unless { method GET HEAD OPTIONS }\n", ""))
    assert [scratch.request("POST", f"/p{i}")[0] for i in range(4)] == [200] * 4
    assert sum(ln.startswith("dead POST") for ln in scratch.seen()) >= 1  # each of those was sent twice


@needs_haproxy
def test_a_sticky_cookie_holds_and_a_server_added_at_runtime_gets_one(scratch: Scratch) -> None:
    one, two = scratch.backend("one"), scratch.backend("two")
    old = scratch.config([one], sticky=True)
    scratch.start(old)
    status, body, cookie = scratch.request()
    assert (status, body) == (200, "one") and cookie.startswith("fleet_web=")
    new = scratch.config([one, two], sticky=True)
    commands = server_changes(old, new)
    assert commands is not None
    for c in commands:
        assert reply_error(scratch.cli(c)) is None, c
    wait_until(lambda: {scratch.request()[1] for _ in range(4)} == {"one", "two"}, 10, 0.1, "two in rotation")
    cookies = {}
    for _ in range(4):
        _, body, set_cookie = scratch.request()
        cookies[body] = set_cookie.split(";")[0]
    assert cookies["one"] == cookie.split(";")[0] and cookies["two"].startswith("fleet_web=")
    assert cookies["two"] != cookies["one"] and len(cookies["two"]) > len("fleet_web=")
    for server, value in cookies.items():
        assert {scratch.request(cookie=value)[1] for _ in range(6)} == {server}


@needs_haproxy
def test_the_maintenance_page_answers_while_no_server_is_up(scratch: Scratch) -> None:
    one = scratch.backend("one")
    scratch.start(scratch.config([one], maintenance="Down for maintenance, back soon"))
    assert scratch.request()[:2] == (200, "one")
    assert reply_error(scratch.cli("set server be_web/one state maint")) is None
    status, body, _ = scratch.request()
    assert (status, body) == (503, "Down for maintenance, back soon")
    assert reply_error(scratch.cli("set server be_web/one state ready")) is None
    wait_until(lambda: scratch.request()[:2] == (200, "one"), 10, 0.1, "one back")
    start = time.monotonic()
    scratch.procs[0].kill()  # the replica dies: the check (every 200 ms, fall 1) takes it out
    wait_until(lambda: scratch.request()[0] == 503, 10, 0.05, "the maintenance page")
    assert time.monotonic() - start < 5


def _echoes(conn: socket.socket, data: bytes) -> bool:
    """Whether `data` comes back on an upgraded connection (False: HAProxy closed it)."""
    try:
        conn.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = conn.recv(4096)
            if not chunk:
                return False
            got += chunk
        return got == data
    except OSError:
        return False


@needs_haproxy
def test_a_websocket_idle_past_the_client_and_server_timeouts_lives_by_the_tunnel_timeout_across_a_reload(
        scratch: Scratch) -> None:
    ws = scratch.backend("ws")
    short = LbTimeouts(client=1.0, server=1.0)
    # Without `tunnel`, an upgraded connection idle for longer than the client and server timeouts is closed.
    scratch.start(scratch.config([ws], timeouts=short))
    plain = scratch.upgraded()
    assert _echoes(plain, b"hello")
    time.sleep(2.0)
    assert not _echoes(plain, b"still there?")
    plain.close()
    # With `tunnel: 1m` it stays, idle for twice those timeouts, and across a reload (its old worker keeps it
    # until `hard-stop-after`, raised from 30 s to the tunnel's 60 s).
    (scratch.dir / "haproxy.cfg").write_text(scratch.config([ws], timeouts=LbTimeouts(client=1.0, server=1.0,
                                                                                      tunnel=60.0)))
    scratch.reload()
    tunnel = scratch.upgraded()
    try:
        time.sleep(2.0)
        assert _echoes(tunnel, b"ping")
        scratch.reload()
        time.sleep(2.0)
        assert _echoes(tunnel, b"pong after the reload")
        with scratch.upgraded() as fresh:
            assert _echoes(fresh, b"a new one on the new worker")
    finally:
        tunnel.close()


def test_a_tunnel_timeout_over_30s_raises_hard_stop_after_to_cover_it() -> None:
    def cfg(*tunnels: float | None) -> str:
        return render([LbService(f"s{i}", 8080 + i, (), timeouts=LbTimeouts(tunnel=t)) for i, t in enumerate(tunnels)],
                      **KW)

    assert "    hard-stop-after 30s\n" in cfg(None, 10.0)
    assert "    hard-stop-after 91s\n" in cfg(90.5, None, 45.0)


@needs_haproxy
def test_a_websocket_is_held_open_90s_across_a_reload_when_its_tunnel_timeout_is_longer(scratch: Scratch) -> None:
    # `timeouts.tunnel: 100s` raises hard-stop-after to 100 s: the worker a reload replaced keeps the websocket for
    # 90 s and more, past the 30 s that bounded every connection across a reload before, idle 45 s at a time (far
    # past the client and server timeouts; within the tunnel's own).
    ws = scratch.backend("ws")
    text = scratch.config([ws], timeouts=LbTimeouts(client=1.0, server=1.0, tunnel=100.0))
    assert "hard-stop-after 100s" in text
    scratch.start(text)
    tunnel = scratch.upgraded()
    try:
        assert _echoes(tunnel, b"ping")
        scratch.reload()
        reloaded = time.monotonic()
        time.sleep(45.0)
        assert _echoes(tunnel, b"pong 45 s after the reload")
        time.sleep(max(0.0, 90.0 - (time.monotonic() - reloaded)))
        assert _echoes(tunnel, b"pong 90 s after the reload")
        with scratch.upgraded() as fresh:
            assert _echoes(fresh, b"a new one on the new worker")
    finally:
        tunnel.close()
