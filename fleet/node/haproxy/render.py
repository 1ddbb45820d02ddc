"""HAProxy 2.6 config rendering and runtime/master CLI command builders: pure, deterministic, injection-proof.

Every value that reaches the config or a CLI line is checked against a strict pattern first (ValueError
naming the field); nothing is quoted because nothing that would need quoting is accepted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from fleet.config.spec import HTTP_PATH_RE, HealthSpec, ServiceSpec
from fleet.plan.healthjudge import HAPROXY_EXPECT

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FILE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,4095}$")
MODES = ("http", "tcp")
# Every algorithm here is dynamic in 2.6 (so runtime `add server` works); `source` only with consistent hashing.
BALANCES = ("roundrobin", "leastconn", "source", "random")
SERVER_STATES = ("ready", "drain", "maint")
MAX_WEIGHT = 256

LbState = Literal["ready", "drain", "maint"]


@dataclass(frozen=True)
class LbServer:
    """One replica behind a backend.

    A config file cannot say "drain": `drain` renders as weight 0 (stats then show UP with weight 0, and a later
    `state ready` leaves the weight at 0 until `set server … weight`); `maint` renders as `disabled`.
    """

    name: str
    address: str
    port: int
    weight: int = 1
    state: LbState = "ready"


@dataclass(frozen=True)
class LbHealth:
    """The backend's active check: an HTTP GET of `path` (passing on 200-399, as the controller's check), a TCP
    connect, or none. `timeout` renders `timeout check` (the answer's deadline once connected; without it the
    whole check must finish within `interval`)."""

    kind: Literal["http", "tcp", "none"] = "tcp"
    path: str | None = None
    interval: float = 2.0
    timeout: float | None = None
    fall: int = 3
    rise: int = 1


@dataclass(frozen=True)
class LbService:
    """One service on the LB: a frontend bound to `bind_address:bind_port` and a backend of servers."""

    name: str
    bind_port: int
    servers: Sequence[LbServer] = field(default_factory=tuple)
    mode: Literal["http", "tcp"] = "http"
    balance: str = "roundrobin"
    bind_address: str = "0.0.0.0"
    health: LbHealth = LbHealth()


# A service without `health`: the controller does not probe it (ready once it runs); HAProxy still connects
# to each server every 2 s as a safety net, so a replica whose process died or stopped listening leaves the
# rotation within 3 checks instead of taking traffic until the next `fleet apply`.
SAFETY_NET = LbHealth("tcp", None, interval=2.0, timeout=None, fall=3, rise=1)


def lb_health(health: HealthSpec | None) -> LbHealth:
    """HAProxy's check for a service's `health`: http → the same GET and status rule as the controller; tcp →
    connect; exec → a TCP connect to the replica's port (HAProxy cannot run a command in a container); none →
    `SAFETY_NET`. interval, timeout, failure_threshold and success_threshold become inter, `timeout check`,
    fall and rise."""
    if health is None:
        return SAFETY_NET
    kind: Literal["http", "tcp"] = "http" if health.kind == "http" else "tcp"
    return LbHealth(kind, health.path if kind == "http" else None, health.interval, health.timeout,
                    health.failure_threshold, health.success_threshold)


def lb_service(spec: ServiceSpec, servers: Sequence[LbServer], bind_address: str = "0.0.0.0") -> LbService:
    """The LB view of a service spec (which must have `lb`); its check is `lb_health(spec.health)`."""
    if spec.lb is None:
        raise ValueError(f"service {spec.name!r} has no lb section")
    return LbService(spec.name, spec.lb.port, tuple(servers), spec.lb.mode, spec.lb.balance, bind_address,
                     lb_health(spec.health))


def frontend_name(service: str) -> str:
    return f"fe_{check_name(service, 'service name')}"


def backend_name(service: str) -> str:
    return f"be_{check_name(service, 'service name')}"


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(f"{what}: expected 1-64 of A-Z a-z 0-9 _ . -, got {value!r}")
    return value


def check_port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{what}: expected a port number 1-65535, got {value!r}")
    return value


def check_address(value: object, what: str) -> str:
    """An IPv4 or IPv6 literal, returned in compressed form; host names are refused."""
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected an IP address, got {value!r}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{what}: expected an IPv4 or IPv6 address, got {value!r}") from None


def check_path(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 256 or not HTTP_PATH_RE.match(value):
        raise ValueError(f"{what}: expected a URL path such as /healthz, got {value!r}")
    return value


def check_file(value: object, what: str) -> str:
    if not isinstance(value, str) or not FILE_PATH_RE.match(value) or "/../" in f"{value}/":
        raise ValueError(f"{what}: expected an absolute path of A-Z a-z 0-9 . _ / -, got {value!r}")
    return value


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what}: expected an integer {low}-{high}, got {value!r}")
    return value


def _ms(seconds: object, what: str) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 86400:
        raise ValueError(f"{what}: expected a duration in seconds (0, 86400], got {seconds!r}")
    return f"{max(1, round(seconds * 1000))}ms"


def endpoint(address: str, port: int) -> str:
    """`1.2.3.4:80` or `[::1]:80`."""
    addr = check_address(address, "address")
    port = check_port(port, "port")
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _wildcard(address: str) -> bool:
    return address in ("0.0.0.0", "::")


def _check_options(health: LbHealth, where: str) -> str:
    """The per-server `check ...` options (explicit, since dynamic servers inherit no default-server)."""
    if health.kind not in ("http", "tcp", "none"):
        raise ValueError(f"{where}.health.kind: expected http, tcp or none, got {health.kind!r}")
    if health.kind == "none":
        return ""
    inter = _ms(health.interval, f"{where}.health.interval")
    fall = _check_int(health.fall, f"{where}.health.fall", 1, 100)
    rise = _check_int(health.rise, f"{where}.health.rise", 1, 100)
    return f" check inter {inter} fall {fall} rise {rise}"


def _server_args(server: LbServer, health: LbHealth, where: str) -> str:
    """`ADDR:PORT [check ...] weight N [disabled]`: everything after `server NAME`."""
    addr = endpoint(check_address(server.address, f"{where}.address"), check_port(server.port, f"{where}.port"))
    weight = _check_int(server.weight, f"{where}.weight", 0, MAX_WEIGHT)
    if server.state not in SERVER_STATES:
        raise ValueError(f"{where}.state: expected one of {', '.join(SERVER_STATES)}, got {server.state!r}")
    if server.state == "drain":
        weight = 0
    args = f"{addr}{_check_options(health, where)} weight {weight}"
    return args + " disabled" if server.state == "maint" else args


def _service_lines(svc: LbService) -> list[str]:
    where = f"service {svc.name!r}"
    name = check_name(svc.name, "service name")
    if svc.mode not in MODES:
        raise ValueError(f"{where}.mode: expected http or tcp, got {svc.mode!r}")
    if svc.balance not in BALANCES:
        raise ValueError(f"{where}.balance: expected one of {', '.join(BALANCES)}, got {svc.balance!r}")
    bind = endpoint(check_address(svc.bind_address, f"{where}.bind_address"), check_port(svc.bind_port,
                                                                                         f"{where}.bind_port"))
    health = svc.health
    lines = ["", f"frontend fe_{name}", f"    mode {svc.mode}", f"    bind {bind}"]
    if svc.mode == "tcp":
        lines.append("    no option idle-close-on-response")
    lines += [f"    default_backend be_{name}", "", f"backend be_{name}", f"    mode {svc.mode}",
              f"    balance {svc.balance}"]
    if svc.balance == "source":
        lines.append("    hash-type consistent")
    if health.kind == "http":
        path = check_path(health.path, f"{where}.health.path")
        lines += [f"    option httpchk GET {path}", f"    http-check expect {HAPROXY_EXPECT}"]
    if health.kind != "none" and health.timeout is not None:
        lines.append(f"    timeout check {_ms(health.timeout, f'{where}.health.timeout')}")
    seen: set[str] = set()
    for server in sorted(svc.servers, key=lambda s: str(s.name)):
        sw = f"{where}.servers[{server.name!r}]"
        line = f"server {check_name(server.name, f'{sw}.name')} {_server_args(server, health, sw)}"
        if server.name in seen:
            raise ValueError(f"{where}.servers: duplicate server name {server.name!r}")
        seen.add(server.name)
        lines.append(f"    {line}")
    return lines


def render(services: Sequence[LbService], *, admin_socket: str, state_file: str,
           stats_bind: tuple[str, int] | None = None) -> str:
    """The whole haproxy.cfg for these services; the same input always gives the same bytes."""
    sock = check_file(admin_socket, "admin_socket")
    state = check_file(state_file, "state_file")
    out = [
        "# Written by fleet; changes here are overwritten.",
        "global",
        f"    stats socket {sock} mode 600 level admin",
        "    stats timeout 30s",
        "    hard-stop-after 30s",
        f"    server-state-file {state}",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-request 10s",
        "    retries 2",
        "    option redispatch",
        "    option idle-close-on-response",
        "    load-server-state-from-file global",
    ]
    names: set[str] = set()
    binds: list[tuple[str, int, str]] = []
    if stats_bind is not None:
        binds.append((check_address(stats_bind[0], "stats_bind"), check_port(stats_bind[1], "stats_bind"),
                      "stats_bind"))
    for svc in sorted(services, key=lambda s: str(s.name)):
        out += _service_lines(svc)
        if svc.name in names:
            raise ValueError(f"service name: duplicate {svc.name!r}")
        names.add(svc.name)
        addr = check_address(svc.bind_address, "bind_address")
        for other_addr, other_port, owner in binds:
            if other_port == svc.bind_port and (addr == other_addr or _wildcard(addr) or _wildcard(other_addr)):
                raise ValueError(f"service {svc.name!r}.bind_port: {svc.bind_port} is already used by {owner}")
        binds.append((addr, svc.bind_port, f"service {svc.name!r}"))
    if stats_bind is not None:
        out += [
            "",
            "frontend stats",
            "    mode http",
            f"    bind {endpoint(*stats_bind)}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 5s",
        ]
    return "\n".join(out) + "\n"


# ---- runtime API (stats socket, `level admin`): one command per line --------------------------------------


def _srv(backend: str, server: str) -> str:
    return f"{check_name(backend, 'backend')}/{check_name(server, 'server')}"


def set_server_state(backend: str, server: str, state: LbState) -> str:
    if state not in SERVER_STATES:
        raise ValueError(f"state: expected one of {', '.join(SERVER_STATES)}, got {state!r}")
    return f"set server {_srv(backend, server)} state {state}"


def set_server_weight(backend: str, server: str, weight: int) -> str:
    return f"set server {_srv(backend, server)} weight {_check_int(weight, 'weight', 0, MAX_WEIGHT)}"


def add_server(backend: str, server: LbServer, health: LbHealth) -> list[str]:
    """Add a server at runtime and bring it into rotation (it starts in maint; checks need `enable health`)."""
    args = _server_args(LbServer(server.name, server.address, server.port, server.weight), health, "server")
    cmds = [f"add server {_srv(backend, server.name)} {args}"]
    if health.kind != "none":
        cmds.append(f"enable health {_srv(backend, server.name)}")
    if server.state != "maint":
        cmds.append(f"enable server {_srv(backend, server.name)}")
    if server.state == "drain":
        cmds.append(set_server_state(backend, server.name, "drain"))
    return cmds


def del_server(backend: str, server: str) -> list[str]:
    """Put the server in maint, then delete it (HAProxy refuses while it still has connections)."""
    return [set_server_state(backend, server, "maint"), f"del server {_srv(backend, server)}"]


def show_stat() -> str:
    """Servers only, CSV (`-1 4 -1`: any proxy, type server, any id)."""
    return "show stat -1 4 -1"


def show_servers_state(backend: str | None = None) -> str:
    return "show servers state" if backend is None else f"show servers state {check_name(backend, 'backend')}"


_OK_REPLIES = ("", "New server registered.", "Server deleted.")


def reply_error(reply: str) -> str | None:
    """None when a runtime command's reply means success, else the error text HAProxy printed."""
    text = reply.strip()
    if text in _OK_REPLIES or text.startswith("no need to change the addr"):
        return None
    return text
