"""Playbook volumes checked against the inventory: every `sshfs` volume names (or defaults to) a storage node.

Pure: the specs and the inventory in, `file:line` problems out, before any node is contacted.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleet.config.spec import ServiceSpec, VolumeSpec
from fleet.config.yamlmarks import dotted
from fleet.core.errors import Problem, SpecError
from fleet.core.model import Inventory, Node

STORAGE_ROLE = "storage"


def storage_nodes(inventory: Inventory) -> list[Node]:
    return [n for n in inventory.nodes if n.has_role(STORAGE_ROLE)]


def storage_of(volume: VolumeSpec, inventory: Inventory) -> Node | str:
    """The storage node an `sshfs` volume lives on, or why there is none (as a message)."""
    hosts = storage_nodes(inventory)
    names = ", ".join(n.name for n in hosts) or "none"
    if volume.storage is None:
        if len(hosts) == 1:
            return hosts[0]
        if not hosts:
            return f"no storage node in the inventory {inventory.path} (give a node roles: [storage])"
        return f"name its storage node (storage: NAME); the inventory has several: {names}"
    for n in hosts:
        if n.name == volume.storage:
            return n
    known = any(n.name == volume.storage for n in inventory.nodes)
    why = "has no role storage" if known else "is not in the inventory"
    return f"unknown storage host {volume.storage!r}: it {why} ({inventory.path}); storage nodes: {names}"


def volume_problems(specs: Sequence[ServiceSpec], inventory: Inventory) -> list[Problem]:
    """Every sshfs volume whose storage node cannot be found, as `file:line: services.S.volumes.N: ...`."""
    problems = []
    for spec in specs:
        for i, v in enumerate(spec.volumes):
            if v.type != "sshfs":
                continue
            found = storage_of(v, inventory)
            if isinstance(found, str):
                problems.append(Problem(spec.source_file, v.source_line or spec.source_line,
                                        dotted(("services", spec.name, "volumes", i)), found))
    return problems


def check_volumes(specs: Sequence[ServiceSpec], inventory: Inventory) -> None:
    """Raise SpecError listing every volume problem of `specs` against `inventory`; nothing is changed."""
    problems = volume_problems(specs, inventory)
    if problems:
        raise SpecError(problems)
