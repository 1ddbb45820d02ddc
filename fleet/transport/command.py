"""A command as the transport handles it: quoted once for the remote shell (through `sudo -n` on a node whose
inventory says `become`), named in errors, its output decoded; and the words that name a node's SSH endpoint and
a lost session in those errors.
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


def become_argv(node: Node) -> list[str]:
    """What goes before every command on `node`: nothing, or `sudo -n --` (`sudo -n -u USER --` for another
    become user). `-n`: sudo never prompts; a password it would need is an error (see `sudo_refused`)."""
    if not node.become:
        return []
    return ["sudo", "-n", "--"] if node.become_user == "root" else ["sudo", "-n", "-u", node.become_user, "--"]


def script_argv(script: Script) -> list[str]:
    """A script as one argument list: `env NAME=VALUE... /bin/sh -c TEXT NAME ARGS...` (sudo resets the
    environment, so the variables go after it, through env(1))."""
    for name in script.env:
        if not name.isidentifier():
            raise ValueError(f"not a shell variable name: {name!r}")
    env = [f"{name}={value}" for name, value in script.env.items()]
    return [*(["env", *env] if env else []), "/bin/sh", "-c", script.text, script.name, *script.args]


def line_for(node: Node, command: Command) -> str:
    """The one command line sent to `node` for `command`: quoted once, run through `sudo -n` when the node says
    `become`. The pool and the streams send nothing else; stdin is passed through as it is (secrets stay there)."""
    prefix = become_argv(node)
    if not prefix:
        return render(command)
    if isinstance(command, str):
        raise TypeError("a command is a list of arguments or a Script, not a string")
    argv = script_argv(command) if isinstance(command, Script) else list(command)
    return join([*prefix, *argv])


def sudoers_line(node: Node) -> str:
    """The sudoers line that lets fleet's login user on `node` run commands as its become user without a password
    (the widest one; a narrower command list works as long as it covers what fleet runs)."""
    return f"{node.user} ALL=({node.become_user}) NOPASSWD: ALL"


def sudo_refused(node: Node, exit_status: int | None, stderr: str) -> str:
    """Why `sudo -n` did not run a command on `node`, and what to change there, as an error message."""
    said = " ".join(stderr.split())[:200] or f"exit status {exit_status}"
    if exit_status == 127 or "not found" in said:
        return (f"{where(node)}: `become` is set but sudo is not installed on {node.name} ({said}): install it "
                f"(apt-get install sudo) and add `{sudoers_line(node)}` to /etc/sudoers.d/fleet; nothing was run")
    return (f"{where(node)}: `become` is set but `sudo -n` refused to run commands as {node.become_user} "
            f"({said}): add the line `{sudoers_line(node)}` to /etc/sudoers.d/fleet on {node.name} "
            f"(visudo -f /etc/sudoers.d/fleet), or a narrower one; nothing was run")


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
