"""Health probes run from the controller: one `check` of a replica (HTTP, TCP, or a command run inside it), and
`observe_health`, which probes every `interval` until the judge (fleet.plan.healthjudge) decides.

The rules (status range, request bytes, deadlines) are the ones HAProxy applies; see fleet.plan.healthjudge. The
transport stays outside: an exec check runs through the `exec_in` callable the engine builds
(fleet.engine.health.exec_in).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fleet.config.spec import HealthSpec
from fleet.core.errors import FleetError
from fleet.plan.healthjudge import (
    Observation,
    Probe,
    Verdict,
    connect_deadline,
    http_request,
    http_status_ok,
    judge,
    parse_status_line,
)

# Runs argv inside the replica's container with a deadline (seconds) and returns its exit status; raises
# TimeoutError past the deadline and FleetError when the node cannot be reached.
ExecIn = Callable[[list[str], float], Awaitable[int]]
MAX_HEADER_LINES = 100
NO_CHECK = "running (no health check)"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    seconds: float


def _failed(exc: OSError) -> str:
    # asyncio words a refused connect as "Connect call failed (ADDR, PORT)": name the errno instead.
    return os.strerror(exc.errno) if exc.errno else exc.strerror or type(exc).__name__


async def _connect(address: str, port: int, deadline: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(deadline):
        return await asyncio.open_connection(address, port)


async def probe_http(address: str, port: int, path: str, timeout: float, connect_timeout: float) -> ProbeResult:
    """HAProxy's HTTP check: connect within `connect_timeout`, send its request, and within `timeout` read the
    status line and headers; ok on 200-399."""
    start = time.monotonic()
    writer = None
    try:
        try:
            reader, writer = await _connect(address, port, connect_timeout)
        except TimeoutError:
            return ProbeResult(False, f"no connection within {connect_timeout:g}s", time.monotonic() - start)
        async with asyncio.timeout(timeout):
            writer.write(http_request(path))
            await writer.drain()
            status_line = await reader.readline()
            code = parse_status_line(status_line)
            if code is None:
                return ProbeResult(False, f"bad reply {status_line[:40]!r}", time.monotonic() - start)
            # Judged once the headers are complete, as HAProxy does; the body is not awaited.
            for _ in range(MAX_HEADER_LINES):
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    return ProbeResult(False, f"HTTP {code}, reply ended inside the headers",
                                       time.monotonic() - start)
                if not line.strip():
                    break
            else:
                return ProbeResult(False, f"HTTP {code}, more than {MAX_HEADER_LINES} header lines",
                                   time.monotonic() - start)
            return ProbeResult(http_status_ok(code), f"HTTP {code}", time.monotonic() - start)
    except TimeoutError:
        return ProbeResult(False, f"no answer within {timeout:g}s", time.monotonic() - start)
    except ValueError:  # a line longer than the stream limit
        return ProbeResult(False, "bad reply (line too long)", time.monotonic() - start)
    except OSError as exc:
        return ProbeResult(False, _failed(exc), time.monotonic() - start)
    finally:
        if writer is not None:
            writer.close()


async def probe_tcp(address: str, port: int, connect_timeout: float) -> ProbeResult:
    """HAProxy's TCP check: the connect alone, within `connect_timeout`."""
    start = time.monotonic()
    try:
        _, writer = await _connect(address, port, connect_timeout)
        writer.close()
        return ProbeResult(True, "connected", time.monotonic() - start)
    except TimeoutError:
        return ProbeResult(False, f"no connection within {connect_timeout:g}s", time.monotonic() - start)
    except OSError as exc:
        return ProbeResult(False, _failed(exc), time.monotonic() - start)


async def probe_exec(command: list[str], timeout: float, exec_in: ExecIn) -> ProbeResult:
    """The command run inside the container (through `exec_in`) must exit 0 within `timeout`."""
    start = time.monotonic()
    try:
        status = await exec_in(list(command), timeout)
    except TimeoutError:
        return ProbeResult(False, f"no exit within {timeout:g}s", time.monotonic() - start)
    except FleetError as exc:
        return ProbeResult(False, str(exc), time.monotonic() - start)
    return ProbeResult(status == 0, f"exit {status}", time.monotonic() - start)


async def check(health: HealthSpec | None, *, address: str, port: int | None,
                exec_in: ExecIn | None) -> ProbeResult:
    """One check of a replica, as its service declares it; never raises for a failing replica.

    No `health`: ok (a replica is ready once its process runs; the caller knows whether it does). http: GET
    the path on address:port, ok on 200-399; tcp: connect; exec: `exec_in(command, timeout)` returns 0.
    """
    if health is None:
        return ProbeResult(True, NO_CHECK, 0.0)
    if health.kind == "exec":
        if exec_in is None:
            raise ValueError("an exec health check needs exec_in")
        return await probe_exec(list(health.command), health.timeout, exec_in)
    if port is None:
        return ProbeResult(False, "the replica has no port to check", 0.0)
    if health.kind == "http":
        if not health.path:
            raise ValueError("an http health check needs a path")
        return await probe_http(address, port, health.path, health.timeout, connect_deadline(health))
    return await probe_tcp(address, port, connect_deadline(health))


async def observe_health(health: HealthSpec | None, *, address: str, port: int | None, exec_in: ExecIn | None,
                         started_at: float, clock: Callable[[], float] = time.monotonic,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Observation:
    """Probe a running replica every `interval` until the judge decides: HEALTHY at the first pass, UNHEALTHY
    after `failure_threshold` failures in a row (so at most that many probes, plus one when the clock is
    late), STARTING at once, without probing, inside the start period. `started_at` is when the replica
    started, on `clock`'s scale (for a container's creation time, pass `clock=time.time`).

    No `health`: HEALTHY without a probe (the caller checks that the process runs).
    """
    if health is None:
        return Observation(Verdict.HEALTHY, NO_CHECK)
    left = started_at + health.start_period - clock()
    if left > 0:
        return Observation(Verdict.STARTING, f"in its start period for {left:.1f}s more")
    history: list[Probe] = []
    verdict, detail = Verdict.UNKNOWN, "no check yet"
    first = clock()
    for i in range(health.failure_threshold + 1):
        # Probes start `interval` apart (as HAProxy's `inter`), however long each one took.
        wait = first + i * health.interval - clock()
        if i and wait > 0:
            await sleep(wait)
        at = clock()
        result = await check(health, address=address, port=port, exec_in=exec_in)
        history.append((at, result.ok))
        detail = result.detail
        verdict = judge(history, health, started_at, clock())
        if verdict is not Verdict.UNKNOWN:
            break
    return Observation(verdict, detail, tuple(history))
