"""Opening the pool's SSH connections: one per node, shared by concurrent first uses; host keys always checked
against the known_hosts files hostkeys.py chooses (passed explicitly, never left to asyncssh), client keys loaded
once, quick failures retried with backoff, a slow failure remembered for a while, keepalive set; on a node that
says `become`, `sudo -n` tried once before the connection is used (a refusal is a BecomeError naming the sudoers
line, remembered like a slow failure); asyncssh's connect errors mapped here onto fleet's error tree
(`raise ... from exc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from fleet.core.errors import AuthError, BecomeError, ConnectError, HostKeyError, SessionError, TransportError
from fleet.core.model import Node
from fleet.core.shell import join
from fleet.transport.command import become_argv, decode, sudo_refused, where
from fleet.transport.hostkeys import HostKeyFiles, host_key_files

# Classic curve25519 first ("^" puts it ahead of asyncssh's default list): the hybrid post-quantum
# exchanges asyncssh would offer first cost extra CPU per connection. `Pool(kex_algs=None)` keeps the
# default order (and then a KexAlgorithms line in ~/.ssh/config applies).
KEX_ALGS = "^curve25519-sha256,curve25519-sha256@libssh.org"
# AES-GCM first: asyncssh's default, chacha20-poly1305, builds a cipher context per packet in Python and
# doubled the controller's CPU per warm command (bench/sim_fanout.py: 0.57 -> 0.29 ms per node).
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"

# Every command gets a deadline unless its caller says otherwise: a node whose sshd or runtime hangs costs
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

NodeKey = tuple[str, str, int, str, tuple[str, ...], str | None, bool, str]


def node_key(node: Node) -> NodeKey:
    """What tells one node's connection from another's: a node renamed or re-addressed gets a new one."""
    return (node.name, node.address, node.port, node.user, node.key_files, node.known_hosts, node.become,
            node.become_user)


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


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


@dataclass(eq=False, kw_only=True)
class Connector:
    """Opens and keeps one connection per node for a Pool (see `Pool` for what each setting means)."""

    connect_timeout: float
    connect_attempts: int
    backoff: float
    kex_algs: str | None
    encryption_algs: str | None
    keepalive_interval: float
    keepalive_count_max: int
    retry_after: float
    # Nodes whose last connect failed slowly, or whose sudo refused: (when, the error). Calls within
    # `retry_after` fail at once with it.
    _failed: dict[NodeKey, tuple[float, TransportError]] = field(default_factory=dict, init=False)
    _conns: dict[NodeKey, asyncio.Task[asyncssh.SSHClientConnection]] = field(default_factory=dict, init=False)
    # Parsed known_hosts, by the files read: (their mtimes, None for a missing one; the parsed list).
    _known_hosts: dict[tuple[str, ...], tuple[tuple[float | None, ...], asyncssh.SSHKnownHosts]] = field(
        default_factory=dict, init=False)
    _keys: dict[tuple[str, ...], Sequence[asyncssh.SSHKeyPair]] = field(default_factory=dict, init=False)

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

    def _known(self, keys: HostKeyFiles) -> asyncssh.SSHKnownHosts:
        """The files as one known_hosts list, parsed once per change (they may list hundreds of nodes); a missing
        file is an error only when the inventory pins it."""
        full = tuple(os.path.expanduser(path) for path in keys.files)
        stamps: list[float | None] = []
        for path in full:
            try:
                stamps.append(os.stat(path).st_mtime)
            except FileNotFoundError:
                if keys.pinned:
                    raise
                stamps.append(None)
        cached = self._known_hosts.get(full)
        if cached is None or cached[0] != tuple(stamps):
            texts = []
            for path, stamp in zip(full, stamps, strict=True):
                if stamp is not None:
                    with open(path, encoding="utf-8") as fh:
                        texts.append(fh.read())
            cached = (tuple(stamps), asyncssh.import_known_hosts("\n".join(texts)))
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

    def _hostkey_message(self, node: Node, keys: HostKeyFiles) -> str:
        # asyncssh reads `addr` as an IP literal; a node named by host name is matched by its name alone.
        addr = node.address if _is_ip(node.address) else ""
        for path in keys.files:
            try:
                one = HostKeyFiles((path,), pinned=True)
                found = self._known(one).match(node.address, addr, node.port if node.port != 22 else None)
            except (OSError, ValueError):
                continue
            if found[0] or found[1]:
                return (
                    f"host key for {node.address} does not match the one pinned in {path} (it changed?); "
                    "refusing to connect"
                )
        return keys.unknown_message(node)

    async def _open(self, node: Node) -> asyncssh.SSHClientConnection:
        options: dict[str, Any] = {
            "username": node.user,
            "connect_timeout": self.connect_timeout,
            "compression_algs": None,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count_max,
        }
        algs = {"kex_algs": self.kex_algs, "encryption_algs": self.encryption_algs}
        options.update({name: chosen for name, chosen in algs.items() if chosen})
        keys = host_key_files(node)
        try:
            known = self._known(keys)
        except (OSError, ValueError) as exc:
            path = getattr(exc, "filename", None) if not keys.pinned else None
            path = path or ", ".join(keys.files)
            raise HostKeyError(
                node.name, f"cannot read known_hosts file {path}: {exc}; refusing to connect"
            ) from exc
        # Always explicit: left to itself, asyncssh follows ~/.ssh/config's UserKnownHostsFile (`none` turns
        # checking off) and reads ~/.ssh/known_hosts only when the config names no file.
        options["known_hosts"] = known
        if node.key_files:
            options["client_keys"] = self._client_keys(node)
        delay = self.backoff
        for attempt in range(1, self.connect_attempts + 1):
            try:
                conn = await asyncssh.connect(node.address, node.port, **options)
                _ack_promptly(conn)
                if node.become:
                    await self._check_sudo(node, conn)
                return conn
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostKeyError(node.name, self._hostkey_message(node, keys)) from exc
            except asyncssh.PermissionDenied as exc:
                raise AuthError(
                    node.name, f"{where(node)}: authentication failed, no offered key was accepted"
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
                raise SessionError(node.name, f"{where(node)}: SSH handshake failed: {exc.reason}") from exc
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def _check_sudo(self, node: Node, conn: asyncssh.SSHClientConnection) -> None:
        """`sudo -n true` as the node's become user, once per connection: a user without passwordless sudo gets
        one clear error (BecomeError naming the sudoers line) before any command runs, not a failure per command."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                done = await conn.run(join([*become_argv(node), "true"]), check=False, stdin=asyncssh.DEVNULL)
        except TimeoutError as exc:
            conn.close()
            raise SessionError(node.name, f"{where(node)}: `sudo -n true` did not finish within "
                                          f"{self.connect_timeout:g}s (sudo looks up the node's host name: is it "
                                          "in the node's /etc/hosts?)") from exc
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            raise SessionError(node.name, f"{where(node)}: `sudo -n true` failed: {exc}") from exc
        if done.exit_status != 0:
            conn.close()
            raise BecomeError(node.name, sudo_refused(node, done.exit_status, decode(done.stderr)))

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

    async def connection(self, node: Node) -> asyncssh.SSHClientConnection:
        """The node's connection, opened on first use; concurrent first uses share one connect."""
        key = node_key(node)
        failed = self._failed.get(key)
        if failed is not None and key not in self._conns:
            age = time.monotonic() - failed[0]
            if age < self.retry_after:
                if isinstance(failed[1], BecomeError):
                    raise BecomeError(node.name, failed[1].message)
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
                lasting = isinstance(exc, BecomeError) or (isinstance(exc, ConnectError) and exc.slow)
                if lasting and isinstance(exc, TransportError) and self.retry_after > 0:
                    self._failed[key] = (time.monotonic(), exc)
            raise
        self._failed.pop(key, None)
        return conn
