"""Image push at 20 nodes: a ~10 MiB demo image streamed over SSH to every node, then pushed again (skipped).

Builds its own lab (prefix fp, 20 workers, no lb) and always tears it down. Prints time and bytes per push.
Run: .venv/bin/python bench/push.py [--nodes 20] [--size-mb 10] [--limit 8]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from fleet.api import Fleet
from fleet.config.inventory import load_inventory
from fleet.engine import images
from fleet.image.demo import build_demo
from fleet.lab.lab import Lab
from fleet.lab.render import LabConfig
from fleet.transport import Pool


async def bench(inventory_path: str, archive: str, limit: int) -> None:
    inv = load_inventory(inventory_path)
    async with Pool() as pool:
        fleet = Fleet(inv, pool)
        t0 = time.perf_counter()
        reports = await fleet.reports()
        print(f"facts from {len(reports)} nodes (connect included): {time.perf_counter() - t0:.2f}s")
        for label in ("first push", "second push"):
            t0 = time.perf_counter()
            results = await images.push(pool, reports, archive, limit=limit)
            elapsed = time.perf_counter() - t0
            by_status: dict[str, int] = {}
            for r in results:
                by_status[r.status] = by_status.get(r.status, 0) + 1
            sent = sum(r.bytes_sent for r in results)
            slowest = max(r.seconds for r in results)
            print(f"{label}: {elapsed:.2f}s wall, {sent / 2**20:.1f} MiB sent ({sent} bytes), "
                  f"{by_status}, slowest node {slowest:.2f}s, {sent / 2**20 / elapsed:.1f} MiB/s aggregate")
            for r in results:
                if r.error:
                    print(f"  {r.node}: {r.error}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--size-mb", type=int, default=10)
    ap.add_argument("--limit", type=int, default=8)
    args = ap.parse_args()
    lab = Lab(LabConfig(prefix="fp", subnet="10.244.0.0/24", nodes=args.nodes, lb=0,
                        root="/var/lib/fleet-lab-bench"))
    lab.down()
    try:
        t0 = time.perf_counter()
        lab.up()
        print(f"lab of {args.nodes} nodes up in {time.perf_counter() - t0:.2f}s")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            built = build_demo("bench", Path(tmp) / "demo.tar", size_mb=args.size_mb)
            print(f"built {built.name} {built.digest[:19]} {built.size / 2**20:.1f} MiB "
                  f"in {time.perf_counter() - t0:.2f}s")
            asyncio.run(bench(lab.inventory_path, built.path, args.limit))
    finally:
        lab.down()


if __name__ == "__main__":
    main()
