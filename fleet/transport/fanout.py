"""Fan-out: one command (or one coroutine per node) on many nodes at once, one result per node.

A bad node never stops the others: its result carries the error; results come back in input order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

from fleet.core.errors import CommandTimeout, RemoteCommandError, TransportError
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.transport.command import Command
from fleet.transport.ssh import Pool

PerNode = Callable[[Node], "Command | Awaitable[CommandResult]"]


async def fanout(
    pool: Pool,
    nodes: Sequence[Node],
    command: Command | PerNode,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> list[CommandResult]:
    """Run `command` on every node; return one `CommandResult` per node, in the order of `nodes`.

    `command` is an argv list or a `Script` run as is, or a callable given the node that returns either
    (a per-node command) or an awaitable `CommandResult` (e.g. `lambda n: pool.run(n, argv_for(n))`).
    `limit` bounds the nodes in flight (the pool's own limit always applies); `timeout` is each node's
    deadline, connecting included, on top of the pool's per-command deadline. Fleet errors raised by a
    callable become that node's result. Nodes never wait for one another: a hung node holds only its own
    slot, until its deadline, so the whole fan-out takes as long as its slowest node's deadline at most.
    """
    results: list[CommandResult | None] = [None] * len(nodes)
    gate = asyncio.Semaphore(limit) if limit else None

    async def one(i: int, node: Node) -> None:
        start = time.monotonic()
        try:
            async with gate or contextlib.nullcontext(), asyncio.timeout(timeout):
                results[i] = await _do(pool, node, command)
        except TimeoutError:
            message = f"no result within {timeout:g}s"
            results[i] = _failed(node, start, message, CommandTimeout(node.name, message))
        except TransportError as exc:
            results[i] = _failed(node, start, exc.message, exc)
        except RemoteCommandError as exc:
            results[i] = CommandResult(node.name, exc.exit_status, "", exc.stderr, time.monotonic() - start)

    async with asyncio.TaskGroup() as tg:
        for i, node in enumerate(nodes):
            tg.create_task(one(i, node))
    return [r for r in results if r is not None]


async def _do(pool: Pool, node: Node, command: Command | PerNode) -> CommandResult:
    if isinstance(command, Script | Sequence):
        return await pool.run(node, command)
    made = command(node)
    if isinstance(made, Script | Sequence):
        return await pool.run(node, made)
    return await made


def _failed(node: Node, start: float, message: str, failure: TransportError) -> CommandResult:
    return CommandResult(node.name, None, "", "", time.monotonic() - start, error=message, failure=failure)
