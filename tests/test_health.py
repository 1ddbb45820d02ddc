"""Health: the controller's checks against real loopback servers, exec checks in a real private containerd
(through a real in-process SSH server), the pure judge (property tests) and `observe_health` on a test clock."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import free_port
from hypothesis import given
from hypothesis import strategies as st

from fleet.config.spec import HealthSpec
from fleet.core.errors import CommandTimeout
from fleet.engine.probes import NO_CHECK, ProbeResult, check, observe_health
from fleet.plan.healthjudge import (
    LB_CONNECT_TIMEOUT,
    SPAN_SLACK,
    Observation,
    Probe,
    Verdict,
    connect_deadline,
    http_request,
    http_status_ok,
    judge,
    parse_status_line,
    ready,
)

HTTP = HealthSpec("http", "/healthz", interval=0.2, timeout=0.3, failure_threshold=3)
TCP = HealthSpec("tcp", interval=0.2, timeout=0.3)


# ---- real loopback HTTP servers ----------------------------------------------------------------------------


@dataclass
class Backend:
    """An asyncio server on 127.0.0.1: reads one request's headers, records them, answers `reply`."""

    port: int
    requests: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def backend(reply: bytes, *, stall: bool = False) -> AsyncIterator[Backend]:
    """`stall`: after writing `reply`, keep the connection open without a word until the test ends."""
    release = asyncio.Event()
    handlers: set[asyncio.Task[None]] = set()
    box: list[Backend] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                data += chunk
            box[0].requests.append(data)
            writer.write(reply)
            await writer.drain()
            if stall:
                await release.wait()
        except OSError:
            pass  # the client hung up first (a timed-out check): fine
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    box.append(Backend(server.sockets[0].getsockname()[1]))
    try:
        yield box[0]
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        if handlers:
            await asyncio.wait(handlers, timeout=5)


def status(code: int) -> bytes:
    return f"HTTP/1.1 {code} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()


@pytest.mark.parametrize(("code", "ok"), [(200, True), (204, True), (302, True), (399, True), (400, False),
                                          (404, False), (500, False), (199, False), (101, False)])
async def test_http_check_passes_on_a_status_from_200_to_399_only(code: int, ok: bool) -> None:
    async with backend(status(code)) as b:
        result = await check(HTTP, address="127.0.0.1", port=b.port, exec_in=None)
    assert (result.ok, result.detail) == (ok, f"HTTP {code}")
    assert b.requests == [b"GET /healthz HTTP/1.0\r\n\r\n"]


async def test_http_check_sends_exactly_what_haproxy_sends() -> None:
    # Recorded from HAProxy 2.6.12 with `option httpchk GET /healthz` (the real test compares both live).
    assert http_request("/healthz") == b"GET /healthz HTTP/1.0\r\n\r\n"
    async with backend(status(200)) as b:
        await check(HealthSpec("http", "/ready?deep=1"), address="127.0.0.1", port=b.port, exec_in=None)
    assert b.requests == [b"GET /ready?deep=1 HTTP/1.0\r\n\r\n"]


async def test_http_check_is_judged_once_the_headers_are_in_without_waiting_for_the_body() -> None:
    async with backend(b"HTTP/1.0 200 OK\r\nContent-Length: 50\r\n\r\npartial", stall=True) as b:
        started = time.monotonic()
        result = await check(HTTP, address="127.0.0.1", port=b.port, exec_in=None)
    assert result.ok and time.monotonic() - started < HTTP.timeout


async def test_http_check_accepts_bare_newlines_as_haproxy_does() -> None:
    async with backend(b"HTTP/1.0 301 Moved\nContent-Length: 0\n\n") as b:
        assert (await check(HTTP, address="127.0.0.1", port=b.port, exec_in=None)).ok


@pytest.mark.parametrize(("reply", "detail"), [
    (b"HTTP/1.0 200 OK\r\n", "HTTP 200, reply ended inside the headers"),
    (b"hello\r\n", "bad reply b'hello\\r\\n'"),
    (b"", "bad reply b''"),
    (b"HTTP/1.0 2000 OK\r\n\r\n", "bad reply b'HTTP/1.0 2000 OK\\r\\n'"),
])
async def test_http_check_fails_on_a_reply_that_is_not_a_complete_http_head(reply: bytes, detail: str) -> None:
    async with backend(reply) as b:
        result = await check(HTTP, address="127.0.0.1", port=b.port, exec_in=None)
    assert (result.ok, result.detail) == (False, detail)


