"""Service specs (playbooks): YAML under playbooks/ validated into frozen `ServiceSpec` values.

Every problem in every file is reported at once as `file:line: services.NAME.field: message`
(a `SpecError`); secrets stay `SecretRef` names here and are resolved only where a container starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from fleet.config.edge import HostName, PathPrefix, TlsModel, TlsSpec, bundle, hosts_problem, read_pem, tls_spec
from fleet.config.schema import pydantic_problems
from fleet.config.yamlmarks import Marked, dotted, load, read_text
from fleet.core.dirs import NODE_BASE, NODE_RUN
from fleet.core.errors import ConfigError, Problem, SpecError
from fleet.core.model import Resources
from fleet.core.names import LABEL_KEY_RE, LABEL_VALUE_RE, NAME_RE
from fleet.core.ports import RESERVED_LB_PORTS
from fleet.core.units import parse_cpu, parse_memory

SERVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VOLUME_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# An origin-form URL path with an optional query; no spaces, quotes, '#', '\', '$' or control characters,
# so it can go verbatim into an HAProxy config line and an HTTP request line.
HTTP_PATH_RE = re.compile(
    r"^/(?:[A-Za-z0-9._~!*+,;=:@/-]|%[0-9A-Fa-f]{2})*(?:\?(?:[A-Za-z0-9._~!*+,;=:@/?&-]|%[0-9A-Fa-f]{2})*)?$"
)
# A host path for bind mounts / tmpfs targets: absolute, and free of the separators ctr's --mount uses.
MOUNT_PATH_RE = re.compile(r"^/[A-Za-z0-9._@+/-]*$")
IMAGE_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Every duration (health, update, grace period, canary pause) is 0 to 24 h, counted in whole milliseconds: what
# HAProxy's `inter` and `timeout check` take, and exact through the revision history (`format_duration`).
MAX_DURATION = 86400.0
# fleet's directories on every node (hosts file, HAProxy config and sockets, logs, volumes, records; secrets'
# env files on the tmpfs): fleet.node.paths; a bind volume may not expose them to a container.
NODE_DIRS = (NODE_BASE, NODE_RUN)
# Files fleet bind-mounts into every container; a volume may not cover them (service discovery, DNS).
FLEET_MOUNTS = ("/etc/hosts", "/etc/resolv.conf")
MAX_MEMORY = 2**50  # 1 PiB: far above any node, far below ctr's int64 byte count
# Configs are settings, not data: each revision recorded on the fleet carries their content (so a rollback
# restores them) and every start sends them over SSH, so they are kept small. Bigger files belong in the image
# or a volume.
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIGS_BYTES = 256 * 1024  # all of one service's configs together
# A file's permission bits as a quoted octal string ('0444'); no setuid, setgid or sticky bit.
FILE_MODE_RE = re.compile(r"^0?[0-7]{3}$")
DEFAULT_CONFIG_MODE = "0444"
DEFAULT_SECRET_FILE_MODE = "0400"
SECRET_FILE_DIR = "/run/secrets"
DIGEST_RE = re.compile(r"^[0-9a-f]{32,64}$")

SPEC_HASH_VERSION = 1
DEFAULT_RESOURCES = Resources(cpu=0.1, memory=64 * 1024 * 1024)


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 2s or 500ms, got {value!r}")
    if isinstance(value, int):
        # Compared as an int first: a huge one would overflow float().
        return float(value) if abs(value) <= 10**9 else math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        else:
            if text and pos == len(text):
                return total
    raise ValueError(f"expected a duration such as 2s, 500ms or 1m, got {value!r}")


def parse_duration(value: object) -> float:
    """Seconds from `500ms`, `2s`, `1m`, `1m30s`, `1h`, or a plain number of seconds: 0 to 24 h, in whole
    milliseconds (returned as `milliseconds / 1000`, so equal durations are equal floats)."""
    seconds = _seconds(value)
    if math.isnan(seconds):
        raise ValueError(f"expected a duration such as 2s or 500ms, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration can be at most 24h (86400s), got {value!r}")
    millis = round(seconds * 1000)
    if abs(seconds * 1000 - millis) > 1e-6:
        raise ValueError(f"durations are counted in whole milliseconds, got {value!r}")
    return millis / 1000


def format_duration(seconds: float) -> str:
    """The text `parse_duration` reads back as exactly `seconds`: `2s`, `0.5s`, `1.25s`, `86399.999s`."""
    millis = round(seconds * 1000)
    whole, frac = divmod(millis, 1000)
    return f"{whole}s" if not frac else f"{whole}.{frac:03d}".rstrip("0") + "s"


def _cpu(value: object) -> float:
    cores = parse_cpu(value)
    if not 0 < cores <= 1024:
        raise ValueError(f"cpu must be more than 0 and at most 1024 cores, got {value!r}")
    millis = round(cores * 1000)
    if millis < 1 or abs(cores * 1000 - millis) > 1e-6:
        raise ValueError(f"cpu is counted in whole millicores (0.001 or 1m), got {value!r}")
    return millis / 1000


def _memory(value: object) -> int:
    size = parse_memory(value)
    if size < 1024 * 1024:
        raise ValueError(f"memory must be at least 1MiB, got {value!r}")
    if size > MAX_MEMORY:
        raise ValueError(f"memory can be at most 1PiB, got {value!r}")
    return size


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be more than 0 (at least 1ms)")
    return seconds


def _percentage_points(value: float) -> float:
    if not 0 <= value <= 100:  # also NaN
        raise ValueError(f"expected percentage points from 0 to 100, got {value!r}")
    return value


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, got {port}")
    return port


def _lb_port(port: int) -> int:
    _port(port)
    if port in RESERVED_LB_PORTS:
        raise ValueError(f"port {port} is fleet's own on the lb nodes ({RESERVED_LB_PORTS[port]}); choose another")
    return port


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Port = Annotated[StrictInt, AfterValidator(_port)]
LbPort = Annotated[StrictInt, AfterValidator(_lb_port)]


# ---- values ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """A reference to a secret in the keyring by name; never the value."""

    name: str

    def __repr__(self) -> str:
        return f"SecretRef({self.name!r})"


@dataclass(frozen=True)
class ConfigSpec:
    """A file mounted read-only at `target` in every container of the service; its content travels with the spec
    (and the history), so a change of content or mode is a change of the spec. `source` is the file it was read
    from, for messages only."""

    target: str
    content: str = field(repr=False)
    mode: str = DEFAULT_CONFIG_MODE
    source: str | None = field(default=None, compare=False)

    def digest(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class SecretFileSpec:
    """A keyring secret put in a file at `target` inside the container (a file on the node's tmpfs,
    bind-mounted read-only); the value is read only where the container starts."""

    secret: str
    target: str
    mode: str = DEFAULT_SECRET_FILE_MODE


@dataclass(frozen=True)
class HealthSpec:
    """How to tell a replica is healthy: an HTTP GET, a TCP connect or a command run inside it."""

    kind: Literal["http", "tcp", "exec"]
    path: str | None = None
    command: tuple[str, ...] = ()
    interval: float = 2.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    start_period: float = 0.0


@dataclass(frozen=True)
class PlacementSpec:
    """Where replicas may go (`require`) and how they are spread (`spread_by` label, `strategy`)."""

    require: Mapping[str, str] = field(default_factory=dict)
    spread_by: str | None = None
    strategy: Literal["spread", "pack"] = "spread"

    def __post_init__(self) -> None:
        object.__setattr__(self, "require", MappingProxyType(dict(self.require)))


@dataclass(frozen=True)
class LbSpec:
    """The service's frontend on the LB nodes: its own `port`, and/or `hosts` (with optional path prefixes) on the
    shared HTTP/HTTPS ports, with `tls`."""

    port: int | None
    mode: Literal["http", "tcp"] = "http"
    balance: Literal["roundrobin", "leastconn", "source", "random"] = "roundrobin"
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    tls: TlsSpec | None = None


@dataclass(frozen=True)
class VolumeSpec:
    """A mount: a host path (bind), a RAM disk (tmpfs), a named volume on the node (`volume`: its data stays on
    that node, and so does its replica) or a named volume on a storage host mounted over SSH (`sshfs`: the
    replica may move). `on_node_loss` says what a `volume` replica does when its node is gone: `wait` for it,
    or `start-empty` elsewhere. `storage` names the inventory's storage node of an `sshfs` volume (None: the
    only one)."""

    type: Literal["bind", "tmpfs", "volume", "sshfs"]
    target: str
    source: str | None = None
    readonly: bool = False
    size: int | None = None
    on_node_loss: Literal["wait", "start-empty"] = "wait"
    storage: str | None = None
    source_line: int | None = field(default=None, compare=False)

    def hash_input(self) -> dict[str, Any]:
        """What a container's mount depends on (`on_node_loss` is placement only); keys added by later
        features appear only when set, so existing services keep their hash."""
        out: dict[str, Any] = {"type": self.type, "source": self.source, "target": self.target,
                               "readonly": self.readonly, "size": self.size}
        if self.storage is not None:
            out["storage"] = self.storage
        return out


@dataclass(frozen=True)
class CanarySpec:
    """Canary traffic steps (percent of weight on the new version) and when to promote."""

    steps: tuple[int, ...] = (10, 50)
    pause: float = 30.0
    auto_promote: bool = True
    max_error_rate_delta: float = 1.0


@dataclass(frozen=True)
class UpdateSpec:
    """How a changed service is rolled out."""

    strategy: Literal["rolling", "canary"] = "rolling"
    max_surge: int = 1
    max_unavailable: int = 0
    batch_size: int = 1
    ready_deadline: float = 60.0
    min_ready: float = 2.0
    canary: CanarySpec | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """One service, fully resolved: durations in seconds, memory in bytes, cpu in cores."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    replicas: int = 1
    resources: Resources = DEFAULT_RESOURCES
    port: int = 8080
    env: Mapping[str, str | SecretRef] = field(default_factory=dict)
    health: HealthSpec | None = None
    placement: PlacementSpec = PlacementSpec()
    lb: LbSpec | None = None
    volumes: tuple[VolumeSpec, ...] = ()
    stop_grace_period: float = 10.0
    update: UpdateSpec = UpdateSpec()
    configs: tuple[ConfigSpec, ...] = ()
    secret_files: tuple[SecretFileSpec, ...] = ()
    # Keyed digests (HMAC, the fleet's key) of the values of the secrets the service uses, stamped by the
    # controller (`with_secret_digests`): a rotated secret changes the spec hash, so its replicas are replaced.
    secret_digests: Mapping[str, str] = field(default_factory=dict)
    source_file: str = field(default="", compare=False)
    source_line: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "secret_digests", MappingProxyType(dict(self.secret_digests)))

    def secret_names(self) -> tuple[str, ...]:
        return tuple(sorted({v.name for v in self.env.values() if isinstance(v, SecretRef)}
                            | {f.secret for f in self.secret_files}))

    def hash_input(self) -> dict[str, Any]:
        """The fields whose change needs a new container; secrets appear by name only."""
        env = {k: ({"secret": v.name} if isinstance(v, SecretRef) else v) for k, v in sorted(self.env.items())}
        return {
            "v": SPEC_HASH_VERSION,
            "image": self.image,
            "command": list(self.command) if self.command is not None else None,
            "env": env,
            "cpu": self.resources.cpu,
            "memory": self.resources.memory,
            "port": self.port,
            "volumes": [v.hash_input() for v in self.volumes],
            "health_exec": list(self.health.command) if self.health and self.health.kind == "exec" else None,
            # Only when used, so the hash of a service without them is what it always was.
            **({"configs": [{"target": c.target, "mode": c.mode, "sha256": c.digest()} for c in self.configs]}
               if self.configs else {}),
            **({"secret_files": [{"secret": f.secret, "target": f.target, "mode": f.mode}
                                 for f in self.secret_files]} if self.secret_files else {}),
            **({"secret_digests": dict(sorted(self.secret_digests.items()))} if self.secret_digests else {}),
        }

    def spec_hash(self) -> str:
        """Stable sha256 (hex) of `hash_input()` as canonical JSON; replicas and lb do not count."""
        blob = json.dumps(self.hash_input(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def with_secret_digests(spec: ServiceSpec, digests: Mapping[str, str]) -> ServiceSpec:
    """`spec` with the keyed digests of the secrets it uses, of those `digests` has."""
    return replace(spec, secret_digests={name: digests[name] for name in spec.secret_names() if name in digests})


@dataclass(frozen=True)
class Playbook:
    """One playbook file and its services, each knowing its own line."""

    file: str
    services: tuple[ServiceSpec, ...]

    def line_of(self, service: str) -> int | None:
        for s in self.services:
            if s.name == service:
                return s.source_line
        return None


# ---- schema ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Resources(_Strict):
    cpu: Annotated[float, BeforeValidator(_cpu)] = 0.1
    memory: Annotated[int, BeforeValidator(_memory)] = 64 * 1024 * 1024


class _Health(_Strict):
    http: str | None = None
    tcp: StrictBool | None = None
    exec: list[str] | None = None
    interval: PositiveDuration = 2.0
    timeout: PositiveDuration = 1.0
    failure_threshold: Annotated[StrictInt, Field(ge=1, le=100)] = 3
    success_threshold: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    start_period: Duration = 0.0

    @field_validator("http")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 256 or not HTTP_PATH_RE.match(v)):
            raise ValueError(f"expected a URL path such as /healthz (no spaces, quotes or '#'), got {v!r}")
        return v

    @field_validator("exec")
    @classmethod
    def _exec(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            _check_argv(v)
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> _Health:
        kinds = [k for k, v in (("http", self.http), ("tcp", self.tcp), ("exec", self.exec)) if v]
        if len(kinds) != 1:
            raise ValueError("give exactly one of http: PATH, tcp: true or exec: [command, ...]")
        return self


class _Placement(_Strict):
    require: dict[str, Any] = Field(default_factory=dict)
    spread_by: str | None = None
    strategy: Literal["spread", "pack"] = "spread"

    @field_validator("require")
    @classmethod
    def _labels(cls, v: dict[str, Any]) -> dict[str, str]:
        out = {}
        for key, value in v.items():
            if not LABEL_KEY_RE.match(str(key)):
                raise ValueError(f"invalid label key {key!r} (letters, digits, . _ / -)")
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if not isinstance(value, str | int | bool) or not LABEL_VALUE_RE.match(text):
                raise ValueError(f"invalid value {value!r} for label {key!r}")
            out[str(key)] = text
        return out

    @field_validator("spread_by")
    @classmethod
    def _spread(cls, v: str | None) -> str | None:
        if v is not None and not LABEL_KEY_RE.match(v):
            raise ValueError(f"invalid label key {v!r} (letters, digits, . _ / -)")
        return v


class _Lb(_Strict):
    port: LbPort | None = None
    mode: Literal["http", "tcp"] = "http"
    balance: Literal["roundrobin", "leastconn", "source", "random"] = "roundrobin"
    hosts: list[HostName] = Field(default_factory=list)
    paths: list[PathPrefix] = Field(default_factory=list)
    tls: TlsModel | None = None

    @model_validator(mode="after")
    def _routed(self) -> _Lb:
        if self.port is None and not self.hosts:
            raise ValueError("give port: N (the service's own port) and/or hosts: [NAME, ...] (shared ports)")
        if self.hosts and self.mode != "http":
            raise ValueError("hosts route HTTP by the Host header and SNI: they need mode http")
        if (self.paths or self.tls is not None) and not self.hosts:
            raise ValueError("paths and tls apply to hosts: list the service's host names")
        if (problem := hosts_problem(self.hosts)) is not None:
            raise ValueError(problem)
        return self


class _Volume(_Strict):
    type: Literal["bind", "tmpfs", "volume", "sshfs"]
    source: str | None = None
    target: str
    readonly: StrictBool = False
    size: Annotated[int | None, BeforeValidator(lambda v: None if v is None else _memory(v))] = None
    on_node_loss: Literal["wait", "start-empty"] | None = None
    storage: str | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        _check_mount_path(v)
        target = normal_path(v)
        if target == "/":
            raise ValueError("cannot mount over /")
        for mount in FLEET_MOUNTS:
            if _within(mount, target):
                raise ValueError(f"cannot mount over {target}: fleet mounts its own {mount} in every container")
        return v

    @model_validator(mode="after")
    def _by_type(self) -> _Volume:
        if self.type == "bind":
            if self.source is None:
                raise ValueError("a bind volume needs source: /host/path")
            if not self.source.startswith("/"):
                raise ValueError(f"a bind volume's source must be an absolute host path, got {self.source!r}")
            _check_mount_path(self.source)
            source = normal_path(self.source)
            if source == "/":
                raise ValueError(f"a bind volume cannot mount the node's root directory (source {self.source!r})")
            for own in NODE_DIRS:
                if _within(source, own):
                    raise ValueError(f"a bind volume cannot mount {source}: it is fleet's own directory {own} or "
                                     "inside it (secrets, HAProxy config and sockets, logs)")
                if _within(own, source):
                    raise ValueError(f"a bind volume cannot mount {source}: it holds fleet's own directory {own} "
                                     "(secrets, HAProxy config and sockets, logs)")
        elif self.type in ("volume", "sshfs"):
            if self.source is None or not VOLUME_NAME_RE.match(self.source):
                raise ValueError(f"a named volume needs source: NAME (a-z, 0-9, . _ -), got {self.source!r}")
        elif self.source is not None:
            raise ValueError("a tmpfs volume takes no source")
        if self.size is not None and self.type != "tmpfs":
            raise ValueError("size applies to tmpfs volumes only")
        if self.on_node_loss is not None and self.type != "volume":
            raise ValueError("on_node_loss applies to named volumes (type: volume) only: other volumes do not "
                             "keep data on one node")
        if self.storage is not None and self.type != "sshfs":
            raise ValueError("storage applies to sshfs volumes only")
        if self.storage is not None and not NAME_RE.match(self.storage):
            raise ValueError(f"expected a storage node's name from the inventory, got {self.storage!r}")
        return self


def _file_mode(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"write the mode as a quoted octal string such as '0444' (got the number {value}; "
                         "unquoted, 0444 is read as the number 292)")
    if not isinstance(value, str) or not FILE_MODE_RE.match(value):
        raise ValueError(f"expected a mode of three octal digits such as '0444' or '0400' (no setuid, setgid or "
                         f"sticky bit), got {value!r}")
    return "0" + value[-3:]


def _file_target(value: str) -> str:
    """A file's path inside the container: absolute, of the characters ctr's --mount takes, not over fleet's own
    mounts."""
    _check_mount_path(value)
    target = normal_path(value)
    if target == "/":
        raise ValueError("cannot mount a file over /")
    for mount in FLEET_MOUNTS:
        if _within(mount, target) or _within(target, mount):
            raise ValueError(f"cannot mount over {target}: fleet mounts its own {mount} in every container")
    return target


FileMode = Annotated[str, BeforeValidator(_file_mode)]


class _Config(_Strict):
    target: Annotated[str, AfterValidator(_file_target)]
    source: str | None = None
    content: str | None = None
    mode: FileMode = DEFAULT_CONFIG_MODE

    @model_validator(mode="after")
    def _one_origin(self) -> _Config:
        if (self.source is None) == (self.content is None):
            raise ValueError("give exactly one of source: FILE (relative to the playbook) or content: TEXT")
        if self.source is not None and (not self.source or self.source.startswith("/") or "\x00" in self.source):
            raise ValueError(f"source: expected a file path relative to the playbook's directory, "
                             f"got {self.source!r}")
        return self


class _SecretFile(_Strict):
    secret: str
    file: Annotated[str, AfterValidator(_file_target)] | None = None
    mode: FileMode = DEFAULT_SECRET_FILE_MODE

    @field_validator("secret")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SECRET_NAME_RE.match(v):
            raise ValueError(f"invalid secret name {v!r} (letters, digits, . _ -)")
        return v


class _Canary(_Strict):
    steps: list[Annotated[StrictInt, Field(ge=1, le=100)]] = Field(default_factory=lambda: [10, 50])
    pause: Duration = 30.0
    auto_promote: StrictBool = True
    max_error_rate_delta: Annotated[float, AfterValidator(_percentage_points)] = 1.0

    @field_validator("steps")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one step")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"steps must increase strictly, got {v}")
        return v


class _Update(_Strict):
    strategy: Literal["rolling", "canary"] = "rolling"
    max_surge: Annotated[StrictInt, Field(ge=0)] = 1
    max_unavailable: Annotated[StrictInt, Field(ge=0)] = 0
    batch_size: Annotated[StrictInt, Field(ge=1)] | None = None
    ready_deadline: PositiveDuration = 60.0
    min_ready: Duration = 2.0
    canary: _Canary | None = None

    @model_validator(mode="after")
    def _progress(self) -> _Update:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0 (the update could never progress)")
        if self.canary is not None and self.strategy != "canary":
            raise ValueError("canary settings need strategy: canary")
        return self


class _Service(_Strict):
    image: str
    command: list[str] | None = None
    replicas: Annotated[StrictInt, Field(ge=0, le=10000)] = 1
    resources: _Resources = Field(default_factory=_Resources)
    port: Port = 8080
    env: dict[str, Any] = Field(default_factory=dict)
    health: _Health | None = None
    placement: _Placement = Field(default_factory=_Placement)
    lb: _Lb | None = None
    volumes: list[_Volume] = Field(default_factory=list)
    stop_grace_period: Duration = 10.0
    update: _Update = Field(default_factory=_Update)
    configs: list[_Config] = Field(default_factory=list)
    secrets: list[_SecretFile] = Field(default_factory=list)
    secret_digests: dict[str, str] | None = None

    @field_validator("secret_digests")
    @classmethod
    def _digests(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name, digest in (v or {}).items():
            if not SECRET_NAME_RE.match(name) or not DIGEST_RE.match(digest):
                raise ValueError(f"expected secret names and hex digests, got {name!r}: {digest!r}")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if len(v) > 255 or not IMAGE_RE.match(v):
            raise ValueError(f"expected an image reference such as registry.local/web:v1, got {v!r}")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            _check_argv(v)
        return v

    @field_validator("volumes")
    @classmethod
    def _unique_targets(cls, v: list[_Volume]) -> list[_Volume]:
        seen = set()
        for vol in v:
            target = normal_path(vol.target)
            if target in seen:
                raise ValueError(f"two volumes mount at {target}")
            seen.add(target)
        return v

    @model_validator(mode="after")
    def _canary_needs_lb(self) -> _Service:
        if self.update.strategy == "canary" and self.lb is None:
            raise ValueError("update.strategy canary needs lb (traffic is split by HAProxy weights)")
        return self


class _File(_Strict):
    services: dict[str, _Service] | None


def _check_argv(argv: list[str]) -> None:
    if not argv:
        raise ValueError("expected a non-empty list of arguments")
    for arg in argv:
        if "\x00" in arg:
            raise ValueError("an argument cannot contain a NUL byte")


def _check_mount_path(path: str) -> None:
    if not MOUNT_PATH_RE.match(path) or "/../" in f"{path}/" or "/./" in f"{path}/" or len(path) > 4096:
        raise ValueError(f"expected an absolute path of letters, digits and . _ @ + / -, got {path!r}")


def normal_path(path: str) -> str:
    """An absolute path without `.`/`..` parts, as the kernel resolves it: `//srv//data/` → `/srv/data`."""
    return "/" + "/".join(part for part in path.split("/") if part)


def _within(inner: str, outer: str) -> bool:
    """`inner` is `outer` or below it (both normal paths)."""
    return inner == outer or outer == "/" or inner.startswith(outer + "/")


# ---- loading --------------------------------------------------------------------------------------------

def _env(raw: Mapping[Any, Any], doc: Marked, path: tuple[str | int, ...],
         problems: list[Problem]) -> dict[str, str | SecretRef]:
    out: dict[str, str | SecretRef] = {}
    for key, value in raw.items():
        where = (*path, key)
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            problems.append(doc.problem(where, f"invalid variable name {key!r} (letters, digits, _)"))
            continue
        if key == "PORT":
            problems.append(doc.problem(where, "PORT is reserved: fleet sets it to the replica's host port"))
            continue
        if isinstance(value, dict):
            name = value.get("secret")
            if set(value) != {"secret"} or not isinstance(name, str) or not SECRET_NAME_RE.match(name):
                problems.append(doc.problem(where, "expected a string or {secret: NAME}"))
                continue
            out[key] = SecretRef(name)
        elif isinstance(value, bool) or value is None:
            problems.append(doc.problem(where, f"expected a string, got {value!r} (quote it)"))
        elif isinstance(value, str | int | float):
            text = str(value)
            if "\x00" in text:
                problems.append(doc.problem(where, "a value cannot contain a NUL byte"))
                continue
            out[key] = text
        else:
            problems.append(doc.problem(where, "expected a string or {secret: NAME}"))
    return out


def _read_config(source: str, base_dir: str) -> str:
    """The text of a config file named relative to the playbook's directory (which it may not leave)."""
    base = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(base, source))
    if os.path.commonpath([base, path]) != base:
        raise ValueError(f"{source!r} is outside the playbook's directory {base} (configs are read from there "
                         "and below only)")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{source!r} is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{source!r} is {st.st_size} bytes; a config can be at most {MAX_CONFIG_BYTES} bytes "
                             "(64 KiB): put bigger files in the image or a volume")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"no such file: {source!r} (looked for {path})") from None
    except OSError as exc:
        raise ValueError(f"cannot read {source!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source!r} is over {MAX_CONFIG_BYTES} bytes (64 KiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source!r} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
                         "configs are text files") from None


