"""The virtual IP (VRRP, keepalived): inventory settings and their errors, the rendered keepalived config, the
status parser, the record nodes of a fleet with two lb nodes, and the lab's inventory with --lb 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from fleet.config.inventory import load_inventory, parse
from fleet.core.errors import InventoryError, ScriptOutputError
from fleet.core.model import Vrrp
from fleet.lab.render import LabConfig, inventory_yaml
from fleet.node.keepalived import (
    APPLY,
    CHECK_USER,
    KeepalivedFiles,
    apply_script,
    check_command,
    parse_status,
    priority,
    render,
)
from fleet.store.nodes import record_nodes, record_warnings

INV = """\
nodes:
  n1: {address: 10.0.0.11}
  lb1: {address: 10.0.0.21, roles: [lb]}
  lb2: {address: 10.0.0.22, roles: [lb]}
vrrp:
  virtual_ip: 10.0.0.250/24
  router_id: 51
"""


def test_fleet_inventory_puts_the_virtual_ip_on_every_lb_node_only(tmp_path: Path):
    path = tmp_path / "inv.yaml"
    path.write_text(INV + "  advert_int: 0.3\n")
    inv = load_inventory(str(path))
    want = Vrrp("10.0.0.250", 24, 51, "eth0", 0.3)
    assert {n.name: n.vrrp for n in inv.nodes} == {"n1": None, "lb1": want, "lb2": want}
    assert load_inventory(str(path)) == inv  # read back from the cache with the same settings


@pytest.mark.parametrize(("line", "field", "message"), [
    ("  router_id: 300\n", "vrrp.router_id", "from 1 to 255"),
    ("  router_id: 0\n", "vrrp.router_id", "from 1 to 255"),
    ("  advert_int: 0.001\n", "vrrp.advert_int", "0.05 to 40.95"),
    ("  advert_int: 60\n", "vrrp.advert_int", "0.05 to 40.95"),
    ("  interface: 'eth 0'\n", "vrrp.interface", "interface name"),
    ("  preempt: true\n", "vrrp.preempt", "unknown vrrp setting"),
])
def test_vrrp_settings_out_of_range_are_refused_with_their_line(line: str, field: str, message: str):
    text = INV.replace("  router_id: 51\n", "") + ("" if "router_id" in line else "  router_id: 51\n") + line
    with pytest.raises(InventoryError) as err:
        parse(text, "inv.yaml")
    (problem,) = err.value.problems
    assert (problem.field, problem.line) == (field, text.splitlines().index(line.rstrip("\n")) + 1)
    assert message in problem.message


@pytest.mark.parametrize(("vip", "message"), [
    ("10.0.0.250", "prefix length"),
    ("10.0.0.300/24", "IPv4 address"),
    ("10.0.0.255/24", "broadcast"),
    ("10.0.0.21/24", "address of node lb1"),
])
def test_a_bad_virtual_ip_is_refused_naming_the_field(vip: str, message: str):
    with pytest.raises(InventoryError) as err:
        parse(INV.replace("10.0.0.250/24", vip), "inv.yaml")
    (problem,) = err.value.problems
    assert problem.field == "vrrp.virtual_ip" and problem.line == 6 and message in problem.message


def test_a_virtual_ip_without_lb_nodes_is_refused():
    text = "nodes:\n  n1: {address: 10.0.0.11}\nvrrp: {virtual_ip: 10.0.0.250/24, router_id: 9}\n"
    with pytest.raises(InventoryError, match="needs lb nodes"):
        parse(text, "inv.yaml")


ANSIBLE = """\
[web]
n1 ansible_host=10.0.0.11
[lb]
lb1 ansible_host=10.0.0.21
lb2 ansible_host=10.0.0.22
[lb:vars]
fleet_vrrp_virtual_ip=10.0.0.250/24
fleet_vrrp_router_id=7
"""


def test_ansible_lb_group_variables_give_the_virtual_ip():
    inv = parse(ANSIBLE, "hosts.ini")
    assert {n.name: n.vrrp for n in inv.nodes} == {"n1": None, "lb1": Vrrp("10.0.0.250", 24, 7),
                                                    "lb2": Vrrp("10.0.0.250", 24, 7)}


def test_ansible_vrrp_values_must_agree_and_stay_on_lb_hosts():
    with pytest.raises(InventoryError, match="same fleet_vrrp_\\* values"):
        parse(ANSIBLE + "[other]\nlb2 fleet_vrrp_router_id=8\n", "hosts.ini")
    with pytest.raises(InventoryError) as err:
        parse(ANSIBLE.replace("fleet_vrrp_router_id=7", "fleet_vrrp_router_id=256"), "hosts.ini")
    assert err.value.problems[0].field.endswith("fleet_vrrp_router_id")
    with pytest.raises(InventoryError, match="belong on lb hosts"):
        parse("[web]\nn1 ansible_host=10.0.0.11 fleet_vrrp_virtual_ip=10.0.0.250/24 fleet_vrrp_router_id=7\n"
              "[lb]\nlb1 ansible_host=10.0.0.21\n", "hosts.ini")


def test_keepalived_config_is_the_same_instance_with_distinct_priorities():
    vrrp = Vrrp("10.0.0.250", 24, 51, "eth0", 0.5)
    one, two = render(vrrp, "lb1", 0), render(vrrp, "lb2", 1)
    for text in (one, two):
        assert "vrrp_version 3" in text and "state BACKUP" in text and "nopreempt" in text
        assert "virtual_router_id 51" in text and "advert_int 0.5" in text
        assert "10.0.0.250/24 dev eth0" in text
        assert f'script "{KeepalivedFiles().check}"' in text
    assert "priority 200" in one and "priority 190" in two
    assert "    script_user nobody\n" in one and "enable_script_security" in one
    assert [priority(i) for i in range(25)] == sorted({priority(i) for i in range(25)}, reverse=True)[:20] + [1] * 5


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v keepalived"], capture_output=True).returncode != 0,
                    reason="keepalived is not installed (scripts/setup.sh installs it)")
def test_keepalived_accepts_the_rendered_config(tmp_path: Path):
    check = tmp_path / "check"
    check.write_text("#!/bin/sh\nexit 0\n")
    check.chmod(0o700)
    conf = tmp_path / "k.conf"
    # As the apply script tests it: keepalived -t kills itself when script_user is not root (see APPLY).
    text = render(Vrrp("10.0.0.250", 24, 51), "lb1", 0, KeepalivedFiles(str(tmp_path)))
    assert "    script_user nobody\n" in text and 'sed \'s/^    script_user .*/    script_user root/\'' in APPLY
    conf.write_text(text.replace(KeepalivedFiles(str(tmp_path)).check, str(check))
                    .replace("script_user nobody", "script_user root"))
    done = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    conf.write_text(conf.read_text().replace("virtual_router_id 51", "virtual_router_id 300"))
    assert subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True, timeout=30).returncode != 0


def test_status_output_is_parsed_and_garbage_refused():
    st = parse_status("@@fleet holds 1\n@@fleet pid 42\n@@fleet result running\n")
    assert (st.running, st.holds) == (True, True)
    st = parse_status("@@fleet holds 0\n@@fleet result stopped\n")
    assert (st.running, st.holds) == (False, False)
    with pytest.raises(ScriptOutputError):
        parse_status("@@fleet holds maybe\n@@fleet result running\n")


def test_two_lb_nodes_alone_as_record_nodes_get_a_warning_of_what_losing_one_means():
    inv = parse(INV, "inv.yaml")
    assert [n.name for n in record_nodes(inv)] == ["lb1", "lb2"]  # never a tie-breaker taken from the order
    assert any("losing either one stops every write" in w for w in record_warnings(inv))


def test_lab_with_two_lb_nodes_writes_a_virtual_ip_on_a_free_address():
    cfg = LabConfig(prefix="tv", subnet="10.250.3.0/24", nodes=2, lb=2)
    doc = yaml.safe_load(inventory_yaml(cfg))
    assert doc["vrrp"] == {"virtual_ip": "10.250.3.10/24", "router_id": 51, "interface": "eth0"}
    used = {n.address for n in cfg.layout()} | {cfg.gateway}
    assert "10.250.3.10" not in used
    assert "vrrp" not in yaml.safe_load(inventory_yaml(LabConfig(prefix="tv", subnet="10.250.3.0/24", lb=1)))


def test_the_check_runs_as_nobody_and_passes_only_while_something_accepts_on_the_stats_port():
    """The check (socat connecting to HAProxy's stats port on loopback) as keepalived runs it: as CHECK_USER,
    here against a listener of this test and against the same port closed."""
    import shutil
    import socket

    socat = shutil.which("socat")
    assert socat is not None and CHECK_USER == "nobody"
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        up = subprocess.run([*as_nobody, *check_command(socat, port)], capture_output=True, text=True, timeout=10)
        assert up.returncode == 0, up.stderr
    down = subprocess.run([*as_nobody, *check_command(socat, port)], capture_output=True, text=True, timeout=10)
    assert down.returncode != 0 and "Connection refused" in down.stderr
    # The apply script writes it with the node's own socat path, 0755, in a 0711 directory; no pid file read.
    script = apply_script(Vrrp("10.0.0.250", 24, 51), 10)
    assert script.env["CHECKCMD"] == "socat -u OPEN:/dev/null TCP4:127.0.0.1:8404,connect-timeout=1"
    assert 'chmod 0711 "$D"' in script.text and 'chmod 0755 "$CHECK.new"' in script.text
    assert "HAPIDF" not in script.text and "haproxy.pid" not in " ".join(script.env.values())
