"""A bounded HTTP (or TCP echo: `TcpLoad`) load for lab tests: concurrent clients (new connection per request, and
keep-alive) that run until stopped or until their time or request budget is spent, recording every failure."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)


class Load:
    """`with Load(host, port) as load: ...` then `load.result`; at most `max_seconds` and `max_requests`."""

    def __init__(self, host: str, port: int, clients: int = 6, max_seconds: float = 120.0,
                 max_requests: int = 200_000, timeout: float = 5.0) -> None:
        self.host, self.port, self.clients, self.timeout = host, port, clients, timeout
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
                         for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _done(self) -> bool:
        r = self.result
        return self._stop.is_set() or time.monotonic() > self.deadline or r.ok + r.failed >= self.max_requests

    def _record(self, status: int | None, body: str, error: str | None) -> None:
        with self._lock:
            r = self.result
            if error is None and status == 200:
                r.ok += 1
                version = body.split("version=", 1)[1].split()[0] if "version=" in body else "?"
                r.versions[version] = r.versions.get(version, 0) + 1
            else:
                kind = error or f"HTTP {status}"
                r.failed += 1
                r.errors[kind] = r.errors.get(kind, 0) + 1
                r.failures.append((time.time(), kind))

    def _run(self, keepalive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._done():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                self._record(resp.status, body, None)
                if not keepalive or resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(None, "", type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.result.ok, self.result.failed


class TcpLoad(Load):
    """A TCP load of the same shape: each request a new connection that reads the server's first line (its
    `version=V` greeting), sends a line and expects it echoed back, then closes; anything else is a failure."""

    def _run(self, keepalive: bool) -> None:
        while not self._done():
            try:
                with socket.create_connection((self.host, self.port), timeout=self.timeout) as conn:
                    reader = conn.makefile("rb")
                    greeting = reader.readline().decode(errors="replace")
                    conn.sendall(b"ping\n")
                    echoed = reader.readline()
                    reader.close()
                if echoed == b"ping\n" and greeting.startswith("version="):
                    self._record(200, greeting, None)
                else:
                    self._record(None, "", f"bad answer {greeting.strip()!r} {echoed!r}")
            except OSError as exc:
                self._record(None, "", type(exc).__name__)
