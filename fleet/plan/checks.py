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
    """(service, message) for each spec whose `lb.port` (or an `lb.ports` port) HAProxy could not bind on the lb
    nodes.

    `listening`: per lb node, the TCP ports something listens on (node facts, `NodeFacts.listening`);
    `owned`: per service, the ports fleet's HAProxy already serves for it (its frontends now). A port a spec's
    own frontend already serves is fine. A port another service's frontend serves is fine only when that service
    is among `specs` and moves off it (one reload hands it over); otherwise it is taken by fleet's HAProxy for that
    service. Any other listener on an lb node (sshd, a stray process, a replica of an lb node that is also a
    worker) takes it on that node. Messages come in the order of the service names.
    """
    chosen = {s.name: {port for _, port in s.lb.bind_ports()} if s.lb is not None else set() for s in specs}
    holders: dict[int, list[str]] = {}
    for service, ports in owned.items():
        for port in ports:
            holders.setdefault(port, []).append(service)
    out = []
    for spec in sorted(specs, key=lambda s: s.name):
        for field, port in spec.lb.bind_ports() if spec.lb is not None else ():
            if (problem := _port_problem(spec.name, field, port, chosen, holders, listening, owned)) is not None:
                out.append((spec.name, problem))
    return out


def _port_problem(service: str, field: str, port: int, chosen: Mapping[str, Set[int]],
                  holders: Mapping[int, list[str]], listening: Mapping[str, Set[int]],
                  owned: Mapping[str, Set[int]]) -> str | None:
    if port in RESERVED_LB_PORTS:
        return f"{field} {port} is fleet's own on the lb nodes ({RESERVED_LB_PORTS[port]})"
    if port in owned.get(service, ()):
        return None
    others = sorted(h for h in holders.get(port, ()) if h != service and port in chosen.get(h, {port}))
    if others:
        why = "not in these playbooks" if others[0] not in chosen else f"which keeps lb port {port}"
        return f"{field} {port} is already served by fleet's HAProxy for service {others[0]!r} ({why})"
    nodes = sorted(node for node, ports in listening.items() if port in ports)
    if nodes and port not in holders:
        return f"{field} {port} is already in use on {', '.join(nodes)} (not by fleet's HAProxy)"
    return None


def edge_port_problems(specs: Iterable[ServiceSpec], shared: Mapping[int, str], others_routed: bool = False
                       ) -> list[tuple[str, str]]:
    """(service, message) for each spec whose `lb.port` is one of the shared ports of host-routed services
    (`shared`: port → its setting, e.g. {80: "edge.http_port"}) while any service is routed by host name (one of
    `specs`, or `others_routed`: one already on the load balancers that these specs leave as it is)."""
    specs = list(specs)
    if not others_routed and not any(s.lb is not None and s.lb.hosts for s in specs):
        return []
    return [(s.name, f"{field} {port} is the lb nodes' shared port for host names ({shared[port]}); "
                     "choose another or route the service by lb.hosts")
            for s in sorted(specs, key=lambda s: s.name) if s.lb is not None
            for field, port in s.lb.bind_ports() if port in shared]
