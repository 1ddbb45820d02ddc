"""The load balancers' side of a rollout: which servers are in rotation, rendered to HAProxy on every lb node."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from fleet.config.edge import TlsSpec
from fleet.config.spec import HealthSpec, ServiceSpec
from fleet.core.errors import FleetError, LbRuntimeError
from fleet.core.ports import STATS_PORT
from fleet.engine.concurrency import Batched, Coalesced
from fleet.engine.edge import Edge
from fleet.engine.haproxy import LbNode
from fleet.engine.nodes import NodeReport
from fleet.engine.vrrp import VirtualIp
from fleet.node.haproxy.render import (
    LbServer,
    LbService,
    LbState,
    LbTls,
    RunAs,
    backend_name,
    lb_health,
    lb_service,
    render,
    set_server_state,
    show_stat,
)
from fleet.node.haproxy.stats import StatRow, parse_show_stat
from fleet.node.paths import DEFAULT
from fleet.plan.reconcile import Replica
from fleet.transport import Pool

ADMIN_SOCKET = DEFAULT.haproxy_admin_socket
STATE_FILE = DEFAULT.haproxy_state_file
# HAProxy's workers run as the Debian package's user, chrooted (fleet.node.haproxy.render.RunAs).
RUN_AS = RunAs("haproxy", "haproxy", DEFAULT.haproxy.chroot)


@dataclass
class Rotation:
    """Per service, the servers HAProxy should route to, with their state and weight."""

    entries: dict[str, dict[str, tuple[Replica, LbState, int]]] = field(default_factory=dict)
    # Per service, its front end and check as the accepted spec says (port, mode, balance, health); a service
    # without one here falls back to its replicas' labels.
    frontends: dict[str, LbService | None] = field(default_factory=dict)

    # Per service, the front ends of its other named ports (`lb.ports`) as the accepted spec says, by port name.
    others: dict[str, tuple[tuple[str, LbService], ...]] = field(default_factory=dict)

    def follow(self, spec: ServiceSpec) -> None:
        """Render `spec.name` from this spec from now on (no `lb`: the service leaves the load balancers)."""
        self.frontends[spec.name] = lb_service(spec, ()) if spec.lb is not None else None
        self.others[spec.name] = port_services(spec)

    def backends(self, r: Replica) -> list[str]:
        """The backends the replica is a server of: its service's, then one per other lb port it maps."""
        mapped = dict(r.ports)
        return [backend_name(r.service)] + [backend_name(t.name) for n, t in self.others.get(r.service, ())
                                            if n in mapped]

    def bind_ports(self, service: str) -> set[int]:
        """The lb ports the service's front ends bind, by its accepted spec."""
        fronts = [self.frontends.get(service), *(t for _, t in self.others.get(service, ()))]
        return {f.bind_port for f in fronts if f is not None and f.bind_port is not None}

    def put(self, r: Replica, state: LbState = "ready", weight: int = 1) -> None:
        self.entries.setdefault(r.service, {})[r.id] = (r, state, weight)

    def routed(self, service: str) -> bool:
        """Whether the service is behind the load balancers (by its accepted spec, else its labels)."""
        if service in self.frontends:
            return self.frontends[service] is not None
        return any(r.lb is not None for r, _, _ in self.entries.get(service, {}).values())

    def drop(self, r: Replica) -> None:
        self.entries.get(r.service, {}).pop(r.id, None)

    def weight(self, r: Replica, weight: int) -> None:
        entry = self.entries.get(r.service, {}).get(r.id)
        if entry is not None:
            self.entries[r.service][r.id] = (entry[0], entry[1], weight)

    def state(self, r: Replica, state: LbState) -> None:
        entry = self.entries.get(r.service, {}).get(r.id)
        if entry is not None:
            self.entries[r.service][r.id] = (entry[0], state, entry[2])

    def services(self, addresses: dict[str, str]) -> list[LbService]:
        """The LB config's services: front ends from the accepted specs, servers from the replicas in rotation."""
        out = []
        for name, servers in sorted(self.entries.items()):
            if not servers or not self.routed(name):
                continue
            lb_servers = tuple(LbServer(r.id, addresses[r.node], r.port, weight, st)
                               for r, st, weight in servers.values() if r.node in addresses)
            template = self.frontends.get(name) or _from_labels(name, [r for r, _, _ in servers.values()])
            if template is not None:
                out.append(replace(template, servers=lb_servers))
            for port_name, other in self.others.get(name, ()):
                # The same replicas in the same states, each at its host port for this named port.
                out.append(replace(other, servers=tuple(
                    LbServer(r.id, addresses[r.node], host, weight, st) for r, st, weight in servers.values()
                    if r.node in addresses and (host := dict(r.ports).get(port_name)) is not None)))
        return out