async def test_http_check_fails_when_the_answer_is_slower_than_the_timeout() -> None:
    async with backend(b"HTTP/1.0 200 OK\r\n", stall=True) as b:
        started = time.monotonic()
        result = await check(HTTP, address="127.0.0.1", port=b.port, exec_in=None)
        took = time.monotonic() - started
    assert (result.ok, result.detail) == (False, "no answer within 0.3s")
    assert HTTP.timeout <= took < HTTP.timeout + 0.5


async def test_http_and_tcp_checks_fail_on_a_closed_port() -> None:
    port = free_port()  # nothing listens on it
    for health in (HTTP, TCP):
        result = await check(health, address="127.0.0.1", port=port, exec_in=None)
        assert (result.ok, result.detail) == (False, "Connection refused"), health.kind


async def test_tcp_check_passes_once_something_listens() -> None:
    async with backend(b"") as b:
        result = await check(TCP, address="127.0.0.1", port=b.port, exec_in=None)
    assert (result.ok, result.detail) == (True, "connected")


async def test_no_health_means_ready_once_running_and_probes_nothing() -> None:
    # Port 1 would refuse a connection: the result shows nothing was tried.
    assert await check(None, address="127.0.0.1", port=1, exec_in=None) == ProbeResult(True, NO_CHECK, 0.0)


async def test_http_check_without_a_port_fails_and_exec_without_exec_in_is_a_programming_error() -> None:
    assert not (await check(HTTP, address="127.0.0.1", port=None, exec_in=None)).ok
    with pytest.raises(ValueError, match="exec_in"):
        await check(HealthSpec("exec", command=("true",)), address="127.0.0.1", port=None, exec_in=None)


def test_connect_deadline_is_haproxys_min_of_timeout_connect_and_inter() -> None:
    assert connect_deadline(HealthSpec("tcp", interval=0.5, timeout=5)) == 0.5
    assert connect_deadline(HealthSpec("tcp", interval=10, timeout=0.1)) == LB_CONNECT_TIMEOUT


def test_status_rule_and_status_line_parser() -> None:
    assert [c for c in range(100, 600) if http_status_ok(c)] == list(range(200, 400))
    assert parse_status_line(b"HTTP/1.1 204 No Content\r\n") == 204
    assert parse_status_line(b"HTTP/1.0 302\r\n") == 302
    for line in (b"HTTP/2 200\r\n", b"ICY 200 OK\r\n", b"HTTP/1.1 20x OK\r\n", b"HTTP/1.1\r\n", b""):
        assert parse_status_line(line) is None, line


# ---- exec checks: the seam, with a real local process as the "container" -----------------------------------


async def local_exec(argv: list[str], timeout: float) -> int:
    """Runs argv here (no shell): what exec_in does inside a container, minus the container."""
    proc = await asyncio.create_subprocess_exec(*argv)
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(("command", "ok", "detail"), [
    (("true",), True, "exit 0"),
    (("sh", "-c", "exit 3"), False, "exit 3"),
    (("test", "a b;c", "=", "a b;c"), True, "exit 0"),  # one argv element each: nothing split or interpreted
    (("sleep", "5"), False, "no exit within 0.3s"),
])
async def test_exec_check_passes_on_exit_0_within_the_timeout(command: tuple[str, ...], ok: bool,
                                                               detail: str) -> None:
    health = HealthSpec("exec", command=command, timeout=0.3)
    result = await check(health, address="unused", port=None, exec_in=local_exec)
    assert (result.ok, result.detail) == (ok, detail)


async def test_exec_check_fails_with_the_transports_message_when_the_node_is_unreachable() -> None:
    async def unreachable(argv: list[str], timeout: float) -> int:
        raise CommandTimeout("n1", "`ctr` did not finish within 5s")

    result = await check(HealthSpec("exec", command=("true",)), address="x", port=None, exec_in=unreachable)
    assert (result.ok, result.detail) == (False, "n1: `ctr` did not finish within 5s")


# ---- the judge ------------------------------------------------------------------------------------------------


def spec(failures: int = 3, successes: int = 1, interval: float = 2.0, start: float = 0.0) -> HealthSpec:
    return HealthSpec("http", "/h", interval=interval, failure_threshold=failures, success_threshold=successes,
                      start_period=start)


