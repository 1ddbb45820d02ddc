"""What the controller stamps on a service's image (`image_digest`: the digest its tag pointed to when `apply`
resolved it, fleet.engine.digests), as the playbook schema reads it back from the history; a base class of
`ServiceInput`, like fleet.config.spec.security's."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator

DIGEST_REF_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image_digest: str | None = None

    @field_validator("image_digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not DIGEST_REF_RE.match(v):
            raise ValueError(f"expected sha256:<64 hex digits>, got {v!r}")
        return v
