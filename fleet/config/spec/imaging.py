"""What the container runtime keeps of a service besides the container: the digest the controller stamps on its
image (`image_digest`: what its tag pointed to when `apply` resolved it, fleet.engine.digests) and how its log
files are rotated (`logs`). Values and the playbook schema, a base class of `ServiceInput` like
fleet.config.spec.security's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, field_validator

from fleet.core.units import parse_memory

DIGEST_REF_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MIN_LOG_SIZE = 64 * 1024
MAX_LOG_SIZE = 1 << 40


@dataclass(frozen=True)
class LogsSpec:
    """A container's log file is rotated once past `max_size` bytes, keeping `max_files` files in all (the live
    one included): Docker's json-file defaults, smaller (10 MiB, 3)."""

    max_size: int = 10 * 1024 * 1024
    max_files: int = 3

    def hash_input(self) -> dict[str, Any]:
        """Nothing at the defaults (a service without `logs:` keeps its hash); else both: the settings travel with
        the container (a file beside its log), so a change starts new containers."""
        return {} if self == LogsSpec() else {"max_size": self.max_size, "max_files": self.max_files}


def _log_size(value: object) -> int:
    size = parse_memory(value)
    if not MIN_LOG_SIZE <= size <= MAX_LOG_SIZE:
        raise ValueError(f"expected a size from 64KiB to 1TiB, got {value!r}")
    return size


def _disk(value: object) -> int:
    size = parse_memory(value)
    if not 0 < size <= 1 << 50:
        raise ValueError(f"expected a size such as 2GiB, got {value!r}")
    return size


class _Logs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_size: Annotated[int, BeforeValidator(_log_size)] = LogsSpec.max_size
    max_files: Annotated[StrictInt, Field(ge=1, le=100)] = LogsSpec.max_files


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image_digest: str | None = None
    logs: _Logs | None = None
    # Free disk a node must have where containers live to take a replica (placement only, not the hash).
    disk: Annotated[int, BeforeValidator(_disk)] | None = None

    @field_validator("image_digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not DIGEST_REF_RE.match(v):
            raise ValueError(f"expected sha256:<64 hex digits>, got {v!r}")
        return v

    def logs_value(self) -> LogsSpec:
        return LogsSpec(self.logs.max_size, self.logs.max_files) if self.logs is not None else LogsSpec()

    @staticmethod
    def image_written(digest: str | None, logs: LogsSpec, disk: int) -> dict[str, Any]:
        """The stamped digest, the log settings that are not the defaults and the disk request, as playbook input."""
        out: dict[str, Any] = {"image_digest": digest} if digest else {}
        if disk:
            out["disk"] = disk
        if logs != LogsSpec():
            out["logs"] = {"max_size": logs.max_size, "max_files": logs.max_files}
        return out