Files = tuple[tuple[ConfigSpec, ...], tuple[SecretFileSpec, ...]]


def _files(name: str, svc: _Service, doc: Marked, base_dir: str | None, internal: bool,
           problems: list[Problem]) -> Files:
    """The service's configs (read from their files) and secret files, each target checked against the others and
    the volumes; every problem is added to `problems` at its item's line."""
    where = ("services", name)
    configs: list[ConfigSpec] = []
    targets: dict[str, str] = {}

    def claim(target: str, path: tuple[str | int, ...]) -> bool:
        for other, what in targets.items():
            if other == target:
                problems.append(doc.problem(path, f"{what} already mounts a file at {target}"))
                return False
            if _within(target, other) or _within(other, target):
                problems.append(doc.problem(path, f"{target} and {what}'s {other} are nested (a file cannot be "
                                                  "inside another)"))
                return False
        for v in svc.volumes:
            vt = normal_path(v.target)
            if _within(target, vt) or _within(vt, target):
                problems.append(doc.problem(path, f"{target} is inside the volume at {vt} (it would be created "
                                                  "in the volume); mount it elsewhere"))
                return False
        targets[target] = dotted(path)
        return True

    total = 0
    for i, c in enumerate(svc.configs):
        path = (*where, "configs", i)
        if not claim(c.target, (*path, "target")):
            continue
        if c.content is not None:
            content = c.content
            if len(content.encode()) > MAX_CONFIG_BYTES:
                problems.append(doc.problem((*path, "content"), f"a config can be at most {MAX_CONFIG_BYTES} "
                                                                "bytes (64 KiB)"))
                continue
        elif base_dir is None:
            problems.append(doc.problem((*path, "source"), "a recorded config carries its content, not a file"))
            continue
        else:
            try:
                content = _read_config(c.source or "", base_dir)
            except ValueError as exc:
                problems.append(doc.problem((*path, "source"), str(exc)))
                continue
        total += len(content.encode())
        configs.append(ConfigSpec(c.target, content, c.mode, c.source))
    if total > MAX_CONFIGS_BYTES:
        problems.append(doc.problem((*where, "configs"), f"the configs of one service add up to {total} bytes; "
                                                         f"at most {MAX_CONFIGS_BYTES} (256 KiB)"))
    files: list[SecretFileSpec] = []
    for i, f in enumerate(svc.secrets):
        path = (*where, "secrets", i)
        target = f.file if f.file is not None else f"{SECRET_FILE_DIR}/{f.secret}"
        if claim(target, (*path, "file")):
            files.append(SecretFileSpec(f.secret, target, f.mode))
    if svc.secret_digests is not None and not internal:
        problems.append(doc.problem((*where, "secret_digests"), "fleet records this itself (the keyed digests of "
                                                                "the secrets' values); not a playbook setting"))
    return tuple(configs), tuple(files)