def port_services(spec: ServiceSpec) -> tuple[tuple[str, LbService], ...]:
    """The front ends of the service's other named ports (`lb.ports`), by port name: each `SERVICE.NAME`, on its own
    lb port and mode, checked by its own `health` (none: a TCP connect, `SAFETY_NET`), with the service's balance,
    timeouts and retries."""
    lb = spec.lb
    if lb is None:
        return ()
    return tuple((p.name, LbService(f"{spec.name}.{p.name}", p.port, (), p.mode, lb.balance, health=lb_health(p.health),
                                    timeouts=lb.timeouts, retries=lb.retries)) for p in lb.ports)


def _from_labels(name: str, replicas: list[Replica]) -> LbService | None:
    """A front end read back from the replicas' labels, for a service with no accepted spec on record."""
    first = next((r for r in replicas if r.lb is not None), None)
    if first is None or first.lb is None:
        return None
    h = first.health
    health = lb_health(None if h is None else HealthSpec(
        "http" if h.kind == "http" and h.path else "tcp", h.path if h.kind == "http" else None, (), h.interval,
        h.timeout, h.fall, h.rise))
    return LbService(name, first.lb.port, (), "tcp" if first.lb.mode == "tcp" else "http", first.lb.balance,
                     "0.0.0.0", health)


def config(rotation: Rotation, addresses: dict[str, str], lb_address: str | None = None, edge: Edge | None = None,
           tls: dict[str, LbTls] | None = None) -> str:
    """The haproxy.cfg of every lb node (the same on each, so any of them can hold the virtual IP; `lb_address`
    no longer changes it). With `edge`, host-routed services use its ports and `tls` (per service); the stats
    page listens on 127.0.0.1 unless the edge has a stats password (then on every address, behind it)."""
    services = [replace(s, tls=(tls or {}).get(s.name)) for s in rotation.services(addresses)]
    if edge is None:
        return render(services, admin_socket=ADMIN_SOCKET, state_file=STATE_FILE,
                      stats_bind=("127.0.0.1", STATS_PORT), run_as=RUN_AS)
    stats_bind, password_hash = edge.stats(STATS_PORT)
    return render(services, admin_socket=ADMIN_SOCKET, state_file=STATE_FILE, stats_bind=stats_bind,
                  edge=edge.config(), stats_password_hash=password_hash, run_as=RUN_AS)


def tls_wanted(services: list[LbService]) -> dict[str, tuple[TlsSpec, tuple[str, ...]]]:
    """Per host-routed service with `lb.tls`: where its certificate comes from, and its hosts."""
    return {s.name: (s.tls_source, s.hosts) for s in services if s.tls_source is not None and s.hosts}


