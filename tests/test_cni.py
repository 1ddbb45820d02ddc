"""A replica's own network namespace, fast: the CNI scripts as values (exact configurations and variables), the
result parser on a recorded run, the teardown and sweep scripts run by sh against stand-in plugins (they record
what they are given; the real chain runs in tests/test_netns_lab.py), the run spec and the playbook fields."""

from __future__ import annotations

import fcntl
import json
import os
import signal
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
    """Replica ports on the address HAProxy reaches, not 0.0.0.0 (issue 21): the DNAT rule's `-d`."""
    bound = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80, cni.bound_address("10.241.0.11"))])
    assert bound.env["PORTS"] == "23456:80:10.241.0.11"
    assert cni.bound_address("worker1.example.internal") is None and cni.bound_address("2001:db8::1") is None
    anywhere = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80, cni.bound_address("web1"))])
    assert anywhere.env["PORTS"] == "23456:80:"


def test_attach_script_is_exactly_the_chain_with_its_configurations():
    script = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80), cni.PortMap(23457, 9100)])
    assert script.text == cni.ATTACH_SH and script.name == "fleet-cni-attach"
    assert dict(script.env) == {
        "CACHE": "/var/lib/fleet/cni", "NETNS_DIR": "/run/netns", "CNI_PATH": "/usr/lib/cni", "ID": "web-1-abc",
        "BRIDGE": "fleet0", "SUBNET": "10.88.3.0/24", "CHAIN": "FLEET-HOSTPORTS",
        "BRIDGE_CONF": '{"bridge":"fleet0","cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":'
                       '{"dataDir":"/var/lib/fleet/cni/ipam","ranges":[[{"subnet":"10.88.3.0/24"}]],"routes":'
                       '[{"dst":"0.0.0.0/0"}],"type":"host-local"},"isGateway":true,"name":"fleet","type":"bridge"}',
        "PORTS": "23456:80: 23457:9100:",
    }
    # The order that matters: what DEL needs is on disk before ADD runs (the bridge's configuration, then the
    # rules that delete the ports before they are added); the node's own rules before the ports' (first use);
    # the result cached, then printed after the marker.
    text = cni.ATTACH_SH
    order = ['>"$CACHE/run/$ID"', 'ip netns add "fleet-$ID"', "ADD \"$ID\" bridge", "fleet_cni_node ||",
             '>"$CACHE/ports/$ID"', "fleet_cni_ports 2>/dev/null", '>>"$CACHE/run/$ID"',
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
    assert cni.node_subnet(256) == "10.88.0.0/24"  # past the last, they repeat
    assert [cni.node_subnet(i, "10.0.0.0/8") for i in (1, 257, 65536)] == ["10.0.1.0/24", "10.1.1.0/24",
                                                                          "10.0.0.0/24"]
    assert [cni.node_subnet(i, "172.16.0.0/20") for i in (15, 16)] == ["172.16.15.0/24", "172.16.0.0/24"]
    assert cni.node_subnet(3, "10.1.2.0/25") == "10.1.2.0/25"
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


# Logs its configuration as a JSON decoder reads it: a trailing newline (the scripts send it in a here-document)
# is not part of it.
FAKE_PLUGIN = """#!/bin/sh
printf '%s %s %s %s\\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "${0##*/}" "$(cat)" >>"$LOG"
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


# A stand-in node for the attach script: `ip` answers for the bridge (its MAC from $TOOLS/mac when that exists,
# its address from $TOOLS/gw), `iptables` logs its arguments and finds no rule (`-C` fails), `iptables-restore`
# logs its input, and the bridge plugin logs what it is given and answers with a recorded result.
STAND_IN_TOOLS = {
    "ip": """case "$*" in
  "-o link show dev fleet0") [ -f "$TOOLS/mac" ] &&
    echo "3: fleet0: <UP> mtu 1500\\    link/ether $(cat "$TOOLS/mac") brd ff:ff:ff:ff:ff:ff" ;;
  "-4 -o addr show dev fleet0") [ -f "$TOOLS/gw" ] && echo "3: fleet0    inet $(cat "$TOOLS/gw") scope global fleet0" ;;
