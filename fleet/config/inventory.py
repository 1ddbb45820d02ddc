"""Inventories: fleet's own YAML, and Ansible's YAML and INI, read into one `Inventory` value.

Fleet format (every key but `address` optional; `defaults` apply to every node):

    defaults: {user: root, port: 22, key: ~/.ssh/id_ed25519, known_hosts: ./known_hosts,
               namespace: fleet, labels: {}, reserved: {cpu: 0.1, memory: 256MiB}}
    nodes:
      n1: {address: 10.0.0.11, roles: [worker, lb], labels: {zone: a}, capacity: {cpu: 2, memory: 4GiB}}

Ansible inventories: `ansible_host`, `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`
(or `ansible_private_key_file`) are honoured; every group a host is in becomes the label
`group.NAME=true`. Roles come from groups (`group_roles`): a host in a group named `lb` gets the role `lb` only,
and `worker` as well when it is also in a group named `worker` or `workers`; any other host is a `worker`; a host
in a group named `record` also keeps the fleet's shared state (etcd; fleet.store.nodes.record_nodes). The
`fleet_roles` host variable (list) replaces them; `fleet_labels` (mapping) adds labels, and
`-o UserKnownHostsFile=PATH` in `ansible_ssh_common_args` / `ansible_ssh_extra_args` pins host keys as it does
for Ansible. `ansible_become` (with `ansible_become_user`, and `ansible_become_method` sudo) runs every command
through `sudo -n`; variables fleet cannot honour (passwords, another connection or become method) are refused
at their line (fleet.config.become).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import asdict, replace

from fleet.config.become import ansible_become
from fleet.config.vrrp import KEYS as VRRP_KEYS
from fleet.config.vrrp import parse_vrrp, vrrp_problems
from fleet.config.yamlmarks import Marked, load, read_text
from fleet.core.edge import edge_from_json, edge_to_json
from fleet.core.errors import ConfigError, InventoryError, Problem, VrrpValueError
from fleet.core.model import Inventory, Node, RegistryLogin, Resources, Vrrp
from fleet.core.names import NAME_RE, ROLES, check_address, check_labels, key_files, resolve_path

# Groups of an Ansible inventory (a host is in its groups' parents too) that make a host a worker beside `lb`.
WORKER_GROUPS = ("worker", "workers")


def group_roles(groups: Iterable[str]) -> tuple[str, ...]:
    """The roles an Ansible host's groups give it. An `lb` host is an edge node only: replicas stay off the
    internet-facing nodes that hold the TLS keys and the fleet's records, unless the inventory puts the host in
    a worker group too (or lists `worker` in `fleet_roles`). Every other host is a worker."""
    groups = set(groups)
    record = ("record",) if "record" in groups else ()
    if "lb" not in groups:
        return ("worker", *record)
    return (("worker", "lb") if groups & set(WORKER_GROUPS) else ("lb",)) + record


class _Host:
    def __init__(self, name: str, line: int | None) -> None:
        self.name = name
        self.line = line
        self.vars: dict[str, object] = {}
        # The line that set each variable (a group's or the host's own), for errors about it.
        self.lines: dict[str, int | None] = {}
        self.groups: set[str] = set()


def _ansible_node(host: _Host, file: str, base_dir: str) -> Node:
    v = host.vars
    problems: list[Problem] = []

    def field(key: str) -> str:
        return f"{host.name}.{key}"

    if not NAME_RE.match(host.name):
        problems.append(Problem(file, host.line, host.name,
                                "invalid host name (letters, digits, . _ -; at most 63 characters)"))
    port_var = "ansible_port" if "ansible_port" in v else "ansible_ssh_port"
    got = v.get(port_var, 22)
    try:
        if isinstance(got, bool | float):
            raise ValueError
        port = int(str(got))
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        problems.append(Problem(file, host.line, field(port_var), f"expected a port number from 1 to 65535, "
                                                                  f"got {got!r}"))
        port = 22
    address_var = next((k for k in ("ansible_host", "ansible_ssh_host") if k in v), None)
    address = v.get(address_var, host.name) if address_var else host.name
    try:
        address = check_address(address)
    except ValueError as exc:
        if address_var is not None or NAME_RE.match(host.name):  # else the name's problem says it all
            problems.append(Problem(file, host.line, field(address_var or "ansible_host"), str(exc)))
    key = v.get("ansible_ssh_private_key_file", v.get("ansible_private_key_file"))
    labels: dict[str, object] = {f"group.{g}": "true" for g in sorted(host.groups) if g not in ("all", "ungrouped")}
    extra = v.get("fleet_labels", {})
    if not isinstance(extra, dict):
        problems.append(Problem(file, host.line, field("fleet_labels"), "expected a mapping"))
        extra = {}
    labels.update(extra)
    try:
        checked = check_labels(labels)
    except ValueError as exc:
        problems.append(Problem(file, host.line, field("fleet_labels"), str(exc)))
        checked = {}
    roles_raw = v.get("fleet_roles")
    roles = list(group_roles(host.groups))
    if roles_raw is not None:
        if isinstance(roles_raw, str):
            roles = [roles_raw]
        elif isinstance(roles_raw, list):
            roles = [str(r) for r in roles_raw]
        else:
            problems.append(Problem(file, host.line, field("fleet_roles"), f"expected a list of roles "
                                                                           f"({', '.join(ROLES)}), got {roles_raw!r}"))
        for role in roles:
            if role not in ROLES:
                problems.append(Problem(file, host.line, field("fleet_roles"), f"unknown role {role!r}"))
    known_hosts = None
    for args_var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        try:
            words = shlex.split(str(v.get(args_var, "")))
        except ValueError as exc:
            problems.append(Problem(file, host.line, field(args_var), f"cannot parse: {exc}"))
            continue
        for i, word in enumerate(words):
            if word.startswith("-o") and len(word) > 2:
                opt = word[2:]
            else:
                opt = words[i + 1] if word == "-o" and i + 1 < len(words) else ""
            key_, _, value_ = opt.partition("=")
            if key_.lower() == "userknownhostsfile" and value_:
                known_hosts = resolve_path(value_, base_dir)
    user = str(v.get("ansible_user", v.get("ansible_ssh_user", "root")))
    become, refused = ansible_become(host.name, v, {k: host.lines.get(k, host.line) for k in v}, file, user)
    problems += refused
    if problems:
        raise InventoryError(problems)
    return Node(
        name=host.name,
        known_hosts=known_hosts,
        address=str(address),
        port=port,
        user=user,
        key_files=key_files(str(key), base_dir) if key else (),
        labels=checked,
        roles=tuple(roles),
        source_line=host.line,
        become=become.become,
        become_user=become.user,
    )


def _from_ansible_yaml(doc: Marked) -> Inventory:
    hosts: dict[str, _Host] = {}
    problems: list[Problem] = []

    def walk(group: str, body: object, path: tuple[str | int, ...], inherited: dict[str, object],
             parents: set[str], inherited_lines: dict[str, int | None]) -> None:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            problems.append(doc.problem(path, "a group must be a mapping"))
            return
        unknown = set(body) - {"hosts", "vars", "children"}
        for key in sorted(unknown, key=str):
            problems.append(doc.problem((*path, key), "unknown field (expected hosts, vars or children)"))
        parts = {}
        for key, what in (("vars", "variable name → value"), ("hosts", "host name → variables"),
                          ("children", "group name → group")):
            part = body.get(key)
            if part is not None and not isinstance(part, dict):
                problems.append(doc.problem((*path, key), f"expected a mapping of {what}"))
                part = None
            parts[key] = part or {}
        gvars = dict(inherited)
        gvars.update(parts["vars"])
        glines = {**inherited_lines, **{str(k): doc.line_of((*path, "vars", k)) for k in parts["vars"]}}
        groups = parents | {group}
        for hname, hvars in parts["hosts"].items():
            if not isinstance(hname, str | int):
                problems.append(doc.problem((*path, "hosts", hname), f"expected a host name, got {hname!r}"))
                continue
            host = hosts.setdefault(str(hname), _Host(str(hname), doc.line_of((*path, "hosts", hname))))
            host.groups |= groups
            merged = dict(gvars)
            merged.update(host.vars)
            host.lines = {**glines, **host.lines}
            if hvars is not None and not isinstance(hvars, dict):
                problems.append(doc.problem((*path, "hosts", hname), "host variables must be a mapping"))
            elif hvars:
                merged.update(hvars)
                host.lines.update({str(k): doc.line_of((*path, "hosts", hname, k)) for k in hvars})
            host.vars = merged
        for cname, cbody in parts["children"].items():
            walk(str(cname), cbody, (*path, "children", cname), gvars, groups, glines)

    for gname, gbody in doc.data.items():
        walk(str(gname), gbody, (gname,), {}, set(), {})
    if problems:
        raise InventoryError(problems)
    base_dir = os.path.dirname(os.path.abspath(doc.file))
    return Inventory(doc.file, _ansible_nodes(hosts.values(), doc.file, base_dir))


def _ansible_nodes(hosts: Iterable[_Host], file: str, base_dir: str) -> tuple[Node, ...]:
    """Every host as a Node; the problems of all hosts are reported together."""
    nodes, problems = [], []
    for host in hosts:
        try:
            nodes.append(_ansible_node(host, file, base_dir))
        except InventoryError as exc:
            problems += exc.problems
    if problems:
        raise InventoryError(problems)
    return _ansible_vrrp(list(hosts), nodes, file)


def _ansible_vrrp(hosts: list[_Host], nodes: list[Node], file: str) -> tuple[Node, ...]:
    """`fleet_vrrp_*` variables of the lb hosts (usually set on the `lb` group): the same on every lb host."""
    found: dict[str, tuple[_Host, Vrrp]] = {}
    for host, node in zip(hosts, nodes, strict=True):
        raw = {k: host.vars[f"fleet_vrrp_{k}"] for k in VRRP_KEYS if f"fleet_vrrp_{k}" in host.vars}
        if not raw:
            continue
        try:
            vrrp = parse_vrrp(raw)
        except VrrpValueError as exc:
            raise InventoryError([Problem(file, host.line, f"{host.name}.fleet_vrrp_{exc.key}", str(exc))]) from None
        if not node.has_role("lb"):
            raise InventoryError([Problem(file, host.line, f"{host.name}.fleet_vrrp_virtual_ip",
                                          "fleet_vrrp_* variables belong on lb hosts (the group lb)")])
        found[node.name] = (host, vrrp)
    if not found:
        return tuple(nodes)
    values = {v for _, v in found.values()}
    first_host = next(iter(found.values()))[0]
    lbs = [n.name for n in nodes if n.has_role("lb")]
    if len(values) > 1 or set(found) != set(lbs):
        differ = sorted(set(lbs) - set(found)) or sorted(found)
        raise InventoryError([Problem(file, first_host.line, f"{first_host.name}.fleet_vrrp_virtual_ip",
                                      "every lb host needs the same fleet_vrrp_* values (set them on the lb "
                                      f"group); they differ or are missing on {', '.join(differ)}")])
    vrrp = values.pop()
    problems = vrrp_problems(nodes, vrrp)
    if problems:
        raise InventoryError([Problem(file, first_host.line, f"{first_host.name}.fleet_vrrp_virtual_ip", p)
                              for p in problems])
    return tuple(replace(n, vrrp=vrrp) if n.has_role("lb") else n for n in nodes)


_INI_SECTION = re.compile(r"^\[([^\]:]+)(?::(vars|children))?\]\s*$")


def _from_ansible_ini(text: str, file: str) -> Inventory:
    hosts: dict[str, _Host] = {}
    group_vars: dict[str, dict[str, object]] = {}
    group_lines: dict[str, dict[str, int | None]] = {}
    children: dict[str, list[str]] = {}
    members: dict[str, list[str]] = {}
    problems: list[Problem] = []
    section, kind = "ungrouped", None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = _INI_SECTION.match(line)
        if m:
            section, kind = m.group(1).strip(), m.group(2)
            continue
        if line.startswith("["):
            problems.append(Problem(file, lineno, "", f"invalid section header {line!r}"))
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            problems.append(Problem(file, lineno, section, f"cannot parse line: {exc}"))
            continue
        if kind == "vars":
            name, sep, value = line.partition("=")
            if not sep:
                problems.append(Problem(file, lineno, f"{section}:vars", f"expected key=value, got {line!r}"))
                continue
            group_vars.setdefault(section, {})[name.strip()] = value.strip().strip("'\"")
            group_lines.setdefault(section, {})[name.strip()] = lineno
        elif kind == "children":
            children.setdefault(section, []).append(tokens[0])
        else:
            name = tokens[0]
            if "[" in name:
                problems.append(Problem(file, lineno, name, "host ranges such as web[01:09] are not supported"))
                continue
            host = hosts.setdefault(name, _Host(name, lineno))
            for tok in tokens[1:]:
                key, sep, value = tok.partition("=")
                if not sep:
                    problems.append(Problem(file, lineno, name, f"expected key=value, got {tok!r}"))
                    continue
                host.vars[key] = value
                host.lines[key] = lineno
            members.setdefault(section, []).append(name)
    if problems:
        raise InventoryError(problems)

    def expand(group: str, seen: frozenset[str]) -> list[tuple[str, list[str]]]:
        """Every host reachable from `group`, with the chain of groups (outermost first)."""
        if group in seen:
            return []
        out = [(h, [group]) for h in members.get(group, [])]
        for child in children.get(group, []):
            out += [(h, [group, *chain]) for h, chain in expand(child, seen | {group})]
        return out

    all_groups = set(members) | set(children) | set(group_vars)
    for group in sorted(all_groups):
        for hname, chain in expand(group, frozenset()):
            if hname in hosts:
                hosts[hname].groups |= set(chain)
    for host in hosts.values():
        merged: dict[str, object] = dict(group_vars.get("all", {}))
        lines: dict[str, int | None] = dict(group_lines.get("all", {}))
        # Parent groups first, so a child group's and then the host's own variables win.
        for group in sorted(host.groups, key=lambda g: g in children):
            merged.update(group_vars.get(group, {}))
            lines.update(group_lines.get(group, {}))
        merged.update(host.vars)
        lines.update(host.lines)
        host.vars, host.lines = merged, lines
    base_dir = os.path.dirname(os.path.abspath(file))
    return Inventory(file, _ansible_nodes(hosts.values(), file, base_dir))


def parse(text: str, file: str) -> Inventory:
    """Read an inventory from its text; the format is told by the content."""
    stripped = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if file.endswith((".ini", ".cfg")) or (stripped and stripped[0].startswith("[")):
        inv = _from_ansible_ini(text, file)
    else:
        try:
            doc = load(text, file)
        except InventoryError:
            raise
        except ConfigError as exc:
            raise InventoryError(exc.problems) from None
        if not isinstance(doc.data, dict):
            raise InventoryError([Problem(file, 1, "", "expected `nodes:` (or an Ansible `all:` group)")])
        fleet_format = "nodes" in doc.data or "defaults" in doc.data
        if fleet_format:
            # pydantic is imported only for fleet-format files that are not in the cache (see load_inventory).
            from fleet.config.inventory_schema import from_fleet

            inv = from_fleet(doc)
        else:
            inv = _from_ansible_yaml(doc)
    if not inv.nodes:
        raise InventoryError([Problem(file, None, "nodes", "the inventory lists no nodes")])
    return inv


CACHE_VERSION = 7  # 3: addresses, ports and Ansible host names checked; 4: vrrp; 5: edge; 6: lb group gives lb only;
# 7: become


def cache_dir() -> str:
    """Where parsed inventories are kept: $FLEET_CACHE_DIR, else $XDG_CACHE_HOME/fleet, else ~/.cache/fleet."""
    explicit = os.environ.get("FLEET_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fleet")


def _cache_file(path: str, text: str) -> str:
    # The key covers everything the result depends on: the text, where the file is (relative key paths) and
    # the home directory (`~` in paths). A changed file gets a new key; nothing stale is ever read.
    key = hashlib.sha256("\0".join([str(CACHE_VERSION), os.path.abspath(path), os.path.expanduser("~"),
                                     text]).encode()).hexdigest()
    return os.path.join(cache_dir(), "inventory", f"{key}.json")


def _to_json(inv: Inventory) -> str:
    def res(r: Resources | None) -> list[float] | None:
        return None if r is None else [r.cpu, r.memory]

    return json.dumps({"path": inv.path, "edge": edge_to_json(inv.edge), "image_retention": inv.image_retention,
                       "nodes": [{
        "name": n.name, "address": n.address, "port": n.port, "user": n.user, "key_files": list(n.key_files),
        "known_hosts": n.known_hosts, "labels": dict(n.labels), "roles": list(n.roles), "capacity": res(n.capacity),
        "reserved": res(n.reserved), "namespace": n.namespace, "source_line": n.source_line,
        "insecure_registries": list(n.insecure_registries), "vrrp": asdict(n.vrrp) if n.vrrp else None,
        "become": n.become, "become_user": n.become_user,
        "registry_logins": [[r.registry, r.username, r.secret] for r in n.registry_logins],
    } for n in inv.nodes]})


def _from_json(text: str) -> Inventory:
    doc = json.loads(text)

    def res(v: list[float] | None) -> Resources | None:
        return None if v is None else Resources(float(v[0]), int(v[1]))

    return Inventory(doc["path"], edge=edge_from_json(doc["edge"]), image_retention=doc["image_retention"],
                     nodes=tuple(Node(
        name=n["name"], address=n["address"], port=n["port"], user=n["user"], key_files=tuple(n["key_files"]),
        known_hosts=n["known_hosts"], labels=n["labels"], roles=tuple(n["roles"]), capacity=res(n["capacity"]),
        reserved=res(n["reserved"]) or Resources(), namespace=n["namespace"], source_line=n["source_line"],
        insecure_registries=tuple(n["insecure_registries"]), vrrp=Vrrp(**n["vrrp"]) if n["vrrp"] else None,
        become=bool(n["become"]), become_user=str(n["become_user"]),
        registry_logins=tuple(RegistryLogin(*r) for r in n["registry_logins"]),
    ) for n in doc["nodes"]))


def load_inventory(path: str) -> Inventory:
    """Read and validate an inventory file; a valid one is remembered by content, so an unchanged file is read
    back without validating it again (every CLI command starts by loading the inventory)."""
    try:
        text = read_text(path, "inventory")
    except InventoryError:
        raise
    except ConfigError as exc:
        raise InventoryError(exc.problems) from None
    cached = _cache_file(path, text)
    try:
        with open(cached, encoding="utf-8") as fh:
            return _from_json(fh.read())
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    inv = parse(text, path)
    try:
        os.makedirs(os.path.dirname(cached), mode=0o700, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_to_json(inv))
        os.replace(tmp, cached)
    except OSError:
        pass  # a cache that cannot be written only costs the validation next time
    return inv
