"""The HAProxy driver: applies configs and runtime changes to HAProxy on an lb node, over the transport only.

    LbError                 HAProxy on a node did not do what was asked (carries the node name)
    ├── LbConfigError       `haproxy -c` refused the config; `alerts` are its reasons; nothing was touched
    ├── LbReloadError       the process could not start, or a reload failed (the old worker keeps serving)
    └── LbRuntimeError      an admin-socket command was refused (`command`, `reply`)
Transport failures raise the transport's own errors (ConnectError, CommandTimeout, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.core.errors import (  # noqa: F401  (defined in the error tree)
    AuthError,
    CommandTimeout,
    ConnectError,
    FleetError,
    HostKeyError,
    LbConfigError,
    LbError,
    LbReloadError,
    LbRuntimeError,
    RemoteCommandError,
    ScriptOutputError,
    StatsParseError,
    TransportError,
)
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.node.haproxy.render import (
    LbHealth,
    LbServer,
    LbService,
    LbState,
    reply_error,
    set_server_state,
    set_server_weight,
    show_servers_state,
    show_stat,
)
from fleet.node.haproxy.render import add_server as add_server_commands
from fleet.node.haproxy.render import del_server as del_server_commands
from fleet.node.haproxy.render import render as render_config
from fleet.node.haproxy.runtime import server_changes
from fleet.node.haproxy.scripts import (
    LbPaths,
    ScriptOutput,
    alert_lines,
    apply_script,
    parse_script_output,
    parse_session,
    runtime_input,
    runtime_script,
    servers_script,
    status_script,
    stop_script,
)
from fleet.node.haproxy.stats import (
    ProcTable,
    ServerState,
    StatRow,
    parse_servers_state,
    parse_show_proc,
    parse_show_stat,
)
from fleet.node.paths import DEFAULT
from fleet.transport import Pool

APPLY_TIMEOUT = 60.0
RUNTIME_TIMEOUT = 30.0


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` or `update` did: `changed` when the config file differed; then exactly one of started,
    reloaded, or `updated` (a server-only change made through the runtime API, with no reload)."""

    changed: bool
    started: bool
    reloaded: bool
    master_pid: int | None = None
    workers: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    updated: bool = False


@dataclass(frozen=True)
class LbStatus:
    """`reloads` is the master's own count of reloads since it started (`show proc`)."""

    running: bool
    master_pid: int | None
    workers: tuple[int, ...]
    failed_reloads: int
    old_workers: tuple[int, ...] = ()
    reloads: int = 0


_TRANSPORT_ERRORS: dict[str, type[TransportError]] = {
    "connect": ConnectError, "hostkey": HostKeyError, "auth": AuthError, "timeout": CommandTimeout,
}