esac
exit 0
""",
    "iptables": 'echo "$*" >>"$TOOLS/iptables.log"\ncase "$*" in *" -C "*) exit 1 ;; esac\nexit 0\n',
    "iptables-restore": 'echo "# $*" >>"$TOOLS/restore.log"\ncat >>"$TOOLS/restore.log"\n',
}


def _attach_node(tmp: Path) -> dict[str, str]:
    env = _fake_node(tmp)
    tools = tmp / "bin"
    tools.mkdir()
    for name, body in STAND_IN_TOOLS.items():
        (tools / name).write_text("#!/bin/sh\n" + body)
        (tools / name).chmod(0o755)
    result = json.loads((DATA / "attach.json").read_text())["stdout"].split("\n", 1)[1]
    (tmp / "result.json").write_text(result)
    (tmp / "cni" / "bridge").write_text(FAKE_PLUGIN + '[ "$CNI_COMMAND" = ADD ] && cat "$TOOLS/../result.json"\n')
    return {**env, "TOOLS": str(tools), "LOG": str(tmp / "log"), "PATH": f"{tools}:/usr/bin:/bin"}


def _sh(script: Script, env: dict[str, str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Run the script; on the timeout its whole process group (a waiting `flock` with it) is killed."""
    proc = subprocess.Popen(["/bin/sh", "-c", script.text], env={**dict(script.env), **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_attach_maps_ports_with_one_restore_and_makes_the_nodes_rules_once(tmp_path):
    env = _attach_node(tmp_path)
    tools = tmp_path / "bin"
    first = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80, "10.241.0.11"),
                                                            cni.PortMap(23457, 9100, "10.241.0.11")], env["CACHE"])
    (tools / "mac").write_text("4a:7d:bb:97:f2:5a\n")
    out = _sh(first, env)
    assert out.returncode == 0, out.stderr
    assert cni.parse_attach(CommandResult("n1", 0, out.stdout, "", 0.1)) == "10.88.3.2"
    # First use (no record of this bridge): the node's rules, each checked, then added.
    made = (tools / "iptables.log").read_text().splitlines()
    assert "-w -t nat -N FLEET-HOSTPORTS" in made
    added = [line for line in made if " -C " not in line and " -N " not in line]
    assert added == [
        "-w -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j FLEET-HOSTPORTS",
        "-w -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j FLEET-HOSTPORTS",
        "-w -t nat -A POSTROUTING -s 10.88.3.0/24 ! -d 10.88.3.0/24 -m comment --comment fleet: containers out "
        "through the node -j MASQUERADE",
        "-w -t nat -A POSTROUTING -o fleet0 -s 10.88.3.0/24 -m conntrack --ctstate DNAT -m comment --comment "
        "fleet: a container to a host port of its node -j MASQUERADE",
        "-w -t nat -A POSTROUTING -o fleet0 -s 127.0.0.0/8 -m comment --comment fleet: the node to a host port "
        "-j MASQUERADE",
        "-w -t filter -I FORWARD -i fleet0 -m comment --comment fleet: from containers -j ACCEPT",
        "-w -t filter -I FORWARD -o fleet0 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "
        "fleet: to containers, what they or a port mapping opened -j ACCEPT",
        "-w -t filter -I FORWARD -o fleet0 ! -i fleet0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m "
        "comment --comment fleet: containers only through mapped ports -j DROP",
    ]
    rule = "FLEET-HOSTPORTS -d 10.241.0.11/32 -p tcp -m tcp --dport {} -m comment --comment fleet:web-1-abc -j DNAT " \
           "--to-destination 10.88.3.2:{}"
    ports = [rule.format(23456, 80), rule.format(23457, 9100)]
    assert (tools / "restore.log").read_text() == (
        "# -w --noflush\n*nat\n" + "".join(f"-A {r}\n" for r in ports) + "COMMIT\n")
    cache = Path(env["CACHE"])
    assert (cache / "ports" / "web-1-abc").read_text() == "*nat\n" + "".join(f"-D {r}\n" for r in ports) + "COMMIT\n"
    assert (cache / ".made").read_text() == "4a:7d:bb:97:f2:5a\n"
    assert (cache / "run" / "web-1-abc").read_text().splitlines()[1:3] == ["", ""]
    # The next start on the same bridge: not one iptables command, one restore; on any address without `-d`.
    (tools / "iptables.log").unlink()
    (tools / "restore.log").unlink()
    out = _sh(cni.attach_script("api-1-xyz", "10.88.3.0/24", [cni.PortMap(23458, 8080)], env["CACHE"]), env)
    assert out.returncode == 0, out.stderr
    assert not (tools / "iptables.log").exists()
    assert (tools / "restore.log").read_text() == (
        "# -w --noflush\n*nat\n-A FLEET-HOSTPORTS -p tcp -m tcp --dport 23458 -m comment --comment fleet:api-1-xyz "
        "-j DNAT --to-destination 10.88.3.2:8080\nCOMMIT\n")
    # DEL: the rules deleted as recorded, then the bridge plugin; nothing of the container left in the cache.
    (tools / "restore.log").unlink()
    out = _sh(cni.detach_script(["web-1-abc"], env["CACHE"]), env)
    assert out.returncode == 0, out.stderr
    assert (tools / "restore.log").read_text() == (
        "# -w --noflush\n*nat\n" + "".join(f"-D {r}\n" for r in ports) + "COMMIT\n")
    assert (tmp_path / "log").read_text().splitlines()[-1].startswith("DEL web-1-abc bridge")
    assert sorted(p.name for p in (cache / "run").iterdir()) == ["api-1-xyz"]
    assert sorted(p.name for p in (cache / "ports").iterdir()) == ["api-1-xyz"]


