"""Exec health checks over the transport: builds the `exec_in` that fleet.engine.probes.check runs a command with."""

from __future__ import annotations

import time
from collections.abc import Sequence

from fleet.core.errors import TransportError
from fleet.core.model import Node
from fleet.engine.probes import ExecIn
from fleet.node.runtime.base import RuntimeDriver
from fleet.transport import Pool

# On top of the command's own deadline: SSH and the runtime client starting (a few hundred ms at worst).
EXEC_OVERHEAD = 5.0
# `timeout`'s exit status when it stopped the command: 124 after SIGTERM, 128 + 9 after the SIGKILL that follows.
TIMED_OUT = (124, 137)
KILL_AFTER = 1


def deadline_argv(timeout: float, argv: Sequence[str]) -> list[str]:
    """argv under the node's `timeout`: SIGTERM at the deadline (ctr and nerdctl forward it to the command in
    the container), SIGKILL to the runtime client `KILL_AFTER` s later."""
    if not timeout > 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
    return ["timeout", "-k", str(KILL_AFTER), f"{max(timeout, 0.001):.3f}".rstrip("0").rstrip("."), *argv]


def exec_in(pool: Pool, node: Node, driver: RuntimeDriver, container_id: str) -> ExecIn:
    """A callable running argv inside `container_id` on `node` through the driver's exec, with a deadline.

    It returns the command's exit status; raises TimeoutError when the deadline passed, and TransportError
    when the node could not be reached (the check then fails with that message).
    """

    async def run(argv: list[str], timeout: float) -> int:
        command = driver.exec(container_id, argv).command
        if not isinstance(command, Sequence) or isinstance(command, str):
            raise TypeError(f"{driver.name}: exec must build an argv list")
        start = time.monotonic()
        result = await pool.run(node, deadline_argv(timeout, command), timeout=timeout + EXEC_OVERHEAD)
        if result.error_kind == "timeout":
            raise TimeoutError(f"{node.name}: exec in {container_id} did not finish within {timeout:g}s")
        if result.error is not None or result.exit_status is None:
            raise TransportError(node.name, result.error or f"exec in {container_id} ended without a status")
        if result.exit_status in TIMED_OUT and time.monotonic() - start >= timeout:
            raise TimeoutError(f"{node.name}: exec in {container_id} did not finish within {timeout:g}s")
        return result.exit_status

    return run
