"""`fleet watch` on the real lab: a killed replica is serving again within 5 s, a node lost for less than its
grace moves nothing and one lost for longer has its replicas started elsewhere (and back to one copy each when it
returns), and a standby watcher takes over within the lease's ttl when the active one is SIGKILLed.

Every watcher is a subprocess of this test (the CLI as a user starts it), stopped by its PID in `finally`. The
killed replica's process is SIGKILLed by its PID on the node (nodes share the host's PID namespace) after its
restart label is cleared, so that containerd's restart monitor (0–10 s) does not race the watcher: the figure is
the watcher's. A node is lost by killing every sshd process in its network namespace and stopping (SIGSTOP) its
containerd; the containers keep running and keep serving, as on a machine whose agent and daemon hang.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import INSTALLED_CLI, run_fleet, start_fleet
from loadgen import Load

from fleet.core import labels as L
from fleet.image.demo import build_demo
from fleet.node.paths import DEFAULT

pytestmark = pytest.mark.lab

SERVICE = "wt"
PORT = 18461
GRACE = 6.0
WANTED = 3


def cli(lab: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=lab.inventory_path, columns=250, timeout=120, cli=INSTALLED_CLI)


@pytest.fixture(scope="module")
def service(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-replica service behind HAProxy (one replica per worker); its playbook's path. Destroyed at the end."""
    d = tmp_path_factory.mktemp("watch")
    archive = build_demo(f"wt{L.random_suffix(6)}", d / "demo.tar")
    assert cli(lab, "image", "push", archive.path).returncode == 0
    pb = d / "wt.yaml"
    pb.write_text(yaml.safe_dump({"services": {SERVICE: {
        "image": archive.name, "replicas": WANTED, "resources": {"cpu": 0.05, "memory": "32MiB"},
        "health": {"http": "/healthz", "interval": "500ms", "timeout": "1s", "failure_threshold": 2},
        "update": {"min_ready": "0s"}, "stop_grace_period": "1s", "lb": {"port": PORT}}}}))
    out = cli(lab, "apply", str(pb))
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        yield str(pb)
    finally:
        cli(lab, "destroy", SERVICE, "--grace", "1")


