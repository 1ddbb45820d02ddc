"""What a replica's own network namespace costs: start to ready, and request latency through HAProxy.

    .venv/bin/python bench/netns.py [--rounds 20] [--requests 2000] [--prefix fn] [--subnet 10.248.0.0/24]

Builds its own lab (3 workers, 1 lb) and always removes it. Start to ready: one replica of the demo image on
worker n1, started with fleet's own code path (`fleet.engine.containers.run_container` over SSH: for `bridge`
the CNI attach script, then `ctr run`) until its host port answers HTTP 200 from this machine, then stopped and
removed (with the namespace's teardown, timed apart); `host` and `bridge` alternate, `--rounds` each, medians
printed. Latency: two 3-replica services applied with `fleet apply` (one `network: host`, one `bridge`), then
`--requests` sequential GETs through lb1 for each, one keep-alive connection; median and p99. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet.api import Fleet  # noqa: E402
from fleet.config.inventory import load_inventory  # noqa: E402
from fleet.config.spec import ServiceSpec  # noqa: E402
from fleet.core.model import Resources  # noqa: E402
from fleet.engine.containers import remove_container, run_container  # noqa: E402
from fleet.engine.runspec import hosts_text, prepare_node_script, run_spec  # noqa: E402
from fleet.image.demo import build_demo  # noqa: E402
from fleet.lab.lab import Lab  # noqa: E402
from fleet.lab.render import LabConfig  # noqa: E402
from fleet.node import cni  # noqa: E402
from fleet.plan.scheduler import Assignment  # noqa: E402
from fleet.transport import Pool  # noqa: E402

IMAGE = "fleet.local/demo:v1"


def fleet_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def answers(address: str, port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(address, port, timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


async def start_to_ready(inventory: str, rounds: int) -> dict[str, list[float]]:
    inv = load_inventory(inventory)
    times: dict[str, list[float]] = {"host": [], "bridge": [], "bridge teardown": [], "host teardown": []}
    async with Pool() as pool:
        reports = await Fleet(inv, pool).nodes()
        report = next(r for r in reports if r.node.name == "n1")
        address = report.node.address
        hosts = hosts_text(None, [])  # the node prepared as a run does it (hosts file, pinned host namespace)
        await pool.check(report.node, prepare_node_script(hosts, None), stdin=hosts, timeout=30)
        for i in range(rounds * 2):
            mode = ("host", "bridge")[i % 2]
            spec = ServiceSpec(name="bench", image=IMAGE, port=8080, network=mode)  # type: ignore[arg-type]
            a = Assignment("bench", i, "n1", 24000 + i, Resources(0.1, 32 << 20), "new")
            run = run_spec(spec, 1, a, None)
            t0 = time.perf_counter()
            await run_container(pool, report, run, subnet=cni.node_subnet(0))
            while not answers(address, a.port):
                await asyncio.sleep(0.01)
            times[mode].append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            await remove_container(pool, report, run.id)
            times[f"{mode} teardown"].append(time.perf_counter() - t1)
    return times


def latency(address: str, port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection(address, port, timeout=5)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"lb {port}: HTTP {resp.status}")
        out.append(time.perf_counter() - t)
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--prefix", default="fn")
    ap.add_argument("--subnet", default="10.248.0.0/24")
    args = ap.parse_args()
    lab = Lab(LabConfig(prefix=args.prefix, subnet=args.subnet, nodes=3, lb=1, root="/var/lib/fleet-lab-bench"))
    lab.down()
    try:
        lab.up()
        with tempfile.TemporaryDirectory(prefix="fleet-netns-bench-") as tmp:
            env = {**os.environ, "FLEET_STATE_DIR": f"{tmp}/state", "FLEET_INVENTORY": lab.inventory_path}
            img = build_demo("v1", f"{tmp}/demo.tar")
            push = fleet_cli(["image", "push", img.path], env)
            if push.returncode != 0:
                raise SystemExit(f"push failed: {push.stderr[-800:]}")
            times = asyncio.run(start_to_ready(lab.inventory_path, args.rounds))
            print(f"start to ready on n1, median of {args.rounds} (ms):")
            for k, v in times.items():
                print(f"  {k:16s} {1000 * statistics.median(v):7.1f}   (min {1000 * min(v):.1f}, "
                      f"max {1000 * max(v):.1f})")
            cost = statistics.median(times["bridge"]) - statistics.median(times["host"])
            print(f"  own namespace costs {1000 * cost:.1f} ms per replica start (target: under 150 ms)")
            pb = Path(tmp) / "pb.yaml"
            pb.write_text("services:\n" + "".join(
                f"  lat-{mode}:\n    image: {IMAGE}\n    replicas: 3\n    network: {mode}\n"
                f"    resources: {{cpu: 0.1, memory: 32MiB}}\n    health: {{http: /healthz}}\n"
                f"    lb: {{port: {port}}}\n"
                for mode, port in (("host", 18801), ("bridge", 18802))))
            out = fleet_cli(["apply", str(pb)], env)
            if out.returncode != 0:
                raise SystemExit(f"apply failed: {out.stdout[-1500:]} {out.stderr[-800:]}")
            lb = load_inventory(lab.inventory_path).node("lb1").address
            print(f"request latency through HAProxy on lb1, {args.requests} sequential keep-alive GETs (ms):")
            for mode, port in (("host", 18801), ("bridge", 18802)):
                latency(lb, port, 50)  # warm
                v = sorted(latency(lb, port, args.requests))
                print(f"  {mode:7s} median {1000 * statistics.median(v):.3f}   p99 {1000 * v[int(len(v) * 0.99)]:.3f}")
    finally:
        lab.down()


if __name__ == "__main__":
    main()