def _resolve(name: str, svc: _Service, env: dict[str, str | SecretRef], doc: Marked,
             files: Files = ((), ()), base_dir: str | None = None) -> ServiceSpec:
    h = svc.health
    health = None
    if h is not None:
        kind: Literal["http", "tcp", "exec"] = "http" if h.http else "tcp" if h.tcp else "exec"
        health = HealthSpec(kind, h.http, tuple(h.exec or ()), h.interval, h.timeout,
                            h.failure_threshold, h.success_threshold, h.start_period)
    u = svc.update
    canary = None
    if u.strategy == "canary":
        c = u.canary or _Canary()
        canary = CanarySpec(tuple(c.steps), c.pause, c.auto_promote, c.max_error_rate_delta)
    return ServiceSpec(
        name=name,
        image=svc.image,
        command=tuple(svc.command) if svc.command is not None else None,
        replicas=svc.replicas,
        resources=Resources(svc.resources.cpu, svc.resources.memory),
        port=svc.port,
        env=env,
        health=health,
        placement=PlacementSpec(svc.placement.require, svc.placement.spread_by, svc.placement.strategy),
        lb=LbSpec(svc.lb.port, svc.lb.mode, svc.lb.balance, tuple(svc.lb.hosts), tuple(svc.lb.paths),
                  tls_spec(svc.lb.tls, base_dir) if svc.lb.tls else None) if svc.lb else None,
        volumes=tuple(VolumeSpec(v.type, v.target, v.source, v.readonly, v.size, v.on_node_loss or "wait",
                                 v.storage, doc.line_of(("services", name, "volumes", i)))
                      for i, v in enumerate(svc.volumes)),
        stop_grace_period=svc.stop_grace_period,
        update=UpdateSpec(u.strategy, u.max_surge, u.max_unavailable,
                          u.batch_size or max(1, u.max_surge + u.max_unavailable),
                          u.ready_deadline, u.min_ready, canary),
        configs=files[0],
        secret_files=files[1],
        secret_digests=svc.secret_digests or {},
        source_file=doc.file,
        source_line=doc.line_of(("services", name)),
    )