class LbNode:
    """HAProxy in master-worker mode on one lb node, all its files under `base_dir` on that node; it runs as
    `user` in its jail (fleet.node.haproxy.jail), never as root."""

    def __init__(self, pool: Pool, node: Node, base_dir: str = DEFAULT.haproxy_dir,
                 haproxy: str = "haproxy", user: str = "haproxy") -> None:
        self.pool = pool
        self.node = node
        self.paths = LbPaths(base_dir, haproxy, user)
        # The config this object last saw in place on the node (None: not known yet), which a server-only change
        # is computed from; and what it did, for tests and benches: starts, reloads, runtime-only updates.
        self.loaded: str | None = None
        # Held while HAProxy starts or reloads: a runtime change sent then reaches the worker being replaced and
        # not its successor, so runtime changes wait for it (and only for it).
        self.reloading = asyncio.Lock()
        self.starts = 0
        self.reloads = 0
        self.updates = 0

    @property
    def admin_socket(self) -> str:
        return self.paths.admin_socket

    @property
    def state_file(self) -> str:
        return self.paths.state_file

    def render(self, services: Sequence[LbService], stats_bind: tuple[str, int] | None = None) -> str:
        """The config for these services with this node's socket and state file paths."""
        return render_config(services, admin_socket=self.admin_socket, state_file=self.state_file,
                             stats_bind=stats_bind)

    async def _run(self, script: Script, stdin: str | None, timeout: float) -> CommandResult:
        result = await self.pool.run(self.node, script, stdin=stdin, timeout=timeout)
        if result.error is not None:
            raise _TRANSPORT_ERRORS.get(result.error_kind or "", TransportError)(self.node.name, result.error)
        if result.exit_status != 0:
            raise RemoteCommandError(self.node.name, f"<script {script.name}>", result.exit_status, result.stderr)
        return result

    async def _report(self, script: Script, stdin: str | None = None, timeout: float = RUNTIME_TIMEOUT
                      ) -> ScriptOutput:
        result = await self._run(script, stdin, timeout)
        try:
            return parse_script_output(result.stdout)
        except ScriptOutputError as exc:
            raise LbError(self.node.name, f"{exc} (stderr: {result.stderr.strip()[-200:]!r})") from exc

    def _proc(self, text: str, what: str) -> ProcTable:
        try:
            return parse_show_proc(text)
        except StatsParseError as exc:
            raise LbError(self.node.name, f"{what}: {exc}") from exc

    async def apply(self, config_text: str) -> ApplyResult:
        """Write, validate and load a config in one round trip: start HAProxy if it is not running, else reload
        it hitlessly; an identical config does nothing. Raises LbConfigError or LbReloadError."""
        self.loaded = None
        async with self.reloading:
            out = await self._report(apply_script(self.paths, len(config_text.encode())), config_text,
                                     APPLY_TIMEOUT)
        name = self.node.name
        warnings = tuple(out.section("warning").splitlines())
        log = out.section("log")
        if out.result == "unchanged":
            self.loaded = config_text
            return ApplyResult(False, False, False)
        if out.result == "invalid":
            raise LbConfigError(name, alert_lines(out.section("check")), out.section("check"))
        if out.result == "started":
            self.starts += 1
            self.loaded = config_text
            after = self._proc(out.section("after"), "after start")
            return ApplyResult(True, True, False, after.master.pid, after.worker_pids, warnings)
        if out.result == "reloaded":
            self.reloads += 1
            before = self._proc(out.section("before"), "before reload")
            after = self._proc(out.section("after"), "after reload")
            if after.failed_reloads != before.failed_reloads or after.worker_pids == before.worker_pids:
                raise LbReloadError(name, "the reload was not confirmed by `show proc`", log, alert_lines(log))
            self.loaded = config_text
            return ApplyResult(True, False, True, after.master.pid, after.worker_pids, warnings)
        messages = {
            "start-failed": "haproxy exited during start",
            "start-timeout": "haproxy did not report `Loading success` within 10 s of start",
            "reload-failed": "the reload failed; the previous worker keeps serving the previous config",
            "reload-timeout": "no new worker within 15 s of the reload",
            "no-master": "haproxy runs but its master socket does not answer",
            "locked": "another apply holds the lock on this node",
            "missing": f"HAProxy is not installed (fleet node prepare {name} installs it)",
            "no-user": f"HAProxy's user {self.paths.user!r} does not exist on {name} (the haproxy package creates "
                       "it; HAProxy never runs as root)",
            "no-jail": "cannot build HAProxy's jail, missing: " + (out.section("missing").strip() or "?"),
        }
        raise LbReloadError(name, messages.get(out.result, f"unexpected apply result {out.result!r}"), log,
                            alert_lines(log))

    async def update(self, config_text: str) -> ApplyResult:
        """Bring HAProxy to this config with as little as it takes: nothing when it is in place; when only
        servers of existing backends change, their runtime commands and the file rewritten with no reload (its
        server lines parsed by HAProxy itself, see SERVERS), so that a later reload gives the same servers;
        anything else through `apply` (start or reload). Raises as `apply` does."""
        for _ in range(2):
            known = self.loaded
            commands = server_changes(known, config_text) if known is not None else []
            if commands is None:
                break
            old = hashlib.sha256(known.encode()).hexdigest() if known is not None else ""
            data = config_text.encode()
            out = await self._report(servers_script(self.paths, old, commands, len(data)), config_text,
                                     APPLY_TIMEOUT)
            if out.result == "stale":
                # Written by another run (or not yet known here): diff against what is really there, once.
                current = out.section("current")
                self.loaded = current + "\n" if current else None
                continue
            if out.result in ("updated", "unchanged"):
                self.loaded = config_text
                self.updates += out.result == "updated"
                return ApplyResult(out.result == "updated", False, False, updated=out.result == "updated")
            if out.result == "locked":
                raise LbReloadError(self.node.name, "another apply holds the lock on this node")
            # not-running: a start; old-master (a root master an older fleet started): its replacement; refused (a
            # server with connections left cannot be deleted): a reload, which takes the running worker to the
            # config as a whole.
            break
        return await self.apply(config_text)

    async def runtime(self, commands: list[str]) -> list[str]:
        """Send admin-socket commands in one round trip (one session of the socket); returns the replies in order.
        A refused command (see render.reply_error; `show`/`get` replies are data) raises LbRuntimeError."""
        if not commands:
            return []
        result = await self._run(runtime_script(self.paths), runtime_input(commands), RUNTIME_TIMEOUT)
        try:
            replies = parse_session(commands, result.stdout)
        except ScriptOutputError as exc:
            raise LbError(self.node.name, str(exc)) from exc
        for reply in replies:
            if reply.rc != 0:
                raise LbRuntimeError(self.node.name, reply.command,
                                     f"admin socket {self.admin_socket} unreachable: {reply.text.strip()}")
            query = reply.command.startswith(("show ", "get "))
            error = reply_error(reply.text)
            if error is not None and (not query or reply.text.startswith(("Can't find", "No such", "Unknown"))):
                raise LbRuntimeError(self.node.name, reply.command, error)
        return [reply.text for reply in replies]

    async def stats(self) -> list[StatRow]:
        """Every server's row of `show stat`."""
        text = (await self.runtime([show_stat()]))[0]
        try:
            return parse_show_stat(text)
        except StatsParseError as exc:
            raise LbRuntimeError(self.node.name, show_stat(), str(exc)) from exc

    async def servers_state(self, backend: str | None = None) -> list[ServerState]:
        command = show_servers_state(backend)
        text = (await self.runtime([command]))[0]
        try:
            return parse_servers_state(text)
        except StatsParseError as exc:
            raise LbRuntimeError(self.node.name, command, str(exc)) from exc

    async def set_state(self, backend: str, server: str, state: LbState) -> None:
        await self.runtime([set_server_state(backend, server, state)])

    async def set_weight(self, backend: str, server: str, weight: int) -> None:
        await self.runtime([set_server_weight(backend, server, weight)])

    async def add_server(self, backend: str, server: LbServer, health: LbHealth) -> None:
        """Runtime-only: gone at the next reload unless the config lists it too."""
        await self.runtime(add_server_commands(backend, server, health))

    async def del_server(self, backend: str, server: str) -> None:
        await self.runtime(del_server_commands(backend, server))

    async def status(self) -> LbStatus:
        out = await self._report(status_script(self.paths))
        if out.result != "running":
            return LbStatus(False, None, (), 0)
        pid = int(out.values["pid"])
        proc_text = out.section("proc")
        if not proc_text.strip():
            return LbStatus(True, pid, (), 0)
        proc = self._proc(proc_text, "status")
        return LbStatus(True, pid, proc.worker_pids, proc.failed_reloads, tuple(w.pid for w in proc.old_workers),
                        proc.master.reloads)

    async def stop(self) -> bool:
        """Stop the master (and its workers) by the PID in the pid file; False when it was not running."""
        out = await self._report(stop_script(self.paths))
        if out.result == "stuck":
            raise LbError(self.node.name, f"haproxy processes survived SIGKILL: {out.section('pids').split()}")
        return out.result != "not-running"
