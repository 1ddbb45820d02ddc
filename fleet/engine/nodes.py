"""Node reports: one facts round trip per node turned into ready / unreachable / no runtime / runtime not answering.

    unreachable             sshd did not answer (connect, host key, auth) or the facts command did not finish
    no runtime              no ctr/nerdctl installed, or containerd is not running (nothing listens on its socket)
    runtime not answering   containerd runs but cannot answer: stopped (SIGSTOP, state T) or its probe timed out
    error                   the node answered something that is not the facts script's output
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.engine.resolve import resolve_nodes
from fleet.node.facts import FACTS_SCRIPT, PROBE_TIMEOUT, NodeFacts, parse_facts
from fleet.node.paths import DEFAULT
from fleet.results.nodes import ERROR as ERROR
from fleet.results.nodes import NO_RUNTIME as NO_RUNTIME
from fleet.results.nodes import NOT_ANSWERING as NOT_ANSWERING
from fleet.results.nodes import READY as READY
from fleet.results.nodes import UNREACHABLE as UNREACHABLE
from fleet.results.nodes import NodeReport as NodeReport
from fleet.transport import Command, Pool, fanout

# The facts script reads files and runs a 3 s probe at most: 10 s is generous, and a node that takes longer is
# reported (unreachable, with the deadline) instead of holding the round.
FACTS_TIMEOUT = 10.0
def facts_command(node: Node, ports: bool = False) -> Script:
    """The facts script for a node; with `ports`, also the TCP ports something listens on (for placement)."""
    return facts_script(node.namespace, ports)


def facts_script(namespace: str, ports: bool = False) -> Script:
    """The facts script for the nodes whose fleet namespace is `namespace` (see `facts_command`)."""
    env = {"NS": namespace, "PORTS": "1" if ports else "", "PROBE": str(PROBE_TIMEOUT), "FLEET_DIR": DEFAULT.base}
    return Script(FACTS_SCRIPT, env, name="fleet-facts")


def report_from(node: Node, status: int | None, stdout: str, error: str | None, duration: float) -> NodeReport:
    """Turn one facts round trip into a NodeReport: ready, unreachable (with the reason), no runtime, error."""
    if error is not None:
        return NodeReport(node, UNREACHABLE, error, None, duration)
    try:
        facts = parse_facts(stdout)
    except ValueError as exc:
        return NodeReport(node, ERROR, f"facts script exited {status}: {exc}", None, duration)
    if facts.runtime is None:
        return NodeReport(node, NO_RUNTIME, f"neither nerdctl nor ctr is installed (fleet node prepare {node.name} "
                                            "installs containerd)", facts, duration)
    problem = runtime_problem(facts)
    if problem is not None:
        return NodeReport(node, problem[0], problem[1], facts, duration)
    return NodeReport(node, READY, None, facts, duration)


def runtime_problem(facts: NodeFacts) -> tuple[str, str] | None:
    """(status, reason) when containerd is not there to use, from what the facts script saw; None when it is."""
    sock = "/run/containerd/containerd.sock"
    if not facts.runtime_socket:
        return NO_RUNTIME, f"containerd is not running (no {sock})"
    if facts.runtime_known and facts.runtime_pid is None:
        return NO_RUNTIME, f"containerd is not running (nothing listens on {sock})"
    pid = facts.runtime_pid
    state = facts.runtime_state
    if state in ("T", "t"):
        how = "stopped (SIGSTOP)" if state == "T" else "stopped by a tracer"
        return NOT_ANSWERING, f"containerd (pid {pid}) is {how}: it cannot answer"
    if state in ("Z", "X"):
        return NO_RUNTIME, f"containerd (pid {pid}) has exited"
    if facts.runtime_probe == "timeout":
        return NOT_ANSWERING, (f"containerd (pid {pid}, state {state or '?'}) did not answer `ctr version` "
                               f"within {PROBE_TIMEOUT}s")
    return None


async def collect(pool: Pool, nodes: tuple[Node, ...] | list[Node], *, ports: bool = False,
                  timeout: float = FACTS_TIMEOUT, inventory: str | None = None) -> list[NodeReport]:
    """Facts from every node in one round trip each, concurrently; one report per node, in the given order.

    Each node has `timeout` seconds once connected (connecting has the pool's own bound), so one sick node
    costs the round that long at most and is reported; the others are never held up by it. Host names are
    resolved first (each report's `ip`); a node whose name does not resolve is unreachable, not contacted, and its
    reason names the host, the node and `inventory` (file:line)."""
    trips = await round_trips(pool, nodes, lambda n: facts_command(n, ports), timeout=timeout, inventory=inventory)
    return [report_of(trip.node, trip.result, trip.unresolved, trip.ip) for trip in trips]


@dataclass(frozen=True)
class Trip:
    """One node's round trip: its result, or why it was not contacted (`unresolved`: its name did not resolve)."""

    node: Node
    result: CommandResult | None
    unresolved: str | None = None
    ip: str | None = None


async def round_trips(pool: Pool, nodes: tuple[Node, ...] | list[Node], command_for: Callable[[Node], Command], *,
                      timeout: float, inventory: str | None = None) -> list[Trip]:
    """`command_for(node)` on every node whose name resolves, concurrently, each within `timeout` seconds once
    connected; one Trip per node, in the given order (see `collect`)."""

    def run(node: Node) -> Awaitable[CommandResult]:
        return pool.run(node, command_for(node), timeout=timeout)

    resolved = await resolve_nodes(nodes, inventory=inventory)
    reachable = [n for n in nodes if n.name not in resolved.errors]
    results = dict(zip((n.name for n in reachable), await fanout(pool, reachable, run), strict=True))
    return [Trip(n, None, resolved.errors[n.name]) if n.name in resolved.errors
            else Trip(n, results[n.name], None, resolved.addresses.get(n.name)) for n in nodes]


def report_of(node: Node, result: CommandResult | None, unresolved: str | None, ip: str | None) -> NodeReport:
    """The report of one facts round trip (`report_from`), or of a node not contacted (`unresolved`)."""
    if result is None:
        return NodeReport(node, UNREACHABLE, unresolved, None, 0.0)
    report = report_from(node, result.exit_status, result.stdout, result.error, result.duration)
    return replace(report, ip=ip)
