"""Container labels fleet writes on every container it runs, read back into a value; and container IDs.

Labels are fleet's only record of what a container is for: there is no control plane, so `ps`, reconcile and
rollback all read them back from the runtime. A container without `fleet.managed=true` is foreign.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "fleet."
MANAGED = "fleet.managed"
SERVICE = "fleet.service"
REVISION = "fleet.revision"
REPLICA = "fleet.replica"
SPEC_HASH = "fleet.spec-hash"
CPU = "fleet.cpu"
MEMORY = "fleet.memory"
PORT = "fleet.port"
NODE = "fleet.node"

RESTART_STATUS = "containerd.io/restart.status"
RESTART_LOGURI = "containerd.io/restart.loguri"

ID_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
ID_MAX = 76
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True)
class ContainerLabels:
    """What fleet knows about one of its containers; fields it could not read back are None."""

    service: str
    revision: int | None = None
    replica: int | None = None
    spec_hash: str | None = None
    cpu: float | None = None
    memory: int | None = None
    port: int | None = None
    node: str | None = None

    def to_labels(self) -> dict[str, str]:
        """The label map for `RunSpec.labels` (fields that are None are left out)."""
        out = {MANAGED: "true", SERVICE: self.service}
        fields: dict[str, object] = {
            REVISION: self.revision, REPLICA: self.replica, SPEC_HASH: self.spec_hash, CPU: self.cpu,
            MEMORY: self.memory, PORT: self.port, NODE: self.node,
        }
        for key, value in fields.items():
            if value is not None:
                out[key] = format(value, "g") if isinstance(value, float) else str(value)
        return out


def build_labels(
    service: str,
    *,
    revision: int | None = None,
    replica: int | None = None,
    spec_hash: str | None = None,
    cpu: float | None = None,
    memory: int | None = None,
    port: int | None = None,
    node: str | None = None,
) -> dict[str, str]:
    """Label map for a new container of `service`."""
    return ContainerLabels(service, revision, replica, spec_hash, cpu, memory, port, node).to_labels()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_labels(labels: Mapping[str, str]) -> ContainerLabels | None:
    """Read fleet's labels back; None for a foreign container (no `fleet.managed=true` or no service)."""
    if labels.get(MANAGED) != "true" or not labels.get(SERVICE):
        return None
    return ContainerLabels(
        service=labels[SERVICE],
        revision=_int(labels.get(REVISION)),
        replica=_int(labels.get(REPLICA)),
        spec_hash=labels.get(SPEC_HASH) or None,
        cpu=_float(labels.get(CPU)),
        memory=_int(labels.get(MEMORY)),
        port=_int(labels.get(PORT)),
        node=labels.get(NODE) or None,
    )


def is_valid_container_id(value: str) -> bool:
    """True when containerd accepts `value` as an identifier."""
    return len(value) <= ID_MAX and ID_RE.match(value) is not None


def random_suffix(length: int = 6) -> str:
    """Lowercase letters and digits from a CSPRNG: 36**6 ≈ 2e9 values."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def container_id(service: str, replica: int, suffix: str | None = None) -> str:
    """A container ID unique across hosts, e.g. `web-3-k2x9qa`.

    The random part matters: containerd puts the cgroup at `/<namespace>/<id>` on the whole host, so two
    namespaces (or two fleets) reusing `web-1` would collide.
    """
    tail = suffix if suffix is not None else random_suffix()
    if not tail or _SEPARATORS.search(tail):
        raise ValueError(f"container ID suffix must be letters and digits, got {tail!r}")
    base = _SEPARATORS.sub("-", service).strip("-") or "svc"
    fixed = f"-{int(replica)}-{tail}"
    base = base[: ID_MAX - len(fixed)].rstrip("-") or "svc"
    cid = f"{base}{fixed}"
    if not is_valid_container_id(cid):
        raise ValueError(f"cannot build a valid container ID from {service!r}")
    return cid

# How the load balancer fronts the service and checks it, so that HAProxy's config can be rendered from the
# containers alone (services deployed from other playbooks keep their frontends).
LB = "fleet.lb"
# Every named container port's host port (`fleet.ports`: `NAME:HOST,...`), for the lb ports of other named ports.
PORTS = "fleet.ports"
HEALTH = "fleet.health"
# When fleet created the container (Unix seconds): a replica's health `start_period` counts from it.
CREATED = "fleet.created"


@dataclass(frozen=True)
class LbLabel:
    """The load-balancer front end a container was started with (`fleet.lb`: `PORT/MODE/BALANCE`)."""

    port: int
    mode: str
    balance: str


@dataclass(frozen=True)
class HealthLabel:
    """The check a container was started with (`fleet.health`: `KIND|PATH|INTERVAL|TIMEOUT|FALL|RISE`)."""

    kind: str
    path: str | None
    interval: float
    timeout: float
    fall: int
    rise: int


def lb_label(port: int, mode: str, balance: str) -> str:
    return f"{port}/{mode}/{balance}"


def parse_lb_label(value: str | None) -> LbLabel | None:
    parts = (value or "").split("/")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return LbLabel(int(parts[0]), parts[1], parts[2])


def health_label(kind: str, path: str | None, interval: float, timeout: float, fall: int, rise: int) -> str:
    return f"{kind}|{path or ''}|{interval:g}|{timeout:g}|{fall}|{rise}"


def parse_health_label(value: str | None) -> HealthLabel | None:
    parts = (value or "").split("|")
    if len(parts) != 6:
        return None
    try:
        return HealthLabel(parts[0], parts[1] or None, float(parts[2]), float(parts[3]), int(parts[4]),
                           int(parts[5]))
    except ValueError:
        return None


def ports_label(host_ports: Mapping[str, int]) -> str:
    return ",".join(f"{name}:{port}" for name, port in sorted(host_ports.items()))


def parse_ports_label(value: str | None) -> tuple[tuple[str, int], ...]:
    """(name, host port) in name order; an unreadable entry is left out."""
    out = {}
    for item in (value or "").split(","):
        name, _, port = item.partition(":")
        if name and port.isdigit():
            out[name] = int(port)
    return tuple(sorted(out.items()))
