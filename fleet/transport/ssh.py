"""The SSH connection pool: one asyncssh connection per node, reused for every command of a run.

The only module of fleet that imports asyncssh: commands are quoted here, host keys are checked here,
and asyncssh's errors are mapped here onto fleet's error tree (`raise ... from exc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, BinaryIO, TypeAlias

import asyncssh

from fleet.core.errors import (  # noqa: F401  (defined in the error tree)
    AuthError,
    CommandTimeout,
    ConnectError,
    HostKeyError,
    RemoteCommandError,
    SessionError,
    TransportError,
    _Timeout,
)
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script, join

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
CHUNK = 256 * 1024

# Classic curve25519 first ("^" puts it ahead of asyncssh's default list): the hybrid post-quantum
# exchanges asyncssh would offer first cost extra CPU per connection. `Pool(kex_algs=None)` keeps the
# default order (and then a KexAlgorithms line in ~/.ssh/config applies).
KEX_ALGS = "^curve25519-sha256,curve25519-sha256@libssh.org"
# AES-GCM first: asyncssh's default, chacha20-poly1305, builds a cipher context per packet in Python and
# doubled the controller's CPU per warm command (bench/sim_fanout.py: 0.57 -> 0.29 ms per node).
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"

# Every command gets a deadline unless its caller says otherwise: a node whose sshd or runtime hangs costs
# the run this long at most, never forever. Callers pass shorter ones for listings, longer for transfers.
DEFAULT_COMMAND_TIMEOUT = 30.0
# Pass as `timeout=` for a command that may legitimately run without end (a caller-bounded transfer).
NO_DEADLINE = math.inf
# An open connection that receives nothing for KEEPALIVE_INTERVAL seconds is probed; after KEEPALIVE_COUNT_MAX
# unanswered probes it is closed: a dead or frozen peer is noticed within (count + 1) x interval = 20 s, also
# under a stream that has no deadline (`logs -f`, `exec`), and the next command reconnects instead of hanging.
KEEPALIVE_INTERVAL = 5.0
KEEPALIVE_COUNT_MAX = 3
# A node that could not be reached in time (a connect timeout, no route to it) is not tried again for this
# long: one command that talks to it many times (facts, lease, records, the load balancer) pays one slow failed
# connect, not one per call. A refused connect (sshd restarting) costs milliseconds and is always retried. A long-lived
# controller (fleet watch) reaches it again after this.
RETRY_AFTER = 10.0
SLOW_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})


Command: TypeAlias = "Sequence[str] | Script"


def render(command: Command) -> str:
    """Quote a command for the remote shell; a bare string is refused so nothing reaches it unquoted."""
    if isinstance(command, Script):
        return command.render()
    if isinstance(command, str):
        raise TypeError("a command is a list of arguments or a Script, not a string")
    return join(command)


def describe(command: Command) -> list[str] | str:
    """How a command is named in errors: the argv, or the script's name."""
    return f"<script {command.name}>" if isinstance(command, Script) else list(command)


_Key = tuple[str, str, int, str, tuple[str, ...], str | None]


def _key(node: Node) -> _Key:
    return (node.name, node.address, node.port, node.user, node.key_files, node.known_hosts)


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _where(node: Node) -> str:
    return f"{node.user}@{node.address}:{node.port}"


