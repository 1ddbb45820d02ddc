"""Checks across what the schema validates one field at a time: between the services of all playbooks (names, lb
ports, host routes) and between the files one service mounts (configs, secret files, volumes)."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.config.spec.values import Playbook, ServiceSpec, normal_path, within
from fleet.config.yamlmarks import Marked, Path, dotted
from fleet.core.errors import Problem


class FileTargets:
    """The files one service mounts, claimed one at a time: a file may not repeat, nest in or hold another, nor go
    inside one of the service's volumes (it would be created in the volume). A refused claim is added to
    `problems` at the claiming item's line."""

    def __init__(self, doc: Marked, volume_targets: Sequence[str], problems: list[Problem]) -> None:
        self.doc = doc
        self.volumes = [normal_path(t) for t in volume_targets]
        self.problems = problems
        self.claimed: dict[str, str] = {}

    def claim(self, target: str, path: Path) -> bool:
        doc = self.doc
        for other, what in self.claimed.items():
            if other == target:
                self.problems.append(doc.problem(path, f"{what} already mounts a file at {target}"))
                return False
            if within(target, other) or within(other, target):
                self.problems.append(doc.problem(path, f"{target} and {what}'s {other} are nested (a file cannot "
                                                       "be inside another)"))
                return False
        for vt in self.volumes:
            if within(target, vt) or within(vt, target):
                self.problems.append(doc.problem(path, f"{target} is inside the volume at {vt} (it would be "
                                                       "created in the volume); mount it elsewhere"))
                return False
        self.claimed[target] = dotted(path)
        return True


def cross_check(playbooks: Sequence[Playbook]) -> list[Problem]:
    """Services defined twice, lb ports and host routes (host, path) claimed by two services, over all `playbooks`."""
    problems = []
    names: dict[str, ServiceSpec] = {}
    ports: dict[int, ServiceSpec] = {}
    routes: dict[tuple[str, str | None], ServiceSpec] = {}
    for pb in playbooks:
        for s in pb.services:
            where = dotted(("services", s.name))
            if (first := names.get(s.name)) is not None:
                problems.append(Problem(s.source_file, s.source_line, where,
                                        f"service {s.name!r} is already defined at "
                                        f"{first.source_file}:{first.source_line}"))
            else:
                names[s.name] = s
            if s.lb is not None:
                for host in s.lb.hosts:
                    for path in s.lb.paths or (None,):
                        if (owner := routes.get((host, path))) is not None:
                            problems.append(Problem(s.source_file, s.source_line, f"{where}.lb.hosts",
                                                    f"host {host}{path or ''} is already routed to service "
                                                    f"{owner.name!r} at {owner.source_file}:{owner.source_line}"))
                        else:
                            routes[(host, path)] = s
                for field, port in s.lb.bind_ports():
                    if (other := ports.get(port)) is not None:
                        problems.append(Problem(s.source_file, s.source_line, f"{where}.{field}",
                                                f"lb port {port} is already used by service {other.name!r} "
                                                f"at {other.source_file}:{other.source_line}"))
                    else:
                        ports[port] = s
    return problems

