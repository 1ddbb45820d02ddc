"""The playbook's `lb.ports`: a service's other named container ports, each on its own lb port with its own mode
and check (`lb: {port: 8080, ports: {metrics: {port: 9100, mode: tcp}}}`), as written and resolved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from fleet.config.spec.mounts import Strict
from fleet.config.spec.rules import LbPort, PositiveDuration
from fleet.config.spec.values import HTTP_PATH_RE, HealthSpec, LbPortSpec, format_duration
from fleet.core.ports import MAX_OTHER_NAMED_PORTS


class CheckInput(Strict):
    """An HTTP GET of `http` (200-399 passes) or a TCP connect (`tcp: true`), and how often and how strictly it is
    judged: the fields a service's `health` and an lb port's share."""

    http: str | None = None
    tcp: StrictBool | None = None
    interval: PositiveDuration = HealthSpec.interval
    timeout: PositiveDuration = HealthSpec.timeout
    failure_threshold: Annotated[StrictInt, Field(ge=1, le=100)] = HealthSpec.failure_threshold
    success_threshold: Annotated[StrictInt, Field(ge=1, le=100)] = HealthSpec.success_threshold

    @field_validator("http")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 256 or not HTTP_PATH_RE.match(v)):
            raise ValueError(f"expected a URL path such as /healthz (no spaces, quotes or '#'), got {v!r}")
        return v


class LbPortHealthInput(CheckInput):
    """HAProxy's check of one lb port: http or tcp (HAProxy cannot run a command in a container)."""

    @model_validator(mode="after")
    def _one_kind(self) -> LbPortHealthInput:
        if (self.http is None) == (not self.tcp):
            raise ValueError("give exactly one of http: PATH or tcp: true (HAProxy checks an lb port itself: "
                             "exec belongs in the service's health)")
        return self

    def value(self) -> HealthSpec:
        return HealthSpec("http" if self.http else "tcp", self.http, (), self.interval, self.timeout,
                          self.failure_threshold, self.success_threshold)

    @staticmethod
    def written(h: HealthSpec) -> dict[str, Any]:
        return {**({"http": h.path} if h.kind == "http" else {"tcp": True}),
                "interval": format_duration(h.interval), "timeout": format_duration(h.timeout),
                "failure_threshold": h.failure_threshold, "success_threshold": h.success_threshold}


class LbPortInput(Strict):
    port: LbPort
    mode: Literal["http", "tcp"] = LbPortSpec.mode
    health: LbPortHealthInput | None = None

    def value(self, name: str) -> LbPortSpec:
        return LbPortSpec(name, self.port, self.mode, self.health.value() if self.health is not None else None)

    @staticmethod
    def written(p: LbPortSpec) -> dict[str, Any]:
        out: dict[str, Any] = {"port": p.port, "mode": p.mode}
        if p.health is not None:
            out["health"] = LbPortHealthInput.written(p.health)
        return out


def lb_ports_problem(lb_port: int | None, ports: Mapping[str, LbPortInput]) -> str | None:
    """Why the `lb.ports` of one service cannot be (an lb port given twice), or None."""
    seen: dict[int, str] = {} if lb_port is None else {lb_port: "lb.port"}
    for name, p in ports.items():
        if (other := seen.get(p.port)) is not None:
            return f"lb.ports.{name}.port: {p.port} is already used by {other}"
        seen[p.port] = f"lb.ports.{name}.port"
    return None


def named_ports_problem(lb_ports: Mapping[str, LbPortInput], named: Mapping[str, int] | None, routed: int,
                        network: str) -> str | None:
    """Why a service's `lb.ports` do not fit its named `ports` (`routed`: the container port `lb.port` serves),
    or why it has more named ports than fleet maps, or None."""
    others = [n for n, p in (named or {}).items() if p != routed]
    if network == "bridge" and len(others) > MAX_OTHER_NAMED_PORTS:
        return (f"ports: at most {MAX_OTHER_NAMED_PORTS + 1} named ports (the routed one and "
                f"{MAX_OTHER_NAMED_PORTS} others, each mapped to a host port of its own), got {len(named or {})}")
    for name in lb_ports:
        if network != "bridge":
            return (f"lb.ports.{name}: needs network: bridge (on the host network a replica has only its host "
                    "port, $PORT)")
        if name not in (named or {}):
            known = ", ".join(sorted(named or {})) or "none: add ports: {NAME: PORT}"
            return f"lb.ports.{name}: no named port {name!r} in ports (named ports: {known})"
        if name not in others:
            return (f"lb.ports.{name}: {name} is the routed port ({routed}), served on lb.port; lb.ports names "
                    "the service's other ports")
    return None
