"""What a controller looks at between runs: every node's report with the replicas its ready nodes run (one round
trip per node: fleet.node.look), and every lb node's HAProxy server rows; `fleet watch` reads both each round to
see drift."""

from __future__ import annotations

import asyncio
import functools

from fleet.core.errors import FleetError
from fleet.core.model import Node
from fleet.core.shell import Script
from fleet.engine.calls import driver_for, on_ready_nodes, runtime_not_needed, transport_error, why
from fleet.engine.containers import PsResult, ps_result
from fleet.engine.lb import Balancers
from fleet.engine.nodes import FACTS_TIMEOUT, facts_script, report_of, round_trips
from fleet.engine.state import Observed, observe, observed
from fleet.node.haproxy.stats import StatRow
from fleet.node.look import look_script, split
from fleet.node.runtime.base import ContainerInfo
from fleet.node.runtime.ctr import CtrDriver
from fleet.node.runtime.nerdctl import NerdctlDriver
from fleet.results.nodes import NodeReport
from fleet.transport import Pool

__all__ = ["Observed", "lb_rows", "look", "look_command", "observe", "observed"]


@functools.lru_cache(maxsize=16)
def _look_script(namespace: str, ports: bool) -> Script:
    listings = {d.name: d.list_containers().command for d in (CtrDriver(namespace), NerdctlDriver(namespace))}
    return look_script(facts_script(namespace, ports), {k: v for k, v in listings.items() if isinstance(v, Script)})


def look_command(node: Node, ports: bool = False) -> Script:
    """The facts command for `node` joined with its runtime's listing (fleet.node.look); the same object for
    every node of a namespace."""
    return _look_script(node.namespace, ports)


async def look(pool: Pool, nodes: tuple[Node, ...] | list[Node], *, ports: bool = False,
               timeout: float = FACTS_TIMEOUT, inventory: str | None = None) -> tuple[list[NodeReport], PsResult]:
    """Every node's report (as `collect` gives it) and the containers of the ready ones (as `ps` lists them), in
    one round trip per node, with the same reports and the same errors.

    The round trip has `timeout` seconds, the facts' deadline: a listing still running then is named in the
    errors ("list containers did not answer within 10s"), its node's report kept. A ready node whose listing
    did not come with its facts (its facts script and the Python verdict disagreed) is listed apart, as `ps`
    would."""
    trips = await round_trips(pool, nodes, lambda n: look_command(n, ports), timeout=timeout, inventory=inventory)
    reports: list[NodeReport] = []
    found: dict[str, list[ContainerInfo]] = {}
    errors: dict[str, str] = {}
    apart: list[NodeReport] = []
    for trip in trips:
        parts = None if trip.result is None else split(trip.result)
        report = report_of(trip.node, None if parts is None else parts.facts, trip.unresolved, trip.ip)
        reports.append(report)
        name = trip.node.name
        if not report.ok:
            if not runtime_not_needed(report):
                errors[name] = f"{report.status}: {report.reason}"
            continue
        assert parts is not None
        driver = driver_for(trip.node, report.facts)
        call = driver.list_containers()
        if parts.listing is None or parts.runtime != driver.name:
            apart.append(report)
        elif parts.listing.error is not None:
            errors[name] = why(name, transport_error(trip.node, call.what, parts.listing, timeout))
        else:
            try:
                found[name] = call.parse(parts.listing)
            except FleetError as exc:
                errors[name] = why(name, exc)
    if apart:
        listed, failed = await on_ready_nodes(pool, apart, lambda d: d.list_containers())
        found.update(listed)
        errors.update(failed)
    return reports, ps_result(found, errors)


async def lb_rows(pool: Pool, reports: list[NodeReport]) -> list[list[StatRow] | None]:
    """Each usable lb node's `show stat` rows, read at once; None for a node that could not be read (`fleet status`
    names it). Cancellation is never swallowed."""
    lbs = Balancers(pool, reports)
    results = await asyncio.gather(*(lb.stats() for lb in lbs.nodes), return_exceptions=True)
    out: list[list[StatRow] | None] = []
    for rows in results:
        if isinstance(rows, BaseException):
            if not isinstance(rows, Exception):
                raise rows
            out.append(None)
        else:
            out.append(rows)
    return out
