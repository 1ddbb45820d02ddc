"""Measure the scheduler: packing quality against the volume lower bound, and time to place 10,000 replicas.

Run: .venv/bin/python bench/pack.py [--seeds 10]. Prints figures; targets: within 5% of the bound, < 1 s.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from fleet.core.model import Resources
from fleet.plan.scheduler import NodeState, ServiceDemand, Strategy, place

MiB = 1 << 20
GiB = 1 << 30

# Container sizes as people request them, sidecars to databases; CPU and memory loosely correlated.
SIZES = [
    Resources(0.1, 128 * MiB), Resources(0.25, 256 * MiB), Resources(0.25, 512 * MiB),
    Resources(0.5, 512 * MiB),
    Resources(0.5, 1 * GiB), Resources(1.0, 1 * GiB), Resources(1.0, 2 * GiB), Resources(2.0, 2 * GiB),
    Resources(2.0, 4 * GiB), Resources(4.0, 8 * GiB), Resources(0.5, 2 * GiB), Resources(1.5, 3 * GiB),
]
NODE = Resources(8.0, 32 * GiB)


def random_mix(rng: random.Random, services: int, strategy: Strategy) -> list[ServiceDemand]:
    out = []
    for s in range(services):
        base = rng.choice(SIZES)
        # Skew some services towards CPU or memory so the two dimensions do not move in lockstep.
        skew = [0.5, 1, 1, 2]
        res = Resources(round(base.cpu * rng.choice(skew), 3), int(base.memory * rng.choice(skew)))
        out.append(ServiceDemand(f"svc{s:04d}", rng.randint(1, 40), res, strategy=strategy))
    return out


def lower_bound(wanted: list[ServiceDemand]) -> int:
    cpu = sum(d.resources.cpu * d.replicas for d in wanted)
    mem = sum(d.resources.memory * d.replicas for d in wanted)
    return math.ceil(max(cpu / NODE.cpu, mem / NODE.memory))


def packing(seeds: int, services: int) -> None:
    print(f"packing: {services} services per mix, nodes of cpu {NODE.cpu:g}, memory {NODE.memory // GiB} GiB")
    strategies: tuple[Strategy, ...] = ("pack", "spread")
    for strategy in strategies:
        overs = []
        for seed in range(seeds):
            wanted = random_mix(random.Random(seed), services, strategy)
            bound = lower_bound(wanted)
            nodes = [NodeState(f"n{i:04d}", NODE) for i in range(bound * 2)]
            result = place(nodes, [], wanted)
            assert not result.unplaced, result.unplaced[:3]
            used = len({a.node for a in result.assignments})
            overs.append(100.0 * (used - bound) / bound)
            if strategy == "pack":
                replicas = sum(d.replicas for d in wanted)
                print(f"  seed {seed:2d}: {replicas:5d} replicas, lower bound {bound:4d} nodes, "
                      f"used {used:4d} (+{overs[-1]:.1f}%)")
        print(f"  strategy {strategy:6s}: average {statistics.mean(overs):.1f}% over the lower bound "
              f"(worst {max(overs):.1f}%)")


def speed(repeats: int, services: int) -> None:
    rng = random.Random(42)
    zones = ["a", "b", "c"]
    nodes = [
        NodeState(f"n{i:04d}", Resources(16.0, 64 * GiB), Resources(0.5, 1 * GiB),
                  labels={"zone": zones[i % 3], "disk": "ssd" if i % 4 else "hdd"},
                  ports_in_use=frozenset({22}))
        for i in range(1000)
    ]
    wanted = []
    for s in range(services):
        wanted.append(ServiceDemand(
            f"svc{s:05d}", 10_000 // services, rng.choice(SIZES[:8]),
            required_labels={"disk": "ssd"} if s % 5 == 0 else {},
            spread_by="zone" if s % 2 else None,
            strategy="pack" if s % 3 == 0 else "spread",
        ))
    total = sum(d.replicas for d in wanted)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = place(nodes, [], wanted)
        times.append(time.perf_counter() - start)
    assert len(result.assignments) == total, (len(result.assignments), result.unplaced[:2])
    start = time.perf_counter()
    again = place(nodes, result.as_existing(), wanted)
    keep_time = time.perf_counter() - start
    assert all(a.reason == "keep" for a in again.assignments)
    print(f"speed: {total} replicas of {len(wanted)} services on {len(nodes)} nodes: "
          f"best {min(times):.3f} s, median {statistics.median(times):.3f} s over {repeats} runs; "
          f"re-run with all kept {keep_time:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    packing(args.seeds, args.services)
    for services in (200, 10_000):
        speed(args.repeats, services)


if __name__ == "__main__":
    main()
