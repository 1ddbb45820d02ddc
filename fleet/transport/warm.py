"""The second way to reach a fleet: through a running `fleet watch`'s warm connections, over a local unix socket
(`ask` on the reading side, `serve` on the watcher's). The façade's Reader uses it before opening a pool.

The socket is `<state dir>/watch-<inventory hash>.sock` (fleet.core.dirs.state_dir: $FLEET_STATE_DIR,
else $XDG_STATE_HOME/fleet, else ~/.local/state/fleet), mode 0600 in a 0700 directory; a watcher serves only the
inventory it runs for. `ask()` returns None whenever no watcher answers for this inventory (no socket, a stale
one, another inventory, another user's socket, an error): the caller then opens its own connections.

Protocol: one request line (JSON: op, inventory, args), one reply line (JSON: ok, error, size), then `size` bytes:
the result as pickle (NodeReport, FleetStatus, PsResult are plain frozen dataclasses; their read-only mappings
travel as dicts and come back read-only, see `dumps`). The bytes come only from a
socket owned by this user in this user's own 0600 state directory, so they are as trusted as the user's files.

`await ask(inventory_path, "status")` gives the FleetStatus `Fleet.status()` would, or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import hashlib
import io
import json
import os
import pickle
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from fleet.core.dirs import state_dir
from fleet.core.errors import FleetError

Op = Literal["nodes", "status", "ps"]
ASK_TIMEOUT = 30.0
MAX_REPLY = 64 * 1024 * 1024


def read_only(items: dict[Any, Any]) -> Mapping[Any, Any]:
    """A read-only view of `items`: how a pickled mapping proxy is rebuilt."""
    return MappingProxyType(items)


def dumps(result: Any) -> bytes:
    """`result` pickled for the socket. The frozen dataclasses keep their mappings as mapping proxies, which
    pickle refuses; they are written as `read_only(dict)` instead."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: lambda m: (read_only, (dict(m),))}
    pickler.dump(result)
    return out.getvalue()


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
                return pickle.loads(await reader.readexactly(size))
            finally:
                writer.close()
    except (OSError, ValueError, KeyError, TypeError, EOFError, TimeoutError, asyncio.IncompleteReadError,
            pickle.UnpicklingError, AttributeError, ImportError):
        return None


Log = Callable[..., None]
Reply = Callable[[str, dict[str, Any]], Awaitable[Any]]


@contextlib.asynccontextmanager
async def serve(inventory_path: str, log: Log, reply: Reply) -> AsyncIterator[Path]:
    """Serve this inventory's socket for the block: each request's answer is `reply(op, args)` (a FleetError,
    ValueError or TypeError it raises is sent back as "not ok"); the socket file is removed on the way out."""
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
                body = dumps(await reply(str(request.get("op")), dict(request.get("args") or {})))
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
