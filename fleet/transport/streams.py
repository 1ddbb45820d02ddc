"""A remote command's output read line by line as it comes (`logs -f`, `exec`): no deadline, its session opened
by the pool, its helpers owned by the reading generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import BinaryIO, TypeAlias

import asyncssh

from fleet.core.errors import SessionError
from fleet.core.model import CommandResult, Node
from fleet.transport.command import Command, decode, line_for, lost, where
from fleet.transport.pipes import drain_into, send_file

# (node, command, its rendered line, local stdin file, merge stderr) -> the open session: `Pool.open_stream`.
Opener: TypeAlias = Callable[[Node, Command, str, BinaryIO | None, bool],
                             Awaitable[asyncssh.SSHClientProcess[bytes]]]


class RemoteStream:
    """A remote command's output as an async iterator of lines (newline stripped).

    Use as `async with pool.stream(node, argv) as lines: async for line in lines: ...`; leaving the
    block closes the channel. After the last line, `exit_status` and `result` are set. Transport
    failures raise the mapped fleet error (ConnectError, HostKeyError, AuthError, SessionError).
    """

    def __init__(
        self, opener: Opener, node: Node, command: Command, stdin_file: str | None, merge_stderr: bool
    ) -> None:
        self._opener = opener
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
        line = line_for(node, self.command)
        with contextlib.ExitStack() as files:
            source = files.enter_context(open(self._stdin_file, "rb")) if self._stdin_file else None
            async for text in self._lines_with(node, line, source):
                yield text

    async def _lines_with(self, node: Node, line: str, source: BinaryIO | None) -> AsyncIterator[str]:
        proc = await self._opener(node, self.command, line, source, self._merge)
        self._proc = proc
        err: list[bytes] = []
        # Helpers are plain tasks owned by this generator, not a TaskGroup: a TaskGroup spanning a
        # `yield` would cancel the consumer's task when a helper fails.
        helpers: list[asyncio.Task[None]] = []
        if source:
            helpers.append(asyncio.create_task(send_file(proc, source, None)))
        if not self._merge:
            helpers.append(asyncio.create_task(drain_into(proc.stderr, err)))
        try:
            try:
                while raw := await proc.stdout.readline():
                    yield decode(raw).removesuffix("\n")
                for helper in helpers:
                    await helper
                await proc.wait_closed()
            except (OSError, asyncssh.Error) as exc:
                raise SessionError(node.name, f"{where(node)}: session failed: {exc}") from exc
        finally:
            proc.close()
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(BaseException):
                    await helper
        if proc.exit_status is None and proc.exit_signal is None:
            raise SessionError(node.name, lost(node, self.command))
        self.exit_status = proc.exit_status if proc.exit_status is not None else proc.returncode
        self.stderr = decode(b"".join(err))
        self.result = CommandResult(
            node=node.name,
            exit_status=self.exit_status,
            stdout="",
            stderr=self.stderr,
            duration=time.monotonic() - self._start,
        )
