"""A replica's own network namespace, fast: the CNI scripts as values (exact configurations and variables), the
result parser on a recorded run, the teardown and sweep scripts run by sh against stand-in plugins (they record
what they are given; the real chain runs in tests/test_netns_lab.py), the run spec and the playbook fields."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from fleet.config.spec import ServiceSpec, from_playbook_dict, parse_playbook, to_playbook_dict
from fleet.core.errors import ImageNotFound, RuntimeCommandError, SpecError
from fleet.core.model import CommandResult, Resources
from fleet.core.shell import Script
from fleet.engine.runspec import HOST_NETNS, prepare_node_script, run_spec
from fleet.node import cni
from fleet.node.runtime.base import RunSpec
from fleet.node.runtime.ctr import CtrDriver
from fleet.node.runtime.nerdctl import NerdctlDriver
from fleet.plan.scheduler import Assignment

DATA = Path(__file__).parent / "data" / "cni"


def test_host_ports_are_bound_to_the_node_address_when_the_inventory_gives_an_ip():
    """Replica ports on the address HAProxy reaches, not 0.0.0.0 (issue 21): portmap's hostIP."""
    conf = cni.portmap_conf([cni.PortMap(23456, 80, cni.bound_address("10.241.0.11"))])
    assert '"hostIP":"10.241.0.11"' in conf
    assert cni.bound_address("worker1.example.internal") is None and cni.bound_address("2001:db8::1") is None
    assert "hostIP" not in cni.portmap_conf([cni.PortMap(23456, 80, cni.bound_address("web1"))])


def test_attach_script_is_exactly_the_chain_with_its_configurations():
    script = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80), cni.PortMap(23457, 9100)])
    assert script.text == cni.ATTACH_SH and script.name == "fleet-cni-attach"
    assert dict(script.env) == {
        "CACHE": "/var/lib/fleet/cni", "NETNS_DIR": "/run/netns", "CNI_PATH": "/usr/lib/cni", "ID": "web-1-abc",
        "BRIDGE": "fleet0", "SUBNET": "10.88.3.0/24",
        "BRIDGE_CONF": '{"bridge":"fleet0","cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":'
                       '{"dataDir":"/var/lib/fleet/cni/ipam","ranges":[[{"subnet":"10.88.3.0/24"}]],"routes":'
                       '[{"dst":"0.0.0.0/0"}],"type":"host-local"},"isGateway":true,"name":"fleet","type":"bridge"}',
        "PORTMAP_CONF": '{"capabilities":{"portMappings":true},"cniVersion":"1.0.0","name":"fleet","runtimeConfig":'
                        '{"portMappings":[{"containerPort":80,"hostPort":23456,"protocol":"tcp"},'
                        '{"containerPort":9100,"hostPort":23457,"protocol":"tcp"}]},"type":"portmap"}',
        "FIREWALL_CONF": '{"backend":"iptables","cniVersion":"1.0.0","name":"fleet","type":"firewall"}',
    }
    # The order that matters: what DEL needs is on disk before ADD runs; bridge, then portmap and firewall on
    # the bridge's result; the result cached, then printed after the marker.
    text = cni.ATTACH_SH
    order = ['>"$CACHE/run/$ID"', 'ip netns add "fleet-$ID"', "ADD \"$ID\" bridge", "ADD \"$ID\" portmap",
             "ADD \"$ID\" firewall", "iptables -w -C", "iptables -w -t nat -C", '>>"$CACHE/run/$ID"',
             "echo '@@cni-result'"]
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)
    assert cni.netns_path("web-1-abc") == "/run/netns/fleet-web-1-abc"


