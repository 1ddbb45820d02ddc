"""The HAProxy config each lb node runs, as `fleet lb show` prints it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LbConfig:
    """The config an lb node runs (masked; None when it has none yet) or why it could not be read."""

    node: str
    text: str | None
    error: str | None = None
