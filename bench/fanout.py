"""Fact collection over N real lab nodes: `fleet nodes` against a bare asyncssh gather, Ansible and pyinfra.

    python bench/fanout.py [--sizes 5,20,50] [--rounds 5] [--no-peers] [--prefix fb] [--subnet 10.243.0.0/24]

Builds its own lab (default prefix `fb`, 10.243.0.0/24; pass another to run beside someone else's) and always
removes it. The baseline is a bare asyncssh
gather of the straightforward facts command (`ctr tasks ls` + /proc reads, as ../shared/FACTS.md §10 measured),
which Ansible and pyinfra also run; the bare gather of fleet's own script is shown too, as the floor for the
same node-side work. Cold = a fresh process with new connections (interpreter start included); warm =
further rounds on open connections in one process. Figures: median wall per round, controller CPU per node,
peak controller RSS. Ansible (`-m raw`, default forks) and pyinfra (`exec`) run from bench/.peers if present
(`python3 -m venv bench/.peers && bench/.peers/bin/pip install ansible-core pyinfra`).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fleet.config.inventory import load_inventory  # noqa: E402
from fleet.lab.lab import Lab  # noqa: E402
from fleet.lab.render import LabConfig  # noqa: E402

PEERS = os.path.join(ROOT, "bench", ".peers", "bin")
PY = sys.executable


def timed(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float | int | str]:
    """Run a process; its wall time, CPU (user+sys) and peak RSS, from wait4 on that very child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"wall": wall, "rc": proc.returncode, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_mb": ru.ru_maxrss / 1024,
                "stdout": out.read().decode(), "stderr": err.read().decode()[-800:]}


def measure_processes(argv: list[str], rounds: int, n: int, env: dict[str, str] | None = None) -> dict[str, float]:
    walls, cpus, peak = [], [], 0.0
    for _ in range(rounds):
        r = timed(argv, env)
        if r["rc"] != 0:
            raise SystemExit(f"{argv[0]} failed: rc={r['rc']} {r['stderr']}")
        walls.append(float(r["wall"]))
        cpus.append(float(r["cpu"]))
        peak = max(peak, float(r["maxrss_mb"]))
    return {"wall": statistics.median(walls), "cpu_per_node_ms": 1000 * statistics.median(cpus) / n,
            "maxrss_mb": peak}


def write_inventories(lab: Lab, n: int, d: str) -> dict[str, str]:
    full = load_inventory(lab.inventory_path)
    nodes = full.nodes[:n]
    key, kh = nodes[0].key_files[0], nodes[0].known_hosts
    fleet_inv = os.path.join(d, f"inv{n}.yaml")
    with open(fleet_inv, "w") as fh:
        fh.write(f"defaults: {{user: root, key: {key}, known_hosts: {kh}}}\nnodes:\n")
        fh.writelines(f"  {x.name}: {{address: {x.address}}}\n" for x in nodes)
    ini = os.path.join(d, f"hosts{n}.ini")
    with open(ini, "w") as fh:
        fh.write("[all]\n")
        fh.writelines(f"{x.name} ansible_host={x.address} ansible_user=root\n" for x in nodes)
        fh.write(f"[all:vars]\nansible_ssh_private_key_file={key}\n"
                 f"ansible_ssh_common_args='-o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes'\n")
    pyinv = os.path.join(d, f"pyinfra{n}.py")
    with open(pyinv, "w") as fh:
        fh.write("hosts = [\n")
        fh.writelines(f"    ({x.address!r}, {{'ssh_user': 'root', 'ssh_key': {key!r}, "
                      f"'ssh_known_hosts_file': {kh!r}, 'ssh_strict_host_key_checking': 'yes'}}),\n" for x in nodes)
        fh.write("]\n")
    return {"fleet": fleet_inv, "ini": ini, "pyinfra": pyinv}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5,20,50")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--prefix", default="fb", help="lab prefix (namespaces, bridge)")
    ap.add_argument("--subnet", default="10.243.0.0/24")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lab = Lab(LabConfig(prefix=args.prefix, subnet=args.subnet, nodes=max(sizes), lb=0,
                        root="/var/lib/fleet-lab-bench"))
    lab.down()
    # Peers run the same straightforward command as the bare baseline (see _fanout_worker.NAIVE).
    cmd = "ctr -n fleet tasks ls; cat /proc/loadavg /proc/meminfo; nproc; df -Pk /var/lib/containerd"
    rows = []
    try:
        t0 = time.perf_counter()
        lab.up()
        print(f"lab: {max(sizes)} nodes up in {time.perf_counter() - t0:.1f}s", flush=True)
        with tempfile.TemporaryDirectory() as d:
            for n in sizes:
                inv = write_inventories(lab, n, d)
                fleet_cli = [PY, "-m", "fleet.cli.main", "nodes", "--json", "-i", inv["fleet"]]
                res: dict[str, dict[str, float]] = {}
                res["fleet nodes (cold process)"] = measure_processes(fleet_cli, args.rounds, n)
                for mode, label in (("naive", "bare asyncssh, ctr+cat (cold)"),
                                    ("bare", "bare asyncssh, fleet script (cold)")):
                    res[label] = measure_processes(
                        [PY, os.path.join(ROOT, "bench", "_fanout_worker.py"), mode, inv["fleet"], "0"], args.rounds, n)
                for mode, label in (("fleet", "fleet Pool (warm)"), ("naive", "bare asyncssh, ctr+cat (warm)"),
                                    ("bare", "bare asyncssh, fleet script (warm)")):
                    r = timed([PY, os.path.join(ROOT, "bench", "_fanout_worker.py"), mode, inv["fleet"],
                               str(args.rounds)])
                    doc = json.loads(str(r["stdout"]))
                    if doc["ok"] != n:
                        raise SystemExit(f"{label}: only {doc['ok']}/{n} nodes answered")
                    res[label] = {"wall": statistics.median(doc["warm"]), "cpu_per_node_ms": doc["cpu_per_node_ms"],
                                  "maxrss_mb": doc["maxrss_mb"]}
                if not args.no_peers and os.path.exists(f"{PEERS}/ansible"):
                    def ansible_env() -> dict[str, str]:
                        return {"ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(dir=d),
                                "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_LOCAL_TEMP": tempfile.mkdtemp(dir=d)}
                    res["ansible -m raw (forks 5)"] = measure_processes(
                        [f"{PEERS}/ansible", "all", "-i", inv["ini"], "-m", "raw", "-a", cmd], min(args.rounds, 3), n,
                        env=ansible_env())
                if not args.no_peers and os.path.exists(f"{PEERS}/pyinfra"):
                    res["pyinfra exec"] = measure_processes(
                        [f"{PEERS}/pyinfra", "-y", inv["pyinfra"], "exec", "--", cmd], min(args.rounds, 3), n)
                for label, figs in res.items():
                    rows.append((n, label, figs))
                    print(f"N={n:3d}  {label:36s} wall {figs['wall']:7.3f}s  controller CPU/node "
                          f"{figs['cpu_per_node_ms']:6.2f} ms  peak RSS {figs['maxrss_mb']:6.1f} MB", flush=True)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
