"""A playbook's `jobs:` section: containers that run to their end (a migration, a nightly report), validated like
services (`file:line: jobs.NAME.field: message`) into frozen `JobSpec` values.

A job's container is described by a `ServiceSpec` (`JobSpec.run`: image, command, resources, env, secrets,
configs, volumes, placement), so it is placed, given its files and started by the same path as a replica; the
job's own fields say how it runs: `parallelism` containers at once, each tried `retries` more times after a
failure (waiting `backoff`, doubled each time), killed past its `deadline`, and on a `schedule` (cron, in
`timezone`; `catch_up` says whether a slot missed while no controller ran is run late: `last`, or not: `none`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, StrictInt, field_validator, model_validator

from fleet.config.spec.inputs import _Placement, _Resources
from fleet.config.spec.mounts import ConfigInput, SecretFileInput, Strict, VolumeInput
from fleet.config.spec.rules import Argv, Duration, PositiveDuration
from fleet.config.spec.values import (
    IMAGE_RE,
    SERVICE_NAME_RE,
    ConfigSpec,
    Playbook,
    SecretFileSpec,
    SecretRef,
    ServiceSpec,
    format_duration,
)
from fleet.config.yamlmarks import Marked, dotted
from fleet.core import cron
from fleet.core.errors import Problem

JOB_NAME_RE = SERVICE_NAME_RE
MAX_PARALLELISM = 100
MAX_RETRIES = 10


@dataclass(frozen=True)
class JobSpec:
    """One job, resolved: `run` is its container as a service spec (one replica per parallel container)."""

    name: str
    run: ServiceSpec
    parallelism: int = 1
    retries: int = 0
    backoff: float = 1.0
    deadline: float | None = None
    schedule: str | None = None
    timezone: str = "UTC"
    catch_up: Literal["none", "last"] = "last"
    source_file: str = ""
    source_line: int | None = None

    def cron(self) -> cron.Cron | None:
        return cron.parse(self.schedule) if self.schedule else None

    def backoff_before(self, attempt: int) -> float:
        """Seconds to wait before try `attempt` (2, 3, …): `backoff`, doubled each time, at most 10 minutes."""
        return float(min(600.0, self.backoff * 2.0 ** max(0, attempt - 2)))

    def with_service(self, service: ServiceSpec) -> JobSpec:
        """The job as a deploy hook of `service`: the service's image, and its env, configs and secrets under the
        job's own (the job's win where both set one)."""
        env: dict[str, str | SecretRef] = {**service.env, **self.run.env}
        configs = _merged(service.configs, self.run.configs)
        files = _merged(service.secret_files, self.run.secret_files)
        return replace(self, run=replace(self.run, image=service.image, env=env, configs=configs,
                                         secret_files=files))

    def written(self) -> dict[str, Any]:
        """What the fleet's run records keep of the job (no secret values: references only)."""
        out: dict[str, Any] = {"image": self.run.image, "parallelism": self.parallelism, "retries": self.retries,
                               "backoff": format_duration(self.backoff)}
        if self.deadline is not None:
            out["deadline"] = format_duration(self.deadline)
        if self.schedule:
            out.update(schedule=self.schedule, timezone=self.timezone, catch_up=self.catch_up)
        return out


_File = TypeVar("_File", ConfigSpec, SecretFileSpec)


def _merged(base: Sequence[_File], own: Sequence[_File]) -> tuple[_File, ...]:
    mine = {f.target for f in own}
    return tuple(f for f in base if f.target not in mine) + tuple(own)


class JobInput(Strict):
    image: str
    command: Argv | None = None
    resources: _Resources = Field(default_factory=_Resources)
    env: dict[str, Any] = Field(default_factory=dict)
    secrets: list[SecretFileInput] = Field(default_factory=list)
    configs: list[ConfigInput] = Field(default_factory=list)
    volumes: list[VolumeInput] = Field(default_factory=list)
    placement: _Placement = Field(default_factory=_Placement)
    parallelism: Annotated[StrictInt, Field(ge=1, le=MAX_PARALLELISM)] = JobSpec.parallelism
    retries: Annotated[StrictInt, Field(ge=0, le=MAX_RETRIES)] = JobSpec.retries
    backoff: Duration = JobSpec.backoff
    deadline: PositiveDuration | None = None
    stop_grace_period: Duration = ServiceSpec.stop_grace_period
    schedule: str | None = None
    timezone: str = JobSpec.timezone
    catch_up: Literal["none", "last"] = JobSpec.catch_up

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if len(v) > 255 or not IMAGE_RE.match(v):
            raise ValueError(f"expected an image reference such as registry.local/migrate:v1, got {v!r}")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is not None:
            cron.parse(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        cron.zone(v)
        return v

    @model_validator(mode="after")
    def _scheduled(self) -> JobInput:
        if self.schedule is None and ("timezone" in self.model_fields_set or "catch_up" in self.model_fields_set):
            raise ValueError("timezone and catch_up apply to a job with a schedule")
        return self

    def value(self, name: str, doc: Marked, env: Mapping[str, str | SecretRef],
              files: tuple[tuple[ConfigSpec, ...], tuple[SecretFileSpec, ...]]) -> JobSpec:
        where = ("jobs", name)
        run = ServiceSpec(
            name=name, image=self.image, command=tuple(self.command) if self.command is not None else None,
            replicas=self.parallelism, resources=self.resources.value(), env=env, placement=self.placement.value(),
            volumes=tuple(v.value(doc.line_of((*where, "volumes", i))) for i, v in enumerate(self.volumes)),
            stop_grace_period=self.stop_grace_period, configs=files[0], secret_files=files[1],
            source_file=doc.file, source_line=doc.line_of(where))
        return JobSpec(name, run, self.parallelism, self.retries, self.backoff, self.deadline, self.schedule,
                       self.timezone, self.catch_up, doc.file, doc.line_of(where))


def check_jobs(playbooks: Sequence[Playbook]) -> list[Problem]:
    """Over all playbooks: a job defined twice, or named like a service (their containers, files and records
    would mix), and a service's `before_deploy` that names no job."""
    problems: list[Problem] = []
    jobs: dict[str, JobSpec] = {}
    services = {s.name for pb in playbooks for s in pb.services}
    for pb in playbooks:
        for j in pb.jobs:
            where = dotted(("jobs", j.name))
            if (first := jobs.get(j.name)) is not None:
                problems.append(Problem(j.source_file, j.source_line, where, f"job {j.name!r} is already defined "
                                                                             f"at {first.source_file}:"
                                                                             f"{first.source_line}"))
            jobs.setdefault(j.name, j)
            if j.name in services:
                problems.append(Problem(j.source_file, j.source_line, where,
                                        f"{j.name!r} is also a service's name; a job needs a name of its own"))
    for pb in playbooks:
        for s in pb.services:
            if s.before_deploy is not None and s.before_deploy not in jobs:
                known = ", ".join(sorted(jobs)) or "none"
                problems.append(Problem(s.source_file, s.source_line, dotted(("services", s.name, "before_deploy")),
                                        f"no job {s.before_deploy!r} in these playbooks (jobs: {known})"))
    return problems


def jobs_of(playbooks: Sequence[Playbook]) -> dict[str, JobSpec]:
    return {j.name: j for pb in playbooks for j in pb.jobs}
