"""Test tooling that drives a real HAProxy by hand (start, check, reload, read): what fleet itself does through
fleet.node.haproxy.scripts on a node, kept here because only the tests call it."""

from __future__ import annotations

import re

from fleet.core.errors import StatsParseError
from fleet.node.haproxy.render import check_file
from fleet.node.haproxy.stats import StatRow


def master_reload() -> str:
    """Prints nothing in 2.6 and closes the connection; confirm with `show proc` (new worker, failed unchanged)."""
    return "reload"


def master_show_proc() -> str:
    return "show proc"



def check_config_argv(config: str, haproxy: str = "haproxy") -> list[str]:
    """`haproxy -c`: rc 0 valid (even with warnings), 1 invalid."""
    return [haproxy, "-c", "-f", check_file(config, "config")]


def start_argv(config: str, master_socket: str, pid_file: str, haproxy: str = "haproxy") -> list[str]:
    """Master-worker mode with a master CLI socket; the pid file holds the master's PID. Runs in foreground."""
    return [haproxy, "-W", "-S", check_file(master_socket, "master_socket"), "-f", check_file(config, "config"),
            "-p", check_file(pid_file, "pid_file")]


def socket_argv(socket_path: str) -> list[str]:
    """Send stdin to a UNIX CLI socket with socat and print the reply."""
    return ["socat", "-t", "5", "stdio", f"unix-connect:{check_file(socket_path, 'socket')}"]


def server_rows(rows: list[StatRow]) -> dict[tuple[str, str], StatRow]:
    """Servers only, keyed by (backend, server)."""
    return {(r.proxy, r.name): r for r in rows if r.kind == "server"}


def parse_get_weight(text: str) -> tuple[int, int]:
    """`7 (initial 3)` → (7, 3)."""
    m = re.match(r"^\s*(\d+) \(initial (\d+)\)\s*$", text)
    if not m:
        raise StatsParseError(f"not `get weight` output: {text.strip()[:80]!r}")
    return int(m[1]), int(m[2])
