"""HAProxy 2.6 config rendering and runtime/master CLI command builders: pure, deterministic, injection-proof.

Every value that reaches the config or a CLI line is checked against a strict pattern first (ValueError
naming the field); nothing is quoted because nothing that would need quoting is accepted.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from fleet.config.edge import TlsSpec
from fleet.config.spec import HTTP_PATH_RE, HealthSpec, ServiceSpec
from fleet.config.spec.values import DEFAULT_LB_RETRIES, MAINTENANCE_RE, LbTimeouts
from fleet.core.edge import check_host_name
from fleet.plan.healthjudge import HAPROXY_EXPECT

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FILE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,4095}$")
# A crypt(3) SHA-256/512 hash for the stats page's userlist (never the password itself).
CRYPT_RE = re.compile(r"^\$[56]\$[A-Za-z0-9./]{1,16}\$[A-Za-z0-9./]{43,86}$")
FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
PREFIX_RE = re.compile(r"^/(?:[A-Za-z0-9._~!*+,;=:@/-]|%[0-9A-Fa-f]{2}){0,255}$")
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
class LbTls:
    """A host-routed service's HTTPS: its certificate bundle (certificate chain + key, PEM) at `cert_file` on the
    lb node, or None while none is there yet (an ACME certificate not issued: the service answers plain HTTP
    until then). `fingerprint` (sha256 of the certificate, public) is rendered as a comment, so a new
    certificate changes the config and reloads HAProxy. `redirect` sends HTTP to HTTPS; `hsts` is the
    Strict-Transport-Security max-age in seconds (None: no header)."""

    cert_file: str | None = None
    fingerprint: str = ""
    redirect: bool = True
    hsts: int | None = None


@dataclass(frozen=True)
class LbService:
    """One service on the LB: a frontend bound to `bind_address:bind_port` (None: none of its own) and a backend
    of servers; `hosts` (and `paths`, URL path prefixes) route it on the shared HTTP/HTTPS frontends too."""

    name: str
    bind_port: int | None
    servers: Sequence[LbServer] = field(default_factory=tuple)
    mode: Literal["http", "tcp"] = "http"
    balance: str = "roundrobin"
    bind_address: str = "0.0.0.0"
    health: LbHealth = LbHealth()
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    tls: LbTls | None = None
    # Where the certificate comes from (the spec's `lb.tls`); the engine resolves it into `tls`.
    tls_source: TlsSpec | None = field(default=None, compare=False)
    timeouts: LbTimeouts = field(default_factory=LbTimeouts)
    sticky: bool = False
    maintenance: str | None = None
    retries: int = DEFAULT_LB_RETRIES


@dataclass(frozen=True)
class RunAs:
    """Who runs HAProxy: the Debian package's `user` and `group`, as whom the start script
    (fleet.node.haproxy.scripts.APPLY, `LbPaths.user`) starts the master in its jail (fleet.node.haproxy.jail: a
    pivoted mount namespace holding /usr, three devices and HAProxy's own directory), with CAP_NET_BIND_SERVICE
    for ports below 1024 and CAP_SYS_CHROOT; so no `user`/`group` directive is rendered. Its workers also
    chroot to `chroot` (an empty, root-owned, read-only directory inside the jail): a worker reads no file, and
    one that escapes the chroot lands in the jail, not on the node."""

    user: str
    group: str
    chroot: str


@dataclass(frozen=True)
class EdgeConfig:
    """The shared frontends of host-routed services: `http_port` (redirects, ACME HTTP-01 answers from
    `acme_map`, token → key authorization, kept up to date at runtime) and `https_port`."""

    http_port: int = 80
    https_port: int = 443
    bind_address: str = "0.0.0.0"
    acme_map: str | None = None


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
    lb = spec.lb
    return LbService(spec.name, lb.port, tuple(servers), lb.mode, lb.balance, bind_address, lb_health(spec.health),
                     lb.hosts, lb.paths, None, lb.tls, timeouts=lb.timeouts, sticky=lb.sticky == "cookie",
                     maintenance=lb.maintenance, retries=lb.retries)


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
    health = svc.health
    lines = []
    if svc.bind_port is not None:
        bind = endpoint(check_address(svc.bind_address, f"{where}.bind_address"),
                        check_port(svc.bind_port, f"{where}.bind_port"))
        lines += ["", f"frontend fe_{name}", f"    mode {svc.mode}", f"    bind {bind}"]
        if svc.mode == "tcp":
            lines.append("    no option idle-close-on-response")
        if svc.timeouts.client is not None:
            lines.append(f"    timeout client {_ms(svc.timeouts.client, f'{where}.timeouts.client')}")
        lines.append(f"    default_backend be_{name}")
    elif not svc.hosts:
        raise ValueError(f"{where}: needs a bind_port or hosts")
    if svc.hosts and svc.mode != "http":
        raise ValueError(f"{where}.hosts: host names route HTTP only (mode is {svc.mode})")
    lines += ["", f"backend be_{name}", f"    mode {svc.mode}", f"    balance {svc.balance}"]
    if svc.balance == "source":
        lines.append("    hash-type consistent")
    lines += _settings_lines(svc, name, where)
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


# What a retry answers: the connection failed (the request was never sent), the server closed it with no
# answer (a replica killed mid-request), no answer within `timeout server`, or a 502/503 from the replica.
RETRY_ON = "conn-failure empty-response response-timeout 502 503"
# HAProxy 2.6 retries any method on these (a POST too: verified, tests/test_haproxy_lbsettings.py), so fleet
# allows only the safe methods past a connection failure: replaying them cannot change anything.
RETRIED_METHODS = "GET HEAD OPTIONS"


def _settings_lines(svc: LbService, name: str, where: str) -> list[str]:
    """The backend's per-service settings: timeouts, the maintenance page, retries and the sticky cookie.

    A request is tried again up to `retries` times, each time on another server (`option redispatch 1`), when
    its connection failed; a GET, HEAD or OPTIONS also on an empty answer, a timeout or a 502/503 (`RETRY_ON`).
    The maintenance page is `http-request return status 503` while no server is up (`nbsrv() eq 0`): no file
    on the node, and the text comes from the playbook. Sticky sessions use HAProxy's dynamic cookies (each
    server's value a hash of its address, port and the backend's key): a server added at runtime gets one too
    (2.6 refuses a `cookie` argument on `add server`), and every lb node and every reload gives the same value."""
    lines = []
    t = svc.timeouts
    for what, value in (("connect", t.connect), ("server", t.server), ("tunnel", t.tunnel)):
        if value is not None:
            lines.append(f"    timeout {what} {_ms(value, f'{where}.timeouts.{what}')}")
    retries = _check_int(svc.retries, f"{where}.retries", 0, 10)
    if svc.mode == "http" and svc.maintenance is not None:
        if not isinstance(svc.maintenance, str) or not MAINTENANCE_RE.match(svc.maintenance):
            raise ValueError(f"{where}.maintenance: expected 1-512 characters with no quote, backslash, $, %, #")
        lines.append(f'    http-request return status 503 content-type "text/plain; charset=utf-8" string '
                     f'"{svc.maintenance}" hdr Retry-After 10 hdr Cache-Control no-store if {{ nbsrv() eq 0 }}')
    if retries != DEFAULT_LB_RETRIES:
        lines.append(f"    retries {retries}")
    if svc.mode == "http" and retries:
        lines += [f"    retry-on {RETRY_ON}",
                  f"    http-request disable-l7-retry unless {{ method {RETRIED_METHODS} }}",
                  "    option redispatch 1"]
    if svc.sticky:
        if svc.mode != "http":
            raise ValueError(f"{where}.sticky: a cookie needs mode http")
        lines += [f"    cookie fleet_{name} insert indirect nocache dynamic", f"    dynamic-cookie-key fleet-{name}"]
    return lines


def _routes(services: Sequence[LbService]) -> list[tuple[LbService, str, str | None]]:
    """(service, host, path prefix or None) for every host-routed service, longest prefix first so a service on
    `example.test/api` wins over one on all of `example.test`; a (host, prefix) given twice is a ValueError."""
    seen: dict[tuple[str, str | None], str] = {}
    out = []
    for svc in services:
        for host in svc.hosts:
            host = check_host_name(host)
            for path in svc.paths or (None,):
                if path is not None and (not isinstance(path, str) or not PREFIX_RE.fullmatch(path)):
                    raise ValueError(f"service {svc.name!r}.paths: expected a URL path prefix such as /api, "
                                     f"got {path!r}")
                key = (host, path)
                if key in seen and seen[key] != svc.name:
                    where = host + (path or "")
                    raise ValueError(f"service {svc.name!r}.hosts: {where} is already routed to service "
                                     f"{seen[key]!r}")
                seen[key] = svc.name
                out.append((svc, host, path))
    out.sort(key=lambda r: (-len(r[2] or ""), r[1], r[2] or "", r[0].name))
    return out


def _tls_of(svc: LbService) -> LbTls | None:
    """The service's TLS when its certificate is on the node (else it is served as plain HTTP)."""
    tls = svc.tls
    if tls is None or tls.cert_file is None:
        return None
    check_file(tls.cert_file, f"service {svc.name!r}.tls.cert_file")
    if tls.fingerprint and not FINGERPRINT_RE.fullmatch(tls.fingerprint):
        raise ValueError(f"service {svc.name!r}.tls.fingerprint: expected 64 hex digits")
    if tls.hsts is not None:
        _check_int(tls.hsts, f"service {svc.name!r}.tls.hsts", 0, 10 * 365 * 86400)
    return tls


