"""A TCP connection made by a node on the controller's behalf, through the node's pooled SSH connection (an SSH
`direct-tcpip` channel): no process on the node, no port listening on the controller. Used to reach a service
that listens on the node's loopback only (its etcd member's client port).

`open_tunnel` returns a `Tunnel` or, when the node's sshd will not open the channel, a `Refused` value saying
whether forwarding is off there (`AllowTcpForwarding no`: OpenSSH 9.2 answers "administratively prohibited",
measured) or nothing listens at the address (OpenSSH answers "connect failed: Connection refused").

`Tunnels` keeps them for the pool: a few per node and address, each lent to one user at a time and taken back
open unless its user closed it, so every client of the pool (a watcher makes a new one each round) shares the
same few channels instead of leaving its own open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import asyncssh
from asyncssh.constants import OPEN_ADMINISTRATIVELY_PROHIBITED

from fleet.core.errors import SessionError
from fleet.core.model import Node
from fleet.transport.command import where


@dataclass(frozen=True)
class Refused:
    """The node's sshd did not open the channel: `prohibited` when forwarding is off there (try another way),
    else the connection to the address failed on the node (nothing listens)."""

    prohibited: bool
    reason: str


class Tunnel:
    """One byte stream to an address on the node. Reads and writes raise `SessionError` when the channel or its
    SSH connection fails; `at_eof()` says the other end closed. `close()` is safe twice."""

    def __init__(self, node: Node, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
        self.node = node
        self._reader = reader
        self._writer = writer
        self.closed = False
        # Lent before (kept open between users): its other end may have closed it meanwhile.
        self.reused = False

    def _failed(self, exc: BaseException) -> SessionError:
        return SessionError(self.node.name, f"{where(self.node)}: tunnel failed: {exc}")

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, asyncssh.Error) as exc:
            raise self._failed(exc) from exc

    async def readuntil(self, separator: bytes) -> bytes:
        return await self._read(self._reader.readuntil(separator))

    async def readexactly(self, n: int) -> bytes:
        return await self._read(self._reader.readexactly(n))

    async def _read(self, reading: Awaitable[bytes]) -> bytes:
        try:
            return await reading
        except asyncio.IncompleteReadError as exc:
            raise SessionError(self.node.name, f"{where(self.node)}: tunnel closed by the other end") from exc
        except (OSError, asyncssh.Error) as exc:
            raise self._failed(exc) from exc

    def at_eof(self) -> bool:
        return self._reader.at_eof() or self._writer.is_closing()

    def close(self) -> None:
        self.closed = True
        self._writer.close()


async def open_tunnel(node: Node, conn: asyncssh.SSHClientConnection, host: str, port: int) -> Tunnel | Refused:
    """A `direct-tcpip` channel on `conn` to `host:port` as the node sees them."""
    try:
        reader, writer = await conn.open_connection(host, port)
    except asyncssh.ChannelOpenError as exc:
        return Refused(exc.code == OPEN_ADMINISTRATIVELY_PROHIBITED, exc.reason or "refused")
    except (OSError, asyncssh.Error) as exc:
        raise SessionError(node.name, f"{where(node)}: connection lost: {exc}") from exc
    return Tunnel(node, reader, writer)


# Tunnels kept per node and address: enough for the lease check, renewals and record reads of a busy run to go
# side by side.
KEPT = 4

Opener = Callable[[], Awaitable[Tunnel | Refused]]


@dataclass
class _Kept:
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(KEPT))
    idle: list[Tunnel] = field(default_factory=list)


class Tunnels:
    """The pool's kept tunnels: `lend(key, open)` yields an idle open one for `key` (its `reused` set), or a new
    one from `open()` (or its `Refused`); at most KEPT lent at once per key. Taken back open unless the user
    closed it (close it on any failure: a half-read answer must not reach the next user)."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, _Kept] = {}

    @contextlib.asynccontextmanager
    async def lend(self, key: Hashable, opener: Opener) -> AsyncIterator[Tunnel | Refused]:
        kept = self._kept.setdefault(key, _Kept())
        async with kept.slots:
            tunnel: Tunnel | Refused | None = None
            while kept.idle and tunnel is None:
                idle = kept.idle.pop()
                if idle.at_eof():
                    idle.close()
                else:
                    idle.reused = True
                    tunnel = idle
            if tunnel is None:
                tunnel = await opener()
            try:
                yield tunnel
            finally:
                if isinstance(tunnel, Tunnel) and not tunnel.closed:
                    if tunnel.at_eof():
                        tunnel.close()
                    else:
                        kept.idle.append(tunnel)

    def close(self) -> None:
        for kept in self._kept.values():
            for tunnel in kept.idle:
                tunnel.close()
            kept.idle.clear()
