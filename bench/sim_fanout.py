"""Fan-out at scale, simulated: M real asyncssh servers on loopback, timed cold (connecting) and warm.

The servers (tests/sshserver.py, "ok" handler: answers in-process, no subprocess) run in a child
process so that the CPU measured here is the controller's alone. This shows how the controller
scales past the lab's few nodes; it is a simulation on one machine, not a claim about real networks.

    .venv/bin/python bench/sim_fanout.py                # M = 100 and 500
    .venv/bin/python bench/sim_fanout.py --nodes 1000 --rounds 10 --kex default
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet.core.model import Node  # noqa: E402
from fleet.transport import CIPHERS, KEX_ALGS, Pool, fanout  # noqa: E402


def start_servers(count: int, directory: str, handler: str = "ok") -> tuple[subprocess.Popen[str], list[Node]]:
    """`count` servers in a child process (`handler`: "ok" answers in-process, "shell" runs /bin/sh)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "sshserver.py"), "--count", str(count), "--dir", directory,
         "--handler", handler],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    nodes = [
        Node(
            name=n["name"],
            address="127.0.0.1",
            port=n["port"],
            user="fleet",
            key_files=(ready["client_key"],),
            known_hosts=ready["known_hosts"],
        )
        for n in ready["nodes"]
    ]
    return proc, nodes


def stop_servers(proc: subprocess.Popen[str]) -> None:
    if proc.stdin:
        proc.stdin.close()  # the server farm stops when its stdin closes
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def measure(
    nodes: list[Node], rounds: int, limit: int, kex: str | None, ciphers: str | None
) -> dict[str, float]:
    async with Pool(limit=limit, kex_algs=kex, encryption_algs=ciphers) as pool:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        cold = await fanout(pool, nodes, ["true"], timeout=120)
        cold_wall, cold_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        failed = [r for r in cold if not r.ok]
        if failed:
            raise SystemExit(f"{len(failed)} nodes failed, e.g. {failed[0]}")
        walls, cpus = [], []
        for _ in range(rounds):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            warm = await fanout(pool, nodes, ["true"], timeout=60)
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
            assert all(r.ok and r.stdout == "ok\n" for r in warm)
    n = len(nodes)
    return {
        "cold_wall_s": cold_wall,
        "cold_cpu_ms_per_node": 1000 * cold_cpu / n,
        "warm_wall_s": statistics.median(walls),
        "warm_cpu_ms_per_node": 1000 * statistics.median(cpus) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="100,500", help="comma-separated node counts (default 100,500)")
    parser.add_argument("--rounds", type=int, default=5, help="warm rounds per count (median reported)")
    parser.add_argument("--limit", type=int, default=64, help="commands in flight (the Pool's default: 64)")
    parser.add_argument(
        "--kex", choices=["fleet", "default"], default="fleet",
        help="fleet: curve25519 first (the Pool's default); default: asyncssh's order (ML-KEM hybrid first)",
    )
    parser.add_argument(
        "--ciphers", choices=["fleet", "default"], default="fleet",
        help="fleet: AES-GCM first (the Pool's default); default: asyncssh's order (chacha20-poly1305 first)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per count")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    kex = KEX_ALGS if args.kex == "fleet" else None
    ciphers = CIPHERS if args.ciphers == "fleet" else None
    print(f"# sim_fanout: limit={args.limit} kex={args.kex} ciphers={args.ciphers} rounds={args.rounds}"
          " (simulated nodes on loopback, servers in a child process)")
    if not args.json:
        print(f"{'nodes':>6} {'cold wall':>10} {'cold cpu/node':>14} {'warm wall':>10} {'warm cpu/node':>14}"
              f" {'peak RSS':>9}")
    for count in (int(c) for c in args.nodes.split(",")):
        with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp:
            proc, nodes = start_servers(count, tmp)
            try:
                result = asyncio.run(measure(nodes, args.rounds, args.limit, kex, ciphers))
            finally:
                stop_servers(proc)
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if args.json:
            print(json.dumps({"nodes": count, **result, "peak_rss_mib": rss_mib}))
        else:
            print(f"{count:>6} {result['cold_wall_s']:>9.2f}s {result['cold_cpu_ms_per_node']:>11.2f} ms"
                  f" {result['warm_wall_s']:>9.3f}s {result['warm_cpu_ms_per_node']:>11.2f} ms {rss_mib:>6.0f} MiB")


if __name__ == "__main__":
    main()
