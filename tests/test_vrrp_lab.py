"""The load balancer survives losing a node: two lb nodes share a virtual IP (keepalived, VRRPv3) on a lab of
its own (1 worker + 2 lb nodes: `fleet lab up --lb 2`), built and always removed by the fixture.

The lb node holding the address dies at once (`Lab.power_off`: its sshd, HAProxy and keepalived SIGKILLed
together and its link taken down, as a machine that loses power), under load through the virtual IP. The other
lb node takes the address and serves; fleet keeps working with one lb node gone (the record nodes are both lb
nodes plus a tie-breaker, so a majority is left); the node comes back as after a reboot and `fleet reconcile`
brings its HAProxy and keepalived up to date without a failed request and without taking the address back.
Last, the inventory drops its virtual IP: the next run stops keepalived on both lb nodes and the address is gone.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import TEST_LAB
from helpers import run_fleet, wait_until
from loadgen import Load

from fleet.image.demo import build_demo
from fleet.lab.lab import Lab
from fleet.lab.render import LabConfig, node_dir

pytestmark = pytest.mark.lab

_net = ipaddress.IPv4Network(TEST_LAB.subnet)
# A lab of its own beside the session's: the test lab's prefix + "v", its subnet's third octet + 128.
VRRP_LAB = LabConfig(prefix=f"{TEST_LAB.prefix}v"[:6],
                     subnet=str(ipaddress.IPv4Network((int(_net.network_address) + (128 << 8), 24))),
                     nodes=1, lb=2, root=TEST_LAB.root)
PORT = 8095
TIMEOUT = 0.5  # per request: a request sent to the dead node fails after this, so the gap is measured finely


@pytest.fixture(scope="module")
def vlab(tmp_path_factory) -> Iterator[tuple[Lab, str]]:
    lab = Lab(VRRP_LAB)
    lab.down()
    try:
        lab.up()
        yield lab, lab.inventory_path
    finally:
        lab.down()


def run(inv: str, *args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, inventory=inv, columns=200, timeout=180, env={**os.environ, "FLEET_STATE_DIR": str(state)})


def fleet(inv: str, *args: str, state: Path) -> tuple[int, str]:
    out = run(inv, *args, state=state)
    return out.returncode, out.stdout + out.stderr


def vip_status(inv: str, state: Path) -> dict:
    return json.loads(run(inv, "status", "--json", state=state).stdout)


def keepalived_here(lab: Lab, node: str) -> list[str]:
    """PIDs of keepalived processes in the node's network namespace (lab nodes share one PID namespace)."""
    script = ('for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = keepalived ] && '
              '[ "$p/ns/net" -ef /proc/self/ns/net ] && echo "${p#/proc/}"; done; true')
    return lab.exec_in(node, ["sh", "-c", script]).stdout.split()


def haproxy_servers(lab: Lab, node: str) -> list[str]:
    cfg = Path(node_dir(lab.cfg, lab.node(node))) / "state/haproxy/haproxy.cfg"
    return sorted(line.strip() for line in cfg.read_text().splitlines() if line.strip().startswith("server "))


