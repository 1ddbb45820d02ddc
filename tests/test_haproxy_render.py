"""HAProxy config rendering, runtime command builders and parsers of recorded HAProxy 2.6 output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from haproxy_tools import (
    check_config_argv,
    master_reload,
    master_show_proc,
    parse_get_weight,
    server_rows,
    socket_argv,
    start_argv,
)
from hypothesis import given
from hypothesis import strategies as st

from fleet.config.spec import HealthSpec, parse_playbook
from fleet.node.haproxy.render import (
    SAFETY_NET,
    LbHealth,
    LbServer,
    LbService,
    RunAs,
    add_server,
    backend_name,
    del_server,
    frontend_name,
    lb_health,
    lb_service,
    render,
    reply_error,
    set_server_state,
    set_server_weight,
    show_servers_state,
    show_stat,
)
from fleet.node.haproxy.stats import (
    StatsParseError,
    parse_servers_state,
    parse_show_proc,
    parse_show_stat,
)
from fleet.plan.healthjudge import LB_CONNECT_TIMEOUT, http_status_ok

DATA = Path(__file__).parent / "data" / "haproxy"
HTTP = LbHealth("http", "/healthz", interval=0.5, timeout=1.0, fall=2, rise=1)
KW: dict[str, Any] = {"admin_socket": "/run/fleet/haproxy/admin.sock", "state_file": "/run/fleet/haproxy/state",
                      "stats_bind": ("127.0.0.1", 9404)}


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    assert data["source"].startswith("haproxy 2.6.12")
    return data


def web(*servers: LbServer, **kw: Any) -> LbService:
    kw.setdefault("health", HTTP)
    return LbService("web", 8080, servers or (LbServer("web-1", "10.0.0.1", 18081),), **kw)


EXPECTED = """\
# Written by fleet; changes here are overwritten.
global
    stats socket /run/fleet/haproxy/admin.sock mode 600 level admin
    stats timeout 30s
    hard-stop-after 30s
    server-state-file /run/fleet/haproxy/state

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    retries 2
    option redispatch
    option idle-close-on-response
    load-server-state-from-file global

frontend fe_db
    mode tcp
    bind [::1]:5432
    no option idle-close-on-response
    default_backend be_db

backend be_db
    mode tcp
    balance source
    hash-type consistent
    server db-1 [fd00::2]:15432 check inter 2000ms fall 3 rise 1 weight 1

frontend fe_web
    mode http
    bind 0.0.0.0:8080
    default_backend be_web

backend be_web
    mode http
    balance roundrobin
    retry-on conn-failure empty-response response-timeout 502 503
    http-request disable-l7-retry unless { method GET HEAD OPTIONS }
    option redispatch 1
    option httpchk GET /healthz
    http-check expect status 200-399
    timeout check 1000ms
    server web-1 10.0.0.1:18081 check inter 500ms fall 2 rise 1 weight 1
    server web-2 10.0.0.2:18081 check inter 500ms fall 2 rise 1 weight 0
    server web-3 10.0.0.3:18081 check inter 500ms fall 2 rise 1 weight 5 disabled

frontend stats
    mode http
    bind 127.0.0.1:9404
    http-request use-service prometheus-exporter if { path /metrics }
    stats enable
    stats uri /stats
    stats refresh 5s
