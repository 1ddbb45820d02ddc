"""Health probes run from the controller: HTTP GET or TCP connect to a replica's node address and port."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .spec import HealthSpec


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    seconds: float


async def probe_http(address: str, port: int, path: str, timeout: float) -> ProbeResult:
    """One HTTP/1.0 GET; ok on a 2xx or 3xx status line."""
    start = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            host = f"[{address}]" if ":" in address else address
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: fleet-health\r\n\r\n".encode())
            await writer.drain()
            status_line = (await reader.readline()).decode("latin-1").strip()
            parts = status_line.split()
            code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
            ok = 200 <= code < 400
            return ProbeResult(ok, f"HTTP {code}" if code else f"bad reply {status_line[:40]!r}",
                               time.monotonic() - start)
    except TimeoutError:
        return ProbeResult(False, f"no answer within {timeout:g}s", time.monotonic() - start)
    except OSError as exc:
        return ProbeResult(False, exc.strerror or type(exc).__name__, time.monotonic() - start)
    finally:
        if writer is not None:
            writer.close()


async def probe_tcp(address: str, port: int, timeout: float) -> ProbeResult:
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(address, port)
        writer.close()
        return ProbeResult(True, "connected", time.monotonic() - start)
    except TimeoutError:
        return ProbeResult(False, f"no connection within {timeout:g}s", time.monotonic() - start)
    except OSError as exc:
        return ProbeResult(False, exc.strerror or type(exc).__name__, time.monotonic() - start)


async def probe(address: str, port: int, health: HealthSpec | None) -> ProbeResult:
    """The service's own check (exec checks run on the node and are probed here as TCP)."""
    if health is not None and health.kind == "http" and health.path:
        return await probe_http(address, port, health.path, health.timeout)
    return await probe_tcp(address, port, health.timeout if health else 2.0)
