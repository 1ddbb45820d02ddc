"""The playbook as written: the pydantic schema of one service. Each section is one class that states its
fields and their rules, resolves itself into its value (`value()`, a `values` dataclass) and writes a value back
as playbook input (`written()`, what the history records), so reading and writing a section cannot drift apart."""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from fleet.config.edge import HostName, PathPrefix, TlsModel, hosts_problem, tls_spec
from fleet.config.spec.imaging import ImageInput
from fleet.config.spec.lbports import CheckInput, LbPortInput, lb_ports_problem, named_ports_problem
from fleet.config.spec.mounts import ConfigInput, SecretFileInput, Strict, VolumeInput
from fleet.config.spec.rules import (
    Argv,
    Cpu,
    Duration,
    LbPort,
    Memory,
    Percent,
    Port,
    PositiveDuration,
    Replicas,
)
from fleet.config.spec.security import SecurityInput
from fleet.config.spec.values import (
    DEFAULT_LB_RETRIES,
    DEFAULT_RESOURCES,
    DIGEST_RE,
    IMAGE_RE,
    MAINTENANCE_RE,
    SECRET_NAME_RE,
    SERVICE_NAME_RE,
    CanarySpec,
    ConfigSpec,
    HealthSpec,
    LbSpec,
    LbTimeouts,
    PlacementSpec,
    SecretFileSpec,
    SecretRef,
    ServiceSpec,
    UpdateSpec,
    format_duration,
    normal_path,
)
from fleet.config.yamlmarks import Marked
from fleet.core.model import Resources
from fleet.core.names import LABEL_KEY_RE, LABEL_VALUE_RE

# A service's configs and secret files, resolved by the loader (which reads the configs' files).
Files = tuple[tuple[ConfigSpec, ...], tuple[SecretFileSpec, ...]]

class _Resources(Strict):
    cpu: Cpu = DEFAULT_RESOURCES.cpu
    memory: Memory = DEFAULT_RESOURCES.memory

    def value(self) -> Resources:
        return Resources(self.cpu, self.memory)

    @staticmethod
    def written(r: Resources) -> dict[str, Any]:
        return {"cpu": r.cpu, "memory": r.memory}


class _Health(CheckInput):
    exec: Argv | None = None
    start_period: Duration = HealthSpec.start_period

    @model_validator(mode="after")
    def _one_kind(self) -> _Health:
        kinds = [k for k, v in (("http", self.http), ("tcp", self.tcp), ("exec", self.exec)) if v]
        if len(kinds) != 1:
            raise ValueError("give exactly one of http: PATH, tcp: true or exec: [command, ...]")
        return self

    def value(self) -> HealthSpec:
        kind: Literal["http", "tcp", "exec"] = "http" if self.http else "tcp" if self.tcp else "exec"
        return HealthSpec(kind, self.http, tuple(self.exec or ()), self.interval, self.timeout,
                          self.failure_threshold, self.success_threshold, self.start_period)

    @staticmethod
    def written(h: HealthSpec) -> dict[str, Any]:
        out: dict[str, Any] = {
            "interval": format_duration(h.interval), "timeout": format_duration(h.timeout),
            "failure_threshold": h.failure_threshold, "success_threshold": h.success_threshold,
            "start_period": format_duration(h.start_period),
        }
        if h.kind == "http":
            out["http"] = h.path
        elif h.kind == "tcp":
            out["tcp"] = True
        else:
            out["exec"] = list(h.command)
        return out


class _Placement(Strict):
    require: dict[str, Any] = Field(default_factory=dict)
    spread_by: str | None = None
    strategy: Literal["spread", "pack"] = PlacementSpec.strategy
    max_per_node: Annotated[StrictInt, Field(ge=1, le=10000)] | None = None

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

    def value(self) -> PlacementSpec:
        return PlacementSpec(self.require, self.spread_by, self.strategy, self.max_per_node)

    @staticmethod
    def written(p: PlacementSpec) -> dict[str, Any]:
        out: dict[str, Any] = {"require": dict(p.require), "strategy": p.strategy}
        if p.spread_by:
            out["spread_by"] = p.spread_by
        if p.max_per_node is not None:
            out["max_per_node"] = p.max_per_node
        return out


