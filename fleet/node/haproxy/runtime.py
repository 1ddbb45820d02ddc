"""A server-only config change carried out through HAProxy's runtime API: pure, on fleet's own rendered text.

`server_changes(old, new)` compares two configs written by `render`. When they differ only in servers of
backends both have (added, removed, weighted, put in or out of maint), it returns the admin-socket commands
that take the running worker from `old` to `new`; the file is then rewritten without a reload, and a later
reload of it (with the server state file) gives the same servers, weights and states (a server added to a
backend with sticky sessions gets its cookie by `enable dynamic-cookie backend`). Anything else (a new or
removed backend, ports, TLS, timeouts, health settings, a server's address or check options) returns None:
that needs a reload.

Server names are the replica ids and are unique in their backend, and HAProxy matches the state file to the
config's servers by backend and server name, so a server added at runtime (which takes the next free id) is
the same server after a reload that numbers the config's servers in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.node.haproxy.render import (
    check_name,
    del_server,
    enable_dynamic_cookie,
    set_server_state,
    set_server_weight,
)

_BACKEND = re.compile(r"^backend (\S+)$")
_SECTION = re.compile(r"^[a-z]")
_SERVER = re.compile(r"^    server (\S+) (.+?) weight (\d+)( disabled)?$")
_DYNAMIC_COOKIE = re.compile(r"^    cookie \S+ .* dynamic$")


@dataclass(frozen=True)
class ServerLine:
    """One `server` line of a backend: `args` is everything before `weight` (address and check options)."""

    backend: str
    name: str
    args: str
    weight: int
    disabled: bool


@dataclass(frozen=True)
class ConfigServers:
    """A rendered config split in two: every line but the servers (`skeleton`), and the servers by
    (backend, name)."""

    skeleton: tuple[str, ...]
    servers: dict[tuple[str, str], ServerLine]


def split_servers(text: str) -> ConfigServers:
    """The skeleton and servers of a config written by `render` (a `server` line outside a backend stays in
    the skeleton, so it can only be changed by a reload)."""
    skeleton: list[str] = []
    servers: dict[tuple[str, str], ServerLine] = {}
    backend: str | None = None
    for line in text.splitlines():
        if _SECTION.match(line):
            m = _BACKEND.match(line)
            backend = m[1] if m else None
        s = _SERVER.match(line) if backend is not None else None
        if s is None or backend is None:
            skeleton.append(line)
            continue
        servers[(backend, s[1])] = ServerLine(backend, s[1], s[2], int(s[3]), s[4] is not None)
    return ConfigServers(tuple(skeleton), servers)


def _srv(backend: str, name: str) -> str:
    return f"{check_name(backend, 'backend')}/{check_name(name, 'server')}"


def add_commands(line: ServerLine) -> list[str]:
    """Add the server as its config line says: a runtime server starts in maint and unchecked, so its check
    is enabled and then (unless the line says `disabled`) the server itself, at full health as a server of the
    config starts (enabled, it is UP but one failed check from DOWN; fleet routes a replica once it is ready)."""
    srv = _srv(line.backend, line.name)
    checked = " check " in f"{line.args} "
    cmds = [f"add server {srv} {line.args} weight {line.weight}"]
    if checked:
        cmds.append(f"enable health {srv}")
    if not line.disabled:
        cmds.append(f"enable server {srv}")
        if checked:
            cmds.append(f"set server {srv} health up")
    return cmds


def server_changes(old: str, new: str) -> list[str] | None:
    """The runtime commands that make a worker running `old` serve as `new` would, or None when the change
    needs a reload (see the module docstring). Removals come first (a removed and an added server never share
    a name: replica ids are not reused), then changes, then additions, each in name order."""
    before, after = split_servers(old), split_servers(new)
    if before.skeleton != after.skeleton:
        return None
    cmds: list[str] = []
    for key in sorted(before.servers.keys() - after.servers.keys()):
        cmds += del_server(*key)
    for key in sorted(before.servers.keys() & after.servers.keys()):
        was, now = before.servers[key], after.servers[key]
        if was.args != now.args:
            return None  # a new address or check options: HAProxy 2.6 cannot change the checks at runtime
        if was.weight != now.weight:
            cmds.append(set_server_weight(*key, now.weight))
            if was.weight == 0 and not now.disabled:
                # Weight 0 is how a config says drain: back to a weight, the server is ready again.
                cmds.append(set_server_state(*key, "ready"))
        if was.disabled != now.disabled:
            cmds.append(set_server_state(*key, "maint" if now.disabled else "ready"))
    added = sorted(after.servers.keys() - before.servers.keys())
    for key in added:
        cmds += add_commands(after.servers[key])
    sticky = _sticky_backends(after.skeleton)
    cmds += [enable_dynamic_cookie(b) for b in sorted({b for b, _ in added} & sticky)]
    return cmds


def _sticky_backends(skeleton: tuple[str, ...]) -> set[str]:
    """The backends whose servers get a dynamic cookie (`lb.sticky: cookie`)."""
    out: set[str] = set()
    backend: str | None = None
    for line in skeleton:
        if _SECTION.match(line):
            m = _BACKEND.match(line)
            backend = m[1] if m else None
        elif backend is not None and _DYNAMIC_COOKIE.match(line):
            out.add(backend)
    return out