class Watcher:
    """One `fleet watch` subprocess, its JSON log in a file; `lines()` reads what it logged so far."""

    def __init__(self, lab: Any, playbook: str, state: Path, *extra: str, ttl: float | None = None,
                 notify: str | None = None) -> None:
        env = dict(os.environ, FLEET_STATE_DIR=str(state))
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify
        if ttl is not None:
            env["FLEET_LEASE_TTL"] = str(ttl)
        state.mkdir(parents=True, exist_ok=True)
        self.log = state / "watch.log"
        self._out = self.log.open("w")
        self.proc = start_fleet("watch", "-i", lab.inventory_path, "--node-grace", f"{GRACE:g}s", *extra,
                                playbook, env=env, stdout=self._out, stderr=subprocess.STDOUT, cli=INSTALLED_CLI)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "text", "message": line})
        return out

    def wait_for(self, what: Callable[[dict[str, Any]], bool], timeout: float, after: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.lines()[after:] if what(e)]
            if found:
                return found[0]
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        pytest.fail(f"the watcher did not log what was awaited in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._out.close()
        return self.proc.returncode


@contextmanager
def watching(lab: Any, playbook: str, state: Path, *extra: str, ttl: float | None = None,
             notify: str | None = None) -> Iterator[Watcher]:
    w = Watcher(lab, playbook, state, *extra, ttl=ttl, notify=notify)
    try:
        yield w
    finally:
        w.stop()


def reconciled(e: dict[str, Any]) -> bool:
    return e.get("event") == "reconciled"


def backend(lab: Any) -> dict[str, str]:
    """HAProxy's server states of the service's backend: {server: status}, read on lb1 without SSH."""
    out = lab.lab.exec_in("lb1", ["sh", "-c", "echo 'show stat -1 4 -1' | "
                                  f"socat stdio unix-connect:{DEFAULT.haproxy_admin_socket}"]).stdout
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    return {r[1]: r[17] for r in rows if r[0] == f"be_{SERVICE}"}


def up(lab: Any, without: frozenset[str] | set[str] = frozenset()) -> list[str]:
    return sorted(s for s, status in backend(lab).items() if status.startswith("UP") and s not in without)


def replicas(lab: Any) -> list[dict[str, Any]]:
    doc = json.loads(run_fleet("ps", "--json", inventory=lab.inventory_path,
                               env=dict(os.environ, FLEET_NO_WATCHER="1")).stdout)
    return sorted(((c["node"], c["id"], c["replica"]) for c in doc["containers"] if c.get("service") == SERVICE
                   and c["status"].startswith("running")), key=lambda c: (c[2], c[0]))  # type: ignore[return-value]


def task_pid(lab: Any, node: str, cid: str) -> int:
    for line in lab.lab.exec_in(node, ["ctr", "-n", "fleet", "tasks", "ls"]).stdout.splitlines()[1:]:
        parts = line.split()
        if parts[0] == cid:
            return int(parts[1])
    raise AssertionError(f"{cid} has no task on {node}")


def kill_replica(lab: Any, node: str, cid: str) -> float:
    """SIGKILL the replica's process; returns when (monotonic). Its restart label is cleared first (see top)."""
    lab.lab.exec_in(node, ["ctr", "-n", "fleet", "containers", "label", cid, "containerd.io/restart.status="])
    pid = task_pid(lab, node, cid)
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def wait_serving(lab: Any, gone: set[str], timeout: float) -> float:
    """Until HAProxy holds WANTED ready servers other than `gone`; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(up(lab, gone)) == WANTED:
            return time.monotonic()
        time.sleep(0.05)
    pytest.fail(f"HAProxy did not hold {WANTED} ready servers besides {gone} within {timeout}s: {backend(lab)}")


def watch_lease(lab: Any) -> str:
    """The watcher's leadership key in etcd on the record node (n1), "" when no watcher leads."""
    return lab.lab.exec_in("n1", ["etcdctl", "--endpoints=127.0.0.1:2379", "get", "/fleet/watch/leader",
                                  "--print-value-only"], check=False).stdout.strip()


def netns_pids(lab: Any, node: str, comm: str) -> list[int]:
    ns = lab.lab.node(node).netns(lab.lab.cfg.prefix)
    found = []
    for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                found.append(int(pid))
        except OSError:
            continue
    return found


@contextmanager
def node_lost(lab: Any, node: str) -> Iterator[None]:
    """The node's sshd (listener and every connection) killed and its containerd stopped; both back after."""
    daemons = netns_pids(lab, node, "containerd")
    assert len(daemons) == 1, daemons
    lab.lab.stop_sshd(node)
    for pid in netns_pids(lab, node, "sshd"):
        os.kill(pid, signal.SIGKILL)
    os.kill(daemons[0], signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(daemons[0], signal.SIGCONT)
        lab.lab.start_sshd(node)


def test_killed_replica_serving_again_within_5s_and_lost_node_moved_only_after_its_grace(lab, service, tmp_path):
    address = lab.inventory.node("lb1").address
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify"))
    systemd.settimeout(30)
    with systemd, watching(lab, service, tmp_path / "a", notify=str(tmp_path / "notify")) as w, \
            Load(address, PORT, clients=4, max_seconds=150) as load:
        w.wait_for(reconciled, 60)
        assert systemd.recv(64) == b"READY=1", "readiness for systemd's Type=notify"
        assert len(up(lab)) == WANTED
        before = replicas(lab)
        # 1. A replica's process SIGKILLed: a new replica takes its place, ready in HAProxy within 5 s.
        node, victim, _ = before[0]
        mark = len(w.lines())
        killed = kill_replica(lab, node, victim)
        ready = wait_serving(lab, {victim}, 10)
        assert ready - killed < 5.0, f"serving again after {ready - killed:.2f}s"
        done = w.wait_for(lambda e: reconciled(e) and SERVICE in e.get("changed", {}), 10, mark)
        assert done["changed"][SERVICE]["started"] == 1
        time.sleep(1.0)
        # Counted from the replacement's first passed check (HAProxy says UP); the window before is reported.
        serving_since = time.time() - (time.monotonic() - ready)
        window = [f for f in load.result.failures if f[0] < serving_since]
        print(f"kill to ready {ready - killed:.2f}s; failed requests between the kill and ready: {len(window)} "
              f"of {load.result.ok + load.result.failed}")
        settled = replicas(lab)
        assert len(settled) == WANTED and victim not in {c[1] for c in settled}
        # One-shot reads through the watcher's socket say what they say on their own connections; the active
        # watcher's lease is on the record node.
        env = dict(os.environ, FLEET_STATE_DIR=str(tmp_path / "a"))
        warm = run_fleet("status", "--json", inventory=lab.inventory_path, env=env)
        cold = run_fleet("status", "--json", inventory=lab.inventory_path, env=dict(env, FLEET_NO_WATCHER="1"))
        assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
        assert json.loads(warm.stdout)["services"] == json.loads(cold.stdout)["services"]
        assert '"command":"fleet watch"' in watch_lease(lab)

        # 2. A node lost for less than node_grace: nothing moves.
        sick = next(n for n, _, _ in settled if n != "n1")
        mark = len(w.lines())
        with node_lost(lab, sick):
            time.sleep(GRACE / 2)
        w.wait_for(lambda e: e.get("event") == "node-lost" and e.get("node") == sick, 5, mark)
        w.wait_for(lambda e: e.get("event") == "node-back" and e.get("node") == sick, 15, mark)
        time.sleep(1.5)  # rounds after its return
        assert replicas(lab) == settled
        assert [e for e in w.lines()[mark:] if e.get("event") == "step" and e.get("step") == "start"] == []

        # 3. Lost for longer: its replica starts elsewhere after the grace, and the copies go back to one each.
        mark = len(w.lines())
        on_sick = {cid for n, cid, _ in settled if n == sick}
        with node_lost(lab, sick):
            lost_at = time.monotonic()
            started = w.wait_for(lambda e: e.get("event") == "step" and e.get("step") == "start", 30, mark)
            moved_after = time.monotonic() - lost_at
            assert started["node"] != sick
            assert moved_after >= GRACE - 0.5, f"replaced {moved_after:.1f}s after the node was lost"
            wait_serving(lab, on_sick, 15)
        mark = len(w.lines())
        w.wait_for(lambda e: e.get("event") == "step" and "second copy" in e.get("message", ""), 30, mark)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            final = replicas(lab)
            if sorted(r for _, _, r in final) == [0, 1, 2] and len(up(lab)) == WANTED:
                break
            time.sleep(0.3)
        assert sorted(r for _, _, r in final) == [0, 1, 2], final
        time.sleep(0.5)
    assert [f for f in load.result.failures if f[0] >= serving_since] == [], load.result.errors
    assert w.proc.returncode == 0, "SIGTERM stops the watcher cleanly"
    assert w.lines()[-1]["event"] == "stop"
    assert watch_lease(lab) == "", "released on SIGTERM"


def test_standby_watcher_takes_over_within_the_lease_ttl_when_the_active_one_is_killed(lab, service, tmp_path):
    ttl = 3.0
    address = lab.inventory.node("lb1").address
    # The second watcher starts once the first is active, so which one is the standby is known.
    with watching(lab, service, tmp_path / "a", "--no-socket", ttl=ttl) as a:
        a.wait_for(lambda e: e.get("event") == "active", 30)
        a.wait_for(reconciled, 60)
        with watching(lab, service, tmp_path / "b", "--no-socket", ttl=ttl) as b:
            b.wait_for(lambda e: e.get("event") == "standby", 30)
            a.stop(signal.SIGKILL)
            killed = time.monotonic()
            b.wait_for(lambda e: e.get("event") == "active", ttl + 5)
            took = time.monotonic() - killed
            assert took <= ttl + 1.5, f"the standby took over after {took:.1f}s (lease ttl {ttl:g}s)"
            b.wait_for(reconciled, 30)
            # The new active watcher acts: a killed replica is replaced by it.
            with Load(address, PORT, clients=2, max_seconds=60) as load:
                node, victim, _ = replicas(lab)[0]
                mark = len(b.lines())
                killed = kill_replica(lab, node, victim)
                ready = wait_serving(lab, {victim}, 10)
                b.wait_for(lambda e: reconciled(e) and SERVICE in e.get("changed", {}), 10, mark)
                time.sleep(0.5)
    assert ready - killed < 5.0
    since = time.time() - (time.monotonic() - ready)
    assert [f for f in load.result.failures if f[0] >= since] == [], load.result.errors
