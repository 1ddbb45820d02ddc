"""What a node answered to the facts round trip: ready / unreachable / no runtime / runtime not answering / error.

    unreachable             sshd did not answer (connect, host key, auth) or the facts command did not finish
    no runtime              no ctr/nerdctl installed, or containerd is not running (nothing listens on its socket)
    runtime not answering   containerd runs but cannot answer: stopped (SIGSTOP, state T) or its probe timed out
    error                   the node answered something that is not the facts script's output
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from fleet.core.model import Node, Resources, ip_literal
from fleet.core.nodeops import NodeMark
from fleet.node.facts import NodeFacts
from fleet.node.preflight import lack_text
from fleet.node.runtime.ctr import LACKS as CTR_LACKS
from fleet.plan.scheduler import NodeState

READY, UNREACHABLE, NO_RUNTIME, NOT_ANSWERING, ERROR = (
    "ready", "unreachable", "no runtime", "runtime not answering", "error")


# `mark_error` of a fleet whose etcd was never started: no node mark exists yet (not "unreadable").
NO_SHARED_STATE = "no shared state yet (the first writing run starts etcd)"


def _lacks(node: str, facts: NodeFacts | None) -> dict[str, str]:
    """What a service may need that this node lacks, with the words the plan shows: tools it misses (from its
    facts) and what its container runtime cannot do (ctr's, unless the node runs nerdctl)."""
    tools = {n: lack_text(node, n) for n in sorted(facts.lacks)} if facts is not None else {}
    runtime = {} if facts is not None and facts.runtime == "nerdctl" else CTR_LACKS
    return {**tools, **{n: f"{n}: {why}" for n, why in runtime.items()}}


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
    def marks_unknown(self) -> bool:
        """The fleet's record of its nodes could not be read (a brand-new fleet has none to read: known empty)."""
        return self.mark_error is not None and self.mark_error != NO_SHARED_STATE

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
                         draining=self.draining,
                         lacks=_lacks(self.node.name, facts),
                         disk_free=facts.disk_free if facts is not None and facts.disk_total else None,
                         disk_total=facts.disk_total if facts is not None and facts.disk_total else None)