def spaced(results: str, interval: float, t0: float = 100.0) -> list[Probe]:
    """'++-' → probes `interval` apart from t0: pass, pass, fail."""
    return [(t0 + i * interval, r == "+") for i, r in enumerate(results)]


def test_judge_examples() -> None:
    h = spec(failures=3, interval=2.0)
    assert judge([], h, 0, 100) is Verdict.UNKNOWN
    assert judge(spaced("+", 2), h, 0, 100) is Verdict.HEALTHY
    assert judge(spaced("---", 2), h, 0, 104) is Verdict.UNHEALTHY
    assert judge(spaced("+--", 2), h, 0, 104) is Verdict.UNKNOWN
    assert judge(spaced("---+", 2), h, 0, 106) is Verdict.HEALTHY
    # Three failures in a row but only 0.6 s apart: not yet failing for interval × 2 = 4 s.
    assert judge(spaced("---", 0.3), h, 0, 101) is Verdict.UNKNOWN
    # A longer run of quick failures that does span 4 s counts.
    assert judge(spaced("-" * 15, 0.3), h, 0, 105) is Verdict.UNHEALTHY
    h = spec(failures=2, interval=1.0, start=30.0)
    assert judge(spaced("--", 1, t0=10), h, 0, 11) is Verdict.STARTING
    assert judge(spaced("--", 1, t0=10), h, 0, 31) is Verdict.UNKNOWN  # those failures were in the start period
    assert judge(spaced("--", 1, t0=10) + spaced("--", 1, t0=30), h, 0, 31) is Verdict.UNHEALTHY


def test_ready_examples() -> None:
    h = spec(successes=3, interval=1.0)
    assert not ready([], h)
    assert not ready(spaced("++", 1), h)
    assert ready(spaced("+++", 1), h)
    assert ready(spaced("-+++", 1), h)
    assert not ready(spaced("+++-", 1), h)
    assert not ready(spaced("+++", 0.25), h)  # three passes in 0.5 s: HAProxy's rise 3 takes 2 s
    assert ready(spaced("+" * 9, 0.25), h)
    assert ready(spaced("+", 5), spec(successes=1))


thresholds = st.integers(min_value=1, max_value=6)
intervals = st.sampled_from([0.1, 0.5, 1.0, 2.0, 3.7])
starts = st.sampled_from([0.0, 1.0, 10.0, 45.5])


@st.composite
def histories(draw: st.DrawFn, min_gap: float = 0.001) -> list[Probe]:
    """Probe histories in time order from t=0, gaps of at least `min_gap`."""
    gaps = draw(st.lists(st.floats(min_value=min_gap, max_value=min_gap + 5, allow_nan=False), max_size=12))
    oks = draw(st.lists(st.booleans(), min_size=len(gaps), max_size=len(gaps)))
    t, out = 0.0, []
    for gap, ok in zip(gaps, oks, strict=True):
        t += gap
        out.append((t, ok))
    return out


@given(histories(), thresholds, intervals, st.sampled_from([1.0, 10.0, 45.5]), st.floats(min_value=0, max_value=100))
def test_inside_the_start_period_a_replica_is_always_starting(history: list[Probe], f: int, interval: float,
                                                              start: float, now: float) -> None:
    assert judge(history, spec(f, 1, interval, start), now - start / 2, now) is Verdict.STARTING


@given(histories(), thresholds, intervals, st.integers(min_value=0, max_value=60))
def test_a_single_failure_never_makes_unhealthy_when_the_threshold_is_above_one(
        history: list[Probe], f: int, interval: float, where: int) -> None:
    passes = [(t, True) for t, _ in history]
    t_fail = passes[where % len(passes)][0] + 0.01 if passes else 0.0
    probes = sorted([*passes, (t_fail, False)])
    assert judge(probes, spec(f + 1, 1, interval), 0.0, 1000.0) is not Verdict.UNHEALTHY


@given(histories(), histories(), thresholds, intervals, starts)
def test_probes_inside_the_start_period_never_count(after: list[Probe], before: list[Probe], f: int,
                                                    interval: float, start: float) -> None:
    begin = 50.0 + start
    late = [(begin + t, ok) for t, ok in after]
    early = [(50.0 + t * start / 100, ok) for t, ok in before if t * start / 100 < start]
    h = spec(f, 1, interval, start)
    now = begin + 1000
    assert judge([*early, *late], h, 50.0, now) is judge(late, h, 50.0, now)


