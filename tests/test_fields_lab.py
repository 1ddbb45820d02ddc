"""Issue 8 on the real lab, under load: every playbook field lands, and rollouts keep to their limits.

Fields that keep containers (`lb.port`, `lb.balance`, HTTP health settings, `stop_grace_period`, `placement`):
`fleet plan` names the change (exit 3), `fleet apply` lands it (HAProxy's rendered config on lb1, the replicas'
nodes, the stop timings), no replica is restarted unless it has to move, not one request through HAProxy on lb1
fails, and `fleet plan` then exits 0.

Rollout limits: for each (max_surge, max_unavailable, replicas), a v1 → v2 rollout under load while a sampler
reads HAProxy's stats on lb1 and the workers' containers every ~0.2 s: HAProxy never has fewer servers UP and
in rotation than the policy allows, and never more of the service's containers run than it allows.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import test_rollout_lab
from helpers import poll
from loadgen import Load
from test_rollout_lab import fleet, history, lb_address, playbook, status

from fleet.core import labels as L
from fleet.engine.calls import LIST_TIMEOUT, perform
from fleet.engine.haproxy import LbNode
from fleet.node.runtime.base import Status
from fleet.node.runtime.ctr import CtrDriver
from fleet.transport import Pool

pytestmark = pytest.mark.lab

# The module fixture: demo images v1 and v2 on every worker, a private revision history, FLEET_LEASE_TTL=5.
env = test_rollout_lab.env

HAPROXY_CFG = "/var/lib/fleet/haproxy/haproxy.cfg"
HEALTH = {"http": "/healthz", "interval": "1s", "timeout": "1s", "failure_threshold": 2}
UPDATE = {"max_surge": 1, "max_unavailable": 0, "ready_deadline": "20s", "min_ready": "1s"}


def spec_file(env: dict[str, Any], name: str, port: int, *, replicas: int = 3, balance: str | None = None,
              health: dict[str, Any] | None = None, placement: dict[str, Any] | None = None,
              grace: str = "5s", extra_env: dict[str, str] | None = None) -> str:
    """A playbook for `name` on fleet.local/demo:v1 (JSON, which is YAML), written to a fresh file."""
    lb: dict[str, Any] = {"port": port}
    if balance is not None:
        lb["balance"] = balance
    svc: dict[str, Any] = {
        "image": "fleet.local/demo:v1", "replicas": replicas, "resources": {"cpu": 0.05, "memory": "32MiB"},
        "health": health or HEALTH, "placement": placement or {"spread_by": "zone"}, "lb": lb,
        "stop_grace_period": grace, "update": UPDATE,
    }
    if extra_env:
        svc["env"] = extra_env
    path = Path(env["dir"]) / f"{name}-{time.monotonic_ns()}.yaml"
    path.write_text(json.dumps({"services": {name: svc}}, indent=2) + "\n")
    return str(path)


def ids(env: dict[str, Any], name: str) -> dict[str, str]:
    """Container ID → node of every running replica, from `fleet status --json`."""
    return {r["id"]: r["node"] for r in status(env, name)["replicas"] if r["running"]}


def plan_changes(env: dict[str, Any], path: str) -> tuple[int, str, dict[str, Any]]:
    """`fleet plan` as text (exit code, stdout) and as JSON (the service's entry)."""
    text = fleet(env, "plan", path)
    doc = json.loads(fleet(env, "plan", "--json", path).stdout)
    assert len(doc["services"]) == 1, doc
    return text.returncode, text.stdout, doc["services"][0]


def lb_config(lab) -> str:
    async def go() -> str:
        async with Pool() as pool:
            res = await pool.run(lab.inventory.node("lb1"), ["cat", HAPROXY_CFG], timeout=10)
        assert res.ok, res
        return res.stdout

    return asyncio.run(go())


def backend(lab, name: str) -> list[str]:
    """The lines of `backend be_NAME` in lb1's rendered haproxy.cfg (stripped, up to the next blank line)."""
    lines = lb_config(lab).splitlines()
    start = lines.index(f"backend be_{name}")
    out = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        out.append(line.strip())
    return out


def refuses(host: str, port: int) -> bool:
    """Whether connecting to host:port is refused now (a connection or another error: not refused)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def assert_plan_clean(env: dict[str, Any], path: str) -> None:
    out = fleet(env, "plan", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nothing to do" in out.stdout, out.stdout


# --- every field lands --------------------------------------------------------------------------------------



def apply_under_load(env, lb: str, port: int, *args: str, max_seconds: float, timeout: float = 180):
    """`fleet apply ARGS` while 6 clients (new-connection and keep-alive) load lb:port: it succeeds, not one
    request fails, and the load did run."""
    with Load(lb, port, clients=6, max_seconds=max_seconds) as load:
        time.sleep(1.0)
        out = fleet(env, "apply", *args, timeout=timeout)
        time.sleep(1.0)
    assert out.returncode == 0, out.stdout + out.stderr
    assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
    assert load.result.ok > 50
    return out

def test_lb_port_change_moves_the_frontend_and_keeps_the_replicas(lab, env):
    """`lb.port` 19601 → 19602. The old address cannot keep serving, so what is asserted is: while `fleet plan`
    runs the old port serves with 0 failed requests (plan changes nothing); right after `fleet apply` returns the
    new port serves with 0 failed requests (a Load started then, for 3 s); the old port is refused within 10 s;
    the replicas are the same containers; `fleet status` gives the new address; `fleet plan` then exits 0."""
    name, old, new = "fl-port", 19601, 19602
    lb = lb_address(lab)
    try:
        assert fleet(env, "apply", spec_file(env, name, old)).returncode == 0
        before = ids(env, name)
        assert len(before) == 3
        moved = spec_file(env, name, new)
        with Load(lb, old, clients=4, max_seconds=60) as load:
            rc, text, svc = plan_changes(env, moved)
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        assert load.result.ok > 0
        assert rc == 3, text
        assert f"lb.port: {old} → {new}" in text, text
        assert svc["changes"] == [f"lb.port: {old} → {new}"], svc
        assert not svc["start"] and not svc["stop"] and not svc["replace"], svc
        out = fleet(env, "apply", moved)
        assert out.returncode == 0, out.stdout + out.stderr
        with Load(lb, new, clients=4, max_seconds=60) as load:
            time.sleep(3.0)
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        assert load.result.ok > 20 and set(load.result.versions) == {"v1"}
        assert poll(lambda: refuses(lb, old), timeout=10.0, interval=0.2), f"{lb}:{old} still accepts connections"
        assert ids(env, name) == before, "no replica was restarted"
        cfg = lb_config(lab)
        assert f"bind 0.0.0.0:{new}" in cfg and f"bind 0.0.0.0:{old}" not in cfg, cfg
        assert status(env, name)["endpoints"] == [f"{lb}:{new}"], "fleet status shows the new address"
        assert_plan_clean(env, moved)
    finally:
        fleet(env, "destroy", name)


def test_lb_balance_change_lands_in_haproxy_under_load(lab, env):
    """`lb.balance` roundrobin → leastconn: named by `fleet plan`, rendered into lb1's backend by `fleet apply`
    under load with 0 failed requests, no replica restarted; then `fleet plan` exits 0 and `fleet reconcile` (which
    restores the accepted state) keeps leastconn."""
    name, port = "fl-balance", 19603
    try:
        assert fleet(env, "apply", spec_file(env, name, port)).returncode == 0
        assert "balance roundrobin" in backend(lab, name)
        before = ids(env, name)
        changed = spec_file(env, name, port, balance="leastconn")
        rc, text, svc = plan_changes(env, changed)
        assert rc == 3, text
        assert "lb.balance: roundrobin → leastconn" in text, text
        assert svc["changes"] == ["lb.balance: roundrobin → leastconn"], svc
        lb = lb_address(lab)
        out = apply_under_load(env, lb, port, changed, max_seconds=90)
        lines = backend(lab, name)
        assert "balance leastconn" in lines and "balance roundrobin" not in lines, lines
        assert ids(env, name) == before, "no replica was restarted"
        with Load(lb, port, clients=2, max_seconds=30) as load:
            time.sleep(1.0)
        assert load.result.failed == 0 and load.result.ok > 0, "still served after the change"
        assert_plan_clean(env, changed)
        # The change is the accepted state now: restoring the accepted state (cron's reconcile) keeps it.
        out = fleet(env, "reconcile", changed)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "balance leastconn" in backend(lab, name), "reconcile kept the accepted balance"
    finally:
        fleet(env, "destroy", name)


def test_health_settings_land_in_haproxy_checks_under_load(lab, env):
    """Health path /healthz → /, interval 1s → 2s, failure_threshold 2 → 3: named by `fleet plan`, rendered into
    lb1's `option httpchk` and every server's `check inter … fall …` by `fleet apply`, under load with 0 failed
    requests, no replica restarted; HAProxy's checks of the new path pass; then `fleet plan` exits 0."""
    name, port = "fl-health", 19604
    try:
        assert fleet(env, "apply", spec_file(env, name, port)).returncode == 0
        lines = backend(lab, name)
        assert "option httpchk GET /healthz" in lines, lines
        servers = [ln for ln in lines if ln.startswith("server ")]
        assert len(servers) == 3 and all(" check inter 1000ms fall 2 rise 1 " in ln for ln in servers), servers
        before = ids(env, name)
        health = {**HEALTH, "http": "/", "interval": "2s", "failure_threshold": 3}
        changed = spec_file(env, name, port, health=health)
        rc, text, svc = plan_changes(env, changed)
        assert rc == 3, text
        for change in ("health.http: /healthz → /", "health.interval: 1s → 2s", "health.failure_threshold: 2 → 3"):
            assert change in text, text
        assert not svc["start"] and not svc["stop"] and not svc["replace"], svc
        apply_under_load(env, lb_address(lab), port, changed, max_seconds=90)
        lines = backend(lab, name)
        assert "option httpchk GET /" in lines and "option httpchk GET /healthz" not in lines, lines
        servers = [ln for ln in lines if ln.startswith("server ")]
        assert len(servers) == 3 and all(" check inter 2000ms fall 3 rise 1 " in ln for ln in servers), servers
        assert ids(env, name) == before, "no replica was restarted"
        # HAProxy's own checks of the new path pass (they run every 2 s now).
        deadline = time.monotonic() + 15
        while True:
            rows = _server_rows(lab, name)
            if len(rows) == 3 and all(r.check_status == "L7OK" and r.health == "up" for r in rows):
                break
            assert time.monotonic() < deadline, [(r.name, r.status, r.check_status, r.check_desc) for r in rows]
            time.sleep(0.5)
        assert_plan_clean(env, changed)
    finally:
        fleet(env, "destroy", name)


def _zone_of_one(lab) -> tuple[str, set[str]]:
    """A zone label value carried by some workers but not all, and those workers."""
    workers = [n for n in lab.inventory.nodes if n.has_role("worker")]
    zones: dict[str, set[str]] = {}
    for n in workers:
        zones.setdefault(n.labels["zone"], set()).add(n.name)
    zone, nodes = min(zones.items(), key=lambda kv: (len(kv[1]), kv[0]))
    assert len(nodes) < len(workers), zones
    return zone, nodes


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"event"')]


def test_placement_and_stop_grace_period_land_replicas_move_under_load(lab, env):
    """`placement` gains `require: {zone: Z}` (a zone only one worker has) and `stop_grace_period` 20s → 2s on
    replicas that ignore SIGTERM: `fleet plan` names both and shows the moves; `fleet apply` moves every replica
    that does not fit to a matching node (surge-first) under load with 0 failed requests, keeps the one already
    there (same container), and stops each moved replica with the new grace period (at least 2 s, far less than
    20 s); the recorded revision carries both fields; then `fleet plan` exits 0."""
    name, port = "fl-place", 19605
    zone, matching = _zone_of_one(lab)
    ignore_term = {"DEMO_IGNORE_TERM": "1"}
    try:
        assert fleet(env, "apply", spec_file(env, name, port, grace="20s", extra_env=ignore_term)).returncode == 0
        before = ids(env, name)
        assert len(before) == 3 and len(set(before.values())) == 3, before
        staying = {i for i, node in before.items() if node in matching}
        assert len(staying) == 1, before
        changed = spec_file(env, name, port, grace="2s", extra_env=ignore_term,
                            placement={"require": {"zone": zone}})
        rc, text, svc = plan_changes(env, changed)
        assert rc == 3, text
        assert "stop_grace_period: 20s → 2s" in text and "placement.require" in text, text
        assert "stop_grace_period: 20s → 2s" in svc["changes"], svc["changes"]
        assert any(f'placement.require: {{}} → {{"zone": "{zone}"}}' in c for c in svc["changes"]), svc["changes"]
        assert "(moved)" in text, text
        assert sorted(a["node"] for a in svc["start"]) == sorted(matching) * 2, svc
        assert {s["id"] for s in svc["stop"]} == set(before) - staying, svc
        out = apply_under_load(env, lb_address(lab), port, "--json", changed, timeout=240, max_seconds=120)
        after = ids(env, name)
        assert len(after) == 3 and set(after.values()) <= matching, after
        assert staying <= set(after), "the replica that already fitted was kept"
        assert not (set(before) - staying) & set(after), "the others moved"
        # Each stop (SIGTERM ignored) lasts the grace period, then SIGKILL: it ends >= 2 s after it began, and far
        # sooner than the old 20 s (a stop may run while the next batch starts: its end is its own event).
        events = _events(out.stdout)
        stops = [e for e in events if e["event"] == "stop"]
        assert len(stops) == 2, [e["message"] for e in events]
        for e in stops:
            end = next(x for x in events if x["event"] == "stopped" and x["container"] == e["container"])
            gap = end["at"] - e["at"]
            assert 1.9 <= gap < 12, (gap, e["message"], end["message"])
            assert "killed after its 2s grace period" in end["message"], end["message"]
        spec = history(env, name)[-1]["spec"]
        assert spec["stop_grace_period"] == "2s" and spec["placement"]["require"] == {"zone": zone}, spec
        assert_plan_clean(env, changed)
    finally:
        fleet(env, "destroy", name, "--grace", "2")


# --- rollout limits -----------------------------------------------------------------------------------------


def _server_rows(lab, name: str) -> list[Any]:
    async def go() -> list[Any]:
        async with Pool() as pool:
            rows = await LbNode(pool, lab.inventory.node("lb1")).stats()
        return [r for r in rows if r.proxy == f"be_{name}" and r.kind == "server"]

    return asyncio.run(go())


@dataclass
class Sample:
    at: float
    up: int | None  # servers of the backend UP and in rotation (weight > 0, not draining); None: stats failed
    servers: int | None  # servers of the backend in any state
    running: int | None  # the service's running containers on all workers; None: a listing failed


@dataclass
class Sampler:
    """Polls lb1's HAProxy stats and every worker's container list about every `period` s, in a thread of its
    own (with its own SSH pool), until stopped or for at most `max_seconds`."""

    lab: Any
    service: str
    period: float = 0.2
    max_seconds: float = 180.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the sampler did not stop"

    async def _main(self) -> None:
        lb_node = self.lab.inventory.node("lb1")
        workers = [n for n in self.lab.inventory.nodes if n.has_role("worker")]
        deadline = time.monotonic() + self.max_seconds
        async with Pool() as pool:
            lb = LbNode(pool, lb_node)
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                stats, *lists = await asyncio.gather(
                    lb.stats(), *(perform(pool, n, CtrDriver(namespace=n.namespace).list_containers(),
                                          timeout=LIST_TIMEOUT) for n in workers), return_exceptions=True)
                up = servers = running = None
                if not isinstance(stats, BaseException):
                    mine = [r for r in stats if r.proxy == f"be_{self.service}" and r.kind == "server"]
                    servers = len(mine)
                    up = sum(1 for r in mine if r.status.startswith("UP") and r.weight > 0)
                if not any(isinstance(x, BaseException) for x in lists):
                    running = sum(1 for infos in lists for i in infos  # type: ignore[union-attr]
                                  if i.labels.get(L.SERVICE) == self.service and i.status == Status.RUNNING)
                self.samples.append(Sample(time.monotonic(), up, servers, running))
                await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))


