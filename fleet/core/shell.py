"""Quoting at the transport edge: a command is a list of arguments until it is sent."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType


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


@dataclass(frozen=True)
class Script:
    """A POSIX sh script written by fleet itself, plus the variables and arguments it reads.

    The text is trusted (fleet's own); everything that may come from a user travels in `env` or `args`,
    which are quoted once, in `render()`.
    """

    text: str
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    name: str = "fleet-script"

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def render(self) -> str:
        """The command line sent to the node: `ENV=... /bin/sh -c TEXT NAME ARGS...`, all quoted (once per Script:
        a watcher sends the same one to every node each round)."""
        line: str | None = self.__dict__.get("_line")
        if line is None:
            line = with_env(self.env, join(["/bin/sh", "-c", self.text, self.name, *self.args]))
            object.__setattr__(self, "_line", line)
        return line
