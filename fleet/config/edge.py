"""A service's edge settings in a playbook (`lb.hosts`, `lb.paths`, `lb.tls`) and the PEM checks behind them:
certificates and keys read from the user's files, a certificate matched to its key, its names and expiry.

A key is only ever held in memory here; nothing in this module prints, logs or raises with key material."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from fleet.core.edge import DEFAULT_RENEW_BEFORE, AcmeSettings, EdgeSettings, check_host_name
from fleet.core.units import DAY, parse_duration

SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A URL path prefix for `lb.paths`: what HAProxy's `path_beg` compares, verbatim in the config line.
PATH_PREFIX_RE = re.compile(r"^/(?:[A-Za-z0-9._~!*+,;=:@/-]|%[0-9A-Fa-f]{2}){0,255}$")
MAX_HSTS = 10 * 365 * 86400
MAX_PEM_BYTES = 256 * 1024
_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)
_KEY_BLOCK = re.compile(rb"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----.+?-----END (?:RSA |EC |ENCRYPTED )?"
                        rb"PRIVATE KEY-----\s*", re.S)


@dataclass(frozen=True)
class TlsSpec:
    """Where a host-routed service's certificate comes from: files on the controller (`cert_file`, `key_file`,
    absolute), a keyring secret holding the PEM chain and key (`secret`), or ACME (`acme`); plus the HTTP to
    HTTPS redirect and the HSTS max-age (seconds, None: no header)."""

    cert_file: str | None = None
    key_file: str | None = None
    secret: str | None = None
    acme: bool = False
    redirect: bool = True
    hsts: int | None = None


def _host(value: str) -> str:
    return check_host_name(value)


def _prefix(value: str) -> str:
    if not PATH_PREFIX_RE.fullmatch(value):
        raise ValueError(f"expected a URL path prefix such as /api (no spaces, quotes, '#' or query), got {value!r}")
    return value


def _secret_name(value: str) -> str:
    if not SECRET_NAME_RE.fullmatch(value):
        raise ValueError(f"invalid secret name {value!r} (letters, digits, . _ -)")
    return value


HostName = Annotated[str, AfterValidator(_host)]
PathPrefix = Annotated[str, AfterValidator(_prefix)]


class TlsModel(BaseModel):
    """`lb.tls` as written: exactly one of cert + key, secret, acme: true."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cert: str | None = None
    key: str | None = None
    secret: Annotated[str, AfterValidator(_secret_name)] | None = None
    acme: StrictBool = False
    redirect: StrictBool = True
    hsts: Annotated[StrictInt, Field(ge=0, le=MAX_HSTS)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TlsModel:
        given = [name for name, on in (("cert", self.cert is not None or self.key is not None),
                                       ("secret", self.secret is not None), ("acme", self.acme)) if on]
        if len(given) != 1:
            raise ValueError("give exactly one of cert: FILE with key: FILE, secret: NAME (PEM certificate chain "
                             "and key) or acme: true")
        if given == ["cert"] and (self.cert is None or self.key is None):
            raise ValueError("cert: FILE needs key: FILE too")
        for path in (self.cert, self.key):
            if path is not None and (not path or "\x00" in path):
                raise ValueError(f"expected a file path, got {path!r}")
        return self


def hosts_problem(hosts: list[str]) -> str | None:
    """A host listed twice in one service."""
    seen = set()
    for host in hosts:
        if host in seen:
            return f"host {host!r} is listed twice"
        seen.add(host)
    return None


def tls_spec(model: TlsModel, base_dir: str | None) -> TlsSpec:
    """The resolved value: file paths made absolute against the playbook's directory."""
    def absolute(path: str | None) -> str | None:
        if path is None or base_dir is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(base_dir, path))

    return TlsSpec(absolute(model.cert), absolute(model.key), model.secret, model.acme, model.redirect, model.hsts)


# ---- the inventory's `edge:` ----------------------------------------------------------------------------


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, got {port}")
    return port


def _directory(url: str) -> str:
    if not re.fullmatch(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%-]*)?$", url):
        raise ValueError(f"expected the https:// URL of an ACME directory, got {url!r}")
    return url


