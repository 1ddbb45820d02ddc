"""Ports fleet itself takes on the nodes: pure constants, so that loading a playbook can refuse a clash with them
and the engine binds the same numbers."""

from __future__ import annotations

# HAProxy's own frontend on every lb node (stats page and Prometheus metrics); `fleet.engine.lb` binds it.
STATS_PORT = 8404

# Ports fleet's HAProxy binds on every lb node besides the services' `lb.port`s.
RESERVED_LB_PORTS: dict[int, str] = {STATS_PORT: "HAProxy's stats and metrics frontend"}
