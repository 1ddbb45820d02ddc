"""Real asyncssh servers on 127.0.0.1 (port 0) for transport tests and the fan-out benchmark: no mocks.

`SSHFarm` starts N servers, each with its own generated host key, accepting one generated client key,
and writes a known_hosts file pinning every server; `farm.nodes` are ready-made `Node` values.
Handlers: "shell" runs each command with `/bin/sh -c` in a subprocess (as sshd would), "ok" answers
`ok` in-process without a subprocess (cheap enough to simulate hundreds of nodes).
Run as a script (`python tests/sshserver.py --count 500 --dir D`) it serves until its stdin closes,
printing one JSON line with the node list once ready, so a benchmark can keep servers out of its process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.constants import OPEN_ADMINISTRATIVELY_PROHIBITED
from helpers import free_port

from fleet.core.model import Node

Handler = Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]
CHUNK = 64 * 1024


@dataclass
class SimServer:
    """One listening server; `connections` counts the SSH connections it accepted."""

    name: str
    port: int
    host_key: asyncssh.SSHKey
    acceptor: asyncssh.SSHAcceptor | None = None
    connections: int = 0
    open_conns: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    commands: list[str] = field(default_factory=list)
    # TCP forwarding (direct-tcpip) as sshd's default `AllowTcpForwarding yes`; False answers as OpenSSH 9.2 does
    # with `AllowTcpForwarding no` (measured: "administratively prohibited", reason "open failed").
    forwarding: bool = True
    tunnels: int = 0


class _Counting(asyncssh.SSHServer):
    def __init__(self, server: SimServer) -> None:
        self._server = server
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._server.connections += 1
        self._server.open_conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._server.open_conns.discard(self._conn)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        if not self._server.forwarding:
            raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed")
        self._server.tunnels += 1
        return True  # asyncssh connects to dest_host:dest_port itself, as sshd would


async def _pump(src: Any, dst: Any) -> None:
    with contextlib.suppress(OSError, asyncssh.Error):
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()


async def _pump_stdin(process: asyncssh.SSHServerProcess[bytes], sink: asyncio.StreamWriter) -> None:
    try:
        await _pump(process.stdin, sink)
    finally:
        with contextlib.suppress(OSError):
            sink.close()


async def shell_handler(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run the command with /bin/sh -c, as sshd does; kill it when the client closes the channel."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        process.command or "",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    feed = asyncio.create_task(_pump_stdin(process, proc.stdin))
    work = asyncio.create_task(_finish(proc, process))
    closed = asyncio.create_task(process.channel.wait_closed())
    try:
        await asyncio.wait({work, closed}, return_when=asyncio.FIRST_COMPLETED)
        if work.done() and not closed.done():
            rc = work.result()
            process.exit(rc if rc >= 0 else 128 - rc)
    finally:
        # Kill the whole group: a grandchild (`sleep` under sh) would keep the pipes open.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for task in (feed, work, closed):
            task.cancel()
        for task in (feed, work, closed):
            with contextlib.suppress(BaseException):
                await task
        await proc.wait()


async def _finish(proc: asyncio.subprocess.Process, process: asyncssh.SSHServerProcess[bytes]) -> int:
    await asyncio.gather(_pump(proc.stdout, process.stdout), _pump(proc.stderr, process.stderr))
    return await proc.wait()


async def ok_handler(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Answer `ok` in-process: a node as cheap as possible, to simulate hundreds."""
    process.stdout.write(b"ok\n")
    process.exit(0)


HANDLERS: dict[str, Handler] = {"shell": shell_handler, "ok": ok_handler}


class SSHFarm:
    """N real SSH servers on loopback, a client key they accept, and a known_hosts file pinning them."""

    def __init__(self, directory: Path | str, handler: str | Handler = "shell") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.handler = HANDLERS[handler] if isinstance(handler, str) else handler
        self.client_key_path = self.dir / "client_key"
        self.known_hosts_path = self.dir / "known_hosts"
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key.write_private_key(str(self.client_key_path))
        os.chmod(self.client_key_path, 0o600)
        self._authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        self.servers: dict[str, SimServer] = {}
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> SSHFarm:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, count: int, prefix: str = "n") -> list[Node]:
        """Start `count` servers concurrently; returns their nodes."""
        names = [f"{prefix}{i + 1}" for i in range(len(self.servers), len(self.servers) + count)]
        await asyncio.gather(*(self.add(name) for name in names))
        return [self.node(name) for name in names]

    async def add(self, name: str, port: int = 0, listen: bool = True) -> Node:
        """Add a server; with `listen=False` only its port is reserved (a node that is down, for now)."""
        if port == 0 and not listen:
            port = free_port()
        server = SimServer(name, port, asyncssh.generate_private_key("ssh-ed25519"))
        self.servers[name] = server
        if listen:
            await self.listen(name)  # on port 0 the kernel picks a free port: no race with other adds
        self.write_known_hosts()
        return self.node(name)

    async def listen(self, name: str, new_host_key: bool = False) -> None:
        """(Re)start a server on its port; `new_host_key` gives it a new key without updating known_hosts."""
        server = self.servers[name]
        if new_host_key:
            server.host_key = asyncssh.generate_private_key("ssh-ed25519")
        handler = self.handler

        async def tracked(process: asyncssh.SSHServerProcess[bytes]) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            server.commands.append(process.command or "")
            try:
                await handler(process)
            finally:
                self._handlers.discard(task)

        server.acceptor = await asyncssh.create_server(
            lambda: _Counting(server),
            "127.0.0.1",
            server.port,
            server_host_keys=[server.host_key],
            authorized_client_keys=self._authorized,
            process_factory=tracked,
            encoding=None,
            allow_scp=False,
            reuse_address=True,
        )
        server.port = server.acceptor.get_port()

    async def stop(self, name: str) -> None:
        """Stop one server and drop its connections (the node goes down)."""
        server = self.servers[name]
        conns = list(server.open_conns)
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed()
        if server.acceptor is not None:
            server.acceptor.close()
            await server.acceptor.wait_closed()
            server.acceptor = None

    def write_known_hosts(self) -> None:
        lines = [
            f"[127.0.0.1]:{s.port} {s.host_key.export_public_key().decode().split()[0]} "
            f"{s.host_key.export_public_key().decode().split()[1]}"
            for s in self.servers.values()
        ]
        self.known_hosts_path.write_text("\n".join(lines) + "\n")

    def node(self, name: str, **overrides: Any) -> Node:
        base = Node(
            name=name,
            address="127.0.0.1",
            port=self.servers[name].port,
            user="fleet",
            key_files=(str(self.client_key_path),),
            known_hosts=str(self.known_hosts_path),
        )
        return replace(base, **overrides) if overrides else base

    @property
    def nodes(self) -> list[Node]:
        return [self.node(name) for name in self.servers]

    async def close(self) -> None:
        for name in self.servers:
            await self.stop(name)
        pending = list(self._handlers)
        if pending:
            await asyncio.wait(pending, timeout=5)


async def _serve(count: int, directory: str, handler: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # stdin closed (or any input): stop
    async with SSHFarm(directory, handler) as farm:
        nodes = await farm.start(count)
        print(json.dumps({"nodes": [{"name": n.name, "port": n.port} for n in nodes],
                          "known_hosts": str(farm.known_hosts_path),
                          "client_key": str(farm.client_key_path)}), flush=True)
        await stop.wait()


def main() -> None:
    import resource

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="ok")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_serve(args.count, args.dir, args.handler))


if __name__ == "__main__":
    main()
