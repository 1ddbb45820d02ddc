"""Inventories: fleet YAML, Ansible YAML and INI; errors name file, line and field; the roles an Ansible host's
groups give it (an lb host runs replicas only when the inventory says so)."""

from __future__ import annotations

import os

import pytest
from harness import Harness, facts, service

from fleet.config.inventory import load_inventory, parse
from fleet.core.errors import InventoryError
from fleet.core.model import Resources
from fleet.results import NodeReport

FLEET_YAML = """\
defaults:
  user: deploy
  key: keys/id_ed25519
  known_hosts: ./known_hosts
  reserved: {cpu: 250m, memory: 256MiB}
nodes:
  n1:
    address: 10.0.0.11
    labels: {zone: a}
    capacity: {cpu: 2, memory: 4GiB}
  n2:
    address: 10.0.0.12
    port: 2222
    user: root
    roles: [worker, lb]
"""


def test_fleet_yaml_defaults_and_overrides(tmp_path):
    path = tmp_path / "inv.yaml"
    path.write_text(FLEET_YAML)
    inv = load_inventory(str(path))
    n1, n2 = inv.nodes
    assert (n1.name, n1.address, n1.port, n1.user) == ("n1", "10.0.0.11", 22, "deploy")
    assert n1.key_files == (str(tmp_path / "keys/id_ed25519"),)
    assert n1.known_hosts == str(tmp_path / "known_hosts")
    assert n1.capacity == Resources(2.0, 4 * 1024**3)
    assert n1.reserved == Resources(0.25, 256 * 1024**2)
    assert dict(n1.labels) == {"zone": "a"}
    assert (n2.port, n2.user, n2.roles, n2.capacity) == (2222, "root", ("worker", "lb"), None)
    assert n2.source_line == 11


def test_fleet_yaml_errors_name_file_line_and_field_all_at_once():
    text = FLEET_YAML.replace("port: 2222", "port: twenty").replace("roles: [worker, lb]", "roles: [boss]")
    text += "  n3:\n    adress: 10.0.0.13\n"
    with pytest.raises(InventoryError) as exc:
        parse(text, "inventory/prod.yaml")
    msgs = [str(p) for p in exc.value.problems]
    assert any(m.startswith("inventory/prod.yaml:13: nodes.n2.port:") for m in msgs), msgs
    assert any(m.startswith("inventory/prod.yaml:15: nodes.n2.roles") and "boss" in m for m in msgs), msgs
    assert "inventory/prod.yaml:17: nodes.n3.adress: unknown field (did you mean 'address'?)" in msgs
    assert any(m.startswith("inventory/prod.yaml:16: nodes.n3.address: required") for m in msgs), msgs


def test_bad_memory_unit_names_the_field():
    with pytest.raises(InventoryError, match=r"x.yaml:2: nodes.a.capacity.memory: .*512 parsecs"):
        parse("nodes:\n  a: {address: h, capacity: {memory: 512 parsecs}}\n", "x.yaml")


def test_yaml_syntax_error_has_line():
    with pytest.raises(InventoryError, match=r"^bad.yaml:3: invalid YAML"):
        parse("nodes:\n  a: {address: h\n  b: 1\n", "bad.yaml")


def test_hostile_label_value_rejected():
    with pytest.raises(InventoryError, match=r"nodes.a.labels"):
        parse("nodes:\n  a: {address: h, labels: {zone: 'a; rm -rf /'}}\n", "x.yaml")


def test_empty_inventory_rejected():
    with pytest.raises(InventoryError, match="lists no nodes"):
        parse("nodes: {}\n", "x.yaml")


def test_missing_file_named():
    with pytest.raises(InventoryError, match=r"/nope/inv\.yaml: cannot read inventory"):
        load_inventory("/nope/inv.yaml")


ANSIBLE_INI = """\
# comment
[web]
web1 ansible_host=10.0.0.1 ansible_user=deploy
web2 ansible_host=10.0.0.2 ansible_port=2222 fleet_labels='{}'

[lb]
edge ansible_host=10.0.0.9

[prod:children]
web
lb

[web:vars]
ansible_ssh_private_key_file=~/.ssh/web_key

[all:vars]
ansible_user=root
"""


def test_ansible_ini_hosts_groups_and_vars():
    inv = parse(ANSIBLE_INI.replace(" fleet_labels='{}'", ""), "hosts.ini")
    web1, web2, edge = inv.nodes
    assert (web1.address, web1.user, web1.port) == ("10.0.0.1", "deploy", 22)
    assert (web2.address, web2.user, web2.port) == ("10.0.0.2", "root", 2222)
    assert web1.key_files == (os.path.expanduser("~/.ssh/web_key"),)
    assert dict(web1.labels) == {"group.prod": "true", "group.web": "true"}
    assert edge.roles == ("lb",) and edge.key_files == (), "an lb host takes no replicas unless told to"
    assert web2.source_line == 4