def test_attach_and_run_is_one_script_that_tears_down_when_the_start_fails():
    run = CtrDriver().run(RunSpec(id="web-1-abc", image="busybox", netns="/run/netns/fleet-web-1-abc",
                                  net_host=False, ports=((23456, 80),)))
    call = cni.attach_and(run, "web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80)])
    assert isinstance(call.command, Script) and isinstance(run.command, Script)
    assert call.command.text == (cni.ATTACH_SH + "(\n" + run.command.text
                                 + '\n) || { rc=$?; fleet_cni_del "$ID" >/dev/null 2>&1; exit "$rc"; }\n')
    assert call.command.env["ID"] == "web-1-abc" and call.command.env["LOG"] == run.command.env["LOG"]
    rec = json.loads((DATA / "attach.json").read_text())
    assert call.parse(CommandResult("n1", 0, rec["stdout"], "", 0.1)) == (rec["expect"], None)
    failed = CommandResult("n1", 1, rec["stdout"], 'ctr: image "busybox": not found\n', 0.1)
    with pytest.raises(ImageNotFound):
        call.parse(failed)
    with pytest.raises(RuntimeCommandError, match="bridge: no IP"):
        call.parse(CommandResult("n1", 1, "", "cni: bridge: no IP addresses available\n", 0.1))
    with pytest.raises(ValueError, match="same container"):
        cni.attach_and(run, "web-2-xyz", "10.88.3.0/24", [])


def test_node_subnets_by_index():
    assert [cni.node_subnet(i) for i in (0, 1, 255)] == ["10.88.0.0/24", "10.88.1.0/24", "10.88.255.0/24"]
    assert cni.node_subnet(256) == "10.88.0.0/24"
    assert cni.node_subnet(2, "172.30.0.0/20") == "172.30.2.0/24"


def test_parse_attach_on_a_recorded_run():
    rec = json.loads((DATA / "attach.json").read_text())
    result = CommandResult("n1", rec["exit_status"], rec["stdout"], rec["stderr"], 0.1)
    assert cni.parse_attach(result) == rec["expect"]


def test_parse_attach_failure_carries_the_plugin_error():
    result = CommandResult("n1", 1, "", 'cni: bridge: {"code":7,"msg":"failed to allocate"}\n', 0.1)
    with pytest.raises(RuntimeCommandError, match="failed to allocate"):
        cni.parse_attach(result)
    with pytest.raises(RuntimeCommandError, match="no CNI result"):
        cni.parse_attach(CommandResult("n1", 0, "", "", 0.1))
    with pytest.raises(RuntimeCommandError, match="bad CNI result"):
        cni.parse_attach(CommandResult("n1", 0, "@@cni-result\n{\"ips\": []}\n", "", 0.1))


FAKE_PLUGIN = """#!/bin/sh
printf '%s %s %s ' "$CNI_COMMAND" "$CNI_CONTAINERID" "${0##*/}" >>"$LOG"
cat >>"$LOG"
echo >>"$LOG"
"""


def _run(script_env: dict[str, str], text: str, tmp: Path) -> tuple[str, str]:
    env = {**script_env, "LOG": str(tmp / "log"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["/bin/sh", "-c", text], env=env, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    log = (tmp / "log").read_text() if (tmp / "log").exists() else ""
    return out.stdout, log


def _fake_node(tmp: Path) -> dict[str, str]:
    plugins = tmp / "cni"
    plugins.mkdir()
    for name in ("bridge", "portmap", "firewall"):
        (plugins / name).write_text(FAKE_PLUGIN)
        (plugins / name).chmod(0o755)
    (tmp / "netns").mkdir()
    (tmp / "cache" / "run").mkdir(parents=True)
    return {"CACHE": str(tmp / "cache"), "NETNS_DIR": str(tmp / "netns"), "CNI_PATH": str(plugins)}


def test_sweep_deletes_in_reverse_order_with_the_cached_result_and_keeps_the_rest(tmp_path):
    env = _fake_node(tmp_path)
    for cid in ("keep-1", "gone-1", "fleet-api-1"):  # a service may be named fleet-…
        (tmp_path / "cache" / "run" / cid).write_text('{"type":"bridge"}\n{"type":"portmap"}\n'
                                                      '{"type":"firewall"}\n{"ips":[]}\n')
        (tmp_path / "netns" / f"fleet-{cid}").write_text("")
    (tmp_path / "netns" / "fleet-orphan-2").write_text("")  # a namespace whose cache entry was never written
    (tmp_path / "netns" / "other").write_text("")  # not fleet's
    script = cni.sweep_script(["keep-1", "web-3", "fleet-api-1"])
    stdout, log = _run({**dict(script.env), **env}, script.text, tmp_path)
    assert sorted(stdout.split("\n")) == ["", "swept gone-1", "swept orphan-2"]
    assert log.splitlines() == [
        'DEL gone-1 firewall {"type":"firewall","prevResult":{"ips":[]}}',
        'DEL gone-1 portmap {"type":"portmap","prevResult":{"ips":[]}}',
        'DEL gone-1 bridge {"type":"bridge","prevResult":{"ips":[]}}',
    ]
    assert sorted(p.name for p in (tmp_path / "netns").iterdir()) == ["fleet-fleet-api-1", "fleet-keep-1", "other"]
    assert sorted(p.name for p in (tmp_path / "cache" / "run").iterdir()) == ["fleet-api-1", "keep-1"]


def test_detach_of_a_container_without_a_namespace_does_nothing(tmp_path):
    env = _fake_node(tmp_path)
    script = cni.detach_script(["host-net-1"])
    assert _run({**dict(script.env), **env}, script.text, tmp_path) == ("", "")
    assert cni.detach(["a", "b"]).command == cni.detach_script(["a", "b"])


def test_prepare_node_sweeps_namespaces_only_when_the_node_was_read():
    read = prepare_node_script("hosts\n", [("web-1-abc", "web", "h")])
    assert cni.SWEEP_BODY in read.text and read.env["SWEEP"] == "1" and read.env["KEEP"] == "web-1-abc"
    assert read.env["CACHE"] == cni.CACHE_DIR and read.env["NETNS_DIR"] == "/run/netns"
    assert "SWEEP" not in prepare_node_script("hosts\n", None).env


def _assignment(port: int = 23456) -> Assignment:
    return Assignment("web", 2, "n1", port, Resources(0.1, 64 << 20), "new")


def test_run_spec_in_its_own_namespace_and_on_the_host():
    bridged = run_spec(ServiceSpec(name="web", image="busybox", port=80), 3, _assignment(), None, now=0,
                       container="web-2-abc")
    assert bridged.netns == "/run/netns/fleet-web-2-abc" and not bridged.net_host
    assert bridged.ports == ((23456, 80),) and bridged.env["PORT"] == "80"
    argv = CtrDriver().run_argv(bridged)
    assert argv[argv.index("--with-ns") + 1] == "network:/run/netns/fleet-web-2-abc" and "--net-host" not in argv
    host = run_spec(ServiceSpec(name="web", image="busybox", port=80, network="host"), 3, _assignment(), None,
                    now=0, container="web-2-abc")
    assert host.netns == HOST_NETNS and host.ports == () and host.env["PORT"] == "23456"


def test_nerdctl_maps_the_ports_itself():
    spec = RunSpec(id="web-1-abc123", image="fleet.local/demo:v2", net_host=False, ports=((23456, 80),))
    assert NerdctlDriver().run_argv(spec)[:11] == [
        "nerdctl", "-n", "fleet", "run", "-d", "--name", "web-1-abc123", "--restart", "no",
        "--network", "bridge"] and NerdctlDriver().run_argv(spec)[11:13] == ["-p", "23456:80"]


def _service(body: str) -> ServiceSpec:
    text = "services:\n  web:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"
    return parse_playbook(text, "t.yaml").services[0]


def test_named_ports_and_network_in_the_playbook():
    s = _service("""
        image: busybox
        ports: {metrics: 9100, http: 80}
        """)
    assert s.port == 80 and s.ports == (("http", 80), ("metrics", 9100)) and s.network == "bridge"
    assert _service("image: busybox\nports: {metrics: 9100, admin: 81}\n").port == 9100
    assert _service("image: busybox\nports: {metrics: 9100, admin: 81}\nport: 81\n").port == 81
    host = _service("image: busybox\nnetwork: host\n")
    assert host.network == "host"
    assert host.spec_hash() != _service("image: busybox\n").spec_hash()
    assert s.spec_hash() != _service("image: busybox\nport: 80\n").spec_hash()
    for spec in (s, host):
        back = from_playbook_dict("web", json.loads(json.dumps(to_playbook_dict(spec), sort_keys=True)))
        assert back == spec and back.spec_hash() == spec.spec_hash()


@pytest.mark.parametrize(("body", "message"), [
    ("ports: {HTTP: 80}", r"t.yaml:4: services.web.ports: .*port name 'HTTP'"),
    ("ports: {http: 80, web: 80}", r"t.yaml:4: services.web.ports: .*two names for one container port"),
    ("ports: {http: 0}", r"t.yaml:4: services.web.ports.http: .*port number"),
    ("ports: {}", r"t.yaml:4: services.web.ports: .*at least one named port"),
    ("ports: {http: 80}\n    port: 81", r"t.yaml:2: services.web: .*port 81 is not one of ports"),
    ("network: overlay", r"t.yaml:4: services.web.network: "),
])
def test_bad_ports_and_network_name_file_line_field(body, message):
    text = f"services:\n  web:\n    image: busybox\n    {body}\n"
    with pytest.raises(SpecError, match=message):
        parse_playbook(text, "t.yaml")


def test_attach_keeps_the_subnet_the_nodes_bridge_already_has(tmp_path):
    """A run whose inventory orders the nodes otherwise proposes another subnet: the node's bridge keeps its own
    (the bridge plugin refuses an address other than the one the bridge has), in the config cached for DEL too."""
    env = _fake_node(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {"ip": '[ "$*" = "-4 -o addr show dev fleet0" ] && '
                   'echo "7: fleet0    inet 10.88.7.1/24 brd 10.88.7.255 scope global fleet0"\nexit 0\n',
             "iptables": "exit 0\n"}
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    script = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80)], cache_dir=env["CACHE"])
    out = subprocess.run(["/bin/sh", "-c", script.text], capture_output=True, text=True, timeout=10,
                         env={**dict(script.env), **env, "LOG": str(tmp_path / "log"),
                              "PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    bridge_add = next(line for line in (tmp_path / "log").read_text().splitlines() if line.startswith("ADD"))
    assert '"subnet":"10.88.7.0/24"' in bridge_add and "10.88.3." not in bridge_add
    cached = (tmp_path / "cache" / "run" / "web-1-abc").read_text().splitlines()[0]
    assert '"subnet":"10.88.7.0/24"' in cached
