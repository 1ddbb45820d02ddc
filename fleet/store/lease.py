"""What every lease of the fleet shares (the fleet's lease and the watcher's leadership, both etcd leases:
fleet.store.etcd.EtcdLease): who a holder is, how long its command line may be, and how a lease ends."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
from collections.abc import Awaitable, Callable

from fleet.core.errors import LeaseInfo
from fleet.results.records import NodeLease

__all__ = ["COMMAND_LIMIT", "LeaseInfo", "NodeLease", "default_holder", "end_renewal"]

COMMAND_LIMIT = 60


async def end_renewal(renewer: asyncio.Task[None] | None, release: Callable[[], Awaitable[None]]) -> None:
    """A lease's exit: its renewal task stopped, then the lease given back, shielded so that a run cancelled
    (Ctrl-C) still releases it rather than leaving it to expire."""
    if renewer is not None:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
    await asyncio.shield(release())


def default_holder() -> str:
    """`user@host` of this controller process."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"{user}@{os.uname().nodename}"
