"""The files of HAProxy's HTTPS on an lb node, as values: where certificate bundles and the ACME token map live,
the sh script that reports them (certificates only, never a key) and its pure parser, and the runtime commands
that publish an ACME HTTP-01 answer."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.core.errors import ScriptOutputError
from fleet.core.shell import Script
from fleet.node.haproxy.render import check_file, check_name
from fleet.node.paths import DEFAULT

CERT_DIR = f"{DEFAULT.haproxy_dir}/certs"
ACME_MAP = f"{DEFAULT.haproxy_dir}/acme.map"
# The ACME account's key (mode 0600), kept on every lb node so that renewals use the same account.
ACME_ACCOUNT_KEY = f"{DEFAULT.haproxy_dir}/acme-account.key"
MARK = "@@fleet"
# RFC 8555 tokens and key authorizations are base64url (the latter `TOKEN.THUMBPRINT`).
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
_KEYAUTH_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}\.[A-Za-z0-9_-]{16,128}$")


def cert_file(service: str, cert_dir: str = CERT_DIR) -> str:
    """The bundle (certificate chain + key, mode 0600) of a service on an lb node."""
    return f"{check_file(cert_dir, 'cert_dir')}/{check_name(service, 'service name')}.pem"


# The directory is created root's, group HAProxy's (its master reads the bundles in its jail as that user; see
# fleet.node.haproxy.scripts.APPLY), 0750, and the token map (empty) so that HAProxy can start with it; then each
# bundle is reported by name, content hash and its certificate blocks (sed prints only those: the key never leaves
# the node).
_STATE = r"""
set -u
umask 077
mkdir -p "$D" || exit 3
if g=$(id -g "$HUSER" 2>/dev/null); then chgrp "$g" "$D" || exit 3; fi
chmod 0750 "$D" || exit 3
[ -e "$MAP" ] || : >"$MAP" || exit 3
for f in "$D"/*.pem; do
  [ -f "$f" ] || continue
  n=${f##*/}
  echo "@@fleet file ${n%.pem} $(sha256sum <"$f" | cut -d' ' -f1) $(stat -c %a "$f")"
  sed -n '/^-----BEGIN CERTIFICATE-----$/,/^-----END CERTIFICATE-----$/p' "$f"
done
for f in $DROP; do rm -f "$D/$f.pem"; done
echo "@@fleet done"
"""

_READ = r"""
set -u
cat "$F"
"""

_READ_OPTIONAL = r"""
set -u
if [ -f "$F" ]; then echo "@@fleet present"; cat "$F"; else echo "@@fleet absent"; fi
"""


def state_script(cert_dir: str = CERT_DIR, acme_map: str = ACME_MAP, drop: tuple[str, ...] = (),
                 user: str = "haproxy") -> Script:
    """Creates the cert dir and the token map, reports every bundle (see `parse_state`), removes the bundles of
    the services in `drop` (no longer served over HTTPS). `user`: HAProxy's (its group reads the bundles)."""
    names = " ".join(check_name(n, "service name") for n in drop)
    return Script(_STATE, {"D": check_file(cert_dir, "cert_dir"), "MAP": check_file(acme_map, "acme_map"),
                           "DROP": names, "HUSER": check_name(user, "user")}, name="fleet-haproxy-certs")


def read_script(path: str) -> Script:
    """A bundle's whole content (to copy an ACME certificate to an lb node that lacks it; held in memory only)."""
    return Script(_READ, {"F": check_file(path, "cert file")}, name="fleet-haproxy-cert-read")


def read_optional_script(path: str) -> Script:
    """`@@fleet present` and the file's content, or `@@fleet absent` (see `parse_optional`)."""
    return Script(_READ_OPTIONAL, {"F": check_file(path, "file")}, name="fleet-read-optional")


def parse_optional(text: str) -> bytes | None:
    """The content `read_optional_script` printed, None when the file is absent."""
    head, _, rest = text.partition("\n")
    if head == f"{MARK} absent":
        return None
    if head != f"{MARK} present":
        raise ScriptOutputError(f"unexpected reply reading a file: {head[:80]!r}")
    return rest.encode()


@dataclass(frozen=True)
class NodeCert:
    """A bundle on a node: the sha256 of the whole file, its mode (octal text) and its certificates (PEM)."""

    digest: str
    mode: str
    certs: bytes


def parse_state(text: str) -> dict[str, NodeCert]:
    """Per service, its bundle on the node, from `state_script`'s output."""
    out: dict[str, NodeCert] = {}
    current: tuple[str, str, str] | None = None
    lines: list[str] = []
    done = False
    for line in text.splitlines():
        if line.startswith(MARK + " "):
            if current is not None:
                out[current[0]] = NodeCert(current[1], current[2], "".join(lines).encode())
            parts = line.split()
            if parts[1:2] == ["done"]:
                current, done = None, True
                continue
            if parts[1:2] != ["file"] or len(parts) != 5:
                raise ScriptOutputError(f"unexpected line in the certificates report: {line[:80]!r}")
            current, lines = (parts[2], parts[3], parts[4]), []
        elif current is not None:
            lines.append(line + "\n")
    if not done:
        raise ScriptOutputError("the certificates report ended early")
    return out


def add_token(token: str, key_authorization: str, acme_map: str = ACME_MAP) -> str:
    """The runtime command that makes HAProxy answer /.well-known/acme-challenge/TOKEN."""
    if not _TOKEN_RE.fullmatch(token) or not _KEYAUTH_RE.fullmatch(key_authorization):
        raise ValueError("ACME token or key authorization: expected base64url text")
    return f"add map {check_file(acme_map, 'acme_map')} {token} {key_authorization}"


def del_token(token: str, acme_map: str = ACME_MAP) -> str:
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError("ACME token: expected base64url text")
    return f"del map {check_file(acme_map, 'acme_map')} {token}"
