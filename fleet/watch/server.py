"""The watcher's side of fleet.watch.client: answers `nodes`, `status` and `ps` with the warm pool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fleet.api import Fleet
from fleet.core.errors import FleetError
from fleet.core.model import Inventory
from fleet.engine.nodes import NodeReport
from fleet.transport import Pool
from fleet.watch.client import dumps, inventory_key, socket_path

Log = Callable[..., None]


async def answer(fleet: Fleet, op: str, args: dict[str, Any], recent: list[NodeReport] | None = None) -> Any:
    """What the one-shot command would compute itself, computed over the watcher's connections. `recent` are
    the node reports of the watcher's last round when it is fresh (at most a couple of rounds old): `nodes`
    returns them and `status` reads the containers and HAProxy now from the nodes they found ready."""
    if op == "nodes":
        return recent if recent is not None else await fleet.nodes(ports=bool(args.get("ports", False)))
    if op == "status":
        return await fleet.status(recent)
    if op == "ps":
        return await fleet.ps(all=bool(args.get("all", False)), timeout=float(args.get("timeout", 8.0)))
    raise ValueError(f"unknown op {op!r}")


@contextlib.asynccontextmanager
async def serving(inventory: Inventory, pool: Pool, log: Log,
                  reply: Callable[[Fleet, str, dict[str, Any], list[NodeReport] | None], Awaitable[Any]] = answer,
                  recent: Callable[[], list[NodeReport] | None] = lambda: None) -> AsyncIterator[Path]:
    """Serve this inventory's socket for the block (`reply` computes each answer, given `recent()`: the
    watcher's fresh node reports, if any); the socket file is removed on the way out."""
    path = socket_path(inventory.path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    me = inventory_key(inventory.path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            if not isinstance(request, dict) or request.get("inventory") != me:
                header: dict[str, Any] = {"ok": False, "error": "this watcher serves another inventory"}
                body = b""
            else:
                result = await reply(Fleet(inventory, pool, command="fleet watch"), str(request.get("op")),
                                      dict(request.get("args") or {}), recent())
                body = dumps(result)
                header = {"ok": True, "size": len(body)}
        except (FleetError, ValueError, TypeError) as exc:
            header, body = {"ok": False, "error": str(exc)}, b""
        try:
            writer.write(json.dumps(header).encode() + b"\n" + body)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(handle, path=str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    log("socket", message="one-shot commands use this watcher's connections", path=str(path))
    try:
        yield path
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await server.wait_closed()