@given(histories(), thresholds, intervals)
def test_unhealthy_needs_threshold_failures_in_a_row_spanning_the_intervals(history: list[Probe], f: int,
                                                                           interval: float) -> None:
    verdict = judge(history, spec(f, 1, interval), 0.0, 1000.0)
    run = []
    for t, ok in reversed(history):
        if ok:
            break
        run.append(t)
    assert (verdict is Verdict.UNHEALTHY) == (len(run) >= f and run[0] - run[-1] >= interval * (f - 1) - SPAN_SLACK)
    assert (verdict is Verdict.HEALTHY) == (bool(history) and history[-1][1])


@given(st.data(), thresholds, intervals, starts)
def test_with_probes_an_interval_apart_only_the_last_threshold_results_after_the_start_period_count(
        data: st.DataObject, f: int, interval: float, start: float) -> None:
    history = data.draw(histories(min_gap=interval))
    h = spec(f, 1, interval, start)
    counted = [p for p in history if p[0] >= start]
    now = 1000.0
    assert judge(history, h, 0.0, now) is judge(counted[-f:], h, 0.0, now)


@given(histories(), thresholds, intervals)
def test_ready_means_threshold_passes_in_a_row_and_a_failure_restarts_the_count(history: list[Probe], s: int,
                                                                                interval: float) -> None:
    h = spec(3, s, interval)
    end = history[-1][0] if history else 0.0
    passes = [(end + 1 + i * interval, True) for i in range(s)]
    assert ready([*history, *passes], h)
    assert not ready([*history, *passes, (end + 1 + s * interval, False)], h)
    failed = [*history, (end + 0.5, False)]
    assert not ready([*failed, *passes[: s - 1]], h)


# ---- observe_health on a test clock ---------------------------------------------------------------------------


class Clock:
    """A test clock: `sleep` advances it by `pace` × the asked time, instantly."""

    def __init__(self, t: float = 1000.0, pace: float = 1.0) -> None:
        self.t = t
        self.pace = pace
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds * self.pace


async def test_observe_a_healthy_replica_takes_one_probe() -> None:
    clock = Clock()
    async with backend(status(200)) as b:
        seen = await observe_health(HTTP, address="127.0.0.1", port=b.port, exec_in=None, started_at=0.0,
                                    clock=clock, sleep=clock.sleep)
    assert seen == Observation(Verdict.HEALTHY, "HTTP 200", ((1000.0, True),))
    assert len(b.requests) == 1 and clock.sleeps == []


async def test_observe_an_unhealthy_replica_probes_threshold_times_an_interval_apart() -> None:
    clock = Clock()
    h = HealthSpec("http", "/healthz", interval=2.0, timeout=0.5, failure_threshold=3)
    async with backend(status(503)) as b:
        seen = await observe_health(h, address="127.0.0.1", port=b.port, exec_in=None, started_at=0.0,
                                    clock=clock, sleep=clock.sleep)
    assert seen == Observation(Verdict.UNHEALTHY, "HTTP 503", ((1000.0, False), (1002.0, False), (1004.0, False)))
    assert len(b.requests) == 3 and clock.sleeps == [2.0, 2.0]


async def test_observe_stops_after_threshold_plus_one_probes_when_the_clock_runs_short() -> None:
    clock = Clock(pace=0.1)  # every sleep ends far too early: the failures never span interval × 2
    async with backend(status(500)) as b:
        seen = await observe_health(HTTP, address="127.0.0.1", port=b.port, exec_in=None, started_at=0.0,
                                    clock=clock, sleep=clock.sleep)
    assert seen.verdict is Verdict.UNKNOWN and len(seen.probes) == HTTP.failure_threshold + 1 == len(b.requests)


async def test_observe_a_recovering_replica_is_healthy_at_its_first_pass() -> None:
    results = iter([3, 3, 0])

    async def flaky(argv: list[str], timeout: float) -> int:
        return next(results)

    clock = Clock()
    h = HealthSpec("exec", command=("check",), interval=1.0, failure_threshold=3)
    seen = await observe_health(h, address="x", port=None, exec_in=flaky, started_at=0.0, clock=clock,
                                sleep=clock.sleep)
    assert seen == Observation(Verdict.HEALTHY, "exit 0", ((1000.0, False), (1001.0, False), (1002.0, True)))


