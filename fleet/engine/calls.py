"""Running a driver's `Call` on a node, and choosing a node's runtime driver from its facts."""

from __future__ import annotations

from typing import TypeVar

from ..facts import NodeFacts
from ..model import Node
from ..runtime.base import Call, RuntimeDriver
from ..runtime.ctr import CtrDriver
from ..runtime.nerdctl import NerdctlDriver
from ..transport import Pool

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