class _LbTimeouts(Strict):
    client: PositiveDuration | None = None
    server: PositiveDuration | None = None
    tunnel: PositiveDuration | None = None
    connect: PositiveDuration | None = None

    def value(self) -> LbTimeouts:
        return LbTimeouts(self.client, self.server, self.tunnel, self.connect)

    @staticmethod
    def written(t: LbTimeouts) -> dict[str, Any]:
        """Only the timeouts set, so a service without them records what it always did."""
        return {k: format_duration(v) for k, v in (("client", t.client), ("server", t.server),
                                                   ("tunnel", t.tunnel), ("connect", t.connect)) if v is not None}


def _maintenance(v: str) -> str:
    if not MAINTENANCE_RE.match(v):
        raise ValueError("expected 1-512 characters of text with no \" \\ $ % # and no control character (it "
                         "goes into HAProxy's config as the page's text)")
    return v


class _Lb(Strict):
    port: LbPort | None = None
    mode: Literal["http", "tcp"] = LbSpec.mode
    balance: Literal["roundrobin", "leastconn", "source", "random"] = LbSpec.balance
    hosts: list[HostName] = Field(default_factory=list)
    paths: list[PathPrefix] = Field(default_factory=list)
    tls: TlsModel | None = None
    timeouts: _LbTimeouts = Field(default_factory=_LbTimeouts)
    sticky: Literal["cookie"] | None = None
    maintenance: Annotated[str, AfterValidator(_maintenance)] | None = None
    retries: Annotated[StrictInt, Field(ge=0, le=10)] = DEFAULT_LB_RETRIES
    ports: dict[str, LbPortInput] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _routed(self) -> _Lb:
        if (problem := lb_ports_problem(self.port, self.ports)) is not None:
            raise ValueError(problem)
        if self.port is None and not self.hosts:
            raise ValueError("give port: N (the service's own port) and/or hosts: [NAME, ...] (shared ports)")
        if self.hosts and self.mode != "http":
            raise ValueError("hosts route HTTP by the Host header and SNI: they need mode http")
        if (self.paths or self.tls is not None) and not self.hosts:
            raise ValueError("paths and tls apply to hosts: list the service's host names")
        if (problem := hosts_problem(self.hosts)) is not None:
            raise ValueError(problem)
        if self.mode != "http" and (self.sticky is not None or self.maintenance is not None):
            raise ValueError("sticky and maintenance need mode http (a cookie and a page are HTTP)")
        if self.timeouts.client is not None and self.port is None:
            raise ValueError("timeouts.client applies to the service's own frontend (port: N); the shared "
                             "HTTP/HTTPS frontends of hosts keep fleet's (30s): use timeouts.tunnel for "
                             "websockets")
        return self

    def value(self, base_dir: str | None) -> LbSpec:
        """`base_dir`: the playbook's directory, against which relative certificate files are made absolute."""
        return LbSpec(self.port, self.mode, self.balance, tuple(self.hosts), tuple(self.paths),
                      tls_spec(self.tls, base_dir) if self.tls else None, self.timeouts.value(), self.sticky,
                      self.maintenance, self.retries,
                      tuple(p.value(name) for name, p in sorted(self.ports.items())))

    @staticmethod
    def written(lb: LbSpec) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": lb.mode, "balance": lb.balance}
        # The settings below are written only when set, so a service without them records what it always did.
        if timeouts := _LbTimeouts.written(lb.timeouts):
            out["timeouts"] = timeouts
        if lb.sticky is not None:
            out["sticky"] = lb.sticky
        if lb.maintenance is not None:
            out["maintenance"] = lb.maintenance
        if lb.retries != DEFAULT_LB_RETRIES:
            out["retries"] = lb.retries
        if lb.port is not None:
            out["port"] = lb.port
        if lb.ports:
            out["ports"] = {p.name: LbPortInput.written(p) for p in lb.ports}
        if lb.hosts:
            out["hosts"] = list(lb.hosts)
        if lb.paths:
            out["paths"] = list(lb.paths)
        t = lb.tls
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
            out["tls"] = tls
        return out


class _Canary(Strict):
    steps: list[Annotated[StrictInt, Field(ge=1, le=100)]] = Field(default_factory=lambda: list(CanarySpec.steps))
    pause: Duration = CanarySpec.pause
    auto_promote: StrictBool = CanarySpec.auto_promote
    max_error_rate_delta: Percent = CanarySpec.max_error_rate_delta
    min_requests: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = CanarySpec.min_requests

    @field_validator("steps")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one step")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"steps must increase strictly, got {v}")
        return v

    def value(self) -> CanarySpec:
        return CanarySpec(tuple(self.steps), self.pause, self.auto_promote, self.max_error_rate_delta,
                          self.min_requests)

    @staticmethod
    def written(c: CanarySpec) -> dict[str, Any]:
        return {"steps": list(c.steps), "pause": format_duration(c.pause), "auto_promote": c.auto_promote,
                "max_error_rate_delta": c.max_error_rate_delta,
                # Only when not the default, so a revision recorded before it is the same revision.
                **({"min_requests": c.min_requests} if c.min_requests != CanarySpec.min_requests else {})}