def _ack_promptly(conn: asyncssh.SSHClientConnection) -> None:
    """ACK every read at once (Linux TCP_QUICKACK, re-armed on each read).

    sshd writes a non-interactive session's replies with Nagle on, so its second small packet waits for the
    ACK of the first, which the client delays by up to ~40 ms: on the lab a fresh connection's first command
    took 45-50 ms instead of 3-4 ms in most runs. Acknowledging promptly removes that wait.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    sock = conn.get_extra_info("socket")
    if quickack is None or sock is None:
        return
    received = conn.data_received

    def data_received(data: bytes, datatype: Any = None) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        received(data, datatype)

    # asyncio looks the method up on the protocol instance at every read, so this wraps each one.
    setattr(conn, "data_received", data_received)  # noqa: B010
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Pool:
    """Owns one SSH connection per node, opened on first use; `async with Pool() as pool:` closes them all.

    `run()` never raises for a node's problem: the `CommandResult` carries `error` and the `failure` itself.
    `check()` raises the mapped fleet error instead, and `RemoteCommandError` on a non-zero exit.

    `limit` bounds the commands in flight over all nodes, `max_sessions` those on one node (OpenSSH
    refuses more than MaxSessions=10 channels per connection). Quick connect failures (refused, unreachable,
    closed during the handshake: a node restarting) are retried `connect_attempts` times, waiting `backoff`
    seconds, doubled each time; a connect that timed out is not (it already waited `connect_timeout`, and a
    node whose sshd hangs must cost one timeout, not three), nor are host key and authentication failures.
    Host keys are always checked: against `node.known_hosts` when set, else as OpenSSH would
    (~/.ssh/known_hosts, ~/.ssh/config).
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
        self.command_timeout = command_timeout
        self.connect_attempts = connect_attempts
        self.backoff = backoff
        self.max_sessions = max_sessions
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.retry_after = retry_after
        # Nodes whose last connect failed: (when, the error). Calls within `retry_after` fail at once with it.
        self._failed: dict[_Key, tuple[float, ConnectError]] = {}
        self._algs = {"kex_algs": kex_algs, "encryption_algs": encryption_algs}
        self._sem = asyncio.Semaphore(limit)
        self._conns: dict[_Key, asyncio.Task[asyncssh.SSHClientConnection]] = {}
        # OpenSSH's MaxSessions (10 by default) caps the channels open at once on one connection.
        self._slots: dict[_Key, asyncio.Semaphore] = {}
        self._known_hosts: dict[str, tuple[float, asyncssh.SSHKnownHosts]] = {}
        self._keys: dict[tuple[str, ...], Sequence[asyncssh.SSHKeyPair]] = {}

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection this pool opened (or is opening)."""
        tasks = list(self._conns.values())
        self._conns.clear()
        opening = [task for task in tasks if not task.done()]
        for task in opening:
            task.cancel()
        if opening:
            await asyncio.wait(opening)
        conns = [task.result() for task in tasks if not task.cancelled() and task.exception() is None]
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed()

    # ---- connecting ----------------------------------------------------------------------------------------

    def _pinned(self, path: str) -> asyncssh.SSHKnownHosts:
        """The parsed known_hosts file, parsed once per change (it may list hundreds of nodes)."""
        full = os.path.expanduser(path)
        mtime = os.stat(full).st_mtime
        cached = self._known_hosts.get(full)
        if cached is None or cached[0] != mtime:
            cached = (mtime, asyncssh.read_known_hosts(full))
            self._known_hosts[full] = cached
        return cached[1]

    def _client_keys(self, node: Node) -> Sequence[asyncssh.SSHKeyPair]:
        keys = self._keys.get(node.key_files)
        if keys is None:
            paths = [os.path.expanduser(p) for p in node.key_files]
            try:
                keys = self._keys[node.key_files] = asyncssh.load_keypairs(paths)
            except (OSError, asyncssh.KeyImportError) as exc:
                raise AuthError(node.name, f"cannot load key file(s) {', '.join(paths)}: {exc}") from exc
        return keys

    def _hostkey_message(self, node: Node) -> str:
        path = node.known_hosts or DEFAULT_KNOWN_HOSTS
        try:
            known = self._pinned(path)
            # asyncssh reads `addr` as an IP literal; a node named by host name is matched by its name alone.
            addr = node.address if _is_ip(node.address) else ""
            found = known.match(node.address, addr, node.port if node.port != 22 else None)
            pinned = bool(found[0] or found[1])
        except (OSError, ValueError):
            pinned = False
        if pinned:
            return (
                f"host key for {node.address} does not match the one pinned in {path} (it changed?); "
                "refusing to connect"
            )
        return (
            f"host key for {node.address} (port {node.port}) is not in {path}; refusing to connect "
            "(check its fingerprint, then add it to that file)"
        )

    async def _open(self, node: Node) -> asyncssh.SSHClientConnection:
        options: dict[str, Any] = {
            "username": node.user,
            "connect_timeout": self.connect_timeout,
            "compression_algs": None,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count_max,
        }
        options.update({name: algs for name, algs in self._algs.items() if algs})
        if node.known_hosts:
            try:
                options["known_hosts"] = self._pinned(node.known_hosts)
            except (OSError, ValueError) as exc:
                raise HostKeyError(
                    node.name, f"cannot read known_hosts file {node.known_hosts}: {exc}; refusing to connect"
                ) from exc
        if node.key_files:
            options["client_keys"] = self._client_keys(node)
        delay = self.backoff
        for attempt in range(1, self.connect_attempts + 1):
            try:
                conn = await asyncssh.connect(node.address, node.port, **options)
                _ack_promptly(conn)
                return conn
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostKeyError(node.name, self._hostkey_message(node)) from exc
            except asyncssh.PermissionDenied as exc:
                raise AuthError(
                    node.name, f"{_where(node)}: authentication failed, no offered key was accepted"
                ) from exc
            except (OSError, asyncssh.ConnectionLost) as exc:
                # A timeout already waited its fill; no route to the host (ARP got no answer: the machine or
                # its link is down) took seconds too. Neither is a node restarting: not retried.
                slow = isinstance(exc, TimeoutError) or getattr(exc, "errno", None) in SLOW_ERRNOS
                if attempt == self.connect_attempts or slow:
                    error = ConnectError(node.name, self._connect_message(node, exc))
                    error.slow = slow
                    raise error from exc
            except asyncssh.Error as exc:
                raise SessionError(node.name, f"{_where(node)}: SSH handshake failed: {exc.reason}") from exc
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _connect_message(self, node: Node, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            why = f"timed out after {self.connect_timeout:g}s"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(exc, asyncssh.ConnectionLost):
            why = f"connection closed during the handshake ({exc.reason})"
        elif isinstance(exc, OSError) and exc.strerror:
            why = exc.strerror[0].lower() + exc.strerror[1:]
        else:
            why = str(exc) or type(exc).__name__
        retried = self.connect_attempts > 1 and not isinstance(exc, TimeoutError) \
            and getattr(exc, "errno", None) not in SLOW_ERRNOS
        tries = f" (after {self.connect_attempts} attempts)" if retried else ""
        return f"cannot connect to {node.address}:{node.port}: {why}{tries}"

    async def _connection(self, node: Node) -> asyncssh.SSHClientConnection:
        """The node's connection, opened on first use; concurrent first uses share one connect."""
        key = _key(node)
        failed = self._failed.get(key)
        if failed is not None and key not in self._conns:
            age = time.monotonic() - failed[0]
            if age < self.retry_after:
                raise ConnectError(node.name, f"{failed[1].message} ({age:.0f}s ago; retried "
                                              f"{self.retry_after:g}s after the failure)")
        task = self._conns.get(key)
        if task is not None and task.done():
            if not task.cancelled() and task.exception() is None:
                conn = task.result()
                if not conn.is_closed():
                    return conn
            del self._conns[key]
            task = None
        if task is None:
            task = asyncio.create_task(self._open(node))
            task.add_done_callback(_consume)
            self._conns[key] = task
        try:
            conn = await asyncio.shield(task)
        except Exception as exc:
            if self._conns.get(key) is task:
                del self._conns[key]
                if isinstance(exc, ConnectError) and exc.slow and self.retry_after > 0:
                    self._failed[key] = (time.monotonic(), exc)
            raise
        self._failed.pop(key, None)
        return conn

    def _slot(self, node: Node) -> asyncio.Semaphore:
        key = _key(node)
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
                stdout=_decode(out),
                stderr=_decode(err),
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
        line = render(command)
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
            conn = await self._connection(node)
            # One deadline for everything after connecting: a free session slot on the node, the session
            # opening (a frozen sshd never confirms it) and the command itself.
            when = None if limit is None else asyncio.get_running_loop().time() + limit
            slot = self._slot(node)
            try:
                async with asyncio.timeout_at(when):
                    await slot.acquire()
            except TimeoutError as exc:
                raise _Timeout(node.name, f"`{_short(command)}` did not start within {limit:g}s: all "
                               f"{self.max_sessions} sessions on the node are busy", b"", b"") from exc
            try:
                proc = await self._open_session(node, conn, command, line, source, stdin, when, limit)
                try:
                    async with asyncio.timeout_at(when):
                        if source:
                            out, err = await _feed(proc, source, on_progress)
                        elif sink:
                            out, err = await _spill(proc, sink, on_progress)
                        else:
                            out, err = await proc.communicate()
                except TimeoutError as exc:
                    out, err = proc.collect_output()
                    raise _Timeout(
                        node.name, f"`{_short(command)}` did not finish within {limit:g}s", out, err
                    ) from exc
                except (OSError, asyncssh.Error) as exc:
                    raise SessionError(node.name, f"{_where(node)}: session failed: {exc}") from exc
                finally:
                    proc.close()
            finally:
                slot.release()
        if proc.exit_status is None and proc.exit_signal is None:
            raise SessionError(node.name, _lost(node, command))
        status = proc.exit_status if proc.exit_status is not None else proc.returncode
        return CommandResult(
            node=node.name,
            exit_status=status,
            stdout=_decode(out),
            stderr=_decode(err),
            duration=time.monotonic() - start,
        )

    async def _open_session(
        self,
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
            raise _Timeout(node.name, f"`{_short(command)}` did not start within {limit:g}s: the node did not "
                           "open a session (sshd not answering)", b"", b"") from exc
        except asyncssh.ChannelOpenError as exc:
            raise SessionError(node.name, _no_session(node, exc)) from exc
        except (OSError, asyncssh.Error) as exc:
            raise SessionError(node.name, f"{_where(node)}: connection lost: {exc}") from exc

    def stream(
        self, node: Node, command: Command, *, stdin_file: str | None = None, merge_stderr: bool = True
    ) -> RemoteStream:
        """Stream a command's output line by line (for `logs -f`, `exec`); see `RemoteStream`.

        A stream has no deadline on purpose (it lasts as long as its reader wants); only opening its session
        is bounded by the pool's command timeout, and the keepalive ends it when the node stops answering."""
        return RemoteStream(self, node, command, stdin_file, merge_stderr)


def _no_session(node: Node, exc: asyncssh.ChannelOpenError) -> str:
    return f"{_where(node)}: the node refused to open a session: {exc.reason}"


def _lost(node: Node, command: Command) -> str:
    return f"{_where(node)}: connection lost before `{_short(command)}` exited"


def _short(command: Command) -> str:
    text = command.name if isinstance(command, Script) else " ".join(command)
    return text if len(text) <= 80 else text[:77] + "..."


async def _feed(
    proc: asyncssh.SSHClientProcess[bytes], source: BinaryIO, on_progress: Callable[[int], None] | None
) -> tuple[bytes, bytes]:
    """Send a local file to the process's stdin in chunks while collecting its output; returns the output."""
    out: list[bytes] = []
    err: list[bytes] = []

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_send_file(proc, source, on_progress))
            tg.create_task(_drain_into(proc.stdout, out))
            tg.create_task(_drain_into(proc.stderr, err))
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from group
    await proc.wait_closed()
    return b"".join(out), b"".join(err)


