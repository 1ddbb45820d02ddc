"""Ports fleet itself takes on the nodes: pure constants, so that loading a playbook can refuse a clash with them
and the engine binds the same numbers."""

from __future__ import annotations

# HAProxy's own frontend on every lb node (stats page and Prometheus metrics); `fleet.engine.lb` binds it.
STATS_PORT = 8404

# Ports fleet's HAProxy binds on every lb node besides the services' `lb.port`s.
RESERVED_LB_PORTS: dict[int, str] = {STATS_PORT: "HAProxy's stats and metrics frontend"}

# A replica's named container ports besides the routed one (`ports: {http: 80, metrics: 9100}`) get host ports
# derived from its routed host port (which the scheduler picks in 20000-29999, unique on its node): the k-th other
# name, in name order, gets `routed + k * NAMED_PORT_STRIDE` (30000-39999, 40000-49999, 50000-59999). So they are
# unique on the node whenever the routed ones are, and need no second allocation.
NAMED_PORT_STRIDE = 10000
MAX_OTHER_NAMED_PORTS = 3


def named_host_ports(routed_host_port: int, ports: tuple[tuple[str, int], ...], routed: int) -> dict[str, int]:
    """Per named container port (`ports`, name → container port), the host port mapped to it on a replica whose
    routed container port `routed` is on `routed_host_port`."""
    out: dict[str, int] = {}
    k = 0
    for name, container in sorted(ports):
        if container == routed:
            out[name] = routed_host_port
        else:
            k += 1
            out[name] = routed_host_port + k * NAMED_PORT_STRIDE
    return out
