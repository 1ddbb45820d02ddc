"""Several load-balanced ports per service (`lb.ports`): the playbook's rules with errors naming the field, the
host port each named container port gets and its label, the spec hash of services that do not use them, and the
HAProxy sections rendered for them (recorded expectation, `haproxy -c`, runtime-only server changes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from fleet.config.spec import ServiceSpec, from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.core import labels as L
from fleet.core.errors import SpecError
from fleet.engine.lb import Rotation
from fleet.engine.runspec import run_spec
from fleet.node.haproxy.render import render
from fleet.node.haproxy.runtime import server_changes
from fleet.plan.checks import lb_port_conflicts
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import config_changes
from fleet.plan.scheduler import Assignment

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
ADDRESSES = {"n1": "10.0.0.1", "n2": "10.0.0.2"}

TWO_PORTS = """
services:
  web:
    image: reg.local/web:v1
    ports: {http: 80, echo: 7000, metrics: 9100}
    health: {http: /healthz}
    lb:
      port: 8080
      ports:
        echo: {port: 7000, mode: tcp}
        metrics: {port: 9100, health: {http: /metrics, interval: 5s}}
"""


def spec_of(text: str) -> ServiceSpec:
    return parse_playbook(textwrap.dedent(text), "p.yaml").services[0]


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_playbook(textwrap.dedent(text), "p.yaml")
    return [str(p) for p in info.value.problems]


def web(lb_ports: str, ports: str = "{http: 80, echo: 7000, metrics: 9100}", extra: str = "") -> str:
    return (f"services:\n  web:\n    image: reg.local/web:v1\n    ports: {ports}\n{extra}"
            f"    lb: {{port: 8080, ports: {lb_ports}}}\n")


# ---- the playbook -------------------------------------------------------------------------------------------


def test_lb_ports_resolve_in_name_order_and_are_recorded_back_exactly() -> None:
    spec = spec_of(TWO_PORTS)
    assert spec.lb is not None
    assert [(p.name, p.port, p.mode) for p in spec.lb.ports] == [("echo", 7000, "tcp"), ("metrics", 9100, "http")]
    metrics = spec.lb.ports[1].health
    assert metrics is not None and (metrics.kind, metrics.path, metrics.interval) == ("http", "/metrics", 5.0)
    assert spec.lb.ports[0].health is None
    assert spec.lb.bind_ports() == (("lb.port", 8080), ("lb.ports.echo.port", 7000), ("lb.ports.metrics.port", 9100))
    assert from_playbook_dict("web", to_playbook_dict(spec)) == spec


@pytest.mark.parametrize(("lb_ports", "message"), [
    ("{nope: {port: 7000}}", "p.yaml:2: services.web: lb.ports.nope: no named port 'nope' in ports (named ports: "
                             "echo, http, metrics)"),
    ("{http: {port: 7000}}", "p.yaml:2: services.web: lb.ports.http: http is the routed port (80), served on lb.port; "
                             "lb.ports names the service's other ports"),
    ("{echo: {port: 8080}}", "p.yaml:5: services.web.lb: lb.ports.echo.port: 8080 is already used by lb.port"),
    ("{echo: {port: 7001}, metrics: {port: 7001}}",
     "p.yaml:5: services.web.lb: lb.ports.metrics.port: 7001 is already used by lb.ports.echo.port"),
    ("{echo: {port: 8404}}", "p.yaml:5: services.web.lb.ports.echo.port: port 8404 is fleet's own on the lb nodes "
                             "(HAProxy's stats and metrics frontend); choose another"),
    ("{echo: {port: 70000}}", "p.yaml:5: services.web.lb.ports.echo.port: expected a port number from 1 to 65535, "
                              "got 70000"),
    ("{echo: {port: 7001, mode: udp}}", "p.yaml:5: services.web.lb.ports.echo.mode: expected 'http' or 'tcp', "
                                        "got 'udp'"),
    ("{echo: {port: 7001, health: {exec: [true]}}}", "p.yaml:5: services.web.lb.ports.echo.health.exec: unknown "
                                                     "field"),
    ("{echo: {port: 7001, health: {http: /a, tcp: true}}}",
     "p.yaml:5: services.web.lb.ports.echo.health: give exactly one of http: PATH or tcp: true (HAProxy checks an "
     "lb port itself: exec belongs in the service's health)"),
    ("{echo: {mode: tcp}}", "p.yaml:5: services.web.lb.ports.echo.port: required field is missing"),
])
def test_a_bad_lb_port_names_its_field(lb_ports: str, message: str) -> None:
    assert problems(web(lb_ports)) == [message]


def test_lb_ports_need_the_named_ports_and_a_bridge_network() -> None:
    assert problems(web("{echo: {port: 7001}}", ports="{http: 80}")) == [
        "p.yaml:2: services.web: lb.ports.echo: no named port 'echo' in ports (named ports: http)"]
    assert problems(web("{echo: {port: 7001}}", extra="    network: host\n")) == [
        "p.yaml:2: services.web: lb.ports.echo: needs network: bridge (on the host network a replica has only its "
        "host port, $PORT)"]
    assert problems(web("{}", ports="{http: 80, a: 1, b: 2, c: 3, d: 4}")) == [
        "p.yaml:2: services.web: ports: at most 4 named ports (the routed one and 3 others, each mapped to a host "
        "port of its own), got 5"]


def test_an_lb_port_of_another_service_is_refused_at_the_second() -> None:
    text = web("{echo: {port: 9000}}") + "  db:\n    image: reg.local/db:v1\n    lb: {port: 9000, mode: tcp}\n"
    assert problems(text) == [
        "p.yaml:6: services.db.lb.port: lb port 9000 is already used by service 'web' at p.yaml:2"]
    text = "services:\n  db:\n    image: reg.local/db:v1\n    lb: {port: 7000, mode: tcp}\n" + web(
        "{echo: {port: 7000}}").removeprefix("services:\n")
    assert problems(text) == [
        "p.yaml:5: services.web.lb.ports.echo.port: lb port 7000 is already used by service 'db' at p.yaml:2"]


def test_an_lb_port_taken_on_an_lb_node_or_by_another_services_frontend_is_named() -> None:
    spec = spec_of(TWO_PORTS)
    assert lb_port_conflicts([spec], {"lb1": {22, 9100}}, owned={}) == [
        "web: lb.ports.metrics.port 9100 is already in use on lb1 (not by fleet's HAProxy)"]
    assert lb_port_conflicts([spec], {"lb1": {7000, 9100}}, owned={"web": {7000, 9100}}) == []
    assert lb_port_conflicts([spec], {"lb1": {7000}}, owned={"legacy": {7000}}) == [
        "web: lb.ports.echo.port 7000 is already served by fleet's HAProxy for service 'legacy' (not in these "
        "playbooks)"]


# ---- the containers ------------------------------------------------------------------------------------------


def test_each_named_port_gets_a_host_port_of_its_own_recorded_in_a_label() -> None:
    spec = spec_of(TWO_PORTS)
    assert spec.host_ports(20003) == {"http": 20003, "echo": 30003, "metrics": 40003}
    run = run_spec(spec, 4, Assignment("web", 0, "n1", 20003, spec.resources, "new", spec.spec_hash()), None)
    assert run.ports == ((20003, 80), (30003, 7000), (40003, 9100))
    assert run.labels[L.PORTS] == "echo:30003,http:20003,metrics:40003"
    assert L.parse_ports_label(run.labels[L.PORTS]) == (("echo", 30003), ("http", 20003), ("metrics", 40003))
    assert L.parse_ports_label("echo:30003,bad,x:y,:1") == (("echo", 30003),)
    routed_by_port = spec_of(TWO_PORTS.replace("    health:", "    port: 9100\n    health:").replace(
        "metrics: {port: 9100, health: {http: /metrics, interval: 5s}}", "http: {port: 9180}"))
    assert routed_by_port.host_ports(20003) == {"echo": 20003 + 10000, "http": 20003 + 20000, "metrics": 20003}


def test_on_the_host_network_no_named_port_is_mapped() -> None:
    spec = spec_of("services:\n  web:\n    image: reg.local/web:v1\n    network: host\n    ports: {http: 80, m: 9}\n")
    assert spec.host_ports(20003) == {}
    run = run_spec(spec, 1, Assignment("web", 0, "n1", 20003, spec.resources, "new", spec.spec_hash()), None)
    assert (run.ports, L.PORTS in run.labels) == ((), False)


def test_lb_ports_change_no_container_and_services_with_one_port_keep_their_hash() -> None:
    with_lb_ports = spec_of(TWO_PORTS)
    without = spec_of(TWO_PORTS.split("    lb:")[0] + "    lb: {port: 8080}\n")
    assert with_lb_ports.spec_hash() == without.spec_hash()
    # What the hash was before named ports other than the routed one were mapped (recorded from main).
    one = spec_of("services:\n  web:\n    image: reg.local/web:v1\n    ports: {http: 80}\n    lb: {port: 8080}\n")
    assert one.spec_hash() == "b3450bbb9af748ab316f132e097f79174aeeb4146ee7dcb8c15001365d522c93"
    assert "mapped" in with_lb_ports.hash_input() and "mapped" not in one.hash_input()
    assert config_changes(without, with_lb_ports) == [
        'lb.ports: none → {"echo": {"mode": "tcp", "port": 7000}, "metrics": {"heal...']
    # A service with several named ports rolls once: its other ports are now mapped (the hash it had on main).
    two = spec_of("services:\n  web:\n    image: reg.local/web:v1\n    ports: {http: 80, m: 9}\n")
    assert two.spec_hash() != "65ae42682cd4e44b98a4c0e2878f8ff6addc933d916a488680548036479caffa"


# ---- HAProxy -------------------------------------------------------------------------------------------------


def replica(spec: ServiceSpec, i: int, node: str, port: int, mapped: bool = True) -> Replica:
    ports = tuple(sorted(spec.host_ports(port).items())) if mapped else ()
    return Replica(node, f"web-{i}-x", "web", i, 3, spec.spec_hash(), port, True, spec.resources, spec.image,
                   ports=ports)


def rotation_of(spec: ServiceSpec) -> tuple[Rotation, list[Replica]]:
    rotation = Rotation()
    rotation.follow(spec)
    rs = [replica(spec, 1, "n1", 20001), replica(spec, 2, "n2", 20001), replica(spec, 3, "n2", 20002, mapped=False)]
    rotation.put(rs[0])
    rotation.put(rs[1], "drain")
    rotation.put(rs[2])
    return rotation, rs


EXPECTED = """\

