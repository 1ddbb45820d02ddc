"""fleet's own inventory format, validated with pydantic; kept apart so that reading a cached inventory
(the common case: `fleet nodes` on an unchanged file) does not pay for importing and building the models."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from fleet.config.become import check_user
from fleet.config.edge import EdgeModel, edge_settings
from fleet.config.schema import pydantic_problems
from fleet.config.spec.values import SECRET_NAME_RE
from fleet.config.vrrp import parse_vrrp, vrrp_problems
from fleet.config.yamlmarks import Marked
from fleet.core.edge import EdgeSettings
from fleet.core.errors import InventoryError, VrrpValueError
from fleet.core.model import EVENTS_KEEP, Inventory, Node, RegistryLogin, Resources
from fleet.core.names import NAME_RE, ROLES, check_address, check_labels, key_files, resolve_path
from fleet.core.units import parse_cpu, parse_memory

REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
# No ':' (ctr splits `--user user:password` at the first one) and nothing a shell or a log line would mangle.
REGISTRY_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def _registry_user(v: str) -> str:
    if not REGISTRY_USER_RE.match(v):
        raise ValueError(f"expected a registry user name (letters, digits, . _ @ + -), got {v!r}")
    return v


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, got {port}")
    return port


class _Quantity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float | None = None
    memory: int | None = None

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, v: object) -> float | None:
        return None if v is None else parse_cpu(v)

    @field_validator("memory", mode="before")
    @classmethod
    def _mem(cls, v: object) -> int | None:
        return None if v is None else parse_memory(v)


class _NodeCommon(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = None
    port: Annotated[StrictInt, AfterValidator(_port)] | None = None
    key: str | list[str] | None = None
    known_hosts: str | None = None
    namespace: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    reserved: _Quantity | None = None
    insecure_registries: list[str] | None = None
    # Run every command as `become_user` (default root) through `sudo -n` after logging in as `user`.
    become: StrictBool | None = None
    become_user: Annotated[str, AfterValidator(check_user)] | None = None

    @field_validator("insecure_registries")
    @classmethod
    def _registries(cls, v: list[str] | None) -> list[str] | None:
        for host in v or []:
            if not REGISTRY_RE.match(host):
                raise ValueError(f"expected a registry host[:port], got {host!r}")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, object]) -> dict[str, str]:
        return check_labels(v)

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError(f"invalid containerd namespace {v!r}")
        return v


class _NodeSpec(_NodeCommon):
    address: Annotated[str, AfterValidator(check_address)]
    roles: list[str] = Field(default_factory=lambda: ["worker"])
    capacity: _Quantity | None = None

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        for role in v:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        return v


def _secret_name(v: str) -> str:
    if not SECRET_NAME_RE.match(v):
        raise ValueError(f"invalid secret name {v!r} (letters, digits, . _ -)")
    return v


class _Password(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: Annotated[str, AfterValidator(_secret_name)]


class _Registry(BaseModel):
    """A registry's credentials: the password only as the name of a fleet secret (`fleet secret set NAME`)."""

    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, AfterValidator(_registry_user)]
    password: _Password
    insecure: StrictBool = False

    @field_validator("password", mode="before")
    @classmethod
    def _reference(cls, v: object) -> object:
        if not isinstance(v, dict):  # the value is not repeated: it may be a password written here by mistake
            raise ValueError("expected {secret: NAME}: the password lives in the fleet's secrets "
                             "(`fleet secret set NAME`), never in the inventory")
        return v


