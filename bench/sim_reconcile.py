"""Reconcile at scale, simulated: `Fleet.apply(specs, "reconcile")` against N in-process SSH servers that answer
the engine's real command set (bench/_sim_node.py: facts, container listing, run, stop, remove, image list from a
per-node in-memory container table). The shared state is one real etcd member on loopback (tests/etcd_local.py)
that the controller reaches through the record nodes ($FLEET_ETCD_PORT): their servers forward its direct-tcpip
channels to the member's JSON gateway as sshd would (and run `etcdctl` for real where it is still used), so the
lease, the records and the node marks cost what they cost; nothing about etcd is answered by the simulation.

The servers run in a child process, so the CPU measured here (time.process_time) is the controller's alone. One
apply places the replicas (cold: it also connects), then no-op reconcile rounds on the open connections, then a
round after 1 % of the containers were removed behind fleet's back (that round starts as many again). Last,
`fleet watch`'s round (fleet.watch.controller.Watcher.round: facts, containers and HAProxy's view read over the
warm pool, compared with what it last acted on) when nothing drifted: the round it runs every second.
It is a simulation on one machine (loopback, one core shared with the servers), not a claim about real networks.

    .venv/bin/python bench/sim_reconcile.py                          # 1000 nodes, 5000 replicas
    .venv/bin/python bench/sim_reconcile.py --nodes 100 --services 10 --replicas 50 --profile prof.out
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from etcd_local import LocalEtcd  # noqa: E402

from fleet.api import Fleet  # noqa: E402
from fleet.config.inventory import load_inventory  # noqa: E402
from fleet.config.spec import ServiceSpec, load_playbooks  # noqa: E402
from fleet.transport import Pool  # noqa: E402
from fleet.watch.controller import Watcher, WatchOptions  # noqa: E402

IMAGE = "fleet.local/demo:v1"
DIGEST = "sha256:" + "6b200d6e" * 8


class Servers:
    """The simulated nodes' process: started, asked for counts or to drop containers, stopped."""

    def __init__(self, count: int, directory: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_sim_node.py"), "--count", str(count), "--dir", directory,
             "--image", f"{IMAGE}={DIGEST}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the simulated nodes did not start")
        return json.loads(line)

    def ask(self, request: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_inventory(path: Path, ready: dict[str, Any], records: int) -> None:
    nodes = {}
    for i, n in enumerate(ready["nodes"]):
        nodes[n["name"]] = {"address": "127.0.0.1", "port": n["port"], "roles": ["worker"],
                            "labels": {"zone": "abc"[i % 3], **({"fleet.records": "true"} if i < records else {})}}
    path.write_text(yaml.safe_dump({"defaults": {"user": "fleet", "key": ready["client_key"],
                                                 "known_hosts": ready["known_hosts"]}, "nodes": nodes}))


def write_playbook(path: Path, services: int, replicas: int) -> None:
    path.write_text(yaml.safe_dump({"services": {
        f"svc{i:03d}": {"image": IMAGE, "replicas": replicas, "resources": {"cpu": 0.01, "memory": "16MiB"},
                        "placement": {"spread_by": "zone"},
                        # Batches of 25 (the default is one replica at a time): the first apply places 5,000.
                        "update": {"min_ready": "0s", "max_surge": 25, "batch_size": 25}}
        for i in range(services)}}))


async def timed(pool: Pool, inventory: Any, specs: list[ServiceSpec], command: str,
                profiler: cProfile.Profile | None = None) -> tuple[float, float, Any]:
    fleet = Fleet(inventory, pool, command=f"sim_reconcile {command}")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        result = await fleet.apply(specs, command)  # type: ignore[arg-type]
    finally:
        if profiler is not None:
            profiler.disable()
    return time.perf_counter() - wall0, time.process_time() - cpu0, result


def check(result: Any, what: str) -> None:
    bad = [o for o in result.outcomes if not o.ok]
    if bad or result.errors:
        errors = dict(list(result.errors.items())[:3])
        raise SystemExit(f"{what}: {len(bad)} services failed ({bad[:1]}), node errors {errors}")


async def run(args: argparse.Namespace, servers: Servers, tmp: Path) -> dict[str, Any]:
    write_inventory(tmp / "inventory.yaml", servers.ready, args.records)
    write_playbook(tmp / "services.yaml", args.services, args.replicas)
    inventory = load_inventory(str(tmp / "inventory.yaml"))
    specs = load_playbooks([str(tmp / "services.yaml")])
    n = len(inventory.nodes)
    profiler = cProfile.Profile() if args.profile else None
    watch_profiler = cProfile.Profile() if args.profile_watch else None
    out: dict[str, Any] = {"nodes": n, "replicas": args.services * args.replicas, "services": args.services}
    async with Pool(limit=args.limit) as pool:
        wall, cpu, result = await timed(pool, inventory, specs, "apply")
        check(result, "apply")
        counts = servers.ask("counts")
        unknown = [k for k in counts["counts"] if k.startswith("unknown") or k == "error"]
        if counts["containers"] != args.services * args.replicas or unknown:
            raise SystemExit(f"apply left {counts['containers']} containers; commands: {counts['counts']}")
        out["apply"] = {"wall_s": wall, "cpu_ms_per_node": 1000 * cpu / n, "commands": counts["counts"]}
        walls, cpus = [], []
        for _ in range(args.rounds):
            wall, cpu, result = await timed(pool, inventory, specs, "reconcile", profiler)
            check(result, "reconcile")
            if any(o.changed for o in result.outcomes):
                raise SystemExit("a no-op reconcile changed something")
            walls.append(wall)
            cpus.append(cpu)
        counts = servers.ask("counts")
        out["noop"] = {"wall_s": statistics.median(walls), "cpu_ms_per_node": 1000 * statistics.median(cpus) / n,
                       "rounds": args.rounds,
                       "commands_per_round": {k: v / args.rounds for k, v in counts["counts"].items()}}
        drop = max(1, args.services * args.replicas // 100)
        dropped = servers.ask(f"drop {drop}")["dropped"]
        wall, cpu, result = await timed(pool, inventory, specs, "reconcile", profiler)
        check(result, "replace")
        counts = servers.ask("counts")
        started = counts["counts"].get("run", 0)
        if counts["containers"] != args.services * args.replicas or started != len(dropped):
            raise SystemExit(f"replace round: {counts['containers']} containers, {started} started for "
                             f"{len(dropped)} removed")
        out["replace"] = {"wall_s": wall, "cpu_ms_per_node": 1000 * cpu / n, "replaced": started,
                          "commands": counts["counts"]}
        watcher = Watcher(Fleet(inventory, pool), WatchOptions((str(tmp / "services.yaml"),)), lambda *a, **k: None)
        watcher.state = "active"
        fleet = Fleet(inventory, pool, command="sim_reconcile watch")
        if await watcher.round(fleet) != "start":  # the first round reconciles, as `fleet watch` starts
            raise SystemExit("the watcher's first round did not reconcile")
        servers.ask("counts")
        walls, cpus = [], []
        for _ in range(args.watch_rounds or args.rounds):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if watch_profiler is not None:
                watch_profiler.enable()
            try:
                why = await watcher.round(fleet)
            finally:
                if watch_profiler is not None:
                    watch_profiler.disable()
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
            if why is not None:
                raise SystemExit(f"a watcher round with nothing drifted acted ({why})")
        counts = servers.ask("counts")
        out["watch"] = {"wall_s": statistics.median(walls), "cpu_ms_per_node": 1000 * statistics.median(cpus) / n,
                        "rounds": len(cpus), "all_cpu_ms_per_node": [round(1000 * c / n, 3) for c in cpus],
                        "commands_per_round": {k: v / len(cpus) for k, v in counts["counts"].items()}}
    if profiler is not None:
        profiler.dump_stats(args.profile)
    if watch_profiler is not None:
        watch_profiler.dump_stats(args.profile_watch)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=100, help="replicas per service")
    parser.add_argument("--rounds", type=int, default=3, help="no-op reconcile rounds (median reported)")
    parser.add_argument("--watch-rounds", type=int, help="watcher rounds with no drift (default: --rounds)")
    parser.add_argument("--records", type=int, default=1, help="record nodes (each runs etcdctl against one etcd)")
    parser.add_argument("--limit", type=int, default=64, help="commands in flight (the Pool's default: 64)")
    parser.add_argument("--profile", help="write a cProfile of the reconcile rounds to this file")
    parser.add_argument("--profile-watch", help="write a cProfile of the watcher's rounds to this file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="fleet-simrec-") as tmp:
        # This run's controller history and inventory cache stay in its own directory.
        os.environ["FLEET_STATE_DIR"] = f"{tmp}/state"
        os.environ["FLEET_CACHE_DIR"] = f"{tmp}/cache"
        servers = Servers(args.nodes, tmp)
        try:
            with LocalEtcd(prefix="hxsim") as etcd:
                os.environ["FLEET_ETCD_PORT"] = str(etcd.port)
                out = asyncio.run(run(args, servers, Path(tmp)))
        finally:
            servers.stop()
    if args.json:
        print(json.dumps(out))
        return
    print(f"# sim_reconcile: {out['nodes']} simulated nodes, {out['replicas']} replicas in {out['services']} "
          f"services, limit={args.limit} (servers in a child process; CPU is the controller's)")
    for key, label in (("apply", "apply (cold, places all)"), ("noop", "no-op reconcile (median)"),
                       ("replace", f"reconcile replacing {out['replace']['replaced']}"),
                       ("watch", "fleet watch round, no drift")):
        r = out[key]
        print(f"{label:<32} wall {r['wall_s']:7.2f} s   controller CPU {r['cpu_ms_per_node']:6.2f} ms/node")
    print(f"fleet watch rounds, controller CPU ms/node: {out['watch']['all_cpu_ms_per_node']}")
    print(f"peak RSS {out['peak_rss_mib']:.0f} MiB; no-op round commands: {out['noop']['commands_per_round']}; "
          f"watch round commands: {out['watch']['commands_per_round']}")


if __name__ == "__main__":
    main()
