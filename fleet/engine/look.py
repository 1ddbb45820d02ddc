"""What a controller looks at between runs, beside the node reports: the replicas the ready nodes run, and every
lb node's HAProxy server rows; `fleet watch` reads both each round to see drift."""

from __future__ import annotations

import asyncio

from fleet.engine.lb import Balancers
from fleet.engine.state import Observed, observe
from fleet.node.haproxy.stats import StatRow
from fleet.results.nodes import NodeReport
from fleet.transport import Pool

__all__ = ["Observed", "lb_rows", "observe"]


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
