"""Replicas in their own network namespaces on the real lab (`network: bridge`, the default): an image listening
on its own fixed port 80 served through HAProxy and rolled under load; a container reaching another service by
name and the lab's gateway (masquerade); a TCP service on its own fixed port behind HAProxy in tcp mode; a
replica killed and deleted behind fleet's back leaves no namespace, veth, NAT rule or CNI cache entry after
`fleet reconcile`; a service with two named ports, each on its own lb port, an lb port added and removed with no
container change and the service rolled under load on both.

Services are named `nn-*`, lb ports 18700-18799 (the lab is shared with other test files); each test destroys
what it created in `finally`.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from helpers import IN_REPLICA, demo_env, run_fleet, wait_until
from loadgen import Load, TcpLoad

from fleet.node import cni

pytestmark = pytest.mark.lab

# busybox httpd on its own fixed port 80, never reading $PORT; the page names the image's version for the load.
FIXED_80 = ["sh", "-c", 'echo "version=$(cat /etc/demo-version) replica=$FLEET_REPLICA" >/tmp/index.html '
            "&& exec httpd -f -p 80 -h /tmp"]


@pytest.fixture(scope="module")
def env(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return demo_env(lab.inventory_path, tmp_path_factory.mktemp("netns"))


def fleet(env: dict[str, Any], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_fleet(*args, env=env["env"], timeout=timeout)


def playbook(env: dict[str, Any], services: dict[str, dict[str, Any]]) -> str:
    path = Path(env["dir"]) / f"pb-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump({"services": services}, sort_keys=False))
    return str(path)


def fixed_port(version: str, replicas: int, lb_port: int) -> dict[str, Any]:
    return {"image": f"fleet.local/demo:{version}", "command": FIXED_80, "port": 80, "replicas": replicas,
            "resources": {"cpu": 0.05, "memory": "32MiB"},
            "health": {"http": "/index.html", "interval": "500ms", "timeout": "1s"},
            "placement": {"spread_by": "zone"}, "lb": {"port": lb_port}, "stop_grace_period": "2s",
            "update": {"max_surge": 1, "max_unavailable": 0, "ready_deadline": "20s", "min_ready": "1s"}}


def replicas(env: dict[str, Any], name: str) -> list[dict[str, Any]]:
    doc = json.loads(fleet(env, "ps", "--json", "--all").stdout)
    return sorted((c for c in doc["containers"] if c.get("service") == name), key=lambda c: c["replica"])


def on_node(lab: Any, node: str, script: str) -> str:
    return str(lab.lab.exec_in(node, ["sh", "-c", script], check=False).stdout)


def network_state(lab: Any, node: str) -> tuple[set[str], int, str]:
    """A node's fleet namespaces, the veths on fleet's bridge, its iptables rules (CNI tags them with the
    container ID) and its CNI cache entries."""
    names = {line.split()[0] for line in on_node(lab, node, "ip netns list").splitlines() if line.strip()}
    veths = on_node(lab, node, f"ip -o link show master {cni.BRIDGE} type veth 2>/dev/null | wc -l").strip()
    return ({n for n in names if n.startswith(cni.NETNS_PREFIX)}, int(veths or 0),
            on_node(lab, node, "iptables-save; ls /var/lib/fleet/cni/run"))


def connect(address: str, port: int) -> str:
    """A script that prints whether a TCP connection to address:port opens within 2 s."""
    return f"timeout 2 bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>/dev/null && echo open || echo closed"


def lb_address(lab: Any) -> str:
    return str(lab.inventory.node("lb1").address)


def test_fixed_port_80_image_served_and_rolled_under_load(lab, env):
    name, port = "nn-web", 18701
    try:
        out = fleet(env, "apply", playbook(env, {name: fixed_port("v1", 4, port)}))
        assert out.returncode == 0, out.stdout + out.stderr
        running = replicas(env, name)
        assert len(running) == 4 and len({c["node"] for c in running}) == 3, "4 replicas on the 3 workers"
        for c in running:
            names, _, _ = network_state(lab, c["node"])
            assert cni.netns_name(c["id"]) in names
        # Port 80 inside the namespaces is not the node's: nothing listens on the worker's own port 80.
        first = running[0]
        worker = lab.inventory.node(first["node"]).address
        with pytest.raises(OSError):
            socket.create_connection((worker, 80), timeout=2).close()
        # Another node that routes the container subnet through the worker still cannot reach the container's
        # port: only its mapped host port.
        ip = on_node(lab, first["node"], f"ip -n {cni.netns_name(first['id'])} -4 -o addr show eth0").split()[3]
        subnet = ip.rsplit(".", 1)[0] + ".0/24"
        other = next(n for n in lab.workers() if n != first["node"])
        host_port = next(c["port"] for c in running if c["id"] == first["id"])
        rule = ("FORWARD -o fleet0 ! -i fleet0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
                "-m comment --comment 'fleet: containers only through mapped ports' -j DROP")
        try:
            on_node(lab, other, f"ip route replace {subnet} via {worker}")
            direct = on_node(lab, other, connect(ip.split("/")[0], 80))
            mapped = on_node(lab, other, connect(worker, host_port))
            # Without fleet's rule the same connection opens: the rule is what keeps it closed.
            on_node(lab, first["node"], f"iptables -w -D {rule}")
            unguarded = on_node(lab, other, connect(ip.split("/")[0], 80))
        finally:
            on_node(lab, first["node"], f"iptables -w -C {rule} 2>/dev/null || iptables -w -I {rule}")
            on_node(lab, other, f"ip route del {subnet}")
        assert (direct.strip(), mapped.strip(), unguarded.strip()) == ("closed", "open", "open")
        # The host port is bound to the node's inventory address (what HAProxy reaches), not to every address:
        # from the worker itself, its address opens and its loopback does not.
        on_worker = (on_node(lab, first["node"], connect(worker, host_port)).strip(),
                     on_node(lab, first["node"], connect("127.0.0.1", host_port)).strip())
        assert on_worker == ("open", "closed")
        with Load(lb_address(lab), port, clients=4, max_seconds=90) as load:
            wait_until(lambda: load.result.ok > 20 or None, 20, 0.2, "requests served")
            out = fleet(env, "apply", playbook(env, {name: fixed_port("v2", 4, port)}))
            time.sleep(1.0)
        assert out.returncode == 0, out.stdout + out.stderr
        r = load.result
        assert r.failed == 0, (r.errors, r.failures[:5])
        assert r.versions.get("v1", 0) > 0 and r.versions.get("v2", 0) > 0, r.versions
        after = replicas(env, name)
        assert {c["image"] for c in after} == {"fleet.local/demo:v2"} and len(after) == 4
        # The replaced replicas' namespaces went with them.
        gone = {c["id"] for c in running}
        for node in {c["node"] for c in running}:
            names, _, rules = network_state(lab, node)
            assert not {cni.netns_name(i) for i in gone} & names
            assert not any(i in rules for i in gone)
    finally:
        fleet(env, "destroy", name, "--grace", "1")


class _Seen(http.server.BaseHTTPRequestHandler):
    clients: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).clients.append(self.client_address[0])
        body = b"gateway ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_container_reaches_a_service_by_name_and_the_gateway(lab, env):
    web, client, echo, port, echo_port = "nn-api", "nn-client", "nn-echo", 18702, 18705
    gateway = lab.lab.cfg.gateway
    server = http.server.ThreadingHTTPServer((gateway, 0), _Seen)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        other = {k: v for k, v in fixed_port("v1", 1, 0).items() if k not in ("health", "lb", "port")}
        # A TCP service on its own fixed port (busybox nc echoing each connection), behind HAProxy in tcp mode.
        tcp = {**other, "command": ["nc", "-ll", "-p", "6379", "-e", "cat"], "port": 6379,
               "health": {"tcp": True, "interval": "500ms", "timeout": "1s"},
               "lb": {"port": echo_port, "mode": "tcp"}}
        out = fleet(env, "apply", playbook(env, {web: fixed_port("v1", 1, port), client: {
            **other, "command": ["sleep", "3600"]}, echo: tcp}))
        assert out.returncode == 0, out.stdout + out.stderr
        with socket.create_connection((lb_address(lab), echo_port), timeout=5) as conn:
            conn.sendall(b"ping\n")
            assert conn.recv(16) == b"ping\n"
        c = replicas(env, client)[0]

        def inside(*argv: str) -> str:
            return on_node(lab, c["node"], f"{IN_REPLICA} {c['id']} " + " ".join(argv) + " 2>&1")

        def by_name() -> str | None:
            page = inside("wget", "-q", "-O", "-", f"http://{web}.fleet:{port}/")
            return page if "version=v1" in page else None

        wait_until(by_name, 15, 0.5, f"{web}.fleet:{port} from inside {c['id']}")
        assert "gateway ok" in inside("wget", "-q", "-O", "-", f"http://{gateway}:{server.server_address[1]}/")
        # Masquerade: the gateway saw the worker node's address, not the container's.
        assert _Seen.clients[-1] == lab.inventory.node(c["node"]).address
        # Hairpin: a replica reaches its own host port on its node's address (DNAT back into the bridge it came
        # from; fleet's masquerade of that connection is what lets the answer return the way it went).
        w = replicas(env, web)[0]
        own = on_node(lab, w["node"], f"timeout 10 {IN_REPLICA} {w['id']} wget -q -O - "
                                      f"http://{lab.inventory.node(w['node']).address}:{w['port']}/ 2>&1")
        assert "version=v1" in own, own
    finally:
        server.shutdown()
        server.server_close()
        fleet(env, "destroy", web, "--grace", "1")
        fleet(env, "destroy", client, "--grace", "1")
        fleet(env, "destroy", echo, "--grace", "1")


def test_killed_replica_leaves_no_network_state_after_reconcile(lab, env):
    name, port = "nn-heal", 18704
    pb = playbook(env, {name: fixed_port("v1", 2, port)})
    try:
        assert fleet(env, "apply", pb).returncode == 0
        dead = replicas(env, name)[0]
        node, cid = dead["node"], dead["id"]
        _, veths_before, _ = network_state(lab, node)
        on_node(lab, node, f"ctr -n fleet containers label {cid} containerd.io/restart.status= >/dev/null; "
                           f"ctr -n fleet tasks kill -s SIGKILL {cid}; sleep 0.5; ctr -n fleet tasks rm -f {cid}; "
                           f"ctr -n fleet containers rm {cid}")
        names, _, rules = network_state(lab, node)
        assert cni.netns_name(cid) in names and cid in rules, "left behind until the next run"
        out = fleet(env, "reconcile", pb)
        assert out.returncode == 0, out.stdout + out.stderr
        names, veths, rules = network_state(lab, node)
        assert cni.netns_name(cid) not in names
        assert cid not in rules
        now = replicas(env, name)
        assert len(now) == 2 and cid not in {c["id"] for c in now}
        # One veth per namespace still there: the dead replica's went with its namespace.
        assert veths == len(names) and veths <= veths_before
    finally:
        fleet(env, "destroy", name, "--grace", "1")


# The two-port image: busybox httpd on 80 and a TCP echo on 7000 (busybox nc, one `echo.sh` per connection, which
# greets with the image's version and then echoes), neither reading $PORT.
TWO_PORTS = ["sh", "-c", 'v=$(cat /etc/demo-version); echo "version=$v replica=$FLEET_REPLICA" >/tmp/index.html; '
             'printf "#!/bin/sh\\necho version=%s\\nexec cat\\n" "$v" >/tmp/echo.sh; chmod +x /tmp/echo.sh; '
             "nc -ll -p 7000 -e /tmp/echo.sh & exec httpd -f -p 80 -h /tmp"]


def two_ports(version: str, port: int, echo_port: int | None) -> dict[str, Any]:
    svc = {**fixed_port(version, 2, port), "command": TWO_PORTS, "ports": {"http": 80, "echo": 7000}}
    if echo_port is not None:
        svc["lb"] = {"port": port, "ports": {"echo": {"port": echo_port, "mode": "tcp"}}}
    return svc


def test_two_named_ports_on_their_own_lb_ports_added_removed_and_rolled_under_load(lab, env):
    name, port, echo_port = "nn-ports", 18706, 18707
    lb = lb_address(lab)

    def ids() -> set[str]:
        return {c["id"] for c in replicas(env, name)}

    try:
        out = fleet(env, "apply", playbook(env, {name: two_ports("v1", port, None)}))
        assert out.returncode == 0, out.stdout + out.stderr
        running = replicas(env, name)
        started = {c["id"] for c in running}
        # Each named port on a host port of its own: the routed one's, and 10000 above it for the other.
        assert [c["labels"]["fleet.ports"] for c in running] == [f"echo:{c['port'] + 10000},http:{c['port']}"
                                                                for c in running]
        with Load(lb, port, clients=2, max_seconds=120) as load:
            wait_until(lambda: load.result.ok > 10 or None, 20, 0.2, "requests served")
            # An lb port added: HAProxy only (one reload), the replicas stay.
            out = fleet(env, "apply", playbook(env, {name: two_ports("v1", port, echo_port)}))
            assert out.returncode == 0, out.stdout + out.stderr
            assert ids() == started
            with TcpLoad(lb, echo_port, clients=2, max_seconds=90) as tcp:
                wait_until(lambda: tcp.result.ok > 10 or None, 20, 0.2, "echoes through the lb port")
                out = fleet(env, "apply", playbook(env, {name: two_ports("v2", port, echo_port)}))
                time.sleep(1.0)
            assert out.returncode == 0, out.stdout + out.stderr
            rolled = ids()
            # And removed again: the main port keeps serving, the replicas stay.
            out = fleet(env, "apply", playbook(env, {name: two_ports("v2", port, None)}))
            time.sleep(0.5)
        assert out.returncode == 0, out.stdout + out.stderr
        assert ids() == rolled and not rolled & started
        for r in (load.result, tcp.result):
            assert r.failed == 0, (r.errors, r.failures[:5])
            assert r.versions.get("v1", 0) > 0 and r.versions.get("v2", 0) > 0, r.versions
        with pytest.raises(OSError):
            socket.create_connection((lb, echo_port), timeout=2).close()
    finally:
        fleet(env, "destroy", name, "--grace", "1")
