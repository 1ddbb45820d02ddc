"""Name and label rules shared by inventories and playbooks (one place, no import cycle), and the resolution of
paths a user wrote relative to their file."""

from __future__ import annotations

import ipaddress
import os
import re

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A DNS host name (RFC 1123 labels; `_` tolerated, as resolvers and /etc/hosts do), at most 253 characters.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME_RE = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,126}$")
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9._:/@+-]{0,128}$")
ROLES = ("worker", "lb", "storage", "record")


def check_labels(v: dict[str, object]) -> dict[str, str]:
    out = {}
    for key, value in v.items():
        if not LABEL_KEY_RE.match(str(key)):
            raise ValueError(f"invalid label key {key!r} (letters, digits, . _ / -)")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if not LABEL_VALUE_RE.match(text):
            raise ValueError(f"invalid value {text!r} for label {key!r}")
        out[str(key)] = text
    return out


def check_address(value: object) -> str:
    """A node's address as written: an IPv4/IPv6 literal or a host name (resolved later, where an IP is needed).

    A name whose last label is all digits (`10.0.0`, `300.1.1.1`) is refused: resolvers would read it as a
    number-and-dots IPv4 form, not look it up."""
    text = value if isinstance(value, str) else ""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if HOST_NAME_RE.match(text) and not text.rstrip(".").rsplit(".", 1)[-1].isdigit():
        return text
    raise ValueError(f"expected an IP address or a host name, got {value!r}")


def resolve_path(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def key_files(key: str | list[str] | None, base_dir: str) -> tuple[str, ...]:
    if key is None:
        return ()
    keys = [key] if isinstance(key, str) else key
    return tuple(resolve_path(k, base_dir) for k in keys)
