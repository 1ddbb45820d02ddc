"""Load-balancer failover: how long is a service unreachable when the lb node holding the virtual IP dies?

    .venv/bin/python bench/lb_failover.py [--rounds 5] [--clients 4] [--timeout 0.5]

Builds its own lab (prefix fv, 10.247.0.0/24: 1 worker + 2 lb nodes sharing a virtual IP, as `fleet lab up
--lb 2`) and always removes it. Deploys a 2-replica service behind HAProxy, then, `--rounds` times, under load
through the virtual IP (clients open a connection per request or keep one alive; each request times out after
`--timeout`; nothing is retried): the lb node holding the address is powered off (`Lab.power_off`: sshd,
HAProxy and keepalived SIGKILLed at once, link down), the gap is measured, the node comes back as after a
reboot and `fleet reconcile` brings it up to date. Figures only: nothing here asserts a time.

The gap is from the kill to the start of the first request that succeeded after the last failed one. The
count of failed requests depends on how they fail: a timeout costs a client `--timeout`, while a refused or
unroutable connect fails at once and the client (which never backs off) sends the next one straight away.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _load import Load, Sample  # noqa: E402

from fleet.image.demo import build_demo  # noqa: E402
from fleet.lab.lab import Lab  # noqa: E402
from fleet.lab.render import LabConfig  # noqa: E402

LAB = LabConfig(prefix="fv", subnet="10.247.0.0/24", nodes=1, lb=2, root="/var/lib/fleet-lab-bench")
PORT = 8080
FLEET = str(ROOT / ".venv/bin/fleet")


def fleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([FLEET, *args], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode not in (0, 1):
        raise SystemExit(f"fleet {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def holder(env: dict[str, str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        held = json.loads(fleet("status", "--json", env=env).stdout)["virtual_ip"]["holders"]
        if len(held) == 1:
            return str(held[0])
        time.sleep(0.3)
    raise SystemExit("no single lb node holds the virtual IP")


def gap(samples: list[Sample], killed: float) -> tuple[float, int, Counter[str]]:
    """(seconds from the kill to the first success after the last failure, failed requests after the kill,
    their kinds)."""
    after = [s for s in samples if s.at + s.seconds >= killed]
    failed = [s for s in after if not s.ok]
    if not failed:
        return 0.0, 0, Counter()
    last = max(s.at for s in failed)
    back = min((s.at for s in after if s.ok and s.at >= last), default=float("nan"))
    return back - killed, len(failed), Counter(str(s.kind) for s in failed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=0.5)
    args = ap.parse_args()
    lab = Lab(LAB)
    lab.down()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-failover-") as tmp:
        env = {**os.environ, "FLEET_INVENTORY": lab.inventory_path, "FLEET_STATE_DIR": f"{tmp}/state",
               "NO_PROXY": "*", "no_proxy": "*"}
        try:
            lab.up()
            build_demo("v1", f"{tmp}/demo.tar")
            fleet("image", "push", f"{tmp}/demo.tar", env=env)
            book = Path(tmp) / "web.yaml"
            book.write_text("services:\n  web:\n    image: fleet.local/demo:v1\n    replicas: 2\n"
                            "    resources: {cpu: 0.1, memory: 32MiB}\n    health: {http: /healthz, interval: 1s}\n"
                            f"    lb: {{port: {PORT}}}\n")
            fleet("apply", str(book), env=env)
            rows = []
            for i in range(args.rounds):
                dead = holder(env)
                load = Load(LAB.virtual_ip, PORT, clients=args.clients, timeout=args.timeout, max_seconds=30).start()
                time.sleep(2)
                killed = time.time()
                lab.power_off(dead)
                time.sleep(5)
                samples = load.stop()
                seconds, failed, kinds = gap(samples, killed)
                lab.power_on(dead)
                fleet("reconcile", str(book), env=env)
                rows.append((dead, seconds, failed, len(samples)))
                print(f"round {i + 1}: killed {dead}; gap {seconds:.2f}s, {failed} failed of {len(samples)} requests "
                      f"({', '.join(f'{k} {n}' for k, n in kinds.most_common())})", flush=True)
            gaps = [r[1] for r in rows]
            fails = [r[2] for r in rows]
            print(f"\nfailover gap over {len(rows)} rounds: median {statistics.median(gaps):.2f}s, worst "
                  f"{max(gaps):.2f}s; failed requests per failover: median {statistics.median(fails):g}, worst "
                  f"{max(fails)} ({args.clients} clients, request timeout {args.timeout}s, VRRPv3 advert 0.5s)")
        finally:
            lab.down()


if __name__ == "__main__":
    main()
