"""The shared state's costs per operation: the lease on etcd (take, renew, check, release), a record write (a new
revision) and an event append, median and p99 wall time, through fleet's SSH transport, on 1, 3 and 5 members.

Everything runs on this machine: the "record nodes" are real asyncssh servers (tests/sshserver.py, "shell"
handler: each command runs under /bin/sh as sshd would) in a child process, and the etcd members are real
processes on loopback ports (tests/etcd_local.py). Two clients, measured in turn on the same members: `gateway`
(fleet's: an HTTP request to the member's JSON gateway through an SSH direct-tcpip channel kept open on the
pooled connection; the servers forward it to the member as sshd does) and `etcdctl` (as before: one `etcdctl`
process started over SSH per call, `EtcdStore(gateway=False)`). So these are the costs of the calls and of
consensus on one machine, not of a network.

    .venv/bin/python bench/state.py                    # 30 rounds, 1, 3 and 5 members, both clients
    .venv/bin/python bench/state.py --rounds 50 --sizes 3 --clients gateway

History: the file protocol etcd replaced (a flock-guarded lease file and JSON record files on every record node,
a majority needed; removed from fleet), measured by this script before its removal, 30 rounds, 2026-12-04, on
the same shared 2-core machine as the etcd figures below it (median / p99 ms):

    record nodes                   1               3               5
    lease take              35.1 /  98.1    53.0 / 130.7   169.3 / 271.4
    lease renew             38.8 /  76.6    54.6 /  92.1   153.1 / 264.4
    record write           144.1 / 283.4   238.1 / 506.3   577.7 / 1223.0
    lease release           33.6 /  82.2    52.8 / 125.6   156.7 / 230.6

and etcd at the same time (the lease check, one round trip before each action on nodes, is new: the file lease
trusted its last renewal):

    members                        1               3               5
    lease take             139.0 / 306.8   135.1 / 243.4   116.8 / 181.7
    lease renew             66.6 / 180.9    56.2 / 103.7    52.5 / 119.9
    lease check             58.1 / 135.4    53.8 / 112.5    44.6 / 147.2
    record write           140.2 / 301.6   117.4 / 228.8    99.9 / 206.5
    lease release           71.3 / 101.4    60.1 / 115.2    53.5 / 136.7

The JSON gateway through a kept SSH tunnel against etcdctl, both clients in turn in one run, 30 rounds,
2026-12-05, same shared machine (median / p99 ms):

    members                  1 gateway / etcdctl            3 gateway / etcdctl            5 gateway / etcdctl
    get (one call)        1.5 /  4.6   17.1 / 28.7     2.2 /  8.4   20.3 / 28.8     2.2 /  4.7   19.3 / 26.4
    lease take            3.5 /  7.3   41.4 / 60.6     5.5 / 10.6   43.2 / 58.1     6.2 / 12.4   44.2 / 67.9
    lease renew           1.1 /  1.8   19.0 / 28.0     1.7 /  5.8   20.1 / 33.9     1.6 /  8.9   18.7 / 25.6
    lease check           1.0 /  1.6   18.1 / 27.6     1.7 /  4.9   19.4 / 29.8     1.8 /  7.5   20.3 / 24.5
    record write          3.0 /  5.8   40.4 / 53.7     4.5 /  8.3   41.5 / 53.9     5.1 / 12.6   43.1 / 61.9
    event append          1.6 /  6.5   20.0 / 26.8     2.7 /  4.5   21.2 / 29.1     3.1 /  6.1   22.3 / 32.5
    lease release         1.3 /  2.4   18.8 / 24.1     2.4 /  3.7   19.9 / 29.0     2.6 /  7.8   20.9 / 27.5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from etcd_local import LocalEtcd  # noqa: E402
from sim_fanout import start_servers, stop_servers  # noqa: E402

from fleet.core.model import Node  # noqa: E402
from fleet.store.etcd import EtcdLease, EtcdStore, SharedState  # noqa: E402
from fleet.transport import Pool  # noqa: E402

Row = tuple[str, int, str, list[float]]


async def timed(samples: dict[str, list[float]], name: str, step: Awaitable[object]) -> None:
    """Await `step` (a coroutine runs only once awaited, so the clock covers all of it) and keep its wall time."""
    start = time.perf_counter()
    await step
    samples.setdefault(name, []).append(time.perf_counter() - start)


async def etcd_rounds(pool: Pool, nodes: list[Node], port: int, rounds: int,
                      clients: list[str]) -> dict[str, dict[str, list[float]]]:
    """The rounds of each client in turn (round i of one, then round i of the other), so both see the same load."""
    stores = {c: EtcdStore(pool, nodes, port=port, gateway=c == "gateway") for c in clients}
    samples: dict[str, dict[str, list[float]]] = {c: {} for c in clients}
    for store in stores.values():
        await store.get("/fleet/lock")  # connect first: the rounds measure warm connections
    for i in range(rounds):
        for client, store in stores.items():
            await one_round(pool, nodes, store, samples[client], i)
    return samples


async def one_round(pool: Pool, nodes: list[Node], store: EtcdStore, samples: dict[str, list[float]],
                i: int) -> None:
    lease = EtcdLease(store, command="bench", ttl=30)
    state = SharedState(store, lease)
    # The transport alone, then one etcd call over it: the difference is the call's own cost.
    await timed(samples, "ssh `true` (transport only)", pool.run(nodes[0], ["true"]))
    await timed(samples, "get (one call)", store.get("/fleet/lock"))
    await timed(samples, "lease take", lease.acquire())
    await timed(samples, "lease renew", lease.renew())
    await timed(samples, "lease check", lease.check())
    await timed(samples, "record write (new revision)",
                state.next_revision("web", {"image": f"web:{i}", "spec": "x" * 400}))
    await timed(samples, "event append", state.append_event({"what": "bench", "i": i}))
    await timed(samples, "lease release", lease.release())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-state-") as tmp:
        proc, nodes = start_servers(max(args.sizes), f"{tmp}/farm", handler="shell")
        try:
            async with Pool() as pool:
                for size in args.sizes:
                    with LocalEtcd(members=size, prefix="hxb") as etcd:
                        got = await etcd_rounds(pool, nodes[:size], etcd.port, args.rounds, args.clients)
                    rows += [(client, size, name, v) for client, each in got.items() for name, v in each.items()]
        finally:
            stop_servers(proc)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 3, 5], help="etcd members / record nodes")
    ap.add_argument("--clients", nargs="+", choices=["gateway", "etcdctl"], default=["gateway", "etcdctl"])
    args = ap.parse_args()
    rows = asyncio.run(run(args))
    print(f"\n{'client':<8} {'nodes':>5}  {'operation':<30} {'median ms':>10} {'p99 ms':>8} {'n':>4}")
    for store, size, name, values in rows:
        print(f"{store:<8} {size:>5}  {name:<30} {statistics.median(values) * 1000:>10.1f} "
              f"{pct(values, 0.99) * 1000:>8.1f} {len(values):>4}")


if __name__ == "__main__":
    main()