def _acl(svc: LbService, host: str, path: str | None) -> str:
    """The condition of one route: `{ var(txn.host) -m str HOST }` and, with a prefix, `{ path_beg PREFIX }`."""
    cond = f"{{ var(txn.host) -m str {host} }}"
    return cond + (f" {{ path_beg {path} }}" if path is not None else "")


def _edge_lines(services: Sequence[LbService], edge: EdgeConfig) -> list[str]:
    """The shared HTTP and HTTPS frontends that route host-routed services by Host header (SNI picks the
    certificate), and the 404 backend for any other host."""
    routes = _routes(services)
    addr = check_address(edge.bind_address, "edge.bind_address")
    http = ["", "frontend fe_edge_http", "    mode http", f"    bind {endpoint(addr, edge.http_port)}",
            "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower"]
    if edge.acme_map is not None:
        amap = check_file(edge.acme_map, "edge.acme_map")
        token = f"path,field(4,/),map({amap})"
        # A token fleet published (runtime `add map`) is answered here; any other path goes on as usual.
        http += ["    acl acme_challenge path_beg /.well-known/acme-challenge/",
                 f"    acl acme_token {token} -m found",
                 f"    http-request return status 200 content-type text/plain lf-string \"%[{token}]\" "
                 "if acme_challenge acme_token"]
    tls_services = {s.name: t for s in services if (t := _tls_of(s)) is not None}
    for svc, host, path in routes:
        tls = tls_services.get(svc.name)
        if tls is not None and tls.redirect:
            http.append(f"    http-request redirect scheme https code 301 if {_acl(svc, host, path)}"
                        + (" !acme_token" if edge.acme_map is not None else ""))
    http += [f"    use_backend be_{svc.name} if {_acl(svc, host, path)}" for svc, host, path in routes]
    http.append("    default_backend be_edge_no_host")
    out = http
    certs = sorted({(t.cert_file, t.fingerprint, name) for name, t in tls_services.items()}, key=lambda c: c[2])
    if certs:
        out += ["", "frontend fe_edge_https", "    mode http",
                f"    bind {endpoint(addr, edge.https_port)} ssl " + " ".join(f"crt {c[0]}" for c in certs),
                *[f"    # certificate of {name}: sha256 {fp or '-'}" for _, fp, name in certs],
                "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower"]
        for svc, host, path in routes:
            tls = tls_services.get(svc.name)
            if tls is not None and tls.hsts is not None:
                out.append(f"    http-response set-header Strict-Transport-Security max-age={tls.hsts} "
                           f"if {_acl(svc, host, path)}")
        # Every route of a host that has a certificate (a path of it may belong to a service without one).
        covered = {h for s in services if s.name in tls_services for h in s.hosts}
        out += [f"    use_backend be_{svc.name} if {_acl(svc, host, path)}" for svc, host, path in routes
                if host in covered]
        out.append("    default_backend be_edge_no_host")
    out += ["", "backend be_edge_no_host", "    mode http",
            "    http-request return status 404 content-type text/plain string no-service-for-this-host"]
    return out