class _Update(Strict):
    strategy: Literal["rolling", "canary"] = UpdateSpec.strategy
    max_surge: Annotated[StrictInt, Field(ge=0)] = UpdateSpec.max_surge
    max_unavailable: Annotated[StrictInt, Field(ge=0)] = UpdateSpec.max_unavailable
    batch_size: Annotated[StrictInt, Field(ge=1)] | None = None
    ready_deadline: PositiveDuration = UpdateSpec.ready_deadline
    min_ready: Duration = UpdateSpec.min_ready
    canary: _Canary | None = None

    @model_validator(mode="after")
    def _progress(self) -> _Update:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0 (the update could never progress)")
        if self.canary is not None and self.strategy != "canary":
            raise ValueError("canary settings need strategy: canary")
        return self

    def value(self) -> UpdateSpec:
        """Unset, `batch_size` is what surge and unavailability allow at once; a canary update without `canary:`
        takes the default steps."""
        canary = (self.canary or _Canary()).value() if self.strategy == "canary" else None
        return UpdateSpec(self.strategy, self.max_surge, self.max_unavailable,
                          self.batch_size or max(1, self.max_surge + self.max_unavailable),
                          self.ready_deadline, self.min_ready, canary)

    @staticmethod
    def written(u: UpdateSpec) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": u.strategy, "max_surge": u.max_surge, "max_unavailable": u.max_unavailable,
            "batch_size": u.batch_size, "ready_deadline": format_duration(u.ready_deadline),
            "min_ready": format_duration(u.min_ready),
        }
        if u.canary is not None:
            out["canary"] = _Canary.written(u.canary)
        return out


PORT_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")


def main_port(ports: dict[str, int]) -> int:
    """The port HAProxy routes to when `port` does not say: the one named `http`, else the first."""
    return ports["http"] if "http" in ports else next(iter(ports.values()))