@pytest.mark.parametrize(("ini", "roles"), [
    ("[lb]\nedge\n", ("lb",)),
    ("[web]\nedge\n[lb]\nedge\n", ("lb",)),  # an application group is not a worker group
    ("[workers]\nedge\n[lb]\nedge\n", ("worker", "lb")),
    ("[worker]\nedge\n[lb]\nedge\n", ("worker", "lb")),
    ("[web]\nedge\n[lb]\nedge\n[workers:children]\nweb\n", ("worker", "lb")),  # a parent group counts
    ("[web]\nedge\n", ("worker",)),
    ("edge\n", ("worker",)),
])
def test_an_lb_host_is_a_worker_only_when_the_inventory_says_so(ini: str, roles: tuple[str, ...]):
    [edge] = parse(ini, "hosts.ini").nodes
    assert edge.roles == roles


@pytest.mark.parametrize(("body", "roles"), [
    ("workers:\n      children:\n        lb:\n          hosts: {b: {ansible_host: 10.1.0.2}}", ("worker", "lb")),
    ("lb:\n      hosts: {b: {ansible_host: 10.1.0.2, fleet_roles: [worker, lb]}}", ("worker", "lb")),
    ("lb:\n      hosts: {b: {ansible_host: 10.1.0.2, fleet_roles: [lb, storage]}}", ("lb", "storage")),
])
def test_ansible_yaml_lb_host_roles_from_a_workers_parent_group_or_fleet_roles(body: str, roles: tuple[str, ...]):
    [b] = parse(f"all:\n  children:\n    {body}\n", "hosts.yml").nodes
    assert b.roles == roles


def test_ansible_ini_bad_line_named():
    with pytest.raises(InventoryError, match=r"hosts.ini:3: web1: expected key=value, got 'oops'"):
        parse("[web]\n\nweb1 ansible_host=1.2.3.4 oops\n", "hosts.ini")


def test_ansible_yaml_inventory():
    text = """\
all:
  vars:
    ansible_user: admin
  hosts:
    a:
      ansible_host: 10.1.0.1
  children:
    lb:
      hosts:
        b:
          ansible_host: 10.1.0.2
          ansible_port: 2200
          fleet_labels: {zone: east}
"""
    inv = parse(text, "hosts.yml")
    a, b = inv.nodes
    assert (a.address, a.user, a.roles) == ("10.1.0.1", "admin", ("worker",))
    assert (b.address, b.port, b.roles) == ("10.1.0.2", 2200, ("lb",))
    assert dict(b.labels) == {"group.lb": "true", "zone": "east"}


def test_ansible_yaml_error_line():
    with pytest.raises(InventoryError, match=r"hosts.yml:3: all.host: unknown field"):
        parse("all:\n  hosts: {a: {ansible_host: x}}\n  host: {}\n", "hosts.yml")


def test_valid_inventory_cached_by_content_and_read_back_without_pydantic(tmp_path, monkeypatch):
    import stat
    import subprocess
    import sys

    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "inv.yaml"
    path.write_text(FLEET_YAML)
    fresh = load_inventory(str(path))
    (cached_file,) = (tmp_path / "cache" / "inventory").iterdir()
    assert stat.S_IMODE(cached_file.stat().st_mode) == 0o600
    assert load_inventory(str(path)) == fresh
    probe = ("import sys; from fleet.config.inventory import load_inventory; "
             f"inv = load_inventory({str(path)!r}); print(len(inv.nodes), 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "FLEET_CACHE_DIR": str(tmp_path / "cache")})
    assert out.stdout.split() == ["2", "False"]
    # A changed file is validated again: its error shows, whatever the cache holds for the old text.
    path.write_text(FLEET_YAML.replace("port: 2222", "port: twenty"))
    with pytest.raises(InventoryError, match=r"inv.yaml:13: nodes.n2.port"):
        load_inventory(str(path))


ISSUE_INVENTORY = "[web]\nw1 ansible_host=10.0.0.1\nw2 ansible_host=10.0.0.2\n[lb]\ne1 ansible_host=10.0.0.9\n"


@pytest.mark.parametrize(("ini", "allowed"), [
    (ISSUE_INVENTORY, {"w1", "w2"}),
    (ISSUE_INVENTORY + "[workers:children]\nweb\nlb\n", {"w1", "w2", "e1"}),
])
async def test_replicas_land_on_an_ansible_lb_host_only_when_it_is_in_a_worker_group(ini: str, allowed: set[str]):
    """The issue's inventory ([web] and [lb]): two services place every replica on the web hosts; with the lb
    group under `workers`, the lb host takes its share. Through the engine's harness (fake node operations)."""
    reports = [NodeReport(n, "ready", None, facts(2), 0.01) for n in parse(ini, "hosts.ini").nodes]
    h = Harness(reports)
    result = await h.apply(service("web", 6, cpu=0.25), service("api", 3, cpu=0.25))
    assert result.ok, result
    placed = {r.node for name in ("web", "api") for r in h.ops.of(name)}
    assert len(h.ops.of("web")) == 6 and len(h.ops.of("api")) == 3
    assert placed == allowed