def _run_as_lines(run_as: RunAs | None) -> list[str]:
    if run_as is None:
        return []
    check_name(run_as.user, "run_as.user")
    check_name(run_as.group, "run_as.group")
    return [f"    chroot {check_file(run_as.chroot, 'run_as.chroot')}"]


# How long a worker replaced by a reload may keep the connections it holds: 30 s, or a service's longer
# `timeouts.tunnel` (a websocket held across a reload lives as long as its own tunnel timeout allows).
HARD_STOP_AFTER = 30


def hard_stop_after(services: Sequence[LbService]) -> int:
    """Seconds an old worker may live after a reload: `HARD_STOP_AFTER`, raised to the longest tunnel timeout."""
    tunnels = [s.timeouts.tunnel for s in services if s.timeouts.tunnel is not None]
    return max([HARD_STOP_AFTER, *(math.ceil(t) for t in tunnels)])


def render(services: Sequence[LbService], *, admin_socket: str, state_file: str,
           stats_bind: tuple[str, int] | None = None, edge: EdgeConfig | None = None,
           stats_password_hash: str | None = None, run_as: RunAs | None = None) -> str:
    """The whole haproxy.cfg for these services; the same input always gives the same bytes.

    `run_as` renders the workers' `chroot` in the global section (the master already runs as its user).

    Host-routed services (`hosts`) go on the shared frontends of `edge` (default ports 80 and 443).
    `stats_password_hash` (a crypt(3) SHA-512 hash, never the password) puts the stats page and /metrics
    behind HTTP basic auth for user `fleet`."""
    sock = check_file(admin_socket, "admin_socket")
    state = check_file(state_file, "state_file")
    out = [
        "# Written by fleet; changes here are overwritten.",
        "global",
        f"    stats socket {sock} mode 600 level admin",
        "    stats timeout 30s",
        f"    hard-stop-after {hard_stop_after(services)}s",
        f"    server-state-file {state}",
        *_run_as_lines(run_as),
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
    routed = sorted((s for s in services if s.hosts), key=lambda s: str(s.name))
    if routed:
        edge = edge or EdgeConfig()
        addr = check_address(edge.bind_address, "edge.bind_address")
        for port, what in ((edge.http_port, "edge.http_port"), (edge.https_port, "edge.https_port")):
            check_port(port, what)
            for other_addr, other_port, owner in binds:
                if other_port == port and (addr == other_addr or _wildcard(addr) or _wildcard(other_addr)):
                    raise ValueError(f"{what}: {port} is already used by {owner}")
            binds.append((addr, port, what))
    for svc in sorted(services, key=lambda s: str(s.name)):
        out += _service_lines(svc)
        if svc.name in names:
            raise ValueError(f"service name: duplicate {svc.name!r}")
        names.add(svc.name)
        if svc.bind_port is None:
            continue
        addr = check_address(svc.bind_address, "bind_address")
        for other_addr, other_port, owner in binds:
            if other_port == svc.bind_port and (addr == other_addr or _wildcard(addr) or _wildcard(other_addr)):
                raise ValueError(f"service {svc.name!r}.bind_port: {svc.bind_port} is already used by {owner}")
        binds.append((addr, svc.bind_port, f"service {svc.name!r}"))
    if routed:
        assert edge is not None
        out += _edge_lines(routed, edge)
    if stats_password_hash is not None:
        if not isinstance(stats_password_hash, str) or not CRYPT_RE.fullmatch(stats_password_hash):
            raise ValueError("stats_password_hash: expected a crypt(3) SHA-256/512 hash ($5$ or $6$)")
        out += ["", "userlist fleet_stats", f"    user fleet password '{stats_password_hash}'"]
    if stats_bind is not None:
        out += [
            "",
            "frontend stats",
            "    mode http",
            f"    bind {endpoint(*stats_bind)}",
        ]
        if stats_password_hash is not None:
            out.append("    http-request auth realm fleet-stats unless { http_auth(fleet_stats) }")
        out += [
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


def enable_dynamic_cookie(backend: str) -> str:
    """Compute the sticky cookie of every server of the backend, those added at runtime included (2.6 gives
    one to a server added with `add server` only then)."""
    return f"enable dynamic-cookie backend {check_name(backend, 'backend')}"


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
