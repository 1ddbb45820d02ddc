"""HTTP/1.1 to an etcd member's JSON gateway through SSH tunnels the pool keeps (`Pool.tunnel`: a `direct-tcpip`
channel to the member's loopback client port): no process on the node per call, no port on the controller.

`Gateway.send(node, request)` returns what became of one request on one node, as a value:

    Reply       the member answered: HTTP status and body (an error status carries etcd's refusal)
    NoAnswer    no answer: `sent` False when the request certainly never reached etcd (no SSH connection,
                nothing listening), True when it may have (the channel broke or the deadline passed after the
                request went out: a write may still land); `prohibited` when the node's sshd forwards nothing
                (`AllowTcpForwarding no`: use etcdctl there)

One request at a time on a channel, kept alive between requests; the pool keeps a few channels per node (shared
by every client of the pool), and one that failed is closed so the next request opens another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fleet.core.errors import TransportError
from fleet.core.model import Node
from fleet.node import etcd_gateway as G
from fleet.transport import Pool, Refused, Tunnel


@dataclass(frozen=True)
class Reply:
    status: int
    body: str


@dataclass(frozen=True)
class NoAnswer:
    why: str
    sent: bool
    prohibited: bool = False


class Gateway:
    """The gateway of the member on each node's loopback `port`, through `pool`; `timeout` bounds one request
    (the channel's opening included), `timeout_s` is the member's own deadline (`Grpc-Timeout`)."""

    def __init__(self, pool: Pool, port: int, *, timeout: float, timeout_s: int) -> None:
        self.pool = pool
        self.port = port
        self.timeout = timeout
        self.timeout_s = timeout_s

    async def send(self, node: Node, request: G.Request) -> Reply | NoAnswer:
        data = G.render(request, port=self.port, timeout_s=self.timeout_s)
        # A kept channel the other end closed while idle gives no byte back: the request goes again on another.
        # Unless etcd read it and died before answering: so a write that then gets no answer is `sent` (unknown).
        stale = False
        for _ in range(2):
            out, went = "", False
            try:
                async with asyncio.timeout(self.timeout), self.pool.tunnel(node, "127.0.0.1", self.port) as tunnel:
                    if isinstance(tunnel, Refused):
                        why = (f"sshd forwards no TCP ({tunnel.reason})" if tunnel.prohibited
                               else f"no etcd member listens on 127.0.0.1:{self.port} ({tunnel.reason})")
                        return NoAnswer(why, sent=stale, prohibited=tunnel.prohibited)
                    went = True
                    reply = await self._exchange(tunnel, data)
                if reply is not None:
                    return reply
                stale = True
                continue
            except TimeoutError:
                out = f"no answer from etcd within {self.timeout:g}s"
            except TransportError as exc:
                out = exc.message
            except (ValueError, UnicodeDecodeError) as exc:
                out = f"unreadable answer from etcd's gateway: {exc}"
            return NoAnswer(out, sent=went or stale)
        return NoAnswer("the kept channels were closed by etcd", sent=True)

    async def _exchange(self, tunnel: Tunnel, data: bytes) -> Reply | None:
        """Send one request and read its answer; the tunnel is closed unless the whole answer was read and it may
        be kept. None: a kept tunnel whose other end had closed it (nothing came back)."""
        kept = False
        try:
            try:
                await tunnel.write(data)
                raw = await tunnel.readuntil(b"\r\n\r\n")
            except TransportError:
                if tunnel.reused and tunnel.at_eof():
                    return None
                raise
            head = G.parse_head(raw)
            body = await self._body(tunnel, head)
            kept = not head.close
            return Reply(head.status, body.decode("utf-8", "replace"))
        finally:
            if not kept:
                tunnel.close()

    @staticmethod
    async def _body(tunnel: Tunnel, head: G.Head) -> bytes:
        if not head.chunked:
            return await tunnel.readexactly(head.length or 0)
        parts: list[bytes] = []
        total = 0
        while size := G.chunk_size(await tunnel.readuntil(b"\r\n")):
            total += size
            if total > G.BODY_LIMIT:
                raise ValueError(f"HTTP answer of more than {G.BODY_LIMIT} bytes")
            parts.append(await tunnel.readexactly(size))
            if await tunnel.readexactly(2) != b"\r\n":
                raise ValueError("HTTP chunk not ended by CRLF")
        # Trailers (the gateway sends `Grpc-Trailer-…` after an error), then the blank line.
        while (await tunnel.readuntil(b"\r\n")) != b"\r\n":
            pass
        return b"".join(parts)

