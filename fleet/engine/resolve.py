"""Node addresses as IP addresses, resolved once per run, for the places that need an IP: HAProxy's `server` lines
and stats bind, and the containers' /etc/hosts. An inventory may name a node by host name (as Ansible's do); SSH
resolves it by itself, and everything else uses what `resolve_nodes` found here.

A name that does not resolve makes its node unreachable for the run, with a reason naming the host, the node and
the inventory file and line; the other nodes go on. Names under `.invalid` never resolve (RFC 6761 §6.4) and
are answered here, without asking DNS.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.core.model import Node, ip_literal

RESOLVE_TIMEOUT = 5.0  # seconds for one host name; all names of a run are looked up at once

# `loop.getaddrinfo(host, port, type=...)`'s shape: a list of (family, type, proto, canonname, sockaddr).
GetAddrInfo = Callable[..., Awaitable[list[tuple[Any, ...]]]]


@dataclass(frozen=True)
class Resolved:
    """Per node name: its IP address, or why it has none."""

    addresses: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def _special(name: str) -> str | None:
    labels = name.rstrip(".").lower().split(".")
    if labels[-1] == "invalid":
        return "a name under .invalid never resolves, RFC 6761"
    return None


async def resolve_address(address: str, port: int = 22, *, timeout: float = RESOLVE_TIMEOUT,
                          getaddrinfo: GetAddrInfo | None = None) -> str:
    """The first IP address `address` resolves to (itself when it is an IP literal); raises LookupError saying why
    not (`socket.gaierror`'s text, the timeout, or RFC 6761's rule)."""
    literal = ip_literal(address)
    if literal is not None:
        return literal
    special = _special(address)
    if special is not None:
        raise LookupError(special)
    lookup = getaddrinfo or asyncio.get_running_loop().getaddrinfo
    try:
        async with asyncio.timeout(timeout):
            infos = await lookup(address, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise LookupError(f"no answer within {timeout:g}s") from None
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise LookupError(why[:1].lower() + why[1:]) from None
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ip_literal(str(sockaddr[0]).split("%", 1)[0])
        if ip is not None:
            return ip
    raise LookupError("no address found")


def unresolved(node: Node, why: str, inventory: str | None = None) -> str:
    """`host name 'db.example.test' does not resolve (…); node db, address in inventory.yaml:12`."""
    where = inventory or "the inventory"
    if inventory and node.source_line is not None:
        where = f"{inventory}:{node.source_line}"
    return f"host name {node.address!r} does not resolve ({why}); node {node.name}, address in {where}"


async def resolve_nodes(nodes: Sequence[Node], *, inventory: str | None = None, timeout: float = RESOLVE_TIMEOUT,
                        getaddrinfo: GetAddrInfo | None = None) -> Resolved:
    """Every node's IP address, host names looked up concurrently (each distinct name once); a node whose name
    does not resolve gets a message naming the host, the node and `inventory` (file:line) instead."""
    names = sorted({n.address for n in nodes if ip_literal(n.address) is None})
    results = await asyncio.gather(*(resolve_address(name, timeout=timeout, getaddrinfo=getaddrinfo)
                                     for name in names), return_exceptions=True)
    found: dict[str, str | BaseException] = dict(zip(names, results, strict=True))
    addresses, errors = {}, {}
    for node in nodes:
        result = ip_literal(node.address) or found[node.address]
        if isinstance(result, LookupError):
            errors[node.name] = unresolved(node, str(result), inventory)
        elif isinstance(result, BaseException):
            raise result
        else:
            addresses[node.name] = result
    return Resolved(addresses, errors)
