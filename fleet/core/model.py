"""Frozen values shared by every layer: nodes, resources, facts and command results."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fleet.core.edge import EdgeSettings
from fleet.core.errors import AuthError, CommandTimeout, ConnectError, HostKeyError, TransportError


@dataclass(frozen=True)
class Resources:
    """An amount of CPU (cores) and memory (bytes)."""

    cpu: float = 0.0
    memory: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def fits_in(self, other: Resources) -> bool:
        return self.cpu <= other.cpu + 1e-9 and self.memory <= other.memory


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Vrrp:
    """A virtual IP the lb nodes hand between them with VRRP (keepalived): whichever holds it serves the fleet's
    service addresses. `advert_int` is in seconds (VRRPv3 allows centiseconds); `interface` is the lb nodes'."""

    virtual_ip: str
    prefixlen: int
    router_id: int
    interface: str = "eth0"
    advert_int: float = 0.5

    @property
    def cidr(self) -> str:
        return f"{self.virtual_ip}/{self.prefixlen}"


def ip_literal(address: str) -> str | None:
    """The address itself when it is an IPv4/IPv6 literal, else None."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials for one registry (`host[:port]`, as image references name it): the user, and the name of the
    fleet secret holding the password (the value is read only when a pull needs it)."""

    registry: str
    username: str
    secret: str


@dataclass(frozen=True)
class Node:
    """How to reach one node, and what the inventory says about it."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_files: tuple[str, ...] = ()
    known_hosts: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    roles: tuple[str, ...] = ("worker",)
    capacity: Resources | None = None
    reserved: Resources = Resources()
    namespace: str = "fleet"
    source_line: int | None = None
    # Registries (host[:port]) this node pulls from over plain HTTP, as containerd's `--plain-http`.
    insecure_registries: tuple[str, ...] = ()
    # Registries this node pulls from with credentials (the inventory's `registries:`).
    registry_logins: tuple[RegistryLogin, ...] = ()
    # Set on lb nodes when the inventory asks for a virtual IP (the same value on every lb node).
    vrrp: Vrrp | None = None
    # Log in as `user`, then run every command as `become_user` through `sudo -n` (fleet.transport.command).
    become: bool = False
    become_user: str = "root"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def login_for(self, registry: str) -> RegistryLogin | None:
        return next((r for r in self.registry_logins if r.registry == registry), None)


EVENTS_KEEP = 10_000


@dataclass(frozen=True)
class Inventory:
    """The nodes of a fleet, read from one file, and its edge settings (`edge:`, fleet format only)."""

    path: str
    nodes: tuple[Node, ...]
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    events_keep: int = EVENTS_KEEP  # entries of the fleet's event log kept (`events_keep:`, fleet format only)
    # Old images removed from nodes past each service's last N revisions (`image_retention:`; None keeps all).
    image_retention: int | None = None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did on one node; `error` is set when it could not run at all."""

    node: str
    exit_status: int | None
    stdout: str
    stderr: str
    duration: float
    error: str | None = None
    # Why it could not run, as the error itself (ConnectError, HostKeyError, AuthError, CommandTimeout, …):
    # callers raise it, never rebuild it from a string.
    failure: TransportError | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_status == 0

    @property
    def error_kind(self) -> str | None:
        """The failure in one word, for tables and JSON: connect, hostkey, auth, timeout or ssh."""
        f = self.failure
        if f is None:
            return None if self.error is None else "ssh"
        for kind, cls in (("connect", ConnectError), ("hostkey", HostKeyError), ("auth", AuthError),
                          ("timeout", CommandTimeout)):
            if isinstance(f, cls):
                return kind
        return "ssh"
