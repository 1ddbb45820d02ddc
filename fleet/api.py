"""The Fleet façade: the one entry point that both the CLI and the TUI use."""

from __future__ import annotations

from .engine.calls import driver_for
from .engine.nodes import NodeReport, collect, facts_command, report_from
from .model import Inventory, Node
from .runtime.base import RuntimeDriver
from .transport import Pool

__all__ = ["Fleet", "NodeReport", "facts_command", "report_from"]


class Fleet:
    """Operations on the fleet described by an inventory, over one connection pool."""

    def __init__(self, inventory: Inventory, pool: Pool) -> None:
        self.inventory = inventory
        self.pool = pool
        self._reports: list[NodeReport] | None = None

    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        """Facts from every node in one round trip each, concurrently; one report per node, in inventory order.

        `ports` adds the TCP ports in use on each node, which placement needs and `fleet nodes` does not."""
        self._reports = await collect(self.pool, self.inventory.nodes, ports=ports)
        return self._reports

    async def reports(self, *, ports: bool = False) -> list[NodeReport]:
        """The node reports of this run (collected once, on first use)."""
        if self._reports is None:
            await self.nodes(ports=ports)
        assert self._reports is not None
        return self._reports

    async def ready(self) -> list[NodeReport]:
        return [r for r in await self.reports() if r.ok]

    def driver(self, report: NodeReport) -> RuntimeDriver:
        return driver_for(report.node, report.facts)

    def node(self, name: str) -> Node:
        return self.inventory.node(name)