class _FleetInventory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: _NodeCommon = Field(default_factory=_NodeCommon)
    nodes: dict[str, _NodeSpec]
    edge: EdgeModel | None = None
    vrrp: dict[str, Any] | None = None
    # How many entries of the fleet's event log (etcd) each run keeps; older ones are trimmed at its end.
    events_keep: StrictInt = Field(default=EVENTS_KEEP, ge=0, le=10_000_000)
    # Registries pulled from with credentials, by host[:port] as image references name them (every node uses them).
    registries: dict[str, _Registry] | None = None
    # Images a node keeps: those of each service's last N revisions (fleet.engine.retention); unset keeps all.
    image_retention: StrictInt | None = Field(default=None, ge=1, le=1000)

    @field_validator("registries")
    @classmethod
    def _hosts(cls, v: dict[str, _Registry] | None) -> dict[str, _Registry] | None:
        for host in v or {}:
            if not REGISTRY_RE.match(host):
                raise ValueError(f"expected a registry host[:port] as the key, got {host!r}")
        return v


def _resources(q: _Quantity | None, default: Resources | None) -> Resources | None:
    if q is None:
        return default
    base = default or Resources()
    return Resources(q.cpu if q.cpu is not None else base.cpu, q.memory if q.memory is not None else base.memory)


def from_fleet(doc: Marked) -> Inventory:
    """An Inventory from a fleet-format document; every problem is reported with its line."""
    try:
        inv = _FleetInventory.model_validate(doc.data)
    except ValidationError as exc:
        raise InventoryError(pydantic_problems(exc, doc, model=_FleetInventory)) from None
    base_dir = os.path.dirname(os.path.abspath(doc.file))
    d = inv.defaults
    problems = [doc.problem(("nodes", name), "invalid node name (letters, digits, . _ -)")
                for name in inv.nodes if not NAME_RE.match(name)]
    if problems:
        raise InventoryError(problems)
    logins = tuple(RegistryLogin(host, r.username, r.password.secret) for host, r in (inv.registries or {}).items())
    plain = tuple(host for host, r in (inv.registries or {}).items() if r.insecure)
    nodes = []
    for name, spec in inv.nodes.items():
        nodes.append(Node(
            name=name,
            address=spec.address,
            port=spec.port or d.port or 22,
            user=spec.user or d.user or "root",
            key_files=key_files(spec.key if spec.key is not None else d.key, base_dir),
            known_hosts=resolve_path(kh, base_dir) if (kh := spec.known_hosts or d.known_hosts) else None,
            labels={**d.labels, **spec.labels},
            roles=tuple(spec.roles),
            capacity=_resources(spec.capacity, None),
            reserved=_resources(spec.reserved, _resources(d.reserved, Resources())) or Resources(),
            namespace=spec.namespace or d.namespace or "fleet",
            insecure_registries=tuple(dict.fromkeys((*(spec.insecure_registries if spec.insecure_registries
                                                       is not None else d.insecure_registries or ()), *plain))),
            registry_logins=logins,
            source_line=doc.line_of(("nodes", name)),
            become=spec.become if spec.become is not None else bool(d.become),
            become_user=spec.become_user or d.become_user or "root",
        ))
    if inv.vrrp is not None:
        nodes = with_vrrp(nodes, inv.vrrp, doc)
    base = os.path.dirname(os.path.abspath(doc.file))
    edge = edge_settings(inv.edge, base) if inv.edge is not None else EdgeSettings()
    return Inventory(doc.file, tuple(nodes), edge, events_keep=inv.events_keep, image_retention=inv.image_retention)


def with_vrrp(nodes: list[Node], raw: dict[str, Any], doc: Marked) -> list[Node]:
    """The nodes with the `vrrp` settings on every lb node; a bad value is reported at its line."""
    try:
        vrrp = parse_vrrp(raw)
    except VrrpValueError as exc:
        where = ("vrrp", exc.key) if exc.key in raw else ("vrrp",)
        raise InventoryError([doc.problem(where, str(exc))]) from None
    problems = vrrp_problems(nodes, vrrp)
    if problems:
        raise InventoryError([doc.problem(("vrrp", "virtual_ip"), p) for p in problems])
    return [replace(n, vrrp=vrrp) if n.has_role("lb") else n for n in nodes]