def _parse(text: str, file: str) -> tuple[Playbook, list[Problem]]:
    try:
        doc = load(text, file)
    except ConfigError as exc:
        return Playbook(file, ()), list(exc.problems)
    return _parse_doc(doc, os.path.dirname(os.path.abspath(file)))


def _parse_doc(doc: Marked, base_dir: str | None, internal: bool = False) -> tuple[Playbook, list[Problem]]:
    """`base_dir`: where configs' files are read from (None: configs must carry their content); `internal`: the
    document is fleet's own record of a spec, which may hold `secret_digests`."""
    file = doc.file
    if not isinstance(doc.data, dict) or "services" not in doc.data:
        return Playbook(file, ()), [Problem(file, 1, "", "expected a mapping with `services:`")]
    problems: list[Problem] = []
    raw_services = doc.data.get("services")
    if isinstance(raw_services, dict):
        for name in raw_services:
            if not isinstance(name, str) or not SERVICE_NAME_RE.match(name):
                problems.append(doc.problem(
                    ("services", name),
                    f"invalid service name {name!r} (a-z first, then a-z, 0-9, -; at most 31 characters)"))
    try:
        model = _File.model_validate(doc.data)
    except ValidationError as exc:
        model = None
        problems += pydantic_problems(exc, doc, ())
    envs: dict[str, dict[str, str | SecretRef]] = {}
    if isinstance(raw_services, dict):
        for name, body in raw_services.items():
            if isinstance(body, dict) and isinstance(body.get("env"), dict):
                envs[str(name)] = _env(body["env"], doc, ("services", name, "env"), problems)
    files: dict[str, Files] = {}
    if model is not None:
        for name, svc in (model.services or {}).items():
            files[name] = _files(name, svc, doc, base_dir, internal, problems)
        if base_dir is not None:
            for name, svc in (model.services or {}).items():
                _check_tls_files(name, svc, doc, base_dir, problems)
    problems.sort(key=lambda p: (p.line or 0, p.field))
    if model is None or problems:
        return Playbook(file, ()), problems
    services = tuple(_resolve(name, svc, envs.get(name, {}), doc, files[name], base_dir)
                     for name, svc in (model.services or {}).items())
    return Playbook(file, services), problems


