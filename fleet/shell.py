"""Quoting at the transport edge: a command is a list of arguments until it is sent."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence


def join(argv: Sequence[str]) -> str:
    """Quote an argument list into one POSIX shell command line."""
    if not argv:
        raise ValueError("empty command")
    return shlex.join(argv)


def with_env(env: Mapping[str, str], script: str) -> str:
    """Prefix a shell script with quoted variable assignments (names are checked, values quoted)."""
    parts = []
    for name, value in env.items():
        if not name.isidentifier():
            raise ValueError(f"not a shell variable name: {name!r}")
        parts.append(f"{name}={shlex.quote(value)}")
    return " ".join([*parts, script]) if parts else script
