"""The resolved values of a service spec (frozen dataclasses: durations in seconds, memory in bytes, cpu in cores),
the limits every playbook is held to, and the spec hash that tells which replicas run which version."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from fleet.config.edge import TlsSpec
from fleet.config.spec.imaging import LogsSpec
from fleet.config.spec.security import SecuritySpec
from fleet.core.dirs import NODE_BASE, NODE_RUN
from fleet.core.model import Resources
from fleet.core.ports import named_host_ports
from fleet.core.units import parse_duration as parse_duration  # the one parser; re-exported for the spec

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
# What a service puts on the `ctr run` command line (plain env values, command, mount paths) reaches the node's
# shell as part of one argument (`sh -c COMMAND`), which Linux caps at 128 KiB (MAX_ARG_STRLEN): beyond it every
# start fails with E2BIG. Each env value is bounded, and the whole, as quoted for the node, leaves fleet 32 KiB for
# its own part (the start script, labels, FLEET_* variables). Secret env values travel in a file, not here.
MAX_ENV_VALUE_BYTES = 64 * 1024
MAX_COMMAND_LINE_BYTES = 96 * 1024
# A mount's argument besides its paths (`--mount type=bind,src=…,dst=…,options=rbind:ro:nosuid:nodev`), with room
# for the source fleet chooses (a config's file is named by the service and the spec hash).
_MOUNT_ARG_BYTES = 256
# A file's permission bits as a quoted octal string ('0444'); no setuid, setgid or sticky bit.
FILE_MODE_RE = re.compile(r"^0?[0-7]{3}$")
DEFAULT_CONFIG_MODE = "0444"
DEFAULT_SECRET_FILE_MODE = "0400"
SECRET_FILE_DIR = "/run/secrets"
DIGEST_RE = re.compile(r"^[0-9a-f]{32,64}$")

SPEC_HASH_VERSION = 1
DEFAULT_RESOURCES = Resources(cpu=0.1, memory=64 * 1024 * 1024)


def format_duration(seconds: float) -> str:
    """The text `parse_duration` reads back as exactly `seconds`: `2s`, `0.5s`, `1.25s`, `86399.999s`."""
    millis = round(seconds * 1000)
    whole, frac = divmod(millis, 1000)
    return f"{whole}s" if not frac else f"{whole}.{frac:03d}".rstrip("0") + "s"



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
    """Where replicas may go (`require`), how they are spread (`spread_by` label, `strategy`) and how many of
    them one node may run at most (`max_per_node`, None: no limit)."""

    require: Mapping[str, str] = field(default_factory=dict)
    spread_by: str | None = None
    strategy: Literal["spread", "pack"] = "spread"
    max_per_node: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "require", MappingProxyType(dict(self.require)))


@dataclass(frozen=True)
class LbTimeouts:
    """HAProxy's timeouts for one service, in seconds; None keeps fleet's default (connect 2s, client and server
    30s, tunnel as client and server). `client` is the service's own frontend's (the shared HTTP/HTTPS frontends
    keep fleet's); `tunnel` holds an upgraded connection (websocket) or a tcp one once both sides are connected."""

    client: float | None = None
    server: float | None = None
    tunnel: float | None = None
    connect: float | None = None


# A maintenance page's text: it goes verbatim, in double quotes, into an HAProxy config line, so no quote,
# backslash, `$` (expanded in double quotes), `%` or `#`, and no control character.
MAINTENANCE_RE = re.compile(r'^[^"\\$%#\x00-\x1f\x7f]{1,512}$')
# `lb.retries`' default: what fleet's HAProxy config has always had (a connection retried twice).
DEFAULT_LB_RETRIES = 2


@dataclass(frozen=True)
class LbPortSpec:
    """Another named container port of the service on the lb nodes (`lb.ports.NAME`): its own frontend on `port`,
    in `mode`, whose servers are the replicas' host ports for `name`, routed to the replicas in rotation, and
    HAProxy's check of it (`health`: http or tcp; None: a TCP connect every 2 s)."""

    name: str
    port: int
    mode: Literal["http", "tcp"] = "http"
    health: HealthSpec | None = None


@dataclass(frozen=True)
class LbSpec:
    """The service's frontend on the LB nodes: its own `port`, and/or `hosts` (with optional path prefixes) on the
    shared HTTP/HTTPS ports, with `tls`; its `timeouts`, `sticky` sessions (by a cookie HAProxy inserts), the
    `maintenance` page's text (served, status 503, while no replica is up) and how many times a failed request
    is tried again (`retries`: see fleet.node.haproxy.render for which requests)."""

    port: int | None
    mode: Literal["http", "tcp"] = "http"
    balance: Literal["roundrobin", "leastconn", "source", "random"] = "roundrobin"
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    tls: TlsSpec | None = None
    timeouts: LbTimeouts = LbTimeouts()
    sticky: Literal["cookie"] | None = None
    maintenance: str | None = None
    retries: int = DEFAULT_LB_RETRIES
    # The service's other named ports, each on an lb port of its own (in name order).
    ports: tuple[LbPortSpec, ...] = ()

    def bind_ports(self) -> tuple[tuple[str, int], ...]:
        """(field, port) of every lb port the service's own frontends bind: `lb.port`, then `lb.ports.NAME.port`."""
        own = (("lb.port", self.port),) if self.port is not None else ()
        return own + tuple((f"lb.ports.{p.name}.port", p.port) for p in self.ports)


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
    # Requests (tcp: connections) a window must see before the canary is judged; fewer: extended once, then failed.
    min_requests: int = 20


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
    # `replicas: per-node`: one replica on every node that meets `placement` (`replicas` is what the last plan
    # counted, see fleet.plan.reconcile), rolled one node at a time.
    per_node: bool = False
    resources: Resources = DEFAULT_RESOURCES
    port: int = 8080
    # `bridge`: the replica in its own network namespace, `port` inside it mapped from a host port fleet picks;
    # `host`: the node's network, the replica listening on that host port (`$PORT`). See playbooks/README.md.
    network: Literal["bridge", "host"] = "bridge"
    # Named container ports (`ports: {http: 80, metrics: 9100}`) as written; `port` is the one HAProxy routes to.
    ports: tuple[tuple[str, int], ...] = ()
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
    # How many times `fleet restart` rolled the service with nothing else changed, stamped by the controller
    # (a restart generation): part of the hash, so every replica of the restarted revision is out of date.
    restarts: int = 0
    # A job (the playbook's `jobs:`) run once with a new revision's image before any of its replicas starts
    # (fleet.engine.jobs); not part of the hash: naming a hook changes no container.
    before_deploy: str | None = None
    # The digest `image`'s tag pointed to when `apply` resolved it (fleet.engine.digests), stamped by the controller:
    # what the containers run (`image_ref`), part of the hash, so a re-pushed tag rolls.
    image_digest: str | None = None
    # How its log files are rotated on the node (fleet.node.logrotate).
    logs: LogsSpec = field(default_factory=LogsSpec)
    # Free disk (bytes) a node must have to take a replica: a feasibility check of the scheduler, not the hash.
    disk: int = 0
    # user, read_only, capabilities, no_new_privileges (fleet.config.spec.security).
    security: SecuritySpec = field(default_factory=SecuritySpec)
    source_file: str = field(default="", compare=False)
    source_line: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "secret_digests", MappingProxyType(dict(self.secret_digests)))

    @property
    def image_ref(self) -> str:
        """The reference containers are started from: `image`, pinned to `image_digest` when it was resolved."""
        return f"{self.image}@{self.image_digest}" if self.image_digest and "@" not in self.image else self.image

    def host_ports(self, routed_host_port: int) -> dict[str, int]:
        """Per named port, the host port mapped to it on a replica whose routed port is on `routed_host_port`
        (fleet.core.ports.named_host_ports); none on the host network, where nothing is mapped."""
        return named_host_ports(routed_host_port, self.ports, self.port) if self.network == "bridge" else {}

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
            # Only when not the default, so the hash of a service without them is what it always was: its running
            # replicas (on the host network, from an older fleet) are still served through the same host ports.
            **({"network": self.network} if self.network != "bridge" else {}),
            **({"ports": [list(p) for p in self.ports]} if self.ports else {}),
            # Named ports besides the routed one are mapped to host ports of their own (an older fleet mapped
            # the routed one only): only then, so no other service's hash changes.
            **({"mapped": "named"} if self.network == "bridge" and len(self.ports) > 1 else {}),
            "volumes": [v.hash_input() for v in self.volumes],
            "health_exec": list(self.health.command) if self.health and self.health.kind == "exec" else None,
            # Only when used, so the hash of a service without them is what it always was.
            **({"configs": [{"target": c.target, "mode": c.mode, "sha256": c.digest()} for c in self.configs]}
               if self.configs else {}),
            **({"secret_files": [{"secret": f.secret, "target": f.target, "mode": f.mode}
                                 for f in self.secret_files]} if self.secret_files else {}),
            **({"secret_digests": dict(sorted(self.secret_digests.items()))} if self.secret_digests else {}),
            **({"restarts": self.restarts} if self.restarts else {}),
            **({"security": sec} if (sec := self.security.hash_input()) else {}),
            **({"image_digest": self.image_digest} if self.image_digest else {}),
            **({"logs": logs} if (logs := self.logs.hash_input()) else {}),
        }

    def command_line_bytes(self) -> int:
        """The bytes this service's own values take in the command that starts one of its containers (plain env
        values, command, mounts), quoted as the node receives them; held under `MAX_COMMAND_LINE_BYTES`."""
        args = [f"{k}={v}" for k, v in self.env.items() if not isinstance(v, SecretRef)]
        args += list(self.command or ())
        paths = [v.target for v in self.volumes] + [v.source or "" for v in self.volumes]
        paths += [c.target for c in self.configs] + [f.target for f in self.secret_files]
        mounts = len(self.volumes) + len(self.configs) + len(self.secret_files)
        return (sum(quoted_bytes(a) + len(" --env ") for a in args) + sum(quoted_bytes(p) for p in paths)
                + mounts * _MOUNT_ARG_BYTES)

    def spec_hash(self) -> str:
        """Stable sha256 (hex) of `hash_input()` as canonical JSON; replicas and lb do not count."""
        blob = json.dumps(self.hash_input(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def quoted_bytes(arg: str) -> int:
    """The bytes `arg` takes in a command sent to a node: quoted as an argument of fleet's script, and that
    quote's every `'` quoted again (4 more bytes) when the script is quoted for the node's shell
    (`fleet.core.shell.Script.render`)."""
    inner = shlex.quote(arg)
    return len(inner.encode("utf-8", "surrogatepass")) + 4 * inner.count("'") + 1


def with_secret_digests(spec: ServiceSpec, digests: Mapping[str, str]) -> ServiceSpec:
    """`spec` with the keyed digests of the secrets it uses, of those `digests` has."""
    return replace(spec, secret_digests={name: digests[name] for name in spec.secret_names() if name in digests})


@dataclass(frozen=True)
class Playbook:
    """One playbook file and its services, each knowing its own line."""

    file: str
    services: tuple[ServiceSpec, ...]
    jobs: tuple[Any, ...] = ()  # fleet.config.spec.jobs.JobSpec values (that module builds on this one)

    def line_of(self, service: str) -> int | None:
        for s in self.services:
            if s.name == service:
                return s.source_line
        return None


def normal_path(path: str) -> str:
    """An absolute path without `.`/`..` parts, as the kernel resolves it: `//srv//data/` → `/srv/data`."""
    return "/" + "/".join(part for part in path.split("/") if part)


def within(inner: str, outer: str) -> bool:
    """`inner` is `outer` or below it (both normal paths)."""
    return inner == outer or outer == "/" or inner.startswith(outer + "/")
