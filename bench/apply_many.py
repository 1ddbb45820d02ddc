"""Many services at once: `fleet apply` of 12 services × 2 replicas against one service alone.

    .venv/bin/python bench/apply_many.py [--services 12] [--replicas 2] [--parallel N] [--rounds 3] [--no-serial]
                                         [--prefix fpar] [--subnet 10.246.0.0/24]

Builds its own lab (3 workers, 1 lb) and always removes it. Pushes demo images v1 and v2, then times whole
`fleet apply --json` processes, as a user runs them (connect, lease, observe, converge). One service (`solo`)
and N others (`s01`…) live side by side in two playbooks; each is created, then rolled v1 ↔ v2 `--rounds`
times, one alone and the N together (`--parallel`, default: fleet's own), in turn, so that the ratio of each
pair is taken under the same load of this shared machine. Last, the N are rolled once service by service
(`--parallel 1`, the loop as it was). Every service has an HAProxy front end and an HTTP health check, so each
rollout starts, checks, routes, drains and stops replicas. Prints each time, the ratio N services / one
(goal ≤ 1.3×) and, beside it, the HAProxy reloads each apply cost on the lb node (the master's own count in
`show proc`: a rollout that only swaps servers goes through the runtime API and should reload nothing), the
controller's own CPU seconds (the `fleet` process) and how busy the whole machine was meanwhile (`/proc/stat`:
the lab's nodes share its cores, so a case near 100 % is bound by CPU, not by waiting).
Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fleet.image.demo import build_demo  # noqa: E402
from fleet.lab.lab import Lab  # noqa: E402
from fleet.lab.render import LabConfig  # noqa: E402
from fleet.node.haproxy.stats import parse_show_proc  # noqa: E402
from fleet.node.paths import DEFAULT  # noqa: E402

BASE_PORT = 8100
APPLY_TIMEOUT = 300.0
out = Console(width=120, highlight=False)


def service_yaml(name: str, image: str, replicas: int, port: int) -> str:
    return "\n".join([
        f"  {name}:",
        f"    image: {image}",
        f"    replicas: {replicas}",
        "    resources: {cpu: 0.05, memory: 16MiB}",
        "    health: {http: /healthz, interval: 1s, timeout: 1s}",
        f"    lb: {{port: {port}}}",
        "    update: {max_surge: 1, max_unavailable: 0}",
    ]) + "\n"


def write_playbook(pb_dir: Path, names: list[str], image: str, replicas: int, first_port: int) -> None:
    text = "services:\n" + "".join(service_yaml(n, image, replicas, first_port + i) for i, n in enumerate(names))
    (pb_dir / "bench.yaml").write_text(text)


def fleet_cli(args: list[str], env: dict[str, str], timeout: float = APPLY_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot."""
    with open("/proc/stat") as f:
        cols = [int(c) for c in f.readline().split()[1:]]
    idle = cols[3] + (cols[4] if len(cols) > 4 else 0)
    return sum(cols) - idle, sum(cols)


def timed_apply(pb_dir: Path, inventory: str, env: dict[str, str], parallel: int | None) -> tuple[float, int, str]:
    """Seconds of one whole `fleet apply`, the number of services it changed and what it cost (the controller's
    CPU, the machine's busy share); raises when any failed."""
    extra = ["--parallel", str(parallel)] if parallel is not None else []
    r0, m0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_ticks()
    t0 = time.perf_counter()
    proc = fleet_cli(["apply", str(pb_dir), "-i", inventory, "--json", *extra], env)
    took = time.perf_counter() - t0
    r1, m1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_ticks()
    own = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
    usage = f"controller {own:.1f} cpu-s, machine {busy:.0%} busy"
    lines = [line for line in proc.stdout.splitlines() if not line.startswith('{"event"')]
    result: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        result = json.loads("\n".join(lines))
    outcomes = result.get("outcomes", [])
    if proc.returncode != 0 or not all(o["ok"] for o in outcomes):
        raise SystemExit(f"apply failed (exit {proc.returncode}): {outcomes} {proc.stderr[-1500:]}")
    return took, sum(1 for o in outcomes if o["changed"]), usage


