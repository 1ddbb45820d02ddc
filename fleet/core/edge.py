"""The edge of the fleet as values: the inventory's settings for the shared HTTP/HTTPS ports, ACME and the
stats page, and the rule for host names. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# A DNS name as HAProxy will match it against the Host header and SNI: lower-case labels of letters, digits and
# hyphens (no leading or trailing hyphen), at least two labels, at most 253 characters; no wildcard, no port.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOST_RE = re.compile(rf"^(?:{_LABEL}\.)+{_LABEL}$")
DEFAULT_RENEW_BEFORE = 30 * 86400.0


def check_host_name(value: object) -> str:
    """A host name for `lb.hosts`, lower-cased; ValueError saying why otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"expected a DNS host name such as shop.example.com, got {value!r}")
    host = value.lower()
    if len(host) > 253 or not HOST_RE.fullmatch(host) or host.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"expected a DNS host name such as shop.example.com (letters, digits, - and dots, "
                         f"at least two labels, no port or wildcard), got {value!r}")
    return host


@dataclass(frozen=True)
class AcmeSettings:
    """Where automatic certificates come from: an RFC 8555 directory, the account's contact, and how long before
    expiry a certificate is renewed. `ca_file` trusts a private CA for the directory's HTTPS (test servers)."""

    directory: str
    email: str | None = None
    ca_file: str | None = None
    renew_before: float = DEFAULT_RENEW_BEFORE


@dataclass(frozen=True)
class EdgeSettings:
    """The inventory's `edge:` section: the shared ports host-routed services use on every lb node, ACME, and
    the stats page's password (a keyring secret's name; without one the page listens on 127.0.0.1 only)."""

    http_port: int = 80
    https_port: int = 443
    acme: AcmeSettings | None = None
    stats_password_secret: str | None = None


def edge_to_json(edge: EdgeSettings) -> dict[str, Any]:
    a = edge.acme
    return {"http_port": edge.http_port, "https_port": edge.https_port, "stats": edge.stats_password_secret,
            "acme": None if a is None else [a.directory, a.email, a.ca_file, a.renew_before]}


def edge_from_json(doc: dict[str, Any]) -> EdgeSettings:
    a = doc["acme"]
    return EdgeSettings(int(doc["http_port"]), int(doc["https_port"]),
                        None if a is None else AcmeSettings(a[0], a[1], a[2], float(a[3])), doc["stats"])