def test_a_new_bridge_makes_the_nodes_rules_again(tmp_path):
    """After a reboot the bridge is new (another MAC): its first start makes the node's rules again."""
    env = _attach_node(tmp_path)
    tools = tmp_path / "bin"
    (tools / "mac").write_text("4a:7d:bb:97:f2:5a\n")
    (Path(env["CACHE"]) / ".made").write_text("02:00:00:00:00:01\n")
    out = _sh(cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80)], env["CACHE"]), env)
    assert out.returncode == 0, out.stderr
    assert "-w -t nat -N FLEET-HOSTPORTS" in (tools / "iptables.log").read_text()
    assert (Path(env["CACHE"]) / ".made").read_text() == "4a:7d:bb:97:f2:5a\n"


def test_starts_share_the_nodes_lock_once_its_network_is_made_and_the_first_start_takes_it_alone(tmp_path):
    """CNI ADDs of different containers may run at once (the CNI spec); the first, which makes the node's rules,
    and the sweep (GC) run alone. Shown with a shared hold on the lock: a start on a made network passes it, a
    first start and a sweep wait for it."""
    env = _attach_node(tmp_path)
    tools = tmp_path / "bin"
    (tools / "mac").write_text("4a:7d:bb:97:f2:5a\n")
    # flock(1) and fcntl.flock take the same flock(2) locks; closing the file releases it.
    with open(Path(env["CACHE"]) / ".lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_SH)
        first = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80)], env["CACHE"])
        with pytest.raises(subprocess.TimeoutExpired):
            _sh(first, env, timeout=1.0)
        with pytest.raises(subprocess.TimeoutExpired):
            _sh(cni.sweep_script([], env["CACHE"]), env, timeout=1.0)
        (Path(env["CACHE"]) / ".made").write_text("4a:7d:bb:97:f2:5a\n")
        assert not list((Path(env["CACHE"]) / "run").iterdir()), "the waiting start wrote nothing"
        out = _sh(cni.attach_script("api-1-xyz", "10.88.3.0/24", [cni.PortMap(23458, 80)], env["CACHE"]), env,
                  timeout=5.0)
        assert out.returncode == 0, out.stderr
        assert _sh(cni.detach_script(["api-1-xyz"], env["CACHE"]), env, timeout=5.0).returncode == 0


def test_attach_keeps_the_subnet_the_nodes_bridge_already_has(tmp_path):
    """A run whose inventory orders the nodes otherwise proposes another subnet: the node's bridge keeps its own
    (the bridge plugin refuses an address other than the one the bridge has), in the config cached for DEL and in
    the node's rules too."""
    env = _attach_node(tmp_path)
    (tmp_path / "bin" / "gw").write_text("10.88.7.1/24")
    script = cni.attach_script("web-1-abc", "10.88.3.0/24", [cni.PortMap(23456, 80)], cache_dir=env["CACHE"])
    out = _sh(script, env)
    assert out.returncode == 0, out.stderr
    bridge_add = next(line for line in (tmp_path / "log").read_text().splitlines() if line.startswith("ADD"))
    assert '"subnet":"10.88.7.0/24"' in bridge_add and "10.88.3." not in bridge_add
    cached = (tmp_path / "cache" / "run" / "web-1-abc").read_text().splitlines()[0]
    assert '"subnet":"10.88.7.0/24"' in cached
    assert "-s 10.88.7.0/24 ! -d 10.88.7.0/24" in (tmp_path / "bin" / "iptables.log").read_text()