class Balancers:
    """Every reachable lb node, kept in step with one Rotation."""

    def __init__(self, pool: Pool, reports: list[NodeReport], edge: Edge | None = None) -> None:
        self.pool = pool
        self.edge = edge
        self.tls: dict[str, LbTls] = {}
        # HAProxy's config takes IP addresses: a node named by host name is there by the IP `collect` resolved,
        # and one whose name did not resolve has no servers in it.
        self.addresses = {r.node.name: ip for r in reports if (ip := r.ip_address) is not None}
        # HAProxy needs sshd, not containerd: an lb node without a (working) runtime still balances.
        usable = [r for r in reports if r.node.has_role("lb") and r.status not in ("unreachable", "error")
                  and r.node.name in self.addresses]
        self.nodes = [LbNode(pool, r.node) for r in usable]
        self.unreachable = [r.node.name for r in reports if r.node.has_role("lb") and r not in usable]
        self.vip = VirtualIp(pool, reports)
        # Services converging at once all sync: one apply at a time per lb node (HAProxy refuses a second one
        # while one runs), and callers that wait together share the next apply, which renders their changes.
        self._rotation = Rotation()
        self._sync = Coalesced(lambda: self._sync_now(self._rotation))
        # Per lb node, the drains asked while one is under way, sent together next (see `drain`).
        self._drains: dict[LbNode, Batched[list[str], list[StatRow]]] = {}
        # The starts and reloads this object had made when no lb node had a worker from before a reload left
        # (None: not looked yet). Such workers come only from reloads, and under the fleet's lease only this run
        # reloads, so until it reloads again `settle` has nothing to wait for and asks no node.
        self._settled_at: int | None = None

    async def sync(self, rotation: Rotation) -> None:
        """Bring every lb node to the rotation's config: unchanged configs are left alone, a change of servers
        only is made at runtime with no reload (the file rewritten to match), anything else reloads hitlessly
        (see `LbNode.update`). Calls made while one runs are coalesced into the next (see `Coalesced`)."""
        self._rotation = rotation
        await self._sync()

    async def _apply(self, rotation: Rotation, tls: dict[str, LbTls]) -> None:
        await asyncio.gather(*(lb.update(config(rotation, self.addresses, self.addresses[lb.node.name], self.edge,
                                               tls)) for lb in self.nodes))

    async def _sync_now(self, rotation: Rotation) -> None:
        if self.edge is not None:
            wanted = tls_wanted(rotation.services(self.addresses))
            self.tls = await self.edge.prepare(wanted, self.nodes, lambda tls: self._apply(rotation, tls))
        await self._apply(rotation, self.tls)
        # The virtual IP follows HAProxy: keepalived's check gives the address only to a node whose HAProxy runs.
        await self.vip.sync()

    def reloads(self) -> dict[str, int]:
        """Per lb node, the HAProxy reloads this object made (not starts, nor runtime-only updates)."""
        return {lb.node.name: lb.reloads for lb in self.nodes}

    def edge_problems(self) -> dict[str, FleetError]:
        """Per service, why its HTTPS certificate could not be had at the last sync (the config went out with
        what could: such a service keeps its old certificate, or is served over plain HTTP until it has one)."""
        return dict(self.edge.problems) if self.edge is not None else {}

    @property
    def settled(self) -> bool:
        """No worker from before a reload can be left on any lb node: `settle` found none since this object's
        last start or reload (see `settle`)."""
        return self._settled_at == sum(lb.starts + lb.reloads for lb in self.nodes)

    async def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) until no worker from before the last reload is left on any lb node.

        A worker replaced by a reload keeps serving the requests it already accepted, and it knows nothing of
        runtime changes made since (a drain goes to the current worker only); stopping a server while such a
        worker may still send it a request would fail that request.
        """
        if self.settled:
            return
        made = sum(lb.starts + lb.reloads for lb in self.nodes)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            states = await asyncio.gather(*(lb.status() for lb in self.nodes), return_exceptions=True)
            if all(isinstance(st, BaseException) or not st.old_workers for st in states):
                if all(not isinstance(st, BaseException) for st in states):
                    self._settled_at = made
                return
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.1)

    async def drain(self, r: Replica) -> int:
        """`r` drained at runtime, with no reload (the config follows on the next sync), and, in the same round
        trip to each lb node, its sessions left (as `connections` counts them). Drains asked while one is under
        way on a node go together in its next round trip (services rolling at once drain at once). It waits
        for a reload under way on a node (see `LbNode.reloading`), not for a sync made at runtime: the two touch
        different servers, or the same one in the same direction."""
        backends = self._rotation.backends(r)
        cmds = [set_server_state(backend, r.id, "drain") for backend in backends]
        return _sessions(r, set(backends), await asyncio.gather(*(self._drainer(lb)(cmds) for lb in self.nodes),
                                                                return_exceptions=True))

    def _drainer(self, lb: LbNode) -> Batched[list[str], list[StatRow]]:
        if lb not in self._drains:
            self._drains[lb] = Batched(functools.partial(self._drain_batch, lb))
        return self._drains[lb]

    @staticmethod
    async def _drain_batch(lb: LbNode, asks: list[list[str]]) -> list[list[StatRow] | BaseException]:
        """Every ask's commands, then one `show stat`, in one round trip: the rows for each. When a command is
        refused, each ask goes again on its own, so that only its own caller hears of it."""
        async with lb.reloading:
            try:
                rows = await _drain_trip(lb, [c for cmds in asks for c in cmds])
            except LbRuntimeError:
                if len(asks) == 1:
                    raise
                return [await _alone(lb, cmds) for cmds in asks]
        return [rows] * len(asks)

    async def counters(self, service: str) -> dict[str, tuple[int, int]]:
        """Per server of the service: (responses 5xx, requests) summed over lb nodes (cumulative counters); a tcp
        server's are (connection errors: econ + eresp + wretr, connections)."""
        out: dict[str, tuple[int, int]] = {}
        results = await asyncio.gather(*(lb.stats() for lb in self.nodes), return_exceptions=True)
        for rows in results:
            if isinstance(rows, BaseException):
                continue
            for row in rows:
                if row.proxy == backend_name(service) and row.kind == "server":
                    bad, total = out.get(row.name, (0, 0))
                    # A tcp server (no HTTP requests counted) fails by its connection errors.
                    errors = row.hrsp_5xx if row.req_tot else row.econ + row.eresp + row.wretr
                    out[row.name] = (bad + errors, total + (row.req_tot or row.stot))
        return out

    async def connections(self, r: Replica) -> int:
        """Current sessions to this server (on every lb port of its service) summed over lb nodes (0 when
        unknown)."""
        results = await asyncio.gather(*(lb.stats() for lb in self.nodes), return_exceptions=True)
        return _sessions(r, set(self._rotation.backends(r)), results)


async def _drain_trip(lb: LbNode, cmds: list[str]) -> list[StatRow]:
    """`cmds`, then `show stat`, in one round trip to `lb`: the servers' rows after them."""
    return parse_show_stat((await lb.runtime([*cmds, show_stat()]))[-1])


async def _alone(lb: LbNode, cmds: list[str]) -> list[StatRow] | BaseException:
    try:
        return await _drain_trip(lb, cmds)
    except Exception as exc:  # this ask's own failure, given to its caller
        return exc


def _sessions(r: Replica, backends: set[str], results: Sequence[list[StatRow] | BaseException]) -> int:
    """The current sessions to `r` in `backends`, summed over the lb nodes that answered (0 when none did)."""
    total = 0
    for rows in results:
        if isinstance(rows, BaseException):
            continue
        for row in rows:
            if row.proxy in backends and row.name == r.id:
                total += row.scur
    return total
