"""Rolling updates under load: does `fleet apply` replace 4 replicas behind HAProxy without failing a request?

    .venv/bin/python bench/rollout.py [--clients 8] [--baseline 5] [--after 3] [--max-requests 200000]

Builds its own lab (prefix fr, 10.245.0.0/24: 3 workers, 1 lb) and always removes it. Pushes demo images v1 and
v2, applies a 4-replica `web` service (v1), then, under load against lb1:8080 (half the clients open a
connection per request, half keep one alive; nothing is retried): scenario 1 rolls v1 → v2; scenario 2 applies
a spec whose replicas fail their health check (ready_deadline 10s), which must fail while v2 keeps serving.
Each scenario reports a baseline window, the window during `fleet apply`, and a short window after it; every
failed request is placed on the apply's event timeline. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _load import Load, Sample, Window, window  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fleet.image.demo import build_demo  # noqa: E402
from fleet.lab.lab import Lab  # noqa: E402
from fleet.lab.render import LabConfig  # noqa: E402

LAB = LabConfig(prefix="fr", subnet="10.245.0.0/24", nodes=3, lb=1, root="/var/lib/fleet-lab-bench")
LB_PORT = 8080
APPLY_TIMEOUT = 150.0
out = Console(width=130, highlight=False)


def playbook(image: str, *, cpu: float, env: dict[str, str] | None = None, ready_deadline: str | None = None) -> str:
    deadline = f", ready_deadline: {ready_deadline}" if ready_deadline else ""
    update = "{max_surge: 1, max_unavailable: 0" + deadline + "}"
    lines = [
        "services:",
        "  web:",
        f"    image: {image}",
        "    replicas: 4",
        f"    resources: {{cpu: {cpu:g}, memory: 32MiB}}",
        "    health: {http: /healthz, interval: 2s, timeout: 1s}",
        "    placement: {spread_by: zone}",
        f"    lb: {{port: {LB_PORT}}}",
        f"    update: {update}",
    ]
    if env:
        lines.append("    env: {" + ", ".join(f"{k}: {v}" for k, v in env.items()) + "}")
    return "\n".join(lines) + "\n"


def fleet_cli(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


@dataclass(frozen=True)
class ApplyRun:
    rc: int
    start: float
    end: float
    events: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    stderr: str


def run_apply(pb_dir: str, inventory: str, env: dict[str, str]) -> ApplyRun:
    start = time.time()
    proc = fleet_cli(["apply", pb_dir, "-i", inventory, "--json"], env, APPLY_TIMEOUT)
    end = time.time()
    events, rest = [], []
    for line in proc.stdout.splitlines():
        if line.startswith('{"event"'):
            events.append(json.loads(line))
        else:
            rest.append(line)
    outcomes: list[dict[str, Any]] = []
    with contextlib.suppress(ValueError):
        outcomes = json.loads("\n".join(rest)).get("outcomes", [])
    return ApplyRun(proc.returncode, start, end, events, outcomes, proc.stderr.strip())


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def mix(c: Counter[str]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(c.items())) or "-"


def windows_table(title: str, ws: list[Window]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("window")
    for col in ("secs", "requests", "failed", "req/s", "p50 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="right")
    t.add_column("failed by kind")
    t.add_column("versions (ok responses)")
    for w in ws:
        t.add_row(w.name, f"{w.seconds:.1f}", str(w.requests), str(sum(w.failed.values())), f"{w.rps:.0f}",
                  ms(w.p50_ms), ms(w.p99_ms), ms(w.max_ms), mix(w.failed), mix(w.versions))
    return t


def kinds_table(samples: list[Sample], ws: list[Window]) -> Table:
    """The same windows split by client kind: connection setup through HAProxy is part of the latency."""
    t = Table(title="latency by client kind (ms)", title_justify="left", header_style="bold")
    t.add_column("window")
    for col in ("new conn n", "p50", "p99", "keep-alive n", "p50", "p99"):
        t.add_column(col, justify="right")
    for w in ws:
        row = [w.name]
        for keepalive in (False, True):
            k = window(w.name, (s for s in samples if s.keepalive == keepalive), w.start, w.end)
            row += [str(k.requests), ms(k.p50_ms), ms(k.p99_ms)]
        t.add_row(*row)
    return t


def timeline(run: ApplyRun) -> Table:
    t = Table(title="apply events (seconds after `fleet apply` started)", title_justify="left", header_style="bold")
    t.add_column("t", justify="right")
    t.add_column("step")
    t.add_column("message")
    for e in run.events:
        t.add_row(f"{e['at'] - run.start:+.2f}", e["event"], e["message"])
    return t


def place(s: Sample, run: ApplyRun) -> str:
    """Where a request falls on the apply's timeline: the last event before it and the next one."""
    before = [e for e in run.events if e["at"] <= s.at]
    after = [e for e in run.events if e["at"] > s.at]
    parts = []
    if before:
        e = before[-1]
        parts.append(f"{s.at - e['at']:.2f}s after [{e['event']}] {e['message']}")
    elif s.at >= run.start:
        parts.append("before the first event (apply process starting / planning)")
    if after:
        e = after[0]
        parts.append(f"{e['at'] - s.at:.2f}s before [{e['event']}] {e['message']}")
    return "; ".join(parts)


