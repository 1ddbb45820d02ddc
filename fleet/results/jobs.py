"""A job's runs as the fleet records them (`/fleet/jobs/NAME/runs/ID`): what `fleet job run` returns and `fleet job
ls` lists; pure values, read back from JSON with every field checked (`from_doc`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RunStatus = Literal["running", "succeeded", "failed", "missed"]
STATUSES = ("running", "succeeded", "failed", "missed")


@dataclass(frozen=True)
class Attempt:
    """One try of one of the run's containers: where it ran, its log file there, how it ended."""

    number: int
    index: int  # which of the job's `parallelism` containers
    node: str
    container: str
    log: str
    started_at: float
    finished_at: float | None = None
    exit_status: int | None = None
    reason: str = ""  # why it failed beyond its exit status (deadline, start failure)


@dataclass(frozen=True)
class JobRun:
    """One run of a job: who started it and why (`trigger`: manual, schedule, before_deploy), the image it ran,
    its attempts, and how it ended; a scheduled slot that was not run is recorded `missed`."""

    job: str
    run: str
    trigger: str
    who: str
    command: str
    image: str
    started_at: float
    status: RunStatus = "running"
    finished_at: float | None = None
    exit_status: int | None = None
    reason: str = ""
    slot: str | None = None
    service: str | None = None  # a deploy hook's service and the revision it ran for
    revision: int | None = None
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["attempts"] = [asdict(a) for a in self.attempts]
        return doc


def from_doc(doc: Mapping[str, Any]) -> JobRun:
    """A run from its record; ValueError says what is wrong with it."""
    try:
        attempts = tuple(Attempt(**a) for a in doc.get("attempts", []))
        run = JobRun(**{k: v for k, v in doc.items() if k != "attempts"}, attempts=attempts)
    except TypeError as exc:
        raise ValueError(f"not a job run record: {exc}") from exc
    if run.status not in STATUSES:
        raise ValueError(f"status: expected one of {', '.join(STATUSES)}, got {run.status!r}")
    return run
