"""Node reports: one facts round trip per node turned into ready / unreachable / no runtime."""

from __future__ import annotations

from dataclasses import dataclass

from ..facts import FACTS_SCRIPT, NodeFacts, parse_facts
from ..model import Node, Resources
from ..shell import Script
from ..transport import Pool, fanout


@dataclass(frozen=True)
class NodeReport:
    """What one node answered (or why it did not)."""

    node: Node
    status: str
    reason: str | None
    facts: NodeFacts | None
    duration: float

    @property
    def ok(self) -> bool:
        return self.status == "ready"

    @property
    def allocatable(self) -> Resources | None:
        """Measured size, capped by the inventory's capacity override, minus what is reserved."""
        if self.facts is None:
            return None
        size = self.facts.size
        cap = self.node.capacity
        if cap is not None:
            size = Resources(min(size.cpu, cap.cpu or size.cpu), min(size.memory, cap.memory or size.memory))
        return size - self.node.reserved


def facts_command(node: Node, ports: bool = False) -> Script:
    """The facts script for a node; with `ports`, also the TCP ports something listens on (for placement)."""
    return Script(FACTS_SCRIPT, {"NS": node.namespace, "PORTS": "1" if ports else ""}, name="fleet-facts")


def report_from(node: Node, status: int | None, stdout: str, error: str | None, duration: float) -> NodeReport:
    """Turn one facts round trip into a NodeReport: ready, unreachable (with the reason), no runtime, error."""
    if error is not None:
        return NodeReport(node, "unreachable", error, None, duration)
    try:
        facts = parse_facts(stdout)
    except ValueError as exc:
        return NodeReport(node, "error", f"facts script exited {status}: {exc}", None, duration)
    if facts.runtime is None:
        return NodeReport(node, "no runtime", "neither nerdctl nor ctr is installed", facts, duration)
    if not facts.runtime_socket:
        return NodeReport(node, "no runtime", "containerd is not running (no /run/containerd/containerd.sock)",
                          facts, duration)
    return NodeReport(node, "ready", None, facts, duration)


async def collect(pool: Pool, nodes: tuple[Node, ...] | list[Node], *, ports: bool = False) -> list[NodeReport]:
    """Facts from every node in one round trip each, concurrently; one report per node, in the given order."""
    results = await fanout(pool, list(nodes), lambda n: facts_command(n, ports))
    return [report_from(node, r.exit_status, r.stdout, r.error, r.duration)
            for node, r in zip(nodes, results, strict=True)]
