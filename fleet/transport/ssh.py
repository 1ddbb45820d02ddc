"""The SSH connection pool: one asyncssh connection per node, reused for every command of a run; running a
command there under a deadline and the node's session limit.

The transport is the only package of fleet that imports asyncssh: commands are quoted in command.py, host
keys checked and connects made in connect.py, and asyncssh's errors are mapped onto fleet's error tree
(`raise ... from exc`) where they arise. Streams are in streams.py, moving a file's bytes in pipes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO

import asyncssh

from fleet.core.errors import (
    RemoteCommandError,
    SessionError,
    TransportError,
    _Timeout,
)
from fleet.core.model import CommandResult, Node
from fleet.transport.command import Command, decode, describe, line_for, lost, short, where
from fleet.transport.connect import (
    CIPHERS,
    KEEPALIVE_COUNT_MAX,
    KEEPALIVE_INTERVAL,
    KEX_ALGS,
    RETRY_AFTER,
    Connector,
    NodeKey,
    node_key,
)
from fleet.transport.pipes import feed, spill_to
from fleet.transport.streams import RemoteStream
from fleet.transport.tunnel import Refused, Tunnel, Tunnels, open_tunnel

# Every command gets a deadline unless its caller says otherwise: a node whose sshd or runtime hangs costs
# the run this long at most, never forever. Callers pass shorter ones for listings, longer for transfers.
DEFAULT_COMMAND_TIMEOUT = 30.0
# Pass as `timeout=` for a command that may legitimately run without end (a caller-bounded transfer).
NO_DEADLINE = math.inf


class Pool:
    """Owns one SSH connection per node, opened on first use; `async with Pool() as pool:` closes them all.

    `run()` never raises for a node's problem: the `CommandResult` carries `error` and the `failure` itself.
    `check()` raises the mapped fleet error instead, and `RemoteCommandError` on a non-zero exit.

    `limit` bounds the commands in flight over all nodes, `max_sessions` those on one node (OpenSSH
    refuses more than MaxSessions=10 channels per connection). Quick connect failures (refused, unreachable,
    closed during the handshake: a node restarting) are retried `connect_attempts` times, waiting `backoff`
    seconds, doubled each time; a connect that timed out is not (it already waited `connect_timeout`, and a
    node whose sshd hangs must cost one timeout, not three), nor are host key and authentication failures.
    Host keys are always checked: against `node.known_hosts` when set, else against ~/.ssh/known_hosts and the
    files ~/.ssh/config names for the node; a config that turns checking off for it (UserKnownHostsFile
    none or /dev/null, StrictHostKeyChecking no) is refused with HostKeyError (fleet/transport/hostkeys.py).
    `kex_algs`/`encryption_algs` put cheap algorithms first (see KEX_ALGS, CIPHERS); `None` restores
    asyncssh's defaults and lets ~/.ssh/config's KexAlgorithms/Ciphers apply.

    Deadlines: connecting is bounded by `connect_timeout` per attempt. Every command then has
    `command_timeout` seconds (default 30; a call's `timeout=` overrides it, `NO_DEADLINE` removes it,
    and `command_timeout=None` makes no deadline the pool's default) counted from when it has its
    connection: waiting for one of the node's session slots, opening the session and running all count, so
    a node that stops answering is reported as CommandTimeout (naming node, command and deadline) and
    never holds anyone else up beyond that. `stream()` (for `logs -f`, `exec`) has no deadline on
    purpose; the SSH keepalive (`keepalive_interval`, `keepalive_count_max`; 0 turns it off) closes a
    connection whose peer stopped answering, which ends such streams too.
    """

    def __init__(
        self,
        *,
        limit: int = 64,
        connect_timeout: float = 10.0,
        command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        connect_attempts: int = 3,
        backoff: float = 0.5,
        max_sessions: int = 8,
        kex_algs: str | None = KEX_ALGS,
        encryption_algs: str | None = CIPHERS,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        keepalive_count_max: int = KEEPALIVE_COUNT_MAX,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        if limit < 1 or max_sessions < 1 or connect_attempts < 1 or keepalive_count_max < 1:
            raise ValueError("limit, max_sessions, connect_attempts and keepalive_count_max must be at least 1")
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.limit = limit
        self.command_timeout = command_timeout
        self.max_sessions = max_sessions
        self.connector = Connector(
            connect_timeout=connect_timeout, connect_attempts=connect_attempts, backoff=backoff,
            kex_algs=kex_algs, encryption_algs=encryption_algs, keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max, retry_after=retry_after,
        )
        self._sem = asyncio.Semaphore(limit)
        # OpenSSH's MaxSessions (10 by default) caps the channels open at once on one connection.
        self._slots: dict[NodeKey, asyncio.Semaphore] = {}
        self._tunnels = Tunnels()


    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


    async def close(self) -> None:
        """Close every connection this pool opened (or is opening)."""
        self._tunnels.close()
        await self.connector.close()

    def _slot(self, node: Node) -> asyncio.Semaphore:
        key = node_key(node)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = asyncio.Semaphore(self.max_sessions)
        return slot

    # ---- running -------------------------------------------------------------------------------------------

    async def run(
        self,
        node: Node,
        command: Command,
        *,
        stdin: bytes | str | None = None,
        stdin_path: str | None = None,
        timeout: float | None = None,
        on_progress: Callable[[int], None] | None = None,
        stdout_path: str | None = None,
    ) -> CommandResult:
        """Run one command on a node; node problems come back as a result with `error` set, never raised.

        `stdout_path` writes the command's stdout into that local file as it arrives (the result's stdout
        is then empty; `on_progress(bytes_received)` follows it), for archives bigger than memory.

        `stdin_path` feeds a local file to the command in chunks (never whole in memory), calling
        `on_progress(bytes_sent)` after each; `timeout` overrides the pool's command timeout (`NO_DEADLINE`:
        none). A command past its deadline comes back with a CommandTimeout `failure` and its partial output.
        """
        start = time.monotonic()
        try:
            return await self._execute(node, command, stdin, stdin_path, timeout, on_progress, start,
                                       stdout_path=stdout_path)
        except TransportError as exc:
            out, err = (exc.stdout, exc.stderr) if isinstance(exc, _Timeout) else (b"", b"")
            return CommandResult(
                node=node.name,
                exit_status=None,
                stdout=decode(out),
                stderr=decode(err),
                duration=time.monotonic() - start,
                error=exc.message,
                failure=exc,
            )

    async def check(
        self,
        node: Node,
        command: Command,
        *,
        stdin: bytes | str | None = None,
        stdin_path: str | None = None,
        timeout: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> CommandResult:
        """Like `run()`, but raise: ConnectError, HostKeyError, AuthError, CommandTimeout, SessionError,
        or RemoteCommandError when the command exits non-zero."""
        start = time.monotonic()
        result = await self._execute(node, command, stdin, stdin_path, timeout, on_progress, start)
        if result.exit_status != 0:
            raise RemoteCommandError(node.name, describe(command), result.exit_status, result.stderr)
        return result

    async def _execute(
        self,
        node: Node,
        command: Command,
        stdin: bytes | str | None,
        stdin_path: str | None,
        timeout: float | None,
        on_progress: Callable[[int], None] | None,
        start: float,
        *,
        stdout_path: str | None = None,
    ) -> CommandResult:
        line = line_for(node, command)
        limit = self.command_timeout if timeout is None else timeout
        if limit is not None and math.isinf(limit):
            limit = None
        # Opened before connecting: a missing local file is the caller's error, not the node's.
        with contextlib.ExitStack() as files:
            source = files.enter_context(open(stdin_path, "rb")) if stdin_path else None
            sink = files.enter_context(open(stdout_path, "wb")) if stdout_path else None
            return await self._execute_with(node, command, line, stdin, source, limit, on_progress, start,
                                            sink=sink)

    async def _execute_with(
        self,
        node: Node,
        command: Command,
        line: str,
        stdin: bytes | str | None,
        source: BinaryIO | None,
        limit: float | None,
        on_progress: Callable[[int], None] | None,
        start: float,
        *,
        sink: BinaryIO | None = None,
    ) -> CommandResult:
        async with self._sem:
            conn = await self.connector.connection(node)
            # One deadline for everything after connecting: a free session slot on the node, the session
            # opening (a frozen sshd never confirms it) and the command itself.
            when = None if limit is None else asyncio.get_running_loop().time() + limit
            slot = self._slot(node)
            try:
                async with asyncio.timeout_at(when):
                    await slot.acquire()
            except TimeoutError as exc:
                raise _Timeout(node.name, f"`{short(command)}` did not start within {limit:g}s: all "
                               f"{self.max_sessions} sessions on the node are busy", b"", b"") from exc
            try:
                proc = await open_session(node, conn, command, line, source, stdin, when, limit)
                try:
                    async with asyncio.timeout_at(when):
                        if source:
                            out, err = await feed(proc, source, on_progress)
                        elif sink:
                            out, err = await spill_to(proc, sink, on_progress)
                        else:
                            out, err = await proc.communicate()
                except TimeoutError as exc:
                    out, err = proc.collect_output()
                    raise _Timeout(
                        node.name, f"`{short(command)}` did not finish within {limit:g}s", out, err
                    ) from exc
                except (OSError, asyncssh.Error) as exc:
                    raise SessionError(node.name, f"{where(node)}: session failed: {exc}") from exc
                finally:
                    proc.close()
            finally:
                slot.release()
        if proc.exit_status is None and proc.exit_signal is None:
            raise SessionError(node.name, lost(node, command))
        status = proc.exit_status if proc.exit_status is not None else proc.returncode
        return CommandResult(
            node=node.name,
            exit_status=status,
            stdout=decode(out),
            stderr=decode(err),
            duration=time.monotonic() - start,
        )

    def stream(
        self, node: Node, command: Command, *, stdin_file: str | None = None, merge_stderr: bool = True
    ) -> RemoteStream:
        """Stream a command's output line by line (for `logs -f`, `exec`); see `RemoteStream`.

        A stream has no deadline on purpose (it lasts as long as its reader wants); only opening its session
        is bounded by the pool's command timeout, and the keepalive ends it when the node stops answering."""
        return RemoteStream(self.open_stream, node, command, stdin_file, merge_stderr)

    async def open_stream(self, node: Node, command: Command, line: str, source: BinaryIO | None,
                          merge_stderr: bool) -> asyncssh.SSHClientProcess[bytes]:
        """Open a `RemoteStream`'s session: its connection under the pool's limit (released once connected: a
        stream may last for hours), the session itself by the pool's command timeout."""
        async with self._sem:
            conn = await self.connector.connection(node)
        limit = self.command_timeout
        when = None if limit is None else asyncio.get_running_loop().time() + limit
        return await open_session(node, conn, command, line, source, None, when, limit, merge_stderr)

    def tunnel(self, node: Node, host: str, port: int) -> contextlib.AbstractAsyncContextManager[Tunnel | Refused]:
        """`async with pool.tunnel(node, host, port) as t:` a TCP connection from the node to `host:port` over its
        pooled SSH connection (fleet/transport/tunnel.py), or `Refused`: no process on the node, no session slot
        held. Kept open for the next user unless closed (close it on any failure). Entering raises ConnectError,
        HostKeyError, AuthError, SessionError."""
        async def opener() -> Tunnel | Refused:
            async with self._sem:
                conn = await self.connector.connection(node)
            return await open_tunnel(node, conn, host, port)

        return self._tunnels.lend((node_key(node), host, port), opener)