def _renew_before(value: object) -> float:
    """`30d`, `12h`, `90m` or seconds, up to 3650d."""
    return parse_duration(value, maximum=3650 * DAY)


class AcmeModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    directory: Annotated[str, AfterValidator(_directory)]
    email: str | None = None
    ca_file: str | None = None
    renew_before: Any = DEFAULT_RENEW_BEFORE

    @model_validator(mode="after")
    def _check(self) -> AcmeModel:
        _renew_before(self.renew_before)
        if self.email is not None and not re.fullmatch(r"^[^@\s]+@[^@\s]+$", self.email):
            raise ValueError(f"email: expected an address, got {self.email!r}")
        return self


class EdgeModel(BaseModel):
    """The inventory's `edge:` section as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    http_port: Annotated[StrictInt, AfterValidator(_port)] = 80
    https_port: Annotated[StrictInt, AfterValidator(_port)] = 443
    acme: AcmeModel | None = None
    stats_password: Annotated[str, AfterValidator(_secret_name)] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> EdgeModel:
        if self.http_port == self.https_port:
            raise ValueError(f"http_port and https_port must differ (both {self.http_port})")
        return self


def edge_settings(model: EdgeModel, base_dir: str) -> EdgeSettings:
    acme = None
    if model.acme is not None:
        a = model.acme
        ca = os.path.normpath(os.path.join(base_dir, a.ca_file)) if a.ca_file else None
        acme = AcmeSettings(a.directory, a.email, ca, _renew_before(a.renew_before))
    return EdgeSettings(model.http_port, model.https_port, acme, model.stats_password)


# ---- PEM ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    """The public facts of a certificate: sha256 fingerprint (hex), DNS names, validity end (UTC epoch)."""

    fingerprint: str
    names: tuple[str, ...]
    not_after: float


def read_pem(path: str, what: str) -> bytes:
    """A PEM file's bytes; ValueError with a message fit for the user."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"no such {what} file: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"the {what} file {path} is over {MAX_PEM_BYTES} bytes")
    return data


def cert_info(pem: bytes) -> CertInfo:
    """The first certificate in `pem` (ValueError when there is none)."""
    blocks = _CERT_BLOCK.findall(pem)
    if not blocks:
        raise ValueError("no PEM certificate found")
    try:
        cert = x509.load_pem_x509_certificate(blocks[0])
    except ValueError:
        raise ValueError("the certificate is not valid PEM") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    end = cert.not_valid_after_utc.replace(tzinfo=datetime.UTC)
    return CertInfo(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(), names,
                    end.timestamp())


def certificates_only(pem: bytes) -> bytes:
    """The certificate blocks of a bundle, without its key."""
    return b"".join(_CERT_BLOCK.findall(pem))


def _load_key(pem: bytes) -> PrivateKeyTypes:
    blocks = _KEY_BLOCK.findall(pem)
    if not blocks:
        raise ValueError("no PEM private key found")
    try:
        return serialization.load_pem_private_key(blocks[0], password=None)
    except (ValueError, TypeError):
        # The library's message may quote parts of the input: say only what is wrong.
        raise ValueError("the private key is not a valid unencrypted PEM key") from None


def bundle(cert_pem: bytes, key_pem: bytes) -> bytes:
    """The HAProxy `crt` file: certificate chain then key; ValueError when the key is not the certificate's."""
    key = _load_key(key_pem)
    certs = certificates_only(cert_pem)
    if not certs:
        raise ValueError("no PEM certificate found")
    cert = x509.load_pem_x509_certificate(_CERT_BLOCK.findall(certs)[0])
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ValueError("the certificate does not match its key (their public keys differ)")
    key_out = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certs + key_out


def split_bundle(pem: bytes) -> tuple[bytes, bytes]:
    """(certificates, key) of one PEM text holding both (a keyring secret)."""
    keys = _KEY_BLOCK.findall(pem)
    return certificates_only(pem), keys[0] if keys else b""


def cover(names: tuple[str, ...], host: str) -> bool:
    """Whether a certificate for `names` is valid for `host` (exact or one-label wildcard)."""
    for name in names:
        name = name.lower()
        if name == host or (name.startswith("*.") and host.split(".", 1)[-1] == name[2:] and "." in host):
            return True
    return False