frontend fe_web.echo
    mode tcp
    bind 0.0.0.0:7000
    no option idle-close-on-response
    default_backend be_web.echo

backend be_web.echo
    mode tcp
    balance roundrobin
    server web-1-x 10.0.0.1:30001 check inter 2000ms fall 3 rise 1 weight 1
    server web-2-x 10.0.0.2:30001 check inter 2000ms fall 3 rise 1 weight 0

frontend fe_web.metrics
    mode http
    bind 0.0.0.0:9100
    default_backend be_web.metrics

backend be_web.metrics
    mode http
    balance roundrobin
    retry-on conn-failure empty-response response-timeout 502 503
    http-request disable-l7-retry unless { method GET HEAD OPTIONS }
    option redispatch 1
    option httpchk GET /metrics
    http-check expect status 200-399
    timeout check 1000ms
    server web-1-x 10.0.0.1:40001 check inter 5000ms fall 3 rise 1 weight 1
    server web-2-x 10.0.0.2:40001 check inter 5000ms fall 3 rise 1 weight 0
"""


def test_each_lb_port_is_a_frontend_and_backend_of_the_replicas_in_rotation_at_their_host_ports() -> None:
    spec = spec_of(TWO_PORTS)
    rotation, rs = rotation_of(spec)
    text = render(rotation.services(ADDRESSES), admin_socket="/run/a.sock", state_file="/run/state")
    main = text[text.index("\nbackend be_web\n"):text.index("\nfrontend fe_web.echo")]
    # The main port keeps every replica in rotation; a replica started before its other ports were mapped (no
    # fleet.ports label) is left out of theirs; a draining one is drained on every port.
    assert [ln.split()[1:3] for ln in main.splitlines() if ln.startswith("    server")] == [
        ["web-1-x", "10.0.0.1:20001"], ["web-2-x", "10.0.0.2:20001"], ["web-3-x", "10.0.0.2:20002"]]
    assert text[text.index("\nfrontend fe_web.echo"):] == EXPECTED
    assert rotation.backends(rs[0]) == ["be_web", "be_web.echo", "be_web.metrics"]
    assert rotation.backends(rs[2]) == ["be_web"]
    assert rotation.bind_ports("web") == {8080, 7000, 9100}


def test_a_replica_in_or_out_of_rotation_is_a_runtime_change_and_an_lb_port_added_is_a_reload() -> None:
    spec = spec_of(TWO_PORTS)
    rotation, rs = rotation_of(spec)
    kw = {"admin_socket": "/run/a.sock", "state_file": "/run/state"}
    before = render(rotation.services(ADDRESSES), **kw)
    rotation.drop(rs[0])
    rotation.state(rs[1], "ready")
    after = render(rotation.services(ADDRESSES), **kw)
    assert server_changes(before, after) == [
        "set server be_web/web-1-x state maint", "del server be_web/web-1-x",
        "set server be_web.echo/web-1-x state maint", "del server be_web.echo/web-1-x",
        "set server be_web.metrics/web-1-x state maint", "del server be_web.metrics/web-1-x",
        "set server be_web/web-2-x weight 1", "set server be_web/web-2-x state ready",
        "set server be_web.echo/web-2-x weight 1", "set server be_web.echo/web-2-x state ready",
        "set server be_web.metrics/web-2-x weight 1", "set server be_web.metrics/web-2-x state ready"]
    fewer = Rotation()
    fewer.follow(spec_of(TWO_PORTS.replace("        echo: {port: 7000, mode: tcp}\n", "")))
    fewer.entries = rotation.entries
    assert server_changes(after, render(fewer.services(ADDRESSES), **kw)) is None


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
def test_haproxy_accepts_the_lb_ports_with_no_warning(tmp_path: Path) -> None:
    rotation, _ = rotation_of(spec_of(TWO_PORTS))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render(rotation.services(ADDRESSES), admin_socket=str(tmp_path / "a.sock"),
                          state_file=str(tmp_path / "state")))
    ok = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert [ln for ln in ok.stderr.splitlines() if "WARNING" in ln and "server state file" not in ln] == []