class ServiceInput(Strict, SecurityInput, ImageInput):
    image: str
    command: Argv | None = None
    replicas: Replicas = ServiceSpec.replicas
    resources: _Resources = Field(default_factory=_Resources)
    port: Port = ServiceSpec.port
    network: Literal["bridge", "host"] = ServiceSpec.network
    ports: dict[str, Port] | None = None
    env: dict[str, Any] = Field(default_factory=dict)
    health: _Health | None = None
    placement: _Placement = Field(default_factory=_Placement)
    lb: _Lb | None = None
    volumes: list[VolumeInput] = Field(default_factory=list)
    stop_grace_period: Duration = ServiceSpec.stop_grace_period
    update: _Update = Field(default_factory=_Update)
    configs: list[ConfigInput] = Field(default_factory=list)
    secrets: list[SecretFileInput] = Field(default_factory=list)
    secret_digests: dict[str, str] | None = None
    restarts: Annotated[StrictInt, Field(ge=0)] | None = None
    before_deploy: str | None = None

    @field_validator("before_deploy")
    @classmethod
    def _hook(cls, v: str | None) -> str | None:
        if v is not None and not SERVICE_NAME_RE.match(v):
            raise ValueError(f"expected a job's name from the playbooks' jobs:, got {v!r}")
        return v

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

    @field_validator("volumes")
    @classmethod
    def _unique_targets(cls, v: list[VolumeInput]) -> list[VolumeInput]:
        seen = set()
        for vol in v:
            target = normal_path(vol.target)
            if target in seen:
                raise ValueError(f"two volumes mount at {target}")
            seen.add(target)
        return v

    @field_validator("ports")
    @classmethod
    def _port_names(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is not None:
            if not v:
                raise ValueError("give at least one named port, e.g. {http: 80}, or leave ports out")
            for name in v:
                if not PORT_NAME_RE.match(name):
                    raise ValueError(f"port name {name!r}: expected a-z, 0-9 and -, starting with a letter "
                                     "(at most 15 characters)")
            if len(set(v.values())) != len(v):
                raise ValueError("two names for one container port")
        return v

    @model_validator(mode="after")
    def _one_main_port(self) -> ServiceInput:
        if self.ports and "port" in self.model_fields_set and self.port not in self.ports.values():
            raise ValueError(f"port {self.port} is not one of ports; with ports, port (if given) names which of "
                             "them HAProxy routes to")
        routed = main_port(self.ports) if self.ports and "port" not in self.model_fields_set else self.port
        if (problem := named_ports_problem(self.lb.ports if self.lb else {}, self.ports, routed,
                                           self.network)) is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _per_node_alone(self) -> ServiceInput:
        if self.replicas == "per-node" and self.placement.max_per_node not in (None, 1):
            raise ValueError("replicas per-node runs one replica on each node: placement.max_per_node cannot "
                             "be more than 1")
        return self

    @model_validator(mode="after")
    def _canary_needs_lb(self) -> ServiceInput:
        if self.update.strategy == "canary" and self.lb is None:
            raise ValueError("update.strategy canary needs lb (traffic is split by HAProxy weights)")
        return self

    def value(self, name: str, doc: Marked, env: dict[str, str | SecretRef], files: Files,
              base_dir: str | None) -> ServiceSpec:
        """The resolved service; `env`, `files` (configs and secret files) come checked by the loader, which
        alone reads files; `doc` gives the lines the service and its volumes were written at."""
        where = ("services", name)
        return ServiceSpec(
            name=name,
            image=self.image,
            command=tuple(self.command) if self.command is not None else None,
            replicas=self.replicas if isinstance(self.replicas, int) else 0,
            per_node=self.replicas == "per-node",
            resources=self.resources.value(),
            port=main_port(self.ports) if self.ports and "port" not in self.model_fields_set else self.port,
            network=self.network,
            ports=tuple(sorted(self.ports.items())) if self.ports else (),
            env=env,
            health=self.health.value() if self.health is not None else None,
            placement=self.placement.value(),
            lb=self.lb.value(base_dir) if self.lb is not None else None,
            volumes=tuple(v.value(doc.line_of((*where, "volumes", i))) for i, v in enumerate(self.volumes)),
            stop_grace_period=self.stop_grace_period,
            update=self.update.value(),
            configs=files[0],
            secret_files=files[1],
            secret_digests=self.secret_digests or {},
            restarts=self.restarts or 0,
            before_deploy=self.before_deploy,
            security=self.security(),
            image_digest=self.image_digest,
            logs=self.logs_value(),
            disk=self.disk or 0,
            source_file=doc.file,
            source_line=doc.line_of(where),
        )

    @staticmethod
    def written(spec: ServiceSpec) -> dict[str, Any]:
        """The service as playbook input (what a user would write), durations as text `parse_duration` reads back
        exactly; secrets appear as `{secret: NAME}` references only."""
        out: dict[str, Any] = {
            "image": spec.image,
            "replicas": "per-node" if spec.per_node else spec.replicas,
            "resources": _Resources.written(spec.resources),
            "port": spec.port,
            "env": {k: ({"secret": v.name} if isinstance(v, SecretRef) else v) for k, v in spec.env.items()},
            "placement": _Placement.written(spec.placement),
            "stop_grace_period": format_duration(spec.stop_grace_period),
            "update": _Update.written(spec.update),
        }
        if spec.command is not None:
            out["command"] = list(spec.command)
        if spec.network != ServiceSpec.network:
            out["network"] = spec.network
        if spec.ports:
            out["ports"] = dict(spec.ports)
        if spec.health is not None:
            out["health"] = _Health.written(spec.health)
        if spec.lb is not None:
            out["lb"] = _Lb.written(spec.lb)
        if spec.volumes:
            out["volumes"] = [VolumeInput.written(v) for v in spec.volumes]
        if spec.configs:
            out["configs"] = [ConfigInput.written(c) for c in spec.configs]
        if spec.secret_files:
            out["secrets"] = [SecretFileInput.written(f) for f in spec.secret_files]
        if spec.secret_digests:
            out["secret_digests"] = dict(sorted(spec.secret_digests.items()))
        if spec.restarts:
            out["restarts"] = spec.restarts
        if spec.before_deploy is not None:
            out["before_deploy"] = spec.before_deploy
        out.update(spec.security.written())
        out.update(ImageInput.image_written(spec.image_digest, spec.logs, spec.disk))
        return out


class PlaybookInput(Strict):
    services: dict[str, ServiceInput] | None = None
    jobs: dict[str, Any] | None = None  # each validated as fleet.config.spec.jobs.JobInput