def failures_table(samples: list[Sample], run: ApplyRun, limit: int = 40) -> Table:
    t = Table(title="failed requests", title_justify="left", header_style="bold")
    for col, just in (("t", "right"), ("client", "left"), ("kind", "left"), ("took ms", "right"),
                      ("moment in the rollout", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in samples[:limit]:
        how = f"keep-alive, request #{s.nth_on_connection} on it" if s.keepalive else "new conn"
        t.add_row(f"{s.at - run.start:+.3f}", f"{s.client} ({how})", s.kind or "",
                  f"{s.seconds * 1000:.1f}", place(s, run))
    if len(samples) > limit:
        t.add_row("…", "", f"{len(samples) - limit} more", "", "")
    return t


def scenario(name: str, text: str, pb_dir: str, inventory: str, env: dict[str, str],
             args: argparse.Namespace, lb_address: str) -> None:
    (Path(pb_dir) / "web.yaml").write_text(text)
    load = Load(lb_address, LB_PORT, clients=args.clients, max_requests=args.max_requests,
                max_seconds=args.baseline + APPLY_TIMEOUT + args.after + 10).start()
    try:
        time.sleep(args.baseline)
        run = run_apply(pb_dir, inventory, env)
        time.sleep(args.after)
    finally:
        samples = load.stop()
    stop = max((s.at for s in samples), default=run.end)
    ws = [window("baseline", samples, load.started_at, run.start),
          window("during apply", samples, run.start, run.end),
          window("after apply", samples, run.end, stop + 1e-6)]
    whole = window("whole run", samples, load.started_at, stop + 1e-6)
    out.rule(f"[bold]{name}")
    out.print(timeline(run))
    out.print(windows_table(f"{name}: {args.clients} clients against {lb_address}:{LB_PORT}", [*ws, whole]))
    out.print(kinds_table(samples, [*ws, whole]))
    during = [s for s in samples if run.start <= s.at < run.end and s.ok]
    first_seen: dict[str, float] = {}
    last_seen: dict[str, float] = {}
    for s in during:
        v = s.version or "?"
        first_seen.setdefault(v, s.at)
        last_seen[v] = s.at
    engine_span = (run.events[-1]["at"] - run.events[0]["at"]) if run.events else 0.0
    out.print(f"requests sent: {len(samples)} ({whole.rps:.0f}/s over {whole.seconds:.1f}s); "
              f"failed: {sum(whole.failed.values())} {dict(whole.failed) or ''}")
    out.print(f"apply: exit code {run.rc}, {run.end - run.start:.2f}s wall (process start included), "
              f"{engine_span:.2f}s from first to last event; outcomes: "
              + "; ".join(f"{o['service']} ok={o['ok']} started={o['started']} stopped={o['stopped']}"
                          + (f" reason={o['reason']}" if o.get("reason") else "") for o in run.outcomes))
    if run.rc != 0 and run.stderr:
        out.print(f"apply stderr: {run.stderr[-600:]}")
    for v in sorted(first_seen):
        out.print(f"  during apply, {v}: {ws[1].versions[v]} ok responses, first at "
                  f"{first_seen[v] - run.start:+.2f}s, last at {last_seen[v] - run.start:+.2f}s")
    out.print(f"versions serving after the apply: {mix(ws[2].versions)}; backends: {mix(ws[2].backends)}")
    failed = sorted((s for s in samples if not s.ok), key=lambda s: s.at)
    if failed:
        out.print(failures_table(failed, run))
    else:
        out.print("failed requests: none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of load before the apply")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of load after the apply")
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--cpu", type=float, default=0.1,
                    help="cores per replica (0.1, as in playbooks/demo.yaml, caps each replica near 45 req/s "
                         "here: the CGI forks per request and the CPU quota throttles it)")
    args = ap.parse_args()
    lab = Lab(LAB)
    lab.down()
    t_all = time.perf_counter()
    try:
        t0 = time.perf_counter()
        lab.up()
        lb_address = next(n.address for n in lab.recorded_layout() if "lb" in n.roles)
        out.print(f"lab {LAB.prefix} up in {time.perf_counter() - t0:.2f}s; lb1 at {lb_address}")
        with tempfile.TemporaryDirectory(prefix="fleet-rollout-") as tmp:
            # A private revision history, so rollbacks go to this run's revisions only.
            env = {**os.environ, "FLEET_STATE_DIR": f"{tmp}/state"}
            inventory = lab.inventory_path
            pb_dir = f"{tmp}/playbooks"
            os.makedirs(pb_dir)
            for version in ("v1", "v2"):
                built = build_demo(version, f"{tmp}/demo-{version}.tar")
                t0 = time.perf_counter()
                push = fleet_cli(["image", "push", built.path, "-i", inventory, "--json"], env, 120)
                if push.returncode != 0:
                    raise SystemExit(f"push {version} failed ({push.returncode}): {push.stderr[-800:]}")
                out.print(f"pushed {built.name} ({built.size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.2f}s")
            (Path(pb_dir) / "web.yaml").write_text(playbook("fleet.local/demo:v1", cpu=args.cpu))
            first = run_apply(pb_dir, inventory, env)
            out.print(f"initial apply of v1: exit code {first.rc} in {first.end - first.start:.2f}s")
            if first.rc != 0:
                raise SystemExit(f"initial apply failed: {first.outcomes} {first.stderr[-800:]}")
            scenario("scenario 1: rolling update v1 → v2", playbook("fleet.local/demo:v2", cpu=args.cpu),
                     pb_dir, inventory, env, args, lb_address)
            scenario("scenario 2: v3 whose replicas fail health (DEMO_HEALTH=fail, ready_deadline 10s)",
                     playbook("fleet.local/demo:v2", cpu=args.cpu, env={"DEMO_HEALTH": "fail"}, ready_deadline="10s"),
                     pb_dir, inventory, env, args, lb_address)
    finally:
        lab.down()
    out.print(f"total {time.perf_counter() - t_all:.1f}s (lab removed)")


if __name__ == "__main__":
    main()