def reloads(lab: Lab) -> int:
    """HAProxy's reloads on lb1 since its master started (0 while it does not run)."""
    proc = lab.exec_in("lb1", ["socat", "-t", "5", "stdio", f"unix-connect:{DEFAULT.haproxy_master_socket}"],
                       input="show proc\n", check=False)
    return parse_show_proc(proc.stdout).master.reloads if proc.returncode == 0 else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=12)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=None, help="fleet apply --parallel (default: fleet's own)")
    ap.add_argument("--rounds", type=int, default=3, help="rolling updates timed per case (v1 ↔ v2)")
    ap.add_argument("--no-serial", action="store_true", help="skip the service-by-service case (--parallel 1)")
    ap.add_argument("--prefix", default="fpar")
    ap.add_argument("--subnet", default="10.246.0.0/24")
    args = ap.parse_args()
    lab = Lab(LabConfig(prefix=args.prefix, subnet=args.subnet, nodes=3, lb=1, root="/var/lib/fleet-lab-bench"))
    lab.down()
    t_all = time.perf_counter()
    many_label = f"{args.services} services" + (f" (--parallel {args.parallel})" if args.parallel else "")
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    reloaded: dict[str, list[int]] = {}
    try:
        t0 = time.perf_counter()
        lab.up()
        out.print(f"lab {args.prefix} up in {time.perf_counter() - t0:.1f}s (3 workers, 1 lb)")
        with tempfile.TemporaryDirectory(prefix="fleet-apply-many-") as tmp:
            env = {**os.environ, "FLEET_STATE_DIR": f"{tmp}/state"}
            inventory = lab.inventory_path
            for version in ("v1", "v2"):
                built = build_demo(version, f"{tmp}/demo-{version}.tar")
                push = fleet_cli(["image", "push", built.path, "-i", inventory, "--json"], env, 120)
                if push.returncode != 0:
                    raise SystemExit(f"push {version} failed ({push.returncode}): {push.stderr[-800:]}")
            solo_dir, many_dir = Path(tmp) / "solo", Path(tmp) / "many"
            solo_dir.mkdir()
            many_dir.mkdir()
            many = [f"s{i + 1:02d}" for i in range(args.services)]

            def pair(kind: str, image: str) -> None:
                write_playbook(solo_dir, ["solo"], image, args.replicas, BASE_PORT - 1)
                r0 = reloads(lab)
                one, _, one_usage = timed_apply(solo_dir, inventory, env, None)
                write_playbook(many_dir, many, image, args.replicas, BASE_PORT)
                r1 = reloads(lab)
                took, changed, many_usage = timed_apply(many_dir, inventory, env, args.parallel)
                r2 = reloads(lab)
                if changed != len(many):
                    raise SystemExit(f"{kind}: {changed} of {len(many)} services changed")
                times.setdefault(f"1 service: {kind}", []).append(one)
                times.setdefault(f"{many_label}: {kind}", []).append(took)
                ratios.setdefault(kind, []).append(took / one)
                reloaded.setdefault(f"1 service: {kind}", []).append(r1 - r0)
                reloaded.setdefault(f"{many_label}: {kind}", []).append(r2 - r1)
                out.print(f"{kind}: 1 service {one:.1f}s ({r1 - r0} reloads; {one_usage}), {len(many)} services "
                          f"{took:.1f}s ({r2 - r1} reloads; {many_usage}) ({took / one:.2f}x)")

            pair("create", "fleet.local/demo:v1")
            for i in range(args.rounds):
                pair("rolling update", ("fleet.local/demo:v2", "fleet.local/demo:v1")[i % 2])
            if not args.no_serial:
                write_playbook(many_dir, many, "fleet.local/demo:v2" if args.rounds % 2 == 0 else
                               "fleet.local/demo:v1", args.replicas, BASE_PORT)
                r0 = reloads(lab)
                took, _, _ = timed_apply(many_dir, inventory, env, 1)
                serial = f"{args.services} services (--parallel 1): rolling update"
                times[serial] = [took]
                reloaded[serial] = [reloads(lab) - r0]
                out.print(f"{len(many)} services one after another: {took:.1f}s ({reloaded[serial][0]} reloads)")
    finally:
        lab.down()
    t = Table(title=f"fleet apply, {args.replicas} replicas per service, whole process (seconds)",
              title_justify="left", header_style="bold")
    for col in ("case", "runs", "median", "min", "max", "reloads per apply"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for label, v in times.items():
        t.add_row(label, str(len(v)), f"{statistics.median(v):.1f}", f"{min(v):.1f}", f"{max(v):.1f}",
                  " ".join(str(n) for n in reloaded.get(label, [])))
    out.print(t)
    for kind, rs in ratios.items():
        many_reloads = reloaded.get(f"{many_label}: {kind}", [])
        out.print(f"{kind}: {args.services} services / 1 service, pair by pair: median {statistics.median(rs):.2f}x "
                  f"(min {min(rs):.2f}, max {max(rs):.2f}; goal <= 1.3x); HAProxy reloads per apply: "
                  f"1 service {reloaded.get(f'1 service: {kind}', [])}, {args.services} services {many_reloads}")
    out.print(f"total {time.perf_counter() - t_all:.0f}s (lab removed)")


if __name__ == "__main__":
    main()
