"""HTTP/1.1 to an etcd member's JSON gateway through SSH tunnels on the pool (`Pool.tunnel`: a `direct-tcpip`
channel to the member's loopback client port): no process on the node per call, no port on the controller.

`Gateway.send(node, request)` returns what became of one request on one node, as a value:

    Reply       the member answered: HTTP status and body (an error status carries etcd's refusal)
    NoAnswer    no answer: `sent` False when the request certainly never reached etcd (no SSH connection,
                nothing listening), True when it may have (the channel broke or the deadline passed after the
                request went out: a write may still land); `prohibited` when the node's sshd forwards nothing
                (`AllowTcpForwarding no`: use etcdctl there)

A few channels are kept open per node (kept alive between requests, one request at a time on each), so
concurrent calls do not wait on each other; a channel that failed or was closed by the other end is dropped and
the next request opens another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fleet.core.errors import TransportError
from fleet.core.model import Node
from fleet.node import etcd_gateway as G
from fleet.transport import Pool, Refused, Tunnel

# Channels kept per node: enough for the lease check, renewals and record reads of a busy run to go side by side.
CHANNELS = 4


@dataclass(frozen=True)
class Reply:
    status: int
    body: str


@dataclass(frozen=True)
class NoAnswer:
    why: str
    sent: bool
    prohibited: bool = False


@dataclass
class _Node:
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CHANNELS))
    idle: list[Tunnel] = field(default_factory=list)


class Gateway:
    """The gateway of the member on each node's loopback `port`, through `pool`; `timeout` bounds one request
    (the channel's opening included), `timeout_s` is the member's own deadline (`Grpc-Timeout`)."""

    def __init__(self, pool: Pool, port: int, *, timeout: float, timeout_s: int) -> None:
        self.pool = pool
        self.port = port
        self.timeout = timeout
        self.timeout_s = timeout_s
        self._nodes: dict[str, _Node] = {}

    def close(self) -> None:
        """Close the idle channels (their SSH connections stay the pool's)."""
        for state in self._nodes.values():
            for tunnel in state.idle:
                tunnel.close()
            state.idle.clear()

    async def send(self, node: Node, request: G.Request) -> Reply | NoAnswer:
        state = self._nodes.setdefault(node.name, _Node())
        data = G.render(request, port=self.port, timeout_s=self.timeout_s)
        async with state.slots:
            while state.idle:
                tunnel = state.idle.pop()
                if tunnel.at_eof():
                    tunnel.close()
                    continue
                # A kept channel the other end closed while the request was on its way gives no byte back: the
                # request never reached etcd, so it goes again on a new channel.
                answer = await self._exchange(node, tunnel, data, state, reused=True)
                if answer is not None:
                    return answer
                # Unless etcd read it and died before answering: a write is then reported as unknown, not resent.
                fresh = await self._fresh(node, data, state)
                return NoAnswer(fresh.why, sent=True) if isinstance(fresh, NoAnswer) else fresh
            return await self._fresh(node, data, state)

    async def _fresh(self, node: Node, data: bytes, state: _Node) -> Reply | NoAnswer:
        try:
            async with asyncio.timeout(self.timeout):
                opened = await self.pool.tunnel(node, "127.0.0.1", self.port)
        except TimeoutError:
            return NoAnswer(f"no tunnel to 127.0.0.1:{self.port} within {self.timeout:g}s", sent=False)
        except TransportError as exc:
            return NoAnswer(exc.message, sent=False)
        if isinstance(opened, Refused):
            why = (f"sshd forwards no TCP ({opened.reason})" if opened.prohibited
                   else f"etcd not listening on 127.0.0.1:{self.port} ({opened.reason})")
            return NoAnswer(why, sent=False, prohibited=opened.prohibited)
        answer = await self._exchange(node, opened, data, state, reused=False)
        assert answer is not None
        return answer

    async def _exchange(self, node: Node, tunnel: Tunnel, data: bytes, state: _Node,
                        reused: bool) -> Reply | NoAnswer | None:
        """Send one request and read its answer; the channel goes back to `state.idle` when it can be reused.
        None: a reused channel was closed before anything came back (send it again on another)."""
        keep = False
        started = False
        try:
            async with asyncio.timeout(self.timeout):
                await tunnel.write(data)
                raw = await tunnel.readuntil(b"\r\n\r\n")
                started = True
                head = G.parse_head(raw)
                body = await self._body(tunnel, head)
            keep = not head.close
            return Reply(head.status, body.decode("utf-8", "replace"))
        except TimeoutError:
            return NoAnswer(f"no answer from etcd within {self.timeout:g}s", sent=True)
        except TransportError as exc:
            if reused and not started and tunnel.at_eof():
                return None
            return NoAnswer(exc.message, sent=True)
        except (ValueError, UnicodeDecodeError) as exc:
            return NoAnswer(f"unreadable answer from etcd's gateway: {exc}", sent=True)
        finally:
            if keep:
                state.idle.append(tunnel)
            else:
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

