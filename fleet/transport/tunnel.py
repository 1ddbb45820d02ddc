"""A TCP connection made by a node on the controller's behalf, through the node's pooled SSH connection (an SSH
`direct-tcpip` channel): no process on the node, no port listening on the controller. Used to reach a service
that listens on the node's loopback only (its etcd member's client port).

`open_tunnel` returns a `Tunnel` or, when the node's sshd will not open the channel, a `Refused` value saying
whether forwarding is off there (`AllowTcpForwarding no`: OpenSSH 9.2 answers "administratively prohibited",
measured) or nothing listens at the address (OpenSSH answers "connect failed: Connection refused").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

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
