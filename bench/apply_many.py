"""Many services at once: `fleet apply` of 12 services × 2 replicas against one service alone.

    .venv/bin/python bench/apply_many.py [--services 12] [--replicas 2] [--parallel N] [--rounds 2]
                                         [--prefix fpar] [--subnet 10.246.0.0/24]

Builds its own lab (3 workers, 1 lb) and always removes it. Pushes demo images v1 and v2, then times whole
`fleet apply --json` processes, as a user runs them (connect, lease, observe, converge): one service created,
then rolled v1 ↔ v2 `--rounds` times; N services created, then rolled v1 ↔ v2 as many times at `--parallel`
(default: fleet's), and once service by service (`--parallel 1`, the loop as it was). Every service has an
HAProxy front end and an HTTP health check, so each rollout starts, checks, routes, drains and stops replicas.
Prints each time and the ratio N services / one (goal ≤ 1.5×). Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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


def write_playbook(pb_dir: Path, names: list[str], image: str, replicas: int) -> None:
    for old in pb_dir.glob("*.yaml"):
        old.unlink()
    text = "services:\n" + "".join(service_yaml(n, image, replicas, BASE_PORT + i) for i, n in enumerate(names))
    (pb_dir / "bench.yaml").write_text(text)


def fleet_cli(args: list[str], env: dict[str, str], timeout: float = APPLY_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def timed_apply(pb_dir: Path, inventory: str, env: dict[str, str], parallel: int | None) -> tuple[float, int]:
    """Seconds of one whole `fleet apply` and the number of services it changed; raises when any failed."""
    extra = ["--parallel", str(parallel)] if parallel is not None else []
    t0 = time.perf_counter()
    proc = fleet_cli(["apply", str(pb_dir), "-i", inventory, "--json", *extra], env)
    took = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if not line.startswith('{"event"')]
    result: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        result = json.loads("\n".join(lines))
    outcomes = result.get("outcomes", [])
    if proc.returncode != 0 or not all(o["ok"] for o in outcomes):
        raise SystemExit(f"apply failed (exit {proc.returncode}): {outcomes} {proc.stderr[-1500:]}")
    return took, sum(1 for o in outcomes if o["changed"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=12)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=None, help="fleet apply --parallel (default: fleet's own)")
    ap.add_argument("--rounds", type=int, default=2, help="rolling updates timed per case (v1 ↔ v2)")
    ap.add_argument("--prefix", default="fpar")
    ap.add_argument("--subnet", default="10.246.0.0/24")
    args = ap.parse_args()
    lab = Lab(LabConfig(prefix=args.prefix, subnet=args.subnet, nodes=3, lb=1, root="/var/lib/fleet-lab-bench"))
    lab.down()
    t_all = time.perf_counter()
    rows: list[tuple[str, list[float]]] = []
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
            pb_dir = Path(tmp) / "playbooks"
            pb_dir.mkdir()
            images = ["fleet.local/demo:v2", "fleet.local/demo:v1"]

            def case(label: str, names: list[str], parallel: int | None) -> None:
                write_playbook(pb_dir, names, "fleet.local/demo:v1", args.replicas)
                created, _ = timed_apply(pb_dir, inventory, env, parallel)
                updates = []
                for i in range(args.rounds):
                    write_playbook(pb_dir, names, images[i % 2], args.replicas)
                    took, changed = timed_apply(pb_dir, inventory, env, parallel)
                    if changed != len(names):
                        raise SystemExit(f"{label}: {changed} of {len(names)} services changed")
                    updates.append(took)
                rows.append((f"{label}: create", [created]))
                rows.append((f"{label}: rolling update", updates))
                out.print(f"{label}: create {created:.1f}s, updates " + ", ".join(f"{u:.1f}s" for u in updates))
                for name in names:
                    gone = fleet_cli(["destroy", name, "-i", inventory, "--json"], env, 120)
                    if gone.returncode != 0:
                        raise SystemExit(f"destroy {name} failed: {gone.stderr[-800:]}")

            many = [f"s{i + 1:02d}" for i in range(args.services)]
            case("1 service", ["solo"], args.parallel)
            case(f"{args.services} services", many, args.parallel)
            case(f"{args.services} services, --parallel 1", many, 1)
    finally:
        lab.down()
    med = {label: statistics.median(v) for label, v in rows}
    t = Table(title=f"fleet apply, {args.replicas} replicas per service, whole process (seconds)",
              title_justify="left", header_style="bold")
    for col in ("case", "runs", "median", "min", "max", "× one service"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for label, v in rows:
        kind = label.split(": ")[1]
        one = med[f"1 service: {kind}"]
        t.add_row(label, str(len(v)), f"{statistics.median(v):.1f}", f"{min(v):.1f}", f"{max(v):.1f}",
                  f"{statistics.median(v) / one:.2f}")
    out.print(t)
    out.print(f"total {time.perf_counter() - t_all:.0f}s (lab removed)")


if __name__ == "__main__":
    main()
