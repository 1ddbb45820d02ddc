"""`fleet watch`: from a replica's SIGKILL to HAProxy holding the wanted ready replicas again, and `fleet status`
cold against through the watcher's socket.

    .venv/bin/python bench/watch.py [--kills 10] [--prefix fw] [--subnet 10.249.0.0/24]

Builds its own lab (3 workers, 1 lb) and always removes it. Applies a 3-replica service (HTTP check every
500 ms, fall 2), starts `fleet watch` (a subprocess, stopped by its PID), then `--kills` times: clears the restart
label of one replica (so that containerd's restart monitor, 0-10 s, does not race the watcher), SIGKILLs its
process by PID and polls HAProxy's admin socket (on lb1, without SSH) every 20 ms until it holds 3 UP servers
other than the killed one. The same with `--no-events` (rounds every second only) for comparison. Then `fleet
status`: in-process (`Fleet.connect` + `status()` against `fleet.transport.warm.ask`), and the CLI as a user runs
it, with and without the watcher (FLEET_NO_WATCHER=1). Also the watcher's own CPU while idle. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet.image.demo import build_demo  # noqa: E402
from fleet.lab.lab import Lab  # noqa: E402
from fleet.lab.render import LabConfig  # noqa: E402
from fleet.node.paths import DEFAULT  # noqa: E402

FLEET = str(Path(sys.executable).with_name("fleet"))
PORT = 18471
WANTED = 3


def fleet(inventory: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEET, *args, "-i", inventory], capture_output=True, text=True, timeout=180, env=env)


def backend_up(lab: Lab) -> dict[str, str]:
    out = lab.exec_in("lb1", ["sh", "-c", "echo 'show stat -1 4 -1' | "
                              f"socat stdio unix-connect:{DEFAULT.haproxy_admin_socket}"]).stdout
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    return {r[1]: r[17] for r in rows if r[0] == "be_wb"}


def tasks(lab: Lab) -> dict[str, tuple[str, int]]:
    found = {}
    for node in ("n1", "n2", "n3"):
        for line in lab.exec_in(node, ["ctr", "-n", "fleet", "tasks", "ls"]).stdout.splitlines()[1:]:
            parts = line.split()
            if parts[2] == "RUNNING":
                found[parts[0]] = (node, int(parts[1]))
    return found


def kill_to_ready(lab: Lab) -> float:
    up = [s for s, st in backend_up(lab).items() if st.startswith("UP")]
    running = tasks(lab)
    victim = sorted(s for s in up if s in running)[0]
    node, pid = running[victim]
    lab.exec_in(node, ["ctr", "-n", "fleet", "containers", "label", victim, "containerd.io/restart.status="])
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while time.monotonic() - start < 30:
        if len([s for s, st in backend_up(lab).items() if st.startswith("UP") and s != victim]) == WANTED:
            return time.monotonic() - start
        time.sleep(0.02)
    raise RuntimeError(f"not ready 30 s after the kill: {backend_up(lab)}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_watch(inventory: str, playbook: str, state: str, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, FLEET_STATE_DIR=state)
    log = open(Path(state) / "watch.log", "a")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([FLEET, "watch", "-i", inventory, *extra, playbook], stdout=log,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if '"event":"reconciled"' in (Path(state) / "watch.log").read_text():
            return proc
        time.sleep(0.1)
    raise RuntimeError("the watcher never reconciled")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


async def status_in_process(inventory: str, n: int) -> dict[str, float]:
    from fleet.api import Fleet
    from fleet.config.inventory import load_inventory
    from fleet.transport.warm import ask

    inv = load_inventory(inventory)
    cold, warm = [], []
    for _ in range(n):
        t = time.perf_counter()
        async with Fleet.connect(inv) as f:
            await f.status()
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert await ask(inv.path, "status") is not None
        warm.append(time.perf_counter() - t)
    return {"cold_median": statistics.median(cold), "socket_median": statistics.median(warm)}


def cli_wall(inventory: str, state: str, n: int, watcher: bool) -> float:
    env = dict(os.environ, FLEET_STATE_DIR=state)
    if not watcher:
        env["FLEET_NO_WATCHER"] = "1"
    walls = []
    for _ in range(n):
        t = time.perf_counter()
        assert fleet(inventory, "status", env=env).returncode == 0
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "median_s": round(statistics.median(values), 3), "worst_s": round(max(values), 3),
            "all_s": [round(v, 2) for v in values]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--prefix", default="fw")
    ap.add_argument("--subnet", default="10.249.0.0/24")
    args = ap.parse_args()
    lab = Lab(LabConfig(prefix=args.prefix, subnet=args.subnet, nodes=3, lb=1, root="/var/lib/fleet-lab-bench"))
    lab.down()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-watch-") as tmp:
        try:
            lab.up()
            inv = lab.inventory_path
            archive = build_demo("wbench", Path(tmp) / "demo.tar")
            assert fleet(inv, "image", "push", archive.path).returncode == 0
            pb = Path(tmp) / "wb.yaml"
            pb.write_text(json.dumps({"services": {"wb": {
                "image": archive.name, "replicas": WANTED, "resources": {"cpu": 0.05, "memory": "32MiB"},
                "health": {"http": "/healthz", "interval": "500ms", "timeout": "1s", "failure_threshold": 2},
                "update": {"min_ready": "0s"}, "stop_grace_period": "1s", "lb": {"port": PORT}}}}))
            out = fleet(inv, "apply", str(pb))
            assert out.returncode == 0, out.stdout + out.stderr
            for mode, extra, kills in (("events", (), args.kills), ("rounds only", ("--no-events",), args.kills // 2)):
                state = tempfile.mkdtemp(dir=tmp)
                proc = start_watch(inv, str(pb), state, *extra)
                try:
                    times = []
                    for _ in range(kills):
                        times.append(kill_to_ready(lab))
                        time.sleep(1.5)
                    results[f"kill_to_ready ({mode})"] = summary(times)
                    print(mode, results[f"kill_to_ready ({mode})"], file=sys.stderr)
                    if mode == "events":
                        before = cpu_seconds(proc.pid)
                        time.sleep(10)
                        results["watcher_idle_cpu_per_s"] = round((cpu_seconds(proc.pid) - before) / 10, 4)
                        os.environ["FLEET_STATE_DIR"] = state  # where this watcher's socket is
                        results["status_in_process"] = {
                            k: round(v, 3) for k, v in asyncio.run(status_in_process(inv, 10)).items()}
                        results["status_cli_median_s"] = {
                            "cold": round(cli_wall(inv, state, 5, False), 3),
                            "through_socket": round(cli_wall(inv, state, 5, True), 3)}
                finally:
                    stop(proc)
            fleet(inv, "destroy", "wb", "--grace", "1")
        finally:
            lab.down()
    results["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
