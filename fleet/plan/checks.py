"""Checks of the accepted specs against what the nodes report, as pure functions of data (no I/O): the engine
gathers the facts, these say what is wrong in words a user can act on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from fleet.config.spec import ServiceSpec
from fleet.core.ports import RESERVED_LB_PORTS


def lb_port_conflicts(specs: Iterable[ServiceSpec], listening: Mapping[str, Set[int]],
                      owned: Mapping[str, Set[int]]) -> list[str]:
    """`lb_port_problems` as `SERVICE: message` lines."""
    return [f"{service}: {message}" for service, message in lb_port_problems(specs, listening, owned)]


def lb_port_problems(specs: Iterable[ServiceSpec], listening: Mapping[str, Set[int]],
                     owned: Mapping[str, Set[int]]) -> list[tuple[str, str]]:
    """(service, message) for each spec whose `lb.port` HAProxy could not bind on the lb nodes.

    `listening`: per lb node, the TCP ports something listens on (node facts, `NodeFacts.listening`);
    `owned`: per service, the ports fleet's HAProxy already serves for it (its frontends now). A port a spec's
    own frontend already serves is fine. A port another service's frontend serves is fine only when that service
    is among `specs` and moves off it (one reload hands it over); otherwise it is taken by fleet's HAProxy for that
    service. Any other listener on an lb node (sshd, a stray process, a replica of an lb node that is also a
    worker) takes it on that node. Messages come in the order of the service names.
    """
    chosen = {s.name: (s.lb.port if s.lb is not None else None) for s in specs}
    holders: dict[int, list[str]] = {}
    for service, ports in owned.items():
        for port in ports:
            holders.setdefault(port, []).append(service)
    out = []
    for spec in sorted(specs, key=lambda s: s.name):
        if spec.lb is None or spec.lb.port is None:
            continue
        port = spec.lb.port
        if port in RESERVED_LB_PORTS:
            out.append((spec.name, f"lb.port {port} is fleet's own on the lb nodes ({RESERVED_LB_PORTS[port]})"))
            continue
        if port in owned.get(spec.name, ()):
            continue
        others = sorted(h for h in holders.get(port, ()) if h != spec.name and chosen.get(h, port) == port)
        if others:
            why = "not in these playbooks" if others[0] not in chosen else f"which keeps lb.port {port}"
            out.append((spec.name, f"lb.port {port} is already served by fleet's HAProxy for service "
                                    f"{others[0]!r} ({why})"))
            continue
        nodes = sorted(node for node, ports in listening.items() if port in ports)
        if nodes and port not in holders:
            out.append((spec.name, f"lb.port {port} is already in use on {', '.join(nodes)} "
                                    "(not by fleet's HAProxy)"))
    return out


def edge_port_problems(specs: Iterable[ServiceSpec], shared: Mapping[int, str], others_routed: bool = False
                       ) -> list[tuple[str, str]]:
    """(service, message) for each spec whose `lb.port` is one of the shared ports of host-routed services
    (`shared`: port → its setting, e.g. {80: "edge.http_port"}) while any service is routed by host name (one of
    `specs`, or `others_routed`: one already on the load balancers that these specs leave as it is)."""
    specs = list(specs)
    if not others_routed and not any(s.lb is not None and s.lb.hosts for s in specs):
        return []
    return [(s.name, f"lb.port {s.lb.port} is the lb nodes' shared port for host names ({shared[s.lb.port]}); "
                     "choose another or route the service by lb.hosts")
            for s in sorted(specs, key=lambda s: s.name)
            if s.lb is not None and s.lb.port is not None and s.lb.port in shared]