# (max_surge, max_unavailable, replicas, least UP in HAProxy, most containers running). A one-replica service
# with max_surge 0 surges by one instead of stopping its only replica (fleet.plan.rollout.strategy.effective_limits).
LIMITS = [(1, 0, 4, 4, 5), (0, 1, 4, 3, 4), (2, 1, 4, 3, 6), (0, 1, 1, 1, 2)]


@pytest.mark.parametrize(("surge", "unavailable", "replicas", "floor", "cap"), LIMITS,
                         ids=[f"surge{s}-unavailable{u}-replicas{n}" for s, u, n, _, _ in LIMITS])
def test_rollout_keeps_haproxy_and_containers_within_the_update_limits(lab, env, surge, unavailable, replicas,
                                                                       floor, cap):
    name, port = f"fl-lim-{surge}{unavailable}{replicas}", 19610 + LIMITS.index(
        (surge, unavailable, replicas, floor, cap))
    update = f"{{max_surge: {surge}, max_unavailable: {unavailable}, ready_deadline: 20s, min_ready: 1s}}"
    try:
        out = fleet(env, "apply", playbook(env, name, port, replicas=replicas, update=update))
        assert out.returncode == 0, out.stdout + out.stderr
        # Start from a backend with every replica UP in HAProxy.
        deadline = time.monotonic() + 20
        while sum(1 for r in _server_rows(lab, name) if r.status.startswith("UP") and r.weight > 0) < replicas:
            assert time.monotonic() < deadline, [(r.name, r.status, r.weight) for r in _server_rows(lab, name)]
            time.sleep(0.5)
        v2 = playbook(env, name, port, "v2", replicas=replicas, update=update)
        with Load(lb_address(lab), port, clients=4, max_seconds=150) as load, \
                Sampler(lab, name, max_seconds=170) as sampler:
            time.sleep(1.0)
            applied_at = time.monotonic()
            out = fleet(env, "apply", v2, timeout=200)
            done_at = time.monotonic()
            time.sleep(1.0)
        assert out.returncode == 0, out.stdout + out.stderr
        assert load.result.failed == 0, (load.result.errors, load.result.failures[:5])
        assert load.result.versions.get("v1", 0) > 0 and load.result.versions.get("v2", 0) > 0, load.result.versions
        during = [s for s in sampler.samples if applied_at <= s.at <= done_at]
        seen_up = [s.up for s in sampler.samples if s.up is not None]
        seen_running = [s.running for s in sampler.samples if s.running is not None]
        assert sampler.samples[0].at < applied_at and sampler.samples[-1].at > done_at, "the whole apply was sampled"
        assert len(during) >= 10 and sum(s.up is not None for s in during) >= 0.8 * len(during), len(during)
        assert sum(s.running is not None for s in during) >= 0.8 * len(during), len(during)
        assert min(seen_up) >= floor, [(round(s.at - applied_at, 1), s.up, s.servers, s.running)
                                       for s in sampler.samples]
        assert max(seen_running) <= cap, [(round(s.at - applied_at, 1), s.up, s.servers, s.running)
                                          for s in sampler.samples]
        assert max(s.servers for s in sampler.samples if s.servers is not None) <= cap
        if cap > replicas:
            assert max(seen_running) > replicas, "the sampler saw the surge replicas"
        st = status(env, name)
        assert [x["image"] for x in st["replicas"]] == ["fleet.local/demo:v2"] * replicas, st
        assert sorted(x["replica"] for x in st["replicas"]) == list(range(replicas))
        rows = _server_rows(lab, name)
        assert {r.name for r in rows} == {x["id"] for x in st["replicas"]}, "HAProxy routes to the v2 replicas"
        assert_plan_clean(env, v2)
    finally:
        fleet(env, "destroy", name)
