"""Logging in as one user and acting as another (`become`): the rules an inventory's become settings follow, and
the Ansible connection variables fleet refuses by name rather than ignore.

fleet runs every command of a `become` node through `sudo -n` (fleet.transport.command): sudo only, never with a
password, so an inventory that asks for another method, a login or sudo password, or a connection other than
SSH is refused at its line, not half-honoured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from fleet.core.errors import Problem

# A POSIX user name as useradd accepts it (a trailing $ for machine accounts), at most 32 characters.
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}[$]?$")

_TRUE = ("true", "yes", "on", "1", "y", "t")
_FALSE = ("false", "no", "off", "0", "n", "f")


def check_user(value: object) -> str:
    """A user name to log in as or become; ValueError naming what is wrong."""
    if not isinstance(value, str) or not USER_RE.match(value):
        raise ValueError(f"expected a user name (a-z 0-9 _ -, starting with a letter or _), got {value!r}")
    return value


def ansible_bool(value: object) -> bool:
    """Ansible's reading of a boolean variable (YAML true/false, or yes/no/on/off/1/0 in any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


_KEYS_ONLY = "fleet logs in with SSH keys only: set ansible_ssh_private_key_file (or load the key in ssh-agent)"
_NO_SUDO_PASSWORD = ("fleet runs `sudo -n`, which never asks for a password: give the login user passwordless "
                     "sudo instead (`{user} ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/fleet, or narrower)")
# Variables fleet cannot honour, and what to do instead.
REFUSED = {
    "ansible_password": _KEYS_ONLY,
    "ansible_ssh_pass": _KEYS_ONLY,
    "ansible_ssh_password": _KEYS_ONLY,
    "ansible_become_password": _NO_SUDO_PASSWORD,
    "ansible_become_pass": _NO_SUDO_PASSWORD,
    "ansible_sudo_pass": _NO_SUDO_PASSWORD,
}


@dataclass(frozen=True)
class Become:
    """What an inventory says about acting as another user on one node."""

    become: bool = False
    user: str = "root"


def ansible_become(host: str, variables: Mapping[str, object], lines: Mapping[str, int | None], file: str,
                   login_user: str) -> tuple[Become, list[Problem]]:
    """An Ansible host's become settings (`ansible_become`, `ansible_become_user`, `ansible_become_method`), and
    a problem for each variable fleet refuses (`REFUSED`, `ansible_connection` other than ssh, a become method
    other than sudo), each at the line that sets it."""
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(file, lines.get(key), f"{host}.{key}", message))

    for key, why in REFUSED.items():
        if key in variables:
            problem(key, f"not supported: {why.format(user=login_user)}")
    connection = variables.get("ansible_connection")
    if connection is not None and str(connection) != "ssh":
        problem("ansible_connection", f"not supported: {connection!r}; fleet reaches every node over SSH "
                                      "(ansible_connection=ssh)")
    method = variables.get("ansible_become_method")
    if method is not None and str(method) != "sudo":
        problem("ansible_become_method", f"not supported: {method!r}; fleet becomes another user with sudo only")
    become = False
    if "ansible_become" in variables:
        try:
            become = ansible_bool(variables["ansible_become"])
        except ValueError as exc:
            problem("ansible_become", str(exc))
    user = "root"
    if "ansible_become_user" in variables:
        try:
            user = check_user(str(variables["ansible_become_user"]))
        except ValueError as exc:
            problem("ansible_become_user", str(exc))
    return Become(become, user), problems
