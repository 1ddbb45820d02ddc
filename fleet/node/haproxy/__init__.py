"""HAProxy in front of the fleet: config rendering, runtime API command builders and parsers (all pure)."""

from fleet.node.haproxy.render import LbHealth, LbServer, LbService, backend_name, frontend_name, lb_service, render

__all__ = ["LbHealth", "LbServer", "LbService", "backend_name", "frontend_name", "lb_service", "render"]
