"""Node reports: one facts round trip per node turned into ready / unreachable / no runtime / runtime not answering.

    unreachable             sshd did not answer (connect, host key, auth) or the facts command did not finish
    no runtime              no ctr/nerdctl installed, or containerd is not running (nothing listens on its socket)
    runtime not answering   containerd runs but cannot answer: stopped (SIGSTOP, state T) or its probe timed out
    error                   the node answered something that is not the facts script's output
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from functools import cached_property

from fleet.core.model import CommandResult, Node, Resources
from fleet.core.nodeops import NodeMark
from fleet.core.shell import Script
from fleet.engine.resolve import ip_literal, resolve_nodes
from fleet.node.facts import FACTS_SCRIPT, PROBE_TIMEOUT, NodeFacts, parse_facts
from fleet.node.paths import DEFAULT
from fleet.plan.scheduler import NodeState
from fleet.transport import Pool, fanout

# The facts script reads files and runs a 3 s probe at most: 10 s is generous, and a node that takes longer is
# reported (unreachable, with the deadline) instead of holding the round.
FACTS_TIMEOUT = 10.0
READY, UNREACHABLE, NO_RUNTIME, NOT_ANSWERING, ERROR = (
    "ready", "unreachable", "no runtime", "runtime not answering", "error")


@dataclass(frozen=True)
class NodeReport:
    """What one node answered (or why it did not)."""

    node: Node
    status: str
    reason: str | None
    facts: NodeFacts | None
    duration: float
    # The node's address as an IP, resolved once per run when the inventory gives a host name (`collect`); what
    # HAProxy's server lines and the containers' hosts file need. See `ip_address`.
    ip: str | None = None
    # What `fleet node` recorded on the fleet about this node (cordoned, draining, labels); `mark_error` says why
    # the fleet's record of its nodes could not be read (the mark is then the inventory's: nothing recorded).
    mark: NodeMark = field(default_factory=NodeMark)
    mark_error: str | None = None

    @property
    def cordoned(self) -> bool:
        """No new replicas go to this node (`fleet node cordon`, or a drain); true while it drains too."""
        return self.mark.cordoned or self.mark.draining

    @property
    def draining(self) -> bool:
        """Its replicas are being moved elsewhere (`fleet node drain` has not finished)."""
        return self.mark.draining

    @property
    def labels(self) -> dict[str, str]:
        """The node's labels: the inventory's, with what `fleet node label` set or removed over them."""
        return self.mark.effective(self.node.labels)

    @property
    def ip_address(self) -> str | None:
        """The IP to put where a host name will not do: the resolved one, else an IP literal address; None for a
        host name that was not (or could not be) resolved."""
        return self.ip or ip_literal(self.node.address)

    @property
    def ok(self) -> bool:
        """Ready for containers; any other status makes the scheduler place this node's share elsewhere."""
        return self.status == READY

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

    @cached_property
    def node_state(self) -> NodeState:
        """The scheduler's view of this node as it answered (healthy when ready): allocatable size, labels, host
        ports others listen on, measured use beyond fleet's reservations, cordon marks. Built once per report:
        a run plans once per service, and every plan reads every node."""
        alloc = self.allocatable or Resources()
        facts = self.facts
        return NodeState(self.node.name, Resources(max(alloc.cpu, 0.0), max(alloc.memory, 0)), Resources(),
                         self.labels, self.ok, facts.listening if facts is not None else frozenset(),
                         others=facts.others if facts is not None else Resources(), cordoned=self.cordoned,
                         draining=self.draining)


def facts_command(node: Node, ports: bool = False) -> Script:
    """The facts script for a node; with `ports`, also the TCP ports something listens on (for placement)."""
    env = {"NS": node.namespace, "PORTS": "1" if ports else "", "PROBE": str(PROBE_TIMEOUT),
           "FLEET_DIR": DEFAULT.base}
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
        return NodeReport(node, NO_RUNTIME, "neither nerdctl nor ctr is installed", facts, duration)
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

    def facts_of(node: Node) -> Awaitable[CommandResult]:
        return pool.run(node, facts_command(node, ports), timeout=timeout)

    resolved = await resolve_nodes(nodes, inventory=inventory)
    reachable = [n for n in nodes if n.name not in resolved.errors]
    results = dict(zip((n.name for n in reachable), await fanout(pool, reachable, facts_of), strict=True))
    reports = []
    for node in nodes:
        if node.name in resolved.errors:
            reports.append(NodeReport(node, UNREACHABLE, resolved.errors[node.name], None, 0.0))
            continue
        r = results[node.name]
        report = report_from(node, r.exit_status, r.stdout, r.error, r.duration)
        reports.append(replace(report, ip=resolved.addresses.get(node.name)))
    return reports
