"""Running a driver's `Call` on a node, and choosing a node's runtime driver from its facts.

Every call has a deadline, in seconds from when the node's connection is there (connecting has the pool's own
bound): a node whose sshd or containerd hangs fails that call, by name, and never the others or the command.

    LIST_TIMEOUT    8 s    listings (containers, tasks, images): ~20 ms each on a healthy node; kept under ctr's
                           own 10 s dial timeout so a hung containerd reads "did not answer within 8s"
    CALL_TIMEOUT   30 s    anything else that asks containerd one thing (the default)
    PULL_TIMEOUT  600 s    a registry pull, IMPORT_TIMEOUT 600 s an archive streamed over SSH: both move a whole
                           image at the network's speed (hundreds of MB); the deadline only ends a stalled one
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fleet.core.errors import CommandTimeout, FleetError, TransportError
from fleet.core.model import CommandResult, Node
from fleet.node.facts import NodeFacts
from fleet.node.runtime.base import Call, RuntimeDriver
from fleet.node.runtime.ctr import CtrDriver
from fleet.node.runtime.nerdctl import NerdctlDriver
from fleet.results.containers import LIST_TIMEOUT as LIST_TIMEOUT
from fleet.results.nodes import NO_RUNTIME
from fleet.transport import DEFAULT_COMMAND_TIMEOUT, Pool, SessionError

if TYPE_CHECKING:
    from fleet.engine.nodes import NodeReport

T = TypeVar("T")

CALL_TIMEOUT = DEFAULT_COMMAND_TIMEOUT
PULL_TIMEOUT = 600.0
IMPORT_TIMEOUT = 600.0

def driver_for(node: Node, facts: NodeFacts | None) -> RuntimeDriver:
    """nerdctl where the node has it, else containerd's own ctr (present wherever containerd is)."""
    if facts is not None and facts.runtime == "nerdctl":
        return NerdctlDriver(namespace=node.namespace)
    return CtrDriver(namespace=node.namespace)


def transport_error(node: Node, what: str, result: CommandResult, timeout: float) -> TransportError:
    """The fleet error for a call that could not run to its end: `CommandTimeout` ("… did not answer within
    Ns") when its deadline passed, else the ConnectError/HostKeyError/AuthError/SessionError it met."""
    what = what or "command"
    if isinstance(result.failure, CommandTimeout):
        return CommandTimeout(node.name, f"{what} did not answer within {timeout:g}s")
    kind = type(result.failure) if result.failure is not None else SessionError
    return kind(node.name, f"{what}: {result.error}")


async def perform(pool: Pool, node: Node, call: Call[T], *, timeout: float = CALL_TIMEOUT) -> T:
    """Run the call's command on the node within `timeout` seconds and parse the result.

    Raises a TransportError (CommandTimeout past the deadline) when the command could not run to its end, else
    whatever the call's parser raises (RuntimeCommandError and its kinds) on a failure."""
    result = await pool.run(node, call.command, stdin_path=call.stdin_path, timeout=timeout)
    if result.error is not None:
        raise transport_error(node, call.what, result, timeout)
    return call.parse(result)


def why(node: str, exc: FleetError) -> str:
    """An error's message without the leading node name (for maps and lines already keyed by node)."""
    if isinstance(exc, TransportError):
        return exc.message
    return str(exc).removeprefix(f"{node}: ")


def runtime_not_needed(report: NodeReport) -> bool:
    """A node that is no worker needs no containerd (an lb or record node prepared for its roles only): without
    one it holds no container, and that is no error."""
    return report.status == NO_RUNTIME and not report.node.has_role("worker")


async def on_ready_nodes(pool: Pool, reports: list[NodeReport], call_for: Callable[[RuntimeDriver], Call[T]],
                         *, timeout: float = LIST_TIMEOUT) -> tuple[dict[str, T], dict[str, str]]:
    """Run one driver call on every ready node at once, each within `timeout` seconds: ({node: result},
    {node: why not}). A node that fails, does not answer in time (".. did not answer within Ns") or was not
    ready is reported, never raised; the others' results are not held up by it."""
    ready = [r for r in reports if r.ok]
    errors = {r.node.name: f"{r.status}: {r.reason}" for r in reports if not r.ok and not runtime_not_needed(r)}

    async def one(r: NodeReport) -> T:
        return await perform(pool, r.node, call_for(driver_for(r.node, r.facts)), timeout=timeout)

    results = await asyncio.gather(*(one(r) for r in ready), return_exceptions=True)
    out: dict[str, T] = {}
    for r, res in zip(ready, results, strict=True):
        if isinstance(res, FleetError):
            errors[r.node.name] = why(r.node.name, res)
        elif isinstance(res, BaseException):
            raise res
        else:
            out[r.node.name] = res
    return out, errors
