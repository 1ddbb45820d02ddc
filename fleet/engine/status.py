"""`fleet status`: services as the nodes' labels and the load balancers' statistics show them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fleet.config.spec import LbSpec
from fleet.core.errors import FleetError
from fleet.engine.lb import Balancers
from fleet.engine.nodes import NodeReport
from fleet.engine.state import observe
from fleet.node.haproxy.render import backend_name
from fleet.node.haproxy.stats import StatRow
from fleet.results.status import FleetStatus as FleetStatus
from fleet.results.status import ReplicaStatus as ReplicaStatus
from fleet.results.status import ServiceStatus as ServiceStatus
from fleet.transport import Pool

if TYPE_CHECKING:
    from fleet.engine.apply import Records


async def accepted_lb(records: Records, services: set[str]) -> dict[str, LbSpec | None]:
    """Each service's load-balancer settings as its accepted spec says (None: not behind the load balancers)."""
    from fleet.engine.apply import spec_of

    out: dict[str, LbSpec | None] = {}
    for name in sorted(services):
        raw = await records.state(name)
        accepted = raw.get("accepted") if raw else None
        rev = await records.get(name, accepted) if isinstance(accepted, int) else None
        if rev is not None:
            out[name] = spec_of(rev).lb
    return out


async def lb_ports(records: Records, services: set[str]) -> dict[str, int | None]:
    """Each service's load-balancer port as its accepted spec says (None: none of its own)."""
    return {name: lb.port if lb is not None else None for name, lb in (await accepted_lb(records, services)).items()}


def host_urls(lb: LbSpec | None) -> tuple[str, ...]:
    """The URLs of a host-routed service: https:// with `lb.tls`, else http://, per host and path prefix."""
    if lb is None:
        return ()
    scheme = "https" if lb.tls is not None else "http"
    return tuple(f"{scheme}://{host}{path or '/'}" for host in lb.hosts for path in lb.paths or (None,))


async def status(pool: Pool, reports: list[NodeReport], records: Records | None = None) -> FleetStatus:
    """Every service's replicas, their state in each load balancer, and its address (the accepted spec's port;
    the replicas' labels for a service with no record)."""
    obs = await observe(pool, reports)
    ports: dict[str, int | None] = {}
    lb_specs: dict[str, LbSpec | None] = {}
    if records is not None:
        try:
            lb_specs = await accepted_lb(records, {r.service for r in obs.replicas})
        except FleetError:
            lb_specs = {}  # no record node answers: the labels say where each service started
        ports = {name: lb.port if lb is not None else None for name, lb in lb_specs.items()}
    lbs = Balancers(pool, reports)
    vip_task = asyncio.ensure_future(lbs.vip.status())
    stats = await asyncio.gather(*(lb.stats() for lb in lbs.nodes), return_exceptions=True)
    vip = await vip_task
    rows: dict[str, list[StatRow]] = {}
    lb_errors = {name: "unreachable" for name in lbs.unreachable}
    for lb, res in zip(lbs.nodes, stats, strict=True):
        if isinstance(res, BaseException):
            if not isinstance(res, Exception):
                raise res
            lb_errors[lb.node.name] = str(res)
        else:
            rows[lb.node.name] = res
    addresses = {r.node.name: r.node.address for r in reports}
    services = []
    for name in sorted({r.service for r in obs.replicas}):
        mine = sorted((r for r in obs.replicas if r.service == name), key=lambda r: (r.replica, r.node))
        replicas = []
        for r in mine:
            health: dict[str, str] = {}
            for lb_name, lb_rows in rows.items():
                for row in lb_rows:
                    if row.proxy == backend_name(name) and row.name == r.id:
                        health[lb_name] = row.health
            replicas.append(ReplicaStatus(r, addresses.get(r.node, "?"), health))
        label = next((r.lb.port for r in mine if r.lb), None)
        port = ports.get(name, label)
        # With a virtual IP the service has one address whichever lb node holds it; else one per lb node.
        at = [vip.address.split("/")[0]] if vip is not None else [n.node.address for n in lbs.nodes]
        endpoints = (tuple(f"{a}:{port}" for a in at) if port else ()) + host_urls(lb_specs.get(name))
        # The servers' counters (the stats read lists servers only): a server removed takes its counts with it,
        # which a reader of rates sees as a counter that went back.
        servers = [row for lb_rows in rows.values() for row in lb_rows
                   if row.proxy == backend_name(name) and row.kind == "server"]
        counted = (sum(row.req_tot or row.stot for row in servers), sum(row.hrsp_5xx for row in servers))
        services.append(ServiceStatus(name, tuple(replicas), endpoints, counted))
    return FleetStatus(tuple(services), obs.errors, lb_errors, vip)
