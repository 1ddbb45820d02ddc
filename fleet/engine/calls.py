"""Running a driver's `Call` on a node, and choosing a node's runtime driver from its facts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import FleetError
from ..facts import NodeFacts
from ..model import Node
from ..runtime.base import Call, RuntimeDriver
from ..runtime.ctr import CtrDriver
from ..runtime.nerdctl import NerdctlDriver
from ..transport import Pool

if TYPE_CHECKING:
    from .nodes import NodeReport

T = TypeVar("T")


def driver_for(node: Node, facts: NodeFacts | None) -> RuntimeDriver:
    """nerdctl where the node has it, else containerd's own ctr (present wherever containerd is)."""
    if facts is not None and facts.runtime == "nerdctl":
        return NerdctlDriver(namespace=node.namespace)
    return CtrDriver(namespace=node.namespace)


async def perform(pool: Pool, node: Node, call: Call[T], *, timeout: float | None = None) -> T:
    """Run the call's command on the node and parse the result; the parser raises on any failure."""
    result = await pool.run(node, call.command, stdin_path=call.stdin_path, timeout=timeout)
    return call.parse(result)


async def on_ready_nodes(pool: Pool, reports: list[NodeReport], call_for: Callable[[RuntimeDriver], Call[T]],
                         *, timeout: float | None = None) -> tuple[dict[str, T], dict[str, str]]:
    """Run one driver call on every ready node at once: ({node: result}, {node: why not}); a node that fails
    (or was not ready) is reported, never raised."""
    ready = [r for r in reports if r.ok]
    errors = {r.node.name: f"{r.status}: {r.reason}" for r in reports if not r.ok}

    async def one(r: NodeReport) -> T:
        return await perform(pool, r.node, call_for(driver_for(r.node, r.facts)), timeout=timeout)

    results = await asyncio.gather(*(one(r) for r in ready), return_exceptions=True)
    out: dict[str, T] = {}
    for r, res in zip(ready, results, strict=True):
        if isinstance(res, FleetError):
            errors[r.node.name] = str(res)
        elif isinstance(res, BaseException):
            raise res
        else:
            out[r.node.name] = res
    return out, errors