async def open_session(
    node: Node,
    conn: asyncssh.SSHClientConnection,
    command: Command,
    line: str,
    source: BinaryIO | None,
    stdin: bytes | str | None,
    when: float | None,
    limit: float | None,
    merge_stderr: bool = False,
) -> asyncssh.SSHClientProcess[bytes]:
    """Open a session running `line`, by the absolute deadline `when` (loop time; None: no deadline)."""
    try:
        async with asyncio.timeout_at(when):
            return await conn.create_process(
                line,
                encoding=None,
                stdin=asyncssh.PIPE if source else asyncssh.DEVNULL,
                stderr=asyncssh.STDOUT if merge_stderr else asyncssh.PIPE,
                input=stdin.encode() if isinstance(stdin, str) else stdin,
            )
    except TimeoutError as exc:
        raise _Timeout(node.name, f"`{short(command)}` did not start within {limit:g}s: the node did not "
                       "open a session (sshd not answering)", b"", b"") from exc
    except asyncssh.ChannelOpenError as exc:
        raise SessionError(node.name, _no_session(node, exc)) from exc
    except (OSError, asyncssh.Error) as exc:
        raise SessionError(node.name, f"{where(node)}: connection lost: {exc}") from exc


def _no_session(node: Node, exc: asyncssh.ChannelOpenError) -> str:
    return f"{where(node)}: the node refused to open a session: {exc.reason}"
