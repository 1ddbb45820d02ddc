"""Which known_hosts files check a node's host key: the inventory's `known_hosts` when it pins one, else
~/.ssh/known_hosts plus the files ~/.ssh/config names for the node (read with asyncssh's own config reader).
A config that turns checking off for the node (`UserKnownHostsFile none` or `/dev/null`,
`StrictHostKeyChecking no`) is refused, never followed; `~` is read at connect time, not at import.
"""

from __future__ import annotations

import getpass
import inspect
import os
from dataclasses import dataclass
from typing import Any

from asyncssh.config import SSHClientConfig, SSHConfig

from fleet.core.errors import HostKeyError
from fleet.core.model import Node

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SSH_CONFIG = "~/.ssh/config"
# A known_hosts file that is always empty: naming only it switches checking off, as `none` does.
DISCARD = frozenset({"/dev/null"})
CHECKING_OFF = frozenset({"no", "off"})


class _HostKeyConfig(SSHClientConfig):
    """asyncssh's client config reader (Host, Match, Include; the first value wins), plus what it leaves out and
    OpenSSH does: StrictHostKeyChecking, and %-tokens (%d, %h, %p, %u…) in the known_hosts file names."""

    _percent_expand = SSHClientConfig._percent_expand | {"UserKnownHostsFile", "GlobalKnownHostsFile"}
    # Read-only, like the base's; not a ClassVar: asyncssh annotates it as an attribute (mypy would refuse).
    _handlers = dict(SSHClientConfig._handlers,  # noqa: RUF012
                     stricthostkeychecking=("StrictHostKeyChecking", SSHConfig._set_string))


# asyncssh after 2.18.0 put `canonical, final` (Match canonical/final) ahead of the client's own arguments; pyproject
# allows 2.16, whose reader takes (last_config, paths, reload, local_user, user, host, port).
_MATCH_STATE: tuple[bool, ...] = (
    (False, False) if "canonical" in inspect.signature(SSHClientConfig.__init__).parameters else ())


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def keyscan(node: Node, file: str) -> str:
    """The command that fetches the node's host key into `file` (its fingerprint is then the user's to check)."""
    return f"ssh-keyscan -p {node.port} {node.address} >> {file}"


@dataclass(frozen=True)
class HostKeyFiles:
    """The known_hosts files that check one node's key, as the user wrote them (`~` unexpanded); a new key
    belongs in the first. `pinned`: the inventory named the file (it must exist); else missing files are
    skipped, as OpenSSH skips them. `strict`: ~/.ssh/config's StrictHostKeyChecking for the node, lower case."""

    files: tuple[str, ...]
    pinned: bool
    strict: str | None = None

    def unknown_message(self, node: Node) -> str:
        """Why an unknown key is refused, and how to pin it."""
        where = ", ".join(self.files)
        message = (
            f"host key for {node.address} (port {node.port}) is not in {where}; refusing to connect "
            f"(pin it with `{keyscan(node, self.files[0])}`, then check its fingerprint"
        )
        if not self.pinned:
            message += ", or name a file that pins it in the inventory's `known_hosts`"
        if self.strict == "accept-new":
            message += "; fleet does not add new keys as StrictHostKeyChecking accept-new in ~/.ssh/config would"
        return message + ")"


def _config_options(node: Node) -> dict[str, Any]:
    path = os.path.expanduser(SSH_CONFIG)
    if not os.access(path, os.R_OK):
        return {}
    try:
        config = _HostKeyConfig.load(None, [path], False, *_MATCH_STATE, _local_user(), node.user, node.address,
                                     node.port)
    except (OSError, ValueError) as exc:  # asyncssh's ConfigParseError is a ValueError
        raise HostKeyError(
            node.name, f"cannot read {SSH_CONFIG} to find the known_hosts files for {node.address}: {exc}; "
            "refusing to connect"
        ) from exc
    return {name: config.get(name) for name in ("UserKnownHostsFile", "GlobalKnownHostsFile",
                                                "StrictHostKeyChecking")}


def host_key_files(node: Node) -> HostKeyFiles:
    """The files that check `node`'s host key; raises HostKeyError when ~/.ssh/config turns checking off for it
    (only consulted when the inventory pins no file: a pin is the user's explicit choice and wins)."""
    if node.known_hosts:
        return HostKeyFiles((node.known_hosts,), pinned=True)
    options = _config_options(node)
    user: list[str] | None = options.get("UserKnownHostsFile")  # None: not set; []: `none`
    strict = options.get("StrictHostKeyChecking")
    strict = strict.lower() if isinstance(strict, str) else None
    off = None
    if user is not None and all(os.path.expanduser(f) in DISCARD for f in user):
        off = f"UserKnownHostsFile {' '.join(user) or 'none'}"
    elif strict in CHECKING_OFF:
        off = f"StrictHostKeyChecking {strict}"
    if off is not None:
        raise HostKeyError(
            node.name,
            f"{SSH_CONFIG} turns host key checking off for {node.address} ({off}); fleet always checks host "
            f"keys and refuses to connect. Pin the key with `{keyscan(node, DEFAULT_KNOWN_HOSTS)}` (check its "
            "fingerprint) and remove that setting for this host, or name a file that pins it in the "
            "inventory's `known_hosts`",
        )
    files = [DEFAULT_KNOWN_HOSTS, *(user or []), *(options.get("GlobalKnownHostsFile") or [])]
    kept: dict[str, str] = {}  # one file named twice (`~/x` and `/home/u/x`) is read once
    for file in files:
        full = os.path.expanduser(file)
        if full not in DISCARD:
            kept.setdefault(full, file)
    return HostKeyFiles(tuple(kept.values()), pinned=False, strict=strict)
