"""What "healthy" means, as pure rules: the check both the controller and HAProxy run, and the judge of a probe history.

One definition for both sides (verified on HAProxy 2.6.12, see tests/test_haproxy_real.py):

- HTTP: the request is exactly what `option httpchk GET PATH` sends (`GET PATH HTTP/1.0` and a blank line);
  the check passes when the status is 200-399 (`http-check expect status 200-399`, Kubernetes' httpGet rule),
  judged once the response headers are complete (the body is not awaited). A reply that ends or is not HTTP
  before the headers end fails.
- Deadlines follow HAProxy's rule when `timeout check` is set: connecting may take min(`timeout connect`,
  interval); after that the answer must come within the health `timeout`. A TCP check is the connect alone.
- exec: the command's exit status inside the container, 0 passes (the controller only; HAProxy cannot run it).

The judge turns a replica's probe history into a `Verdict`; `ready` says when a new replica may take traffic.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.config.spec import HealthSpec

HTTP_OK_LOW, HTTP_OK_HIGH = 200, 399
# The `http-check expect` rule render.py writes; the same range as `http_status_ok`.
HAPROXY_EXPECT = f"status {HTTP_OK_LOW}-{HTTP_OK_HIGH}"
# HAProxy's `timeout connect` (render.py's defaults section); checks connect within min(this, inter).
LB_CONNECT_TIMEOUT = 2.0
# Timers may fire a hair early and probe times are measured: spans are compared with this much slack.
SPAN_SLACK = 0.001

Probe = tuple[float, bool]


def http_status_ok(code: int) -> bool:
    """A passing HTTP status: 200-399."""
    return HTTP_OK_LOW <= code <= HTTP_OK_HIGH


def http_request(path: str) -> bytes:
    """The bytes HAProxy 2.6 sends for `option httpchk GET PATH` (recorded), and so the controller too."""
    return f"GET {path} HTTP/1.0\r\n\r\n".encode("ascii")


def parse_status_line(line: bytes) -> int | None:
    """The status code of `HTTP/1.x NNN reason`, None when the line is not one."""
    parts = line.decode("latin-1").strip().split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def connect_deadline(health: HealthSpec) -> float:
    """How long a check may take to connect: HAProxy's min(`timeout connect`, inter)."""
    return min(LB_CONNECT_TIMEOUT, health.interval)


class Verdict(enum.StrEnum):
    """A running replica's health as judged from its probes."""

    STARTING = "starting"  # inside its start period: failures do not count yet
    HEALTHY = "healthy"  # its latest counted probe passed
    UNHEALTHY = "unhealthy"  # failing long enough: failure_threshold in a row, spanning interval × (threshold − 1)
    UNKNOWN = "unknown"  # not enough probes to say (none yet, or failing but not for long enough)


@dataclass(frozen=True)
class Observation:
    """What `observe_health` saw: the verdict, the last probe's detail and the probes `(time, ok)` it ran."""

    verdict: Verdict
    detail: str
    probes: tuple[Probe, ...] = ()


def _spans(run: Sequence[Probe], count: int, interval: float) -> bool:
    """Whether a run of like results has `count` of them, its first and last `interval × (count − 1)` apart."""
    return len(run) >= count and run[-1][0] - run[0][0] >= interval * (count - 1) - SPAN_SLACK


def _trailing(history: Sequence[Probe], ok: bool) -> list[Probe]:
    """The last results, as long as they all equal `ok` (oldest first)."""
    run: list[Probe] = []
    for probe in reversed(history):
        if probe[1] != ok:
            break
        run.append(probe)
    return run[::-1]


def judge(history: Sequence[Probe], health: HealthSpec, started_at: float, now: float) -> Verdict:
    """The verdict on a running replica from its probes `(time, ok)`, all on the same clock as `started_at`/`now`.

    Inside the start period (`now < started_at + start_period`) it is STARTING. After it, only probes taken
    after the start period count: HEALTHY when the latest passed; UNHEALTHY when the latest
    `failure_threshold` or more failed in a row and the first and last of that run are at least
    `interval × (failure_threshold − 1)` apart (HAProxy's `fall` checks `inter` apart); else UNKNOWN.
    """
    begin = started_at + health.start_period
    if now < begin:
        return Verdict.STARTING
    counted = sorted(p for p in history if p[0] >= begin)
    if not counted:
        return Verdict.UNKNOWN
    if counted[-1][1]:
        return Verdict.HEALTHY
    if _spans(_trailing(counted, False), health.failure_threshold, health.interval):
        return Verdict.UNHEALTHY
    return Verdict.UNKNOWN


def ready(history: Sequence[Probe], health: HealthSpec) -> bool:
    """Whether a new replica may take traffic: its latest `success_threshold` probes or more passed in a row,
    the first and last of them at least `interval × (success_threshold − 1)` apart (HAProxy's `rise`).
    Passes inside the start period count; any failure restarts the count."""
    return _spans(_trailing(sorted(history), True), health.success_threshold, health.interval)
