"""One fan-out measurement in a fresh process: `fleet` (its Pool) or a bare asyncssh gather, same command.

Prints JSON: the first (cold: connect + command) round's wall time, the warm rounds' wall times on the
open connections, controller CPU per node in the warm rounds, and this process's peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time


async def fleet_mode(inv_path: str, rounds: int) -> dict[str, object]:
    from fleet.api import Fleet
    from fleet.config.inventory import load_inventory
    from fleet.transport import Pool

    inv = load_inventory(inv_path)
    async with Pool() as pool:
        f = Fleet(inv, pool)
        t0 = time.perf_counter()
        reports = await f.nodes()
        cold = time.perf_counter() - t0
        ok = sum(r.ok for r in reports)
        walls, cpu0 = [], time.process_time()
        for _ in range(rounds):
            t = time.perf_counter()
            reports = await f.nodes()
            walls.append(time.perf_counter() - t)
            ok = min(ok, sum(r.ok for r in reports))
        cpu = time.process_time() - cpu0
    return {"cold": cold, "warm": walls, "cpu_per_node_ms": 1000 * cpu / max(rounds, 1) / len(inv.nodes), "ok": ok}


# What a straightforward facts command looks like (../shared/FACTS.md §10 measured peers with it): the
# runtime's own client for the task list, plus /proc reads. It starts `ctr` on every node every round.
NAIVE = "ctr -n fleet tasks ls; cat /proc/loadavg /proc/meminfo; nproc; df -Pk /var/lib/containerd"


async def bare_mode(inv_path: str, rounds: int, naive: bool = False) -> dict[str, object]:
    import asyncssh

    from fleet.config.inventory import load_inventory
    from fleet.node.facts import FACTS_SCRIPT

    inv = load_inventory(inv_path)
    cmd = NAIVE if naive else "NS=fleet sh -c " + __import__("shlex").quote(FACTS_SCRIPT)

    async def connect(node):  # type: ignore[no-untyped-def]
        return await asyncssh.connect(node.address, node.port, username=node.user, known_hosts=node.known_hosts,
                                      client_keys=list(node.key_files))

    t0 = time.perf_counter()
    conns = await asyncio.gather(*(connect(n) for n in inv.nodes))
    results = await asyncio.gather(*(c.run(cmd) for c in conns))
    cold = time.perf_counter() - t0
    ok = sum(r.exit_status == 0 for r in results)
    walls, cpu0 = [], time.process_time()
    for _ in range(rounds):
        t = time.perf_counter()
        results = await asyncio.gather(*(c.run(cmd) for c in conns))
        walls.append(time.perf_counter() - t)
        ok = min(ok, sum(r.exit_status == 0 for r in results))
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    return {"cold": cold, "warm": walls, "cpu_per_node_ms": 1000 * cpu / max(rounds, 1) / len(inv.nodes), "ok": ok}


def main() -> None:
    mode, inv_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "fleet":
        out = asyncio.run(fleet_mode(inv_path, rounds))
    else:
        out = asyncio.run(bare_mode(inv_path, rounds, naive=mode == "naive"))
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