def _check_tls_files(name: str, svc: _Service, doc: Marked, base_dir: str, problems: list[Problem]) -> None:
    """A playbook's `lb.tls.cert`/`key` files: readable, and the certificate is the key's."""
    tls = svc.lb.tls if svc.lb is not None else None
    if tls is None or tls.cert is None or tls.key is None:
        return
    spec = tls_spec(tls, base_dir)
    assert spec.cert_file is not None and spec.key_file is not None
    try:
        bundle(read_pem(spec.cert_file, "certificate"), read_pem(spec.key_file, "key"))
    except ValueError as exc:
        problems.append(doc.problem(("services", name, "lb", "tls", "cert"), str(exc)))


def _cross_check(playbooks: Sequence[Playbook]) -> list[Problem]:
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
                if s.lb.port is None:
                    continue
                if (other := ports.get(s.lb.port)) is not None:
                    problems.append(Problem(s.source_file, s.source_line, f"{where}.lb.port",
                                            f"lb port {s.lb.port} is already used by service {other.name!r} "
                                            f"at {other.source_file}:{other.source_line}"))
                else:
                    ports[s.lb.port] = s
    return problems


def parse_playbook(text: str, file: str) -> Playbook:
    """One playbook from its text; raises SpecError listing every problem."""
    pb, problems = _parse(text, file)
    problems += _cross_check([pb])
    if problems:
        raise SpecError(problems)
    return pb