async def test_observe_inside_the_start_period_is_starting_without_a_probe() -> None:
    clock = Clock()
    h = HealthSpec("http", "/healthz", start_period=30.0)
    async with backend(status(500)) as b:
        seen = await observe_health(h, address="127.0.0.1", port=b.port, exec_in=None, started_at=990.0,
                                    clock=clock, sleep=clock.sleep)
    assert seen == Observation(Verdict.STARTING, "in its start period for 20.0s more")
    assert b.requests == []


async def test_observe_without_health_is_healthy_without_a_probe() -> None:
    seen = await observe_health(None, address="127.0.0.1", port=1, exec_in=None, started_at=0.0)
    assert seen == Observation(Verdict.HEALTHY, NO_CHECK)


def test_the_judge_module_is_pure() -> None:
    tree = ast.parse(Path(__file__).resolve().parent.parent.joinpath("fleet/plan/healthjudge.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "enum", "collections.abc", "dataclasses", "fleet.config.spec"}, imported


# ---- exec checks inside a real container (private containerd, reached over a real SSH server) ---------------


@pytest.fixture(scope="module")
def containerd() -> Iterator[object]:
    from local_containerd import available, local_containerd
    reason = available()
    if reason:
        pytest.skip(reason)
    with local_containerd() as c:
        yield c


@pytest.mark.lab
async def test_exec_check_runs_argv_inside_the_container_with_the_health_timeout(containerd: object,
                                                                                tmp_path: Path) -> None:
    from local_containerd import Containerd
    from sshserver import SSHFarm

    from fleet.engine.health import exec_in
    from fleet.image.demo import build_demo
    from fleet.node.runtime.base import RunSpec
    from fleet.node.runtime.ctr import CtrDriver
    from fleet.transport import Pool

    assert isinstance(containerd, Containerd)
    c = containerd
    driver = CtrDriver(namespace=c.namespace, address=c.address, log_dir=str(c.dir / "logs"),
                      logger=str(c.dir / "logger"))
    archive = build_demo("v1", c.dir / "demo-v1.tar")
    imported = c.sh(driver.image_import(archive.path).line(), stdin_path=archive.path)
    assert imported.returncode == 0, imported.stderr
    cid = "hc-1-exec01"
    started = c.sh(driver.run(RunSpec(cid, archive.name, command=("sleep", "600"))).line())
    assert started.returncode == 0, started.stderr
    try:
        async with SSHFarm(tmp_path / "farm") as farm, Pool() as pool:
            node = (await farm.start(1))[0]
            run = exec_in(pool, node, driver, cid)

            async def probe(*command: str, timeout: float = 2.0) -> tuple[bool, str, float]:
                h = HealthSpec("exec", command=command, timeout=timeout)
                r = await check(h, address=node.address, port=None, exec_in=run)
                return r.ok, r.detail, r.seconds

            assert (await probe("cat", "/etc/demo-version"))[:2] == (True, "exit 0")
            assert (await probe("test", "-e", "/nonexistent"))[:2] == (False, "exit 1")
            # Arguments reach the container one by one: nothing is split or run by a shell.
            assert (await probe("test", "a b;c $(id)", "=", "a b;c $(id)"))[:2] == (True, "exit 0")
            # The command itself runs inside the container: it sees the image's file, not the host's.
            assert (await probe("sh", "-c", 'test "$(cat /etc/demo-version)" = v1'))[:2] == (True, "exit 0")
            ok, detail, took = await probe("sleep", "30", timeout=1.0)
            assert (ok, detail) == (False, "no exit within 1s") and took < 4
            # The timed-out command was stopped inside the container, not left running: only PID 1 is left.
            assert len(c.ctr("tasks", "ps", cid).stdout.splitlines()) == 2  # header + the container's sleep 600
            gone = HealthSpec("exec", command=("true",))
            r = await check(gone, address=node.address, port=None, exec_in=exec_in(pool, node, driver, "nope-1"))
            assert not r.ok and r.detail.startswith("exit ")
            await farm.stop(node.name)
            r = await check(gone, address=node.address, port=None, exec_in=run)
            assert not r.ok and node.name in r.detail
    finally:
        c.ctr("tasks", "rm", "-f", cid, check=False)
        c.ctr("containers", "rm", cid, check=False)