class RemoteStream:
    """A remote command's output as an async iterator of lines (newline stripped).

    Use as `async with pool.stream(node, argv) as lines: async for line in lines: ...`; leaving the
    block closes the channel. After the last line, `exit_status` and `result` are set. Transport
    failures raise the mapped fleet error (ConnectError, HostKeyError, AuthError, SessionError).
    """

    def __init__(
        self, pool: Pool, node: Node, command: Command, stdin_file: str | None, merge_stderr: bool
    ) -> None:
        self._pool = pool
        self.node = node
        self.command = command
        self._stdin_file = stdin_file
        self._merge = merge_stderr
        self._proc: asyncssh.SSHClientProcess[bytes] | None = None
        self._start = time.monotonic()
        self.exit_status: int | None = None
        self.stderr = ""
        self.result: CommandResult | None = None

    async def __aenter__(self) -> RemoteStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (the remote command gets EOF/hangup); safe to call twice."""
        if self._proc is not None:
            self._proc.close()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        node = self.node
        line = render(self.command)
        with contextlib.ExitStack() as files:
            source = files.enter_context(open(self._stdin_file, "rb")) if self._stdin_file else None
            async for text in self._lines_with(node, line, source):
                yield text

    async def _lines_with(self, node: Node, line: str, source: BinaryIO | None) -> AsyncIterator[str]:
        pool = self._pool
        async with pool._sem:
            conn = await pool._connection(node)
        limit = pool.command_timeout
        when = None if limit is None else asyncio.get_running_loop().time() + limit
        proc = await pool._open_session(node, conn, self.command, line, source, None, when, limit, self._merge)
        self._proc = proc
        err: list[bytes] = []
        # Helpers are plain tasks owned by this generator, not a TaskGroup: a TaskGroup spanning a
        # `yield` would cancel the consumer's task when a helper fails.
        helpers: list[asyncio.Task[None]] = []
        if source:
            helpers.append(asyncio.create_task(_send_file(proc, source, None)))
        if not self._merge:
            helpers.append(asyncio.create_task(_drain_into(proc.stderr, err)))
        try:
            try:
                while raw := await proc.stdout.readline():
                    yield _decode(raw).removesuffix("\n")
                for helper in helpers:
                    await helper
                await proc.wait_closed()
            except (OSError, asyncssh.Error) as exc:
                raise SessionError(node.name, f"{_where(node)}: session failed: {exc}") from exc
        finally:
            proc.close()
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(BaseException):
                    await helper
        if proc.exit_status is None and proc.exit_signal is None:
            raise SessionError(node.name, _lost(node, self.command))
        self.exit_status = proc.exit_status if proc.exit_status is not None else proc.returncode
        self.stderr = _decode(b"".join(err))
        self.result = CommandResult(
            node=node.name,
            exit_status=self.exit_status,
            stdout="",
            stderr=self.stderr,
            duration=time.monotonic() - self._start,
        )


async def _spill(
    proc: asyncssh.SSHClientProcess[bytes], sink: BinaryIO, on_progress: Callable[[int], None] | None
) -> tuple[bytes, bytes]:
    """Write the process's stdout into a local file in chunks while collecting its stderr; returns (b"", stderr)."""
    err: list[bytes] = []

    async def spill() -> None:
        total = 0
        while chunk := await proc.stdout.read(CHUNK):
            sink.write(chunk)
            total += len(chunk)
            if on_progress is not None:
                on_progress(total)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(spill())
            tg.create_task(_drain_into(proc.stderr, err))
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from group
    await proc.wait_closed()
    return b"", b"".join(err)


async def _drain_into(reader: asyncssh.SSHReader[bytes], into: list[bytes]) -> None:
    while chunk := await reader.read(CHUNK):
        into.append(chunk)


async def _send_file(
    proc: asyncssh.SSHClientProcess[bytes], source: BinaryIO, on_progress: Callable[[int], None] | None
) -> None:
    sent = 0
    # Read off the event loop: a cold disk read must not stall every other node's commands.
    while chunk := await asyncio.to_thread(source.read, CHUNK):
        proc.stdin.write(chunk)
        try:
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # the command stopped reading; its exit status tells why
        sent += len(chunk)
        if on_progress is not None:
            on_progress(sent)
    proc.stdin.write_eof()