def playbook_files(paths: Iterable[str]) -> list[str]:
    """Files named by `paths`: a directory stands for its *.yaml and *.yml files, sorted."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(os.path.join(path, f) for f in os.listdir(path)
                          if f.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(path, f)))
        else:
            out.append(path)
    return out


def load_playbook_files(paths: Iterable[str]) -> list[Playbook]:
    """Every playbook under `paths`, checked alone and together (duplicate names, duplicate lb ports)."""
    playbooks: list[Playbook] = []
    problems: list[Problem] = []
    paths = list(paths)
    try:
        files = playbook_files(paths)
    except OSError as exc:
        raise SpecError([Problem(exc.filename or ", ".join(paths), None, "",
                                 f"cannot list playbooks: {exc.strerror or exc}")]) from None
    if not files:
        raise SpecError([Problem(", ".join(paths) or ".", None, "", "no playbook files (*.yaml, *.yml) found")])
    for file in files:
        try:
            text = read_text(file, "playbook")
        except ConfigError as exc:
            problems += exc.problems
            continue
        pb, found = _parse(text, file)
        playbooks.append(pb)
        problems += found
    problems += _cross_check(playbooks)
    if problems:
        raise SpecError(problems)
    return playbooks


def load_playbooks(paths: Iterable[str]) -> list[ServiceSpec]:
    """Every service under `paths` (files or directories), in file order then document order."""
    return [s for pb in load_playbook_files(paths) for s in pb.services]


# ---- round trip through the revision history ---------------------------------------------------------------

def to_playbook_dict(spec: ServiceSpec) -> dict[str, Any]:
    """The service as playbook input (what a user would write); `from_playbook_dict` reads it back.

    Secrets appear as `{secret: NAME}` references only, so the history never holds a secret's value.
    """
    out: dict[str, Any] = {
        "image": spec.image,
        "replicas": spec.replicas,
        "resources": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
        "port": spec.port,
        "env": {k: ({"secret": v.name} if isinstance(v, SecretRef) else v) for k, v in spec.env.items()},
        "placement": {"require": dict(spec.placement.require), "strategy": spec.placement.strategy},
        "stop_grace_period": format_duration(spec.stop_grace_period),
        "update": {
            "strategy": spec.update.strategy, "max_surge": spec.update.max_surge,
            "max_unavailable": spec.update.max_unavailable, "batch_size": spec.update.batch_size,
            "ready_deadline": format_duration(spec.update.ready_deadline),
            "min_ready": format_duration(spec.update.min_ready),
        },
    }
    if spec.command is not None:
        out["command"] = list(spec.command)
    if spec.placement.spread_by:
        out["placement"]["spread_by"] = spec.placement.spread_by
    h = spec.health
    if h is not None:
        health: dict[str, Any] = {
            "interval": format_duration(h.interval), "timeout": format_duration(h.timeout),
            "failure_threshold": h.failure_threshold, "success_threshold": h.success_threshold,
            "start_period": format_duration(h.start_period),
        }
        if h.kind == "http":
            health["http"] = h.path
        elif h.kind == "tcp":
            health["tcp"] = True
        else:
            health["exec"] = list(h.command)
        out["health"] = health
    if spec.lb is not None:
        out["lb"] = {"mode": spec.lb.mode, "balance": spec.lb.balance}
        if spec.lb.port is not None:
            out["lb"]["port"] = spec.lb.port
        if spec.lb.hosts:
            out["lb"]["hosts"] = list(spec.lb.hosts)
        if spec.lb.paths:
            out["lb"]["paths"] = list(spec.lb.paths)
        t = spec.lb.tls
        if t is not None:
            tls: dict[str, Any] = {"redirect": t.redirect}
            if t.cert_file is not None:
                tls.update(cert=t.cert_file, key=t.key_file)
            if t.secret is not None:
                tls["secret"] = t.secret
            if t.acme:
                tls["acme"] = True
            if t.hsts is not None:
                tls["hsts"] = t.hsts
            out["lb"]["tls"] = tls
    if spec.volumes:
        out["volumes"] = [{k: v for k, v in {"type": vol.type, "source": vol.source, "target": vol.target,
                                             "readonly": vol.readonly, "size": vol.size, "storage": vol.storage,
                                             "on_node_loss": None if vol.on_node_loss == "wait" else vol.on_node_loss,
                                             }.items() if v is not None}
                          for vol in spec.volumes]
    if spec.configs:
        out["configs"] = [{"target": c.target, "mode": c.mode, "content": c.content} for c in spec.configs]
    if spec.secret_files:
        out["secrets"] = [{"secret": f.secret, "file": f.target, "mode": f.mode} for f in spec.secret_files]
    if spec.secret_digests:
        out["secret_digests"] = dict(sorted(spec.secret_digests.items()))
    c = spec.update.canary
    if c is not None:
        out["update"]["canary"] = {"steps": list(c.steps), "pause": format_duration(c.pause),
                                   "auto_promote": c.auto_promote, "max_error_rate_delta": c.max_error_rate_delta}
    return out


def from_playbook_dict(name: str, data: dict[str, Any], source: str = "<history>") -> ServiceSpec:
    """A ServiceSpec from `to_playbook_dict` output (as stored, e.g. through JSON), validated exactly as a playbook
    is; the values are read as they are, not through YAML's text rules."""
    pb, problems = _parse_doc(Marked(source, {"services": {name: data}}, {}), None, internal=True)
    problems += _cross_check([pb])
    if problems:
        raise SpecError(problems)
    return pb.services[0]
