"""A command as the transport handles it: quoted once for the remote shell, named in errors, its output decoded;
and the words that name a node's SSH endpoint and a lost session in those errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from fleet.core.model import Node
from fleet.core.shell import Script, join

Command: TypeAlias = "Sequence[str] | Script"


def render(command: Command) -> str:
    """Quote a command for the remote shell; a bare string is refused so nothing reaches it unquoted."""
    if isinstance(command, Script):
        return command.render()
    if isinstance(command, str):
        raise TypeError("a command is a list of arguments or a Script, not a string")
    return join(command)


def describe(command: Command) -> list[str] | str:
    """How a command is named in errors: the argv, or the script's name."""
    return f"<script {command.name}>" if isinstance(command, Script) else list(command)


def decode(data: bytes | str | None) -> str:
    """Remote output as text (undecodable bytes replaced)."""
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def where(node: Node) -> str:
    """The node's SSH endpoint, as errors name it."""
    return f"{node.user}@{node.address}:{node.port}"


def short(command: Command) -> str:
    """A command in at most 80 characters, for error messages."""
    text = command.name if isinstance(command, Script) else " ".join(command)
    return text if len(text) <= 80 else text[:77] + "..."


def lost(node: Node, command: Command) -> str:
    return f"{where(node)}: connection lost before `{short(command)}` exited"
