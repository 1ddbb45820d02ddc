"""Moving a session's bytes: a local file fed to its stdin in chunks, its stdout spilled into a local file, its
output collected; each a task owned by the caller, never a whole file in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import BinaryIO

import asyncssh

CHUNK = 256 * 1024


async def feed(
    proc: asyncssh.SSHClientProcess[bytes], source: BinaryIO, on_progress: Callable[[int], None] | None
) -> tuple[bytes, bytes]:
    """Send a local file to the process's stdin in chunks while collecting its output; returns the output."""
    out: list[bytes] = []
    err: list[bytes] = []

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(send_file(proc, source, on_progress))
            tg.create_task(drain_into(proc.stdout, out))
            tg.create_task(drain_into(proc.stderr, err))
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from group
    await proc.wait_closed()
    return b"".join(out), b"".join(err)


async def spill_to(
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
            tg.create_task(drain_into(proc.stderr, err))
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from group
    await proc.wait_closed()
    return b"", b"".join(err)


async def drain_into(reader: asyncssh.SSHReader[bytes], into: list[bytes]) -> None:
    while chunk := await reader.read(CHUNK):
        into.append(chunk)


async def send_file(
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
