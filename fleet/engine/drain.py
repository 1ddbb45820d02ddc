"""Draining a node: its mark on the fleet around the engine's drain, so that a drain cut short is carried on."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

from fleet.core.errors import DrainError, FleetError, SchedulingError
from fleet.core.nodeops import NodeMark
from fleet.results import RunResult
from fleet.store.etcd import EtcdLease

Mark = Callable[[Callable[[NodeMark], NodeMark]], Awaitable[NodeMark]]


def _cordon_only(m: NodeMark) -> NodeMark:
    return dataclasses.replace(m, cordoned=True, draining=False)


async def drain_node(node: str, lease: EtcdLease, mark: Mark, move: Callable[[], Awaitable[RunResult]]) -> RunResult:
    """Move every replica off `node` (`move`: the engine's drain over reports read with the node draining) and
    leave it cordoned; `mark` changes the node's mark on the fleet, under `lease`, which the caller holds.

    Marked draining on the fleet first (so every controller moves its replicas, should this one stop), then each
    service with a replica there converges to its accepted state through the engine, as reconcile does: its
    replicas there are misplaced and replaced surge first, drained from the load balancers before they stop.
    Then the node is recorded cordoned. DrainError when they cannot all be placed elsewhere (nothing was changed;
    the node is left cordoned with its replicas running); a service that fails to move makes the result not ok,
    and any other failure is raised, also leaving the node cordoned. A drain cut short (the process killed, the
    lease lost) leaves it draining: whoever converges the fleet next carries it on."""
    await mark(lambda m: dataclasses.replace(m, cordoned=True, draining=True))
    try:
        result = await move()
    except SchedulingError as exc:
        await mark(_cordon_only)
        raise DrainError(f"cannot drain {node}: {exc}\n{node} is cordoned; its replicas still run there "
                         f"(`fleet node uncordon {node}` to undo)") from exc
    except FleetError:
        # A drain that failed ends cordoned (run it again to finish); one cut short (the controller killed, the
        # lease lost) stays draining, and the next controller to converge the fleet carries it on.
        if lease.held:
            with contextlib.suppress(FleetError):
                await mark(_cordon_only)
        raise
    await mark(_cordon_only)
    return result
