"""A bounded HTTP load generator for benchmarks: N client threads, half opening a connection per request, half
on one keep-alive connection each; nothing is retried; every request is recorded with its time and outcome.

The run ends at whichever comes first: `stop()`, `max_seconds`, or `max_requests` sent in total.
"""

from __future__ import annotations

import http.client
import re
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

VERSION_RE = re.compile(rb"version=([A-Za-z0-9_.-]+)")
BACKEND_RE = re.compile(rb"host=([A-Za-z0-9_.-]+) replica=([0-9]+)")


@dataclass(frozen=True)
class Sample:
    """One request: when it started (Unix seconds), how long it took, and what came back."""

    at: float
    seconds: float
    client: int
    keepalive: bool
    nth_on_connection: int
    status: int | None
    kind: str | None
    version: str | None
    backend: str | None

    @property
    def ok(self) -> bool:
        return self.kind is None


def failure_kind(exc: BaseException) -> str:
    """A short name for what went wrong: the exception's class, plus errno-free detail where it helps."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    return type(exc).__name__


class Load:
    """Runs the clients in background threads; `samples()` may be read at any time, `stop()` ends the run."""

    def __init__(self, host: str, port: int, *, clients: int = 8, path: str = "/", max_seconds: float = 120.0,
                 max_requests: int = 200_000, timeout: float = 5.0) -> None:
        self.host, self.port, self.path = host, port, path
        self.clients = clients
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._samples: list[Sample] = []
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0

    def start(self) -> Load:
        self.started_at = time.time()
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.clients):
            keepalive = i % 2 == 1
            t = threading.Thread(target=self._client, args=(i, keepalive, deadline), daemon=True,
                                 name=f"load-{i}")
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        return self.samples()

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take(self) -> bool:
        """Reserve one request of the budget; False once it is spent."""
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _client(self, index: int, keepalive: bool, deadline: float) -> None:
        conn: http.client.HTTPConnection | None = None
        uses = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and self._take():
                c = conn or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn, uses = c, (uses + 1 if conn is c else 1)
                at, t0 = time.time(), time.perf_counter()
                status: int | None = None
                kind: str | None = None
                body = b""
                try:
                    c.request("GET", self.path, headers={} if keepalive else {"Connection": "close"})
                    resp = c.getresponse()
                    status = resp.status
                    body = resp.read()
                    if status != 200:
                        kind = f"HTTP {status}"
                    if not keepalive or resp.will_close:
                        c.close()
                        conn = None
                except (OSError, http.client.HTTPException) as exc:
                    kind = failure_kind(exc)
                    c.close()
                    conn = None
                seconds = time.perf_counter() - t0
                v = VERSION_RE.search(body)
                b = BACKEND_RE.search(body)
                sample = Sample(at, seconds, index, keepalive, uses, status, kind,
                                v.group(1).decode() if v else None,
                                f"{b.group(1).decode()}/{b.group(2).decode()}" if b else None)
                with self._lock:
                    self._samples.append(sample)
        finally:
            if conn is not None:
                conn.close()


@dataclass(frozen=True)
class Window:
    """Figures for the samples that started within one time window."""

    name: str
    start: float
    end: float
    requests: int
    failed: Counter[str]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    versions: Counter[str]
    backends: Counter[str]

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(q * 100) - 1]


def window(name: str, samples: Iterable[Sample], start: float, end: float) -> Window:
    """Summarise the samples that started in [start, end); latency counts every request, failed ones too."""
    chosen = [s for s in samples if start <= s.at < end]
    latency = sorted(s.seconds * 1000 for s in chosen)
    return Window(
        name, start, end, len(chosen),
        Counter(s.kind for s in chosen if s.kind is not None),
        _quantile(latency, 0.50), _quantile(latency, 0.99), latency[-1] if latency else None,
        Counter(s.version or "?" for s in chosen if s.ok),
        Counter(s.backend or "?" for s in chosen if s.ok),
    )
