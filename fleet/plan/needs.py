"""What a service needs on a node to start a replica there, and which nodes lack it (pure).

Every replica needs `runc` (containerd's runtime); a bridge network needs the CNI plugins (`cni`); a network
volume needs `sshfs`. The nodes say what they lack (fleet.node.facts `lacks`, worded per node in
`NodeState.lacks`); the scheduler's feasibility chain refuses them for such a service, and `lacking` lists them
for the plan, which says so whether or not the replicas found room elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleet.config.spec import ServiceSpec
from fleet.plan.scheduler import NodeState


def service_needs(spec: ServiceSpec) -> frozenset[str]:
    """What a node must have to start a replica of `spec`."""
    needs = {"runc"}
    if spec.network == "bridge":
        needs.add("cni")
    if any(v.type == "sshfs" for v in spec.volumes):
        needs.add("sshfs")
    return frozenset(needs)


def lacking(nodes: Sequence[NodeState], specs: Sequence[ServiceSpec]) -> dict[str, str]:
    """Per healthy node that lacks something one of `specs` needs: its words (`lacks CNI plugins (fleet node
    prepare n3 installs them)`) and the services it cannot start, in node name order."""
    wanted = {s.name: service_needs(s) for s in specs}
    out: dict[str, str] = {}
    for n in sorted(nodes, key=lambda n: n.name):
        if not n.healthy or not n.lacks:
            continue
        needs = sorted({need for ns in wanted.values() for need in ns if need in n.lacks})
        if needs:
            services = sorted(name for name, ns in wanted.items() if ns & set(needs))
            out[n.name] = f"{'; '.join(n.lacks[x] for x in needs)}: no replica of {', '.join(services)} starts there"
    return out
