"""Fresh nodes (issue 20's first must-show): nodes with nothing but sshd and a sudo user, root login disabled
(`fleet lab up --fresh`: a cached minimal Debian 12 root filesystem per node). As that sudo user, `fleet node check`
names what is missing (exit 1); `fleet node prepare --download` works out on this machine what each node lacks
(its dpkg status against this machine's apt) and `--offline` sends and installs it, with no mirror reachable from
the nodes; check is then clean; containerd, with no init system on these nodes, is fleet's own (a dead one is named
and started again); the demo service deploys and rolls to v2 with no failed request through HAProxy.

Its own lab (one worker that also keeps the records, one lb node), beside the session's: on the test lab's subnet
moved by 1 in the second octet (10.241.34.0/24 -> 10.242.34.0/24), named by the test lab's prefix plus `f`. The
root filesystem is cached under /var/cache/fleet-lab and the .deb files under /var/cache/fleet-lab/debs-PREFIX, so
a second run downloads nothing; both times are printed (pytest -s)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TEST_LAB
from helpers import demo_playbook, roll_under_load, run_fleet

from fleet.config.inventory import load_inventory
from fleet.image.demo import build_demo
from fleet.lab.lab import Lab
from fleet.lab.rootfs import CACHE_ROOT, SUDO_USER, ensure_rootfs
from fleet.node.preflight import CONTAINERD_PID

pytestmark = pytest.mark.lab

_NET = ipaddress.IPv4Network(TEST_LAB.subnet)
FRESH = replace(TEST_LAB, prefix=f"{TEST_LAB.prefix[:5]}f", nodes=1, lb=1, fresh=True,
                subnet=str(ipaddress.IPv4Network((int(_NET.network_address) + (1 << 16), _NET.prefixlen))))
DEBS = f"{CACHE_ROOT}/debs-{FRESH.prefix}"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    lab = Lab(FRESH)
    lab.down()  # a crashed run's
    started = time.monotonic()
    try:
        lab.up()
        TIMES["lab up"] = time.monotonic() - started
        TIMES["rootfs build"] = lab.rootfs_seconds
        d = tmp_path_factory.mktemp("fresh")
        env = {**os.environ, "FLEET_STATE_DIR": str(d / "state"), "FLEET_LEASE_TTL": "5",
               "FLEET_INVENTORY": lab.inventory_path}
        yield {"lab": lab, "env": env, "dir": d, "inventory": load_inventory(lab.inventory_path)}
    finally:
        lab.down()
        print(f"\nfresh lab times: {', '.join(f'{k} {v:.1f}s' for k, v in TIMES.items())}")


def fleet(fresh, *args: str, timeout: float = 180):
    return run_fleet(*args, env=fresh["env"], timeout=timeout)


def test_a_fresh_node_has_nothing_of_fleets_and_root_may_not_log_in(fresh):
    lab = fresh["lab"]
    assert [s.ready for s in lab.status()] == [True, True]
    for name in ("n1", "lb1"):
        have = lab.exec_in(name, ["sh", "-c", "for t in containerd ctr runc haproxy socat etcd ip; do "
                                              "command -v $t; done; ls /usr/lib/cni 2>&1"], check=False).stdout
        assert "/" not in have.replace("ls: cannot access '/usr/lib/cni'", ""), have
        assert lab.exec_in(name, ["cat", "/proc/1/comm"]).stdout.strip() != "systemd"
    doc = fresh["inventory"]
    assert {n.user for n in doc.nodes} == {SUDO_USER} and all(n.become for n in doc.nodes)
    inv = Path(fresh["dir"]) / "root.yaml"
    inv.write_text(Path(lab.inventory_path).read_text().replace(f"user: {SUDO_USER}\n  become: true\n",
                                                                "user: root\n"))
    root = run_fleet("node", "check", "n1", "-i", str(inv), env=fresh["env"])
    assert root.returncode == 1 and "authentication failed" in root.stdout, root.stdout


def test_check_names_what_is_missing_and_prepare_offline_installs_it(fresh):
    check = fleet(fresh, "node", "check", "--json")
    assert check.returncode == 1, check.stdout + check.stderr
    missing = {c["node"]: c["missing"] for c in json.loads(check.stdout)}
    assert missing == {"n1": ["containerd", "ctr", "runc", "ip", "etcd", "etcdctl", "cni plugins", "ip_forward",
                              "fleet dirs"],
                       "lb1": ["haproxy", "socat", "fleet dirs"]}, missing
    # The nodes reach no mirror (no route out of the lab): this machine works out and downloads what they lack.
    started = time.monotonic()
    down = fleet(fresh, "node", "prepare", "--download", DEBS, "--json")
    TIMES["download"] = time.monotonic() - started
    assert down.returncode == 0, down.stdout + down.stderr
    got = {r["node"]: r for r in json.loads(down.stdout)}
    assert got["n1"]["packages"] == ["containerd", "containernetworking-plugins", "etcd-client", "etcd-server",
                                     "iproute2", "runc"]
    assert got["lb1"]["packages"] == ["haproxy", "socat"]
    # Dependencies the minimal root lacks are there (iproute2's and HAProxy's libraries); what it has is not.
    assert any(f.startswith("libmnl0_") for f in got["n1"]["files"]), got["n1"]["files"]
    assert any(f.startswith("liblua5.3-0_") for f in got["lb1"]["files"]), got["lb1"]["files"]
    assert not any(f.startswith(("libc6_", "libssl3_", "haproxy_")) for f in got["n1"]["files"])
    started = time.monotonic()
    prep = fleet(fresh, "node", "prepare", "--offline", DEBS, "--yes", timeout=600)
    TIMES["prepare"] = time.monotonic() - started
    assert prep.returncode == 0, prep.stdout + prep.stderr
    lines = prep.stdout.splitlines()
    n1 = len(got["n1"]["files"])
    assert (f"  n1: install containerd containernetworking-plugins etcd-client etcd-server iproute2 runc from {n1} "
            ".deb file(s) sent by this controller; create /var/lib/fleet; set net.ipv4.ip_forward = 1; start "
            "containerd") in lines, prep.stdout
    done = next(line for line in lines if line.startswith("n1: installed"))
    assert "started containerd (no init system here: fleet runs it" in done and done.endswith("; ready"), done
    assert "lb1: installed haproxy socat; created /var/lib/fleet; ready" in lines, prep.stdout
    after = fleet(fresh, "node", "check", "--json")
    assert after.returncode == 0, after.stdout + after.stderr
    items = {c["node"]: {i["name"]: i for i in c["items"]} for c in json.loads(after.stdout)}
    assert items["n1"]["containerd running"]["detail"].startswith("yes, started by fleet (PID ")
    assert items["n1"]["containerd"]["detail"].startswith("1.6.") and items["lb1"]["haproxy"]["detail"][:4] == "2.6."
    # Nothing left behind on the nodes: no .deb files, no policy-rc.d.
    for name in ("n1", "lb1"):
        left = fresh["lab"].exec_in(name, ["sh", "-c", "ls /var/lib/fleet/packages /usr/sbin/policy-rc.d 2>&1"],
                                    check=False).stdout
        assert left.count("No such file") == 2, left


def test_a_containerd_that_died_is_named_by_check_and_started_again_by_prepare(fresh):
    lab = fresh["lab"]
    pid = lab.exec_in("n1", ["cat", CONTAINERD_PID]).stdout.strip()
    lab.exec_in("n1", ["sh", "-c", f"kill {pid}; while [ -d /proc/{pid} ]; do sleep 0.05; done"])
    check = fleet(fresh, "node", "check", "n1", "--json")
    assert check.returncode == 1 and json.loads(check.stdout)[0]["missing"] == ["containerd running"]
    item = next(i for i in json.loads(check.stdout)[0]["items"] if i["name"] == "containerd running")
    assert item["detail"].startswith(f"no: fleet started it (PID {pid}) and it is gone"), item
    prep = fleet(fresh, "node", "prepare", "n1", "--yes")
    assert prep.returncode == 0, prep.stdout + prep.stderr
    assert "  n1: start containerd" in prep.stdout.splitlines(), prep.stdout
    assert lab.exec_in("n1", ["cat", CONTAINERD_PID]).stdout.strip() != pid
    assert fleet(fresh, "node", "check", "n1").returncode == 0


def test_the_demo_deploys_and_rolls_on_the_prepared_nodes_with_no_failed_request(fresh):
    d = Path(fresh["dir"])
    name, port = "fr-web", 19601
    started = time.monotonic()
    for v in ("v1", "v2"):
        out = fleet(fresh, "image", "push", build_demo(v, str(d / f"demo-{v}.tar")).path)
        assert out.returncode == 0, out.stdout + out.stderr
    try:
        replicas = roll_under_load(lambda *a: fleet(fresh, *a), fresh["inventory"].node("lb1").address, port, name,
                                   demo_playbook(d, name, port, "v1"), demo_playbook(d, name, port, "v2"))
        assert len(replicas) == 2
        TIMES["push, deploy, roll"] = time.monotonic() - started
    finally:
        fleet(fresh, "destroy", name)


def test_a_crashed_fresh_lab_is_removed_by_the_next_down_and_the_cached_root_stays(fresh):
    """As after a crash: n1's holder (the node's init) SIGKILLed with its sshd, containerd, etcd and shims still
    running, and no Lab object of that run left: a new one, from the lab's name alone, removes it all."""
    lab = fresh["lab"]
    holder = lab.node_status(lab.node("n1")).holder_pid
    assert holder is not None
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", f"{FRESH.prefix}-n1"], capture_output=True,
                                           text=True, check=True).stdout.split()]
    assert len(pids) >= 3, pids  # the holder, sshd, containerd at least
    os.kill(holder, signal.SIGKILL)
    removed = Lab(replace(FRESH, fresh=False)).down()  # the record says it is fresh
    assert set(removed) >= {"n1", "lb1"}
    alive = {p: Path(f"/proc/{p}/stat").read_text() for p in pids if os.path.exists(f"/proc/{p}")}
    assert not {p: st for p, st in alive.items() if st.split(") ", 1)[1][0] not in "ZX"}, alive
    assert not os.path.exists(FRESH.dir) and f"{FRESH.prefix}-n1" not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert os.path.isfile(f"{ensure_rootfs()[0]}/etc/os-release") and ensure_rootfs()[1] == 0.0