def test_losing_the_lb_node_that_holds_the_virtual_ip(vlab, tmp_path: Path):
    lab, inv = vlab
    state = tmp_path / "state"
    image = tmp_path / "demo.tar"
    build_demo("v1", image)
    code, out = fleet(inv, "image", "push", str(image), state=state)
    assert code == 0, out
    book = tmp_path / "web.yaml"
    book.write_text("services:\n  vweb:\n    image: fleet.local/demo:v1\n    replicas: 2\n"
                    "    resources: {cpu: 0.1, memory: 32MiB}\n"
                    "    health: {http: /healthz, interval: 1s, timeout: 1s}\n"
                    f"    lb: {{port: {PORT}}}\n")
    code, out = fleet(inv, "apply", str(book), state=state)
    assert code == 0, out
    vip = VRRP_LAB.virtual_ip
    st = wait_until(lambda: (s := vip_status(inv, state))["virtual_ip"]["holders"] and s, timeout=15)
    (holder,) = st["virtual_ip"]["holders"]
    other = "lb2" if holder == "lb1" else "lb1"
    assert st["virtual_ip"]["nodes"][other] == {"keepalived": "running", "holds": False}
    # keepalived runs its check of HAProxy as nobody (script_user), and it passes there: no root, no file read.
    for node in ("lb1", "lb2"):
        ran = lab.exec_in(node, ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                 "/var/lib/fleet/keepalived/check-haproxy"], check=False)
        assert ran.returncode == 0, ran.stderr
        log = (Path(node_dir(lab.cfg, lab.node(node))) / "state/keepalived/keepalived.log").read_text()
        assert "script_user nobody" in (Path(node_dir(lab.cfg, lab.node(node))) /
                                        "state/keepalived/keepalived.conf").read_text()
        assert "Disabling track script" not in log and "unsafe" not in log.lower(), log[-2000:]
    assert st["services"][0]["endpoints"] == [f"{vip}:{PORT}"]
    # Service discovery points at the virtual IP, not at one lb node.
    hosts = (Path(node_dir(lab.cfg, lab.node("n1"))) / "state/hosts").read_text()
    assert any(line.split()[:1] == [vip] and "vweb.fleet" in line.split() for line in hosts.splitlines()), hosts

    with Load(vip, PORT, clients=4, max_seconds=60, timeout=TIMEOUT) as load:
        wait_until(lambda: load.result.ok > 50, timeout=10)
        killed_at = time.time()
        killed = lab.power_off(holder)
        wait_until(lambda: load.result.ok > 0 and (not load.result.failures
                                                   or time.time() - load.result.failures[-1][0] > 2), timeout=15)
        time.sleep(1)
    failures = [t for t, _ in load.result.failures]
    assert killed and failures, "the kill should cost the requests in flight to the dead node"
    # A failure is recorded when its request ends (at most TIMEOUT after it started): every failed request
    # started within 3 s of the kill, and requests went on succeeding after.
    gap = max(failures) - killed_at
    assert min(failures) >= killed_at - TIMEOUT and gap <= 3.0 + TIMEOUT, (gap, load.result.errors)
    print(f"\nfailover: {len(failures)} failed of {load.result.ok + load.result.failed} requests; last failure "
          f"{gap:.2f}s after the kill (request timeout {TIMEOUT}s)")

    st = vip_status(inv, state)
    assert st["virtual_ip"]["holders"] == [other]
    assert holder in st["lb_errors"]
    # fleet works on with one lb node gone: the record nodes are lb1, lb2 and the tie-breaker n1.
    code, out = fleet(inv, "scale", "vweb", "3", "-f", str(book), state=state)
    assert code in (0, 1) and "vweb: started 1" in out, out

    # The node comes back as after a reboot; reconcile brings it up to date under load, with no failed request.
    lab.power_on(holder)
    with Load(vip, PORT, clients=4, max_seconds=90, timeout=5) as load:
        wait_until(lambda: load.result.ok > 20, timeout=10)
        code, out = fleet(inv, "reconcile", str(book), state=state)
        assert code == 0, out
        time.sleep(1)
    assert load.result.failed == 0, load.result.errors
    assert len(haproxy_servers(lab, holder)) == 3 and haproxy_servers(lab, holder) == haproxy_servers(lab, other)
    st = vip_status(inv, state)
    assert st["virtual_ip"]["holders"] == [other], "nopreempt: the returning node does not take the address back"
    assert st["virtual_ip"]["nodes"][holder] == {"keepalived": "running", "holds": False}
    assert st["lb_errors"] == {}

    # The inventory no longer has a virtual IP: the next run stops keepalived on both lb nodes (the address goes
    # with it) and forgets its config; discovery names the lb nodes again. Two controllers (their own state) run
    # reconcile at once, one waiting for the other's lease; served through an lb node's own address meanwhile,
    # with no failed request.
    doc = yaml.safe_load(Path(inv).read_text())
    assert doc.pop("vrrp")
    plain = tmp_path / "inventory-no-vip.yaml"
    plain.write_text(yaml.safe_dump(doc))
    assert all(keepalived_here(lab, name) for name in ("lb1", "lb2"))
    with Load(lab.node(other).address, PORT, clients=4, max_seconds=60, timeout=5) as load:
        wait_until(lambda: load.result.ok > 20, timeout=10)
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda st: fleet(str(plain), "reconcile", str(book), "--wait", "60s", state=st),
                                 (state, tmp_path / "state-b")))
        assert [code for code, _ in runs] == [0, 0], runs
        time.sleep(1)
    assert load.result.failed == 0, load.result.errors
    assert vip_status(str(plain), state)["virtual_ip"] is None
    for name in ("lb1", "lb2"):
        assert f" {vip}/" not in lab.exec_in(name, ["ip", "-o", "-4", "addr", "show"]).stdout, name
        assert not (Path(node_dir(lab.cfg, lab.node(name))) / "state/keepalived/keepalived.conf").exists(), name
        assert keepalived_here(lab, name) == [], name
    hosts = (Path(node_dir(lab.cfg, lab.node("n1"))) / "state/hosts").read_text()
    assert not any(line.split()[:1] == [vip] for line in hosts.splitlines()), hosts