"""


def sample() -> list[LbService]:
    return [
        web(LbServer("web-3", "10.0.0.3", 18081, weight=5, state="maint"),
            LbServer("web-1", "10.0.0.1", 18081),
            LbServer("web-2", "10.0.0.2", 18081, state="drain")),
        LbService("db", 5432, [LbServer("db-1", "fd00:0:0::2", 15432)], mode="tcp", balance="source",
                  bind_address="::1"),
    ]


def test_render_produces_the_expected_config() -> None:
    assert render(sample(), **KW) == EXPECTED


def test_render_is_deterministic_whatever_the_input_order() -> None:
    services = sample()
    shuffled = [LbService(s.name, s.bind_port, list(reversed(s.servers)), s.mode, s.balance, s.bind_address,
                          s.health) for s in reversed(services)]
    assert render(shuffled, **KW) == render(services, **KW)


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "random"])
def test_dynamic_balance_algorithms_render_without_hash_type(balance: str) -> None:
    text = render([web(balance=balance)], **KW)
    assert f"    balance {balance}\n" in text and "hash-type" not in text


def test_tcp_and_no_health_render_plain_servers() -> None:
    svc = LbService("raw", 9000, [LbServer("raw-1", "10.0.0.9", 9000)], mode="tcp", health=LbHealth("none"))
    text = render([svc], admin_socket="/a.sock", state_file="/state")
    assert "    server raw-1 10.0.0.9:9000 weight 1\n" in text
    assert "httpchk" not in text and "frontend stats" not in text


def test_tcp_health_checks_without_httpchk() -> None:
    svc = LbService("raw", 9000, [LbServer("raw-1", "10.0.0.9", 9000)], mode="tcp", health=LbHealth("tcp", None, 2))
    text = render([svc], **KW)
    assert "    server raw-1 10.0.0.9:9000 check inter 2000ms fall 3 rise 1 weight 1\n" in text
    assert "httpchk" not in text


def test_run_as_chroots_the_workers_and_renders_no_user_since_the_master_already_is_that_user() -> None:
    """Without `run_as` the global section is as before; with it, only the workers' chroot follows the
    server-state line, before `defaults` (the start script runs the master as the user; in its jail, which has
    no /etc/passwd, HAProxy refuses `user haproxy`: "cannot find user id"), and hostile values are refused
    naming the field."""
    text = render(sample(), **KW, run_as=RunAs("haproxy", "haproxy", "/var/lib/fleet/haproxy/empty"))
    assert text == EXPECTED.replace("    server-state-file /run/fleet/haproxy/state\n", (
        "    server-state-file /run/fleet/haproxy/state\n    chroot /var/lib/fleet/haproxy/empty\n"))
    assert "user " not in text.split("defaults")[0] and "group " not in text.split("defaults")[0]
    for bad, field in ((RunAs("root\n    bind :1", "g", "/e"), "run_as.user"),
                       (RunAs("u", "g x", "/e"), "run_as.group"), (RunAs("u", "g", "empty"), "run_as.chroot"),
                       (RunAs("u", "g", "/a/../b"), "run_as.chroot")):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            render(sample(), **KW, run_as=bad)


HOSTILE = ["web\n    bind 0.0.0.0:1", "web 1", "web#1", "we'b", 'we"b', "", "a" * 65, "web\r", "wéb", "web;x",
           "web/1", "${X}"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_service_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="service name"):
        render([LbService(name, 8080, [LbServer("s1", "10.0.0.1", 80)])], **KW)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_server_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"servers\[.*\]\.name"):
        render([web(LbServer(name, "10.0.0.1", 80))], **KW)


@pytest.mark.parametrize("path", ["/healthz\n    bind 0.0.0.0:1", "/health z", "/h#x", '/h"', "/h'", "healthz",
                                  "/a\\b", "/${X}", None])
def test_hostile_health_paths_are_refused(path: str | None) -> None:
    with pytest.raises(ValueError, match=r"health\.path"):
        render([web(health=LbHealth("http", path))], **KW)


@pytest.mark.parametrize("address", ["example.com", "10.0.0.1 check", "10.0.0.1\n", "", "10.0.0.256", "[::1]",
                                     "10.0.0.1:80"])
def test_server_addresses_must_be_ip_literals(address: str) -> None:
    with pytest.raises(ValueError, match=r"address"):
        render([web(LbServer("s1", address, 80))], **KW)


@pytest.mark.parametrize("port", [0, 65536, -1, "80", True, 8.0])
def test_ports_must_be_integers_in_range(port: Any) -> None:
    with pytest.raises(ValueError, match="port"):
        render([web(LbServer("s1", "10.0.0.1", port))], **KW)
    with pytest.raises(ValueError, match="bind_port"):
        render([LbService("web", port, [])], **KW)


@pytest.mark.parametrize(("field", "svc"), [
    ("weight", web(LbServer("s1", "10.0.0.1", 80, weight=257))),
    ("weight", web(LbServer("s1", "10.0.0.1", 80, weight=True))),
    ("state", web(LbServer("s1", "10.0.0.1", 80, state="up"))),  # type: ignore[arg-type]
    ("mode", web(mode="udp")),
    ("balance", web(balance="static-rr")),
    ("balance", web(balance="roundrobin\n    bind :1")),
    ("health.interval", web(health=LbHealth("http", "/h", interval=0))),
    ("health.fall", web(health=LbHealth("http", "/h", fall=0))),
    ("health.kind", web(health=LbHealth("udp"))),  # type: ignore[arg-type]
    ("bind_address", web(bind_address="any")),
    ("duplicate server", web(LbServer("s1", "10.0.0.1", 80), LbServer("s1", "10.0.0.2", 80))),
])
def test_invalid_values_name_their_field(field: str, svc: LbService) -> None:
    with pytest.raises(ValueError, match=field):
        render([svc], **KW)


@pytest.mark.parametrize("kw", [{"admin_socket": "/run/a b.sock"}, {"state_file": "relative/state"},
                                {"state_file": "/x\n    bind :1"}, {"admin_socket": "/run/../etc/x"}])
def test_file_paths_are_checked(kw: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        render([web()], **{**KW, **kw})


def test_duplicate_services_and_clashing_binds_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        render([web(), web()], **KW)
    with pytest.raises(ValueError, match="already used"):
        render([web(), LbService("api", 8080, [], bind_address="127.0.0.1")], **KW)
    with pytest.raises(ValueError, match="already used by stats_bind"):
        render([LbService("api", 9404, [])], **KW)
    render([web(bind_address="127.0.0.1"), LbService("api", 8080, [], bind_address="127.0.0.2")], **KW)


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=40))
def test_no_user_value_adds_a_config_line(name: str, server: str, path: str) -> None:
    """Whatever the strings, rendering either refuses them or yields exactly the lines of a plain config."""
    svc = LbService(name, 8080, [LbServer(server, "10.0.0.1", 80)], health=LbHealth("http", path))
    try:
        text = render([svc], **KW)
    except ValueError:
        return
    plain = render([LbService("x", 8080, [LbServer("y", "10.0.0.1", 80)], health=LbHealth("http", "/z"))], **KW)
    assert text.count("\n") == plain.count("\n")
    for line in text.splitlines():
        assert "#" not in line or line.startswith("# Written by fleet")
        assert "\r" not in line and '"' not in line and "'" not in line


def test_lb_service_from_a_spec() -> None:
    spec = parse_playbook(
        "services:\n  web:\n    image: busybox\n    health: {http: /healthz, interval: 500ms, failure_threshold: 4}"
        "\n    lb: {port: 8080, balance: leastconn}\n  job:\n    image: busybox\n"
        "  db:\n    image: busybox\n    health: {exec: [/bin/true]}\n    lb: {port: 5432, mode: tcp}\n", "t.yaml")
    web, job, db = spec.services
    servers = [LbServer("web-1", "10.0.0.1", 30001)]
    assert lb_service(web, servers) == LbService("web", 8080, tuple(servers), "http", "leastconn", "0.0.0.0",
                                                 LbHealth("http", "/healthz", 0.5, 1.0, 4, 1))
    assert lb_service(db, [], "10.0.0.9").health == LbHealth("tcp", None, 2.0, 1.0, 3, 1)
    with pytest.raises(ValueError, match="no lb"):
        lb_service(job, servers)


def test_lb_health_takes_the_services_check_and_its_timing() -> None:
    http = HealthSpec("http", "/healthz", interval=0.5, timeout=0.25, failure_threshold=4, success_threshold=2)
    assert lb_health(http) == LbHealth("http", "/healthz", 0.5, 0.25, 4, 2)
    tcp = HealthSpec("tcp", interval=3, timeout=2, failure_threshold=1, success_threshold=5)
    assert lb_health(tcp) == LbHealth("tcp", None, 3, 2, 1, 5)
    # HAProxy cannot run a command in a container: an exec-checked service gets a TCP connect to the replica's
    # port, with the service's timing.
    exe = HealthSpec("exec", command=("/bin/check", "--deep"), interval=7, timeout=3, failure_threshold=2)
    assert lb_health(exe) == LbHealth("tcp", None, 7, 3, 2, 1)
    # No health: the controller does not probe; HAProxy keeps a plain connect check as a safety net.
    assert lb_health(None) == SAFETY_NET == LbHealth("tcp", None, 2.0, None, 3, 1)


# What every HTTP backend has by default (`lb.retries: 2`): see test_haproxy_lbsettings.py.
RETRIES = ("    retry-on conn-failure empty-response response-timeout 502 503",
           "    http-request disable-l7-retry unless { method GET HEAD OPTIONS }", "    option redispatch 1")


def _backend(svc: LbService) -> list[str]:
    text = render([svc], **KW)
    return text.split(f"\nbackend be_{svc.name}\n")[1].split("\n\n")[0].splitlines()


def test_rendered_checks_for_each_kind_of_health() -> None:
    server = (LbServer("s-1", "10.0.0.1", 9000),)

    def svc(h: HealthSpec | None) -> LbService:
        return LbService("s", 80, server, health=lb_health(h))

    http = HealthSpec("http", "/ready", interval=0.5, timeout=0.25, failure_threshold=4, success_threshold=2)
    assert _backend(svc(http)) == [
        "    mode http", "    balance roundrobin", *RETRIES, "    option httpchk GET /ready",
        "    http-check expect status 200-399", "    timeout check 250ms",
        "    server s-1 10.0.0.1:9000 check inter 500ms fall 4 rise 2 weight 1"]
    exe = HealthSpec("exec", command=("true",), interval=7, timeout=3, failure_threshold=2)
    assert _backend(svc(exe)) == [
        "    mode http", "    balance roundrobin", *RETRIES, "    timeout check 3000ms",
        "    server s-1 10.0.0.1:9000 check inter 7000ms fall 2 rise 1 weight 1"]
    assert _backend(svc(None)) == [
        "    mode http", "    balance roundrobin", *RETRIES,
        "    server s-1 10.0.0.1:9000 check inter 2000ms fall 3 rise 1 weight 1"]


def test_haproxy_expects_the_controllers_status_range_and_connect_timeout() -> None:
    text = render([web()], **KW)
    line = next(ln for ln in text.splitlines() if "http-check expect" in ln)
    low, high = (int(x) for x in line.split()[-1].split("-"))
    assert [c for c in range(100, 600) if low <= c <= high] == [c for c in range(100, 600) if http_status_ok(c)]
    # Checks connect within min(timeout connect, inter): the controller's connect_deadline uses the same value.
    assert f"    timeout connect {LB_CONNECT_TIMEOUT:g}s" in text.splitlines()


def test_names_of_frontends_and_backends() -> None:
    assert (frontend_name("web"), backend_name("web")) == ("fe_web", "be_web")
    with pytest.raises(ValueError):
        backend_name("we b")


def test_runtime_command_builders() -> None:
    assert set_server_state("be_web", "web-1", "drain") == "set server be_web/web-1 state drain"
    assert set_server_weight("be_web", "web-1", 10) == "set server be_web/web-1 weight 10"
    assert add_server("be_web", LbServer("web-3", "10.0.0.3", 18083, weight=2), HTTP) == [
        "add server be_web/web-3 10.0.0.3:18083 check inter 500ms fall 2 rise 1 weight 2",
        "enable health be_web/web-3",
        "enable server be_web/web-3",
    ]
    assert add_server("be_web", LbServer("web-4", "::1", 1, state="drain"), LbHealth("none")) == [
        "add server be_web/web-4 [::1]:1 weight 1",
        "enable server be_web/web-4",
        "set server be_web/web-4 state drain",
    ]
    assert add_server("be_web", LbServer("web-5", "10.0.0.5", 1, state="maint"), HTTP) == [
        "add server be_web/web-5 10.0.0.5:1 check inter 500ms fall 2 rise 1 weight 1",
        "enable health be_web/web-5",
    ]
    assert del_server("be_web", "web-1") == ["set server be_web/web-1 state maint", "del server be_web/web-1"]
    assert show_stat() == "show stat -1 4 -1"
    assert show_servers_state() == "show servers state"
    assert show_servers_state("be_web") == "show servers state be_web"
    assert (master_reload(), master_show_proc()) == ("reload", "show proc")


@pytest.mark.parametrize("call", [
    lambda: set_server_state("be_web", "web-1\nshutdown sessions", "drain"),
    lambda: set_server_state("be_web", "web-1", "up"),  # type: ignore[arg-type]
    lambda: set_server_weight("be web", "web-1", 1),
    lambda: set_server_weight("be_web", "web-1", -1),
    lambda: add_server("be_web", LbServer("x;y", "10.0.0.1", 1), HTTP),
    lambda: add_server("be_web", LbServer("x", "host.example", 1), HTTP),
    lambda: del_server("be_web", "web 1"),
    lambda: show_servers_state("be_web\nshutdown"),
])
def test_runtime_builders_refuse_hostile_values(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


def test_process_argv_builders() -> None:
    assert check_config_argv("/etc/fleet/haproxy.cfg") == ["haproxy", "-c", "-f", "/etc/fleet/haproxy.cfg"]
    assert start_argv("/c.cfg", "/m.sock", "/h.pid") == ["haproxy", "-W", "-S", "/m.sock", "-f", "/c.cfg", "-p",
                                                          "/h.pid"]
    assert socket_argv("/run/a.sock") == ["socat", "-t", "5", "stdio", "unix-connect:/run/a.sock"]
    with pytest.raises(ValueError):
        socket_argv("/run/a sock,fork")


def test_runtime_replies_recorded_from_haproxy() -> None:
    data = recorded("runtime_replies")
    got = [[cmd, reply_error(reply)] for cmd, reply in data["replies"] if not cmd.startswith(("get ", "show "))]
    assert got == data["expect"]
    weight = next(reply for cmd, reply in data["replies"] if cmd.startswith("get weight"))
    assert parse_get_weight(weight) == (7, 3)


@pytest.mark.parametrize("name", ["show_stat", "show_stat_servers_nocheck"])
def test_show_stat_parser_on_recorded_output(name: str) -> None:
    data = recorded(name)
    rows = parse_show_stat(data["stdout"])
    assert [f"{r.proxy}/{r.name}:{r.kind}" for r in rows] == data["expect"]["kinds"]
    got = {f"{b}/{s}": {"health": r.health, "status": r.status, "weight": r.weight, "scur": r.scur, "stot": r.stot,
                        "hrsp_5xx": r.hrsp_5xx, "check_status": r.check_status, "check_code": r.check_code}
           for (b, s), r in server_rows(rows).items()}
    assert got == data["expect"]["servers"]


def test_a_check_in_progress_is_told_from_its_marked_status() -> None:
    text = recorded("show_stat")["stdout"]
    rows = server_rows(parse_show_stat(text))
    assert not any(r.check_running for r in rows.values())
    marked = text.replace(f",{rows[('be_web', 'web-2')].check_status},", ",* L7STS,", 1)
    running = server_rows(parse_show_stat(marked))[("be_web", "web-2")]
    assert running.check_running and running.check_status == "* L7STS"


def test_show_stat_counts_requests_by_server() -> None:
    rows = server_rows(parse_show_stat(recorded("show_stat")["stdout"]))
    frontend = next(r for r in parse_show_stat(recorded("show_stat")["stdout"]) if r.proxy == "fe_web")
    assert frontend.req_tot == 12 == sum(r.stot for (b, _), r in rows.items() if b == "be_web")
    assert rows[("be_web", "web-2")].check_desc == "Layer7 wrong status"
    assert rows[("be_web", "web-1")].address == "127.0.0.1:28081"
    assert not rows[("be_plain", "plain-1")].checked


@pytest.mark.parametrize("name", ["show_servers_state", "show_servers_state_maint"])
def test_servers_state_parser_on_recorded_output(name: str) -> None:
    data = recorded(name)
    got = [{"backend": r.backend, "server": r.server, "address": r.address, "port": r.port, "op_state": r.op_state,
            "admin_state": r.admin_state, "user_weight": r.user_weight, "initial_weight": r.initial_weight,
            "state": r.state} for r in parse_servers_state(data["stdout"])]
    assert got == data["expect"]


@pytest.mark.parametrize("name", ["show_proc", "show_proc_reloaded", "show_proc_failed", "show_proc_old_worker"])
def test_show_proc_parser_on_recorded_output(name: str) -> None:
    data = recorded(name)
    p = parse_show_proc(data["stdout"])
    got = {"master_pid": p.master.pid, "reloads": p.master.reloads, "failed": p.failed_reloads,
           "worker_pids": list(p.worker_pids), "old_worker_pids": [w.pid for w in p.old_workers],
           "version": p.master.version, "master_uptime": p.master.uptime}
    assert got == data["expect"]


@pytest.mark.parametrize(("parser", "text"), [
    (parse_show_stat, "Unknown command.\n"),
    (parse_show_stat, ""),
    (parse_servers_state, "No such backend.\n"),
    (parse_servers_state, "2\n# be_id x\n"),
    (parse_show_proc, "Unknown command.\n"),
    (parse_get_weight, "No such server.\n"),
])
def test_parsers_refuse_other_output(parser: Any, text: str) -> None:
    with pytest.raises(StatsParseError):
        parser(text)
