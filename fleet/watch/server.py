"""The watcher's side of the one read path: answers `nodes`, `status` and `ps` on the local socket
(fleet.transport.warm) through the façade's Reader, over the watcher's warm pool and its last round's reports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fleet.api import Fleet, Reader, serve_reads
from fleet.results import NodeReport

Log = Callable[..., None]


async def answer(fleet: Fleet, op: str, args: dict[str, Any], recent: list[NodeReport] | None = None) -> Any:
    """What the one-shot command would compute itself, computed over the watcher's connections. `recent` are
    the node reports of the watcher's last round when it is fresh (at most a couple of rounds old): `nodes`
    returns them and `status` reads the containers and HAProxy now from the nodes they found ready."""
    return await Reader(fleet.inventory.path, fleet, ask=None, recent=lambda: recent).answer(op, args)


@contextlib.asynccontextmanager
async def serving(fleet: Fleet, log: Log,
                  reply: Callable[[Fleet, str, dict[str, Any], list[NodeReport] | None], Awaitable[Any]] = answer,
                  recent: Callable[[], list[NodeReport] | None] = lambda: None) -> AsyncIterator[Path]:
    """Serve `fleet`'s inventory on its socket for the block: each request gets `reply`, over a fresh Fleet on
    `fleet`'s pool, given `recent()`: the watcher's fresh node reports, if any. The socket file is removed on the
    way out."""

    async def one(op: str, args: dict[str, Any]) -> Any:
        return await reply(fleet.fresh(command="fleet watch"), op, args, recent())

    async with serve_reads(fleet.inventory.path, log, one) as path:
        yield path
