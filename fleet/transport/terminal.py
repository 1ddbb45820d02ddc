"""An interactive session (`fleet exec -i`, `-it`): the remote command's stdin fed by the caller and its output
handed back as bytes as they come, on a pseudo-terminal when asked (SSH's pty request: asyncssh's `term_type`
and `term_size`), resized as the local terminal is. No deadline: it lasts as long as the user keeps it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncssh

from fleet.core.errors import SessionError
from fleet.core.model import Node
from fleet.transport.command import Command, render, where
from fleet.transport.ssh import Pool

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Terminal:
    """The pseudo-terminal to ask the node for: the local terminal's type ($TERM) and size."""

    type: str
    columns: int
    rows: int


class Session:
    """One interactive remote command: `write` to its stdin, `read` its output (stderr merged; b"" at the end),
    `wait` for its exit status."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self._proc = proc

    async def read(self) -> bytes:
        return await self._proc.stdout.read(CHUNK)

    def write(self, data: bytes) -> None:
        self._proc.stdin.write(data)

    def write_eof(self) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            self._proc.stdin.write_eof()

    def resize(self, columns: int, rows: int) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            self._proc.change_terminal_size(columns, rows)

    async def wait(self) -> int:
        """The command's exit status (255 when the session ended without one, as ssh reports)."""
        done = await self._proc.wait(check=False)
        status = done.exit_status if done.exit_status is not None else done.returncode
        return status if status is not None and status >= 0 else 255


@contextlib.asynccontextmanager
async def session(pool: Pool, node: Node, command: Command, terminal: Terminal | None) -> AsyncIterator[Session]:
    """Open `command` on `node` over the pool's connection, with a pty of `terminal`'s type and size when given;
    closed on exit. Transport failures raise the mapped fleet error (ConnectError, HostKeyError, SessionError)."""
    conn = await pool.connector.connection(node)
    try:
        proc = await conn.create_process(
            render(command), encoding=None, stdin=asyncssh.PIPE, stderr=asyncssh.STDOUT,
            term_type=terminal.type if terminal else None,
            term_size=(terminal.columns, terminal.rows) if terminal else None)
    except asyncssh.ChannelOpenError as exc:
        raise SessionError(node.name, f"{where(node)}: the node refused to open a session: {exc.reason}") from exc
    except (OSError, asyncssh.Error) as exc:
        raise SessionError(node.name, f"{where(node)}: connection lost: {exc}") from exc
    try:
        yield Session(proc)
    finally:
        proc.close()
