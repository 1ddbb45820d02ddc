"""Before a run changes anything: its `lb.port`s checked against what the lb nodes listen on, and every worker
prepared (hosts file naming the load-balanced services, resolv.conf, pinned network namespace)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fleet.config.spec import ServiceSpec
from fleet.core.edge import EdgeSettings
from fleet.core.errors import FleetError, Problem, SpecError
from fleet.core.model import Node
from fleet.core.ports import STATS_PORT
from fleet.engine.lb import Balancers
from fleet.engine.runspec import hosts_text, prepare_node_script
from fleet.engine.view import RunView
from fleet.plan.checks import edge_port_problems, lb_port_problems
from fleet.transport import Pool


def check_lb_ports(view: RunView, lbs: Balancers, specs: Sequence[ServiceSpec]) -> None:
    """Refuse (before anything changes) an `lb.port` that something other than fleet's HAProxy listens on
    on an lb node, or that another service's front end keeps."""
    rotation = view.rotation
    listening = {r.node.name: set(r.facts.listening) for r in view.reports
                 if r.node.has_role("lb") and r.facts is not None}
    owned: dict[str, set[int]] = {}
    for service in {r.service for r in view.live}:
        if service in rotation.frontends:
            owned[service] = rotation.bind_ports(service)
        else:
            label = next((r.lb for r in view.live if r.service == service and r.lb is not None), None)
            if label is not None:
                owned[service] = {label.port}
    by_name = {s.name: s for s in specs}
    edge = lbs.edge.settings if lbs.edge is not None else EdgeSettings()
    if lbs.edge is not None:
        lbs.edge.stats(STATS_PORT)  # the stats password is in the keyring (before anything changes)
    shared = {edge.http_port: "edge.http_port", edge.https_port: "edge.https_port"}
    others_routed = any(f is not None and f.hosts for name, f in rotation.frontends.items() if name not in by_name)
    # Each message starts with the field it is about (`lb.port 7001 …`, `lb.ports.redis.port 6379 …`).
    problems = [Problem(by_name[name].source_file or "<playbook>", by_name[name].source_line,
                        f"services.{name}.{message.split()[0]}", message)
                for name, message in edge_port_problems(specs, shared, others_routed)]
    told = {p.field for p in problems}
    problems += [Problem(by_name[name].source_file or "<playbook>", by_name[name].source_line,
                         f"services.{name}.{message.split()[0]}", message)
                 for name, message in lb_port_problems(specs, listening, owned)
                 if f"services.{name}.{message.split()[0]}" not in told]
    if problems:
        raise SpecError(problems)


def fleet_hosts(view: RunView, lbs: Balancers, specs: Sequence[ServiceSpec]) -> str:
    """The hosts file every container gets: each load-balanced service's name → the fleet's virtual IP when
    the inventory has one (it moves between lb nodes), else the first lb node."""
    vip = lbs.vip.vrrp
    lb = vip.virtual_ip if vip is not None else next(
        (r.ip_address or r.node.address for r in view.reports if r.node.has_role("lb") and r.ok), None)
    names = {s.name for s in specs if s.lb} | {r.service for r in view.live if view.rotation.routed(r.service)}
    return hosts_text(lb, sorted(names))


async def sync_hosts(pool: Pool, view: RunView, lbs: Balancers, specs: Sequence[ServiceSpec]) -> None:
    """Prepare every worker: hosts file, resolv.conf, pinned network namespace (see runspec.PREPARE_NODE). A
    worker that fails is left out of the run (named in `view.errors`)."""
    text = fleet_hosts(view, lbs, specs)
    workers = [r.node for r in view.reports if r.ok and r.node.has_role("worker")]
    on: dict[str, set[tuple[str, str, str]]] = {}
    for r in (*view.seen, *view.live):
        on.setdefault(r.node, set()).add((r.id, r.service, r.spec_hash))

    async def prepare(n: Node) -> None:
        # A node read by this run has the secret files and configs of containers no longer on it removed.
        mine = on.get(n.name, set()) if n.name not in view.errors else None
        await pool.check(n, prepare_node_script(text, mine), stdin=text, timeout=30)

    results = await asyncio.gather(*(prepare(n) for n in workers), return_exceptions=True)
    for n, res in zip(workers, results, strict=True):
        if isinstance(res, FleetError):
            view.errors[n.name] = f"preparing the node failed: {res}"
        elif isinstance(res, BaseException):
            raise res
