"""The second way to reach a fleet: through a running `fleet watch`'s warm connections, over a local unix socket
(`ask` on the reading side, `serve` on the watcher's). The façade's Reader uses it before opening a pool.

The socket is `<state dir>/watch-<inventory hash>.sock` (fleet.core.dirs.state_dir: $FLEET_STATE_DIR,
else $XDG_STATE_HOME/fleet, else ~/.local/state/fleet), mode 0600 in a 0700 directory; a watcher serves only the
inventory it runs for. `ask()` returns None whenever no watcher answers for this inventory (no socket, a stale
one, another inventory, another user's socket, an error): the caller then opens its own connections.

Protocol: one request line (JSON: op, inventory, args), one reply line (JSON: ok, error, size), then `size` bytes:
the result as JSON (fleet.core.wire), of the type the op promises (`REPLIES`: list[NodeReport], FleetStatus,
PsResult). Both sides check it against that type: the watcher answers "not ok" rather than send anything else, and
a reply that does not decode (wrong shape, wrong types, not JSON: a pickle) is refused, so the caller reads the
nodes itself. The socket is owned by this user and mode 0600 in a 0700 directory; the data it carries is still
only data, never code.

`await ask(inventory_path, "status")` gives the FleetStatus `Fleet.status()` would, or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from fleet.core import wire
from fleet.core.dirs import state_dir
from fleet.core.errors import FleetError, WireError
from fleet.results import FleetStatus, NodeReport, PsResult

Op = Literal["nodes", "status", "ps"]
ASK_TIMEOUT = 30.0
MAX_REPLY = 64 * 1024 * 1024
# What each op's reply is: the only types the socket carries.
REPLIES: dict[str, Any] = {"nodes": list[NodeReport], "status": FleetStatus, "ps": PsResult}


def dumps(op: str, result: Any) -> bytes:
    """The reply to `op` as JSON; WireError when `result` is not what `op` promises."""
    if op not in REPLIES:
        raise WireError(f"no such op {op!r}")
    return wire.dumps(REPLIES[op], result)


def loads(op: str, body: bytes) -> Any:
    """The reply to `op` from its JSON; WireError (naming where) for anything that is not what `op` promises."""
    if op not in REPLIES:
        raise WireError(f"no such op {op!r}")
    return wire.loads(REPLIES[op], body)


def inventory_key(inventory_path: str) -> str:
    return os.path.realpath(inventory_path)


def socket_path(inventory_path: str) -> Path:
    digest = hashlib.sha256(inventory_key(inventory_path).encode()).hexdigest()[:16]
    return state_dir() / f"watch-{digest}.sock"


def _ours(path: Path) -> bool:
    """A socket this user owns, that nobody else may open."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


async def ask(inventory_path: str | None, op: Op, *, timeout: float = ASK_TIMEOUT, **args: Any) -> Any | None:
    """The watcher's answer to `op` (`nodes`: list[NodeReport]; `status`: FleetStatus; `ps`: PsResult, args
    `all`, `timeout`), or None when no `fleet watch` for this inventory answers on this controller."""
    if inventory_path is None or os.environ.get("FLEET_NO_WATCHER"):
        return None
    path = socket_path(inventory_path)
    if not _ours(path):
        return None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                request = {"op": op, "inventory": inventory_key(inventory_path), "args": args}
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                header = json.loads(await reader.readline())
                if not isinstance(header, dict) or not header.get("ok"):
                    return None
                size = int(header["size"])
                if not 0 <= size <= MAX_REPLY:
                    return None
                return loads(op, await reader.readexactly(size))
            finally:
                writer.close()
    # WireError is a ValueError: a reply of the wrong shape counts as no answer, and the caller reads directly.
    except (OSError, ValueError, KeyError, TypeError, EOFError, TimeoutError, asyncio.IncompleteReadError):
        return None


Log = Callable[..., None]
Reply = Callable[[str, dict[str, Any]], Awaitable[Any]]


@contextlib.asynccontextmanager
async def serve(inventory_path: str, log: Log, reply: Reply) -> AsyncIterator[Path]:
    """Serve this inventory's socket for the block: each request's answer is `reply(op, args)`, sent as JSON (a
    FleetError, ValueError or TypeError it raises, or an answer that is not the op's type, is sent back as "not
    ok"); the socket file is removed on the way out."""
    path = socket_path(inventory_path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    me = inventory_key(inventory_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            if not isinstance(request, dict) or request.get("inventory") != me:
                header: dict[str, Any] = {"ok": False, "error": "this watcher serves another inventory"}
                body = b""
            else:
                op = str(request.get("op"))
                body = dumps(op, await reply(op, dict(request.get("args") or {})))
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
