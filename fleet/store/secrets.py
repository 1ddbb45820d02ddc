"""This controller's age identity (its private key in the OS keyring, or a 0600 file for a headless controller), a
value type for secrets that cannot leak by accident, and the keyed digests that let a rotated secret roll its
services.

A playbook names a secret (`env: {API_KEY: {secret: api-key}}` or `secrets: [{secret: api-key}]`); its value is
kept in the fleet's shared state sealed to the controllers' public keys (fleet.store.sealed), opened by the
controller at apply time with its identity, and reaches the node only on stdin, into a 0600 file on the node's
tmpfs. It is never in a playbook, argv, a label, a log or the history. What leaves the controller is a keyed
digest (HMAC-SHA256 with the fleet's digest key, sealed beside the secrets so every controller computes the same
one): it changes when the value changes, and without the key it says nothing about the value.

Keyring failures are told apart (`fleet.core.errors`): `KeyringUnavailable` (no backend: cron, a service),
`KeyringLocked`; each message says what to do (a headless controller uses an identity file instead).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import pyrage
from pyrage import x25519

from fleet.config.spec import ServiceSpec, with_secret_digests
from fleet.core.errors import KeyringLocked, KeyringUnavailable, SecretMissing, SecretStoreError
from fleet.results.secrets import Secret as Secret
from fleet.results.secrets import SecretRef

SERVICE = "fleet"
# This controller's age identity in the keyring. A secret's name cannot start with "_", so no secret is this.
IDENTITY_ENTRY = "_age-identity"
IDENTITY_ENV = "FLEET_IDENTITY_FILE"
LEGACY_DIGEST_ENTRY = "_digest-key"  # where fleet kept the digest key before it was sealed in the shared state
DIGEST_HEX = 32  # 128 bits of HMAC-SHA256
HOWTO = (f"see README \"Secrets\": under cron or a service give this controller an identity file "
         f"(`fleet controller init --identity-file PATH`, then {IDENTITY_ENV}=PATH), or set PYTHON_KEYRING_BACKEND "
         "to a file backend (keyrings.alt), or run inside an unlocked Secret Service session")


def _mapped(exc: Exception, doing: str) -> SecretStoreError:
    """A keyring library error as one of fleet's, naming what to do (never the value)."""
    import keyring.errors

    if isinstance(exc, keyring.errors.NoKeyringError):
        return KeyringUnavailable(f"{doing}: no keyring backend on this machine ({exc.__class__.__name__}); "
                                  + HOWTO)
    if isinstance(exc, keyring.errors.KeyringLocked):
        return KeyringLocked(f"{doing}: the keyring ({backend_name()}) is locked: unlock it (log in to the desktop "
                             "session, or `gnome-keyring-daemon --unlock`) and run again")
    if isinstance(exc, keyring.errors.InitError):
        return KeyringUnavailable(f"{doing}: the keyring backend could not start ({exc}); " + HOWTO)
    return SecretStoreError(f"{doing}: {exc}")


def backend_name() -> str:
    import keyring

    return type(keyring.get_keyring()).__name__


class Identity:
    """This controller's age identity (X25519): opens what was sealed to its public key. Neither its repr nor any
    message shows the private key."""

    def __init__(self, private: Secret, where: str) -> None:
        try:
            self._key = x25519.Identity.from_str(private.reveal().strip())
        except pyrage.IdentityError:
            raise SecretStoreError(f"{where}: not an age identity (expected one AGE-SECRET-KEY-1… line)") from None
        self.public: str = str(self._key.to_public())
        self.where = where

    def __repr__(self) -> str:
        return f"Identity({self.public}, in {self.where})"

    def open(self, box: bytes) -> bytes:
        """The plaintext of an age file sealed to this identity; `pyrage.DecryptError` when it was not (or is
        damaged): the caller names what it was opening."""
        result: bytes = pyrage.decrypt(box, [self._key])
        return result


def _identity_text(path: str) -> Secret:
    """The one AGE-SECRET-KEY line of an age identity file (age-keygen's format: `#` comments allowed); refused,
    naming the file, when the file is readable by group or others or holds no single key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretMissing(f"identity file {path}: not found; create it with "
                               f"`fleet controller init --identity-file {path}`") from None
    except OSError as exc:
        raise SecretStoreError(f"identity file {path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SecretStoreError(f"identity file {path}: not a regular file")
        if mode & 0o077:
            raise SecretStoreError(f"identity file {path}: readable by group or others (mode "
                                   f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`")
        lines = [ln.strip() for ln in fh.read().splitlines()]
    keys = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(keys) != 1:
        raise SecretStoreError(f"identity file {path}: expected one AGE-SECRET-KEY-1… line, found {len(keys)}")
    return Secret(keys[0])


def identity_path(path: str | None = None) -> str | None:
    """The identity file this controller uses: `path` (`--identity-file`), else $FLEET_IDENTITY_FILE, else none
    (the keyring)."""
    return path or os.environ.get(IDENTITY_ENV) or None


def load_identity(path: str | None = None) -> Identity:
    """This controller's identity: from its file (`path` or $FLEET_IDENTITY_FILE), else from the keyring.
    SecretMissing when it has none, another SecretStoreError when it cannot be read; each says what to do."""
    path = identity_path(path)
    if path is not None:
        return Identity(_identity_text(path), f"identity file {path}")
    import keyring
    import keyring.errors

    try:
        text = keyring.get_password(SERVICE, IDENTITY_ENTRY)
    except keyring.errors.KeyringError as exc:
        raise _mapped(exc, "cannot read this controller's age identity") from None
    if text is None:
        raise SecretMissing(f"this controller has no age identity in the keyring ({backend_name()}): "
                               f"run `fleet controller init` (or pass --identity-file / set {IDENTITY_ENV})")
    return Identity(Secret(text), f"the keyring ({SERVICE}/{IDENTITY_ENTRY})")


def init_identity(path: str | None = None) -> tuple[Identity, bool]:
    """This controller's identity, made when it has none (in the file `path` or $FLEET_IDENTITY_FILE, created
    0600 and never overwritten; else in the keyring); and whether it was made now."""
    target = identity_path(path)
    if target is not None and os.path.lexists(target):
        return load_identity(target), False
    new = x25519.Identity.generate()
    text = Secret(str(new))
    if target is None:
        import keyring
        import keyring.errors

        try:
            if keyring.get_password(SERVICE, IDENTITY_ENTRY) is not None:
                return load_identity(), False
            keyring.set_password(SERVICE, IDENTITY_ENTRY, text.reveal())
        except keyring.errors.KeyringError as exc:
            raise _mapped(exc, "cannot store this controller's age identity") from None
        return load_identity(), True
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SecretStoreError(f"identity file {target}: cannot be created ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"# created: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by fleet controller init\n"
                 f"# public key: {new.to_public()}\n{text.reveal()}\n")
    return load_identity(target), True


def legacy_digest_key() -> Secret | None:
    """The digest key an earlier fleet kept in this controller's keyring (`fleet`/`_digest-key`), if any: the
    first controller of a fleet seals it as the fleet's, so the digests stay the same and nothing rolls when the
    values are set again after the upgrade. A keyring that cannot be read, or an entry that is not a key, is none."""
    import keyring
    import keyring.errors

    try:
        text = keyring.get_password(SERVICE, LEGACY_DIGEST_ENTRY)
    except keyring.errors.KeyringError:
        return None
    try:
        return Secret(text) if text is not None and len(bytes.fromhex(text)) == 32 else None
    except ValueError:
        return None


@runtime_checkable
class SecretSource(Protocol):
    """Where a run reads secrets: a value by name (None: the fleet has no such secret) and the fleet's digest key."""

    def __call__(self, name: str) -> str | None: ...

    def digest_key(self) -> bytes: ...


def secret_digest(key: bytes, name: str, value: str) -> str:
    """HMAC-SHA256 of the secret's name and value under the fleet's key (hex, 128 bits)."""
    return hmac.new(key, name.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()[:DIGEST_HEX]


def secret_check(specs: Sequence[ServiceSpec], present: Callable[[str], bool]) -> list[SecretRef]:
    """Every (service, secret) the specs reference, sorted, with whether the fleet has the secret."""
    wanted = sorted({(s.name, n) for s in specs for n in s.secret_names()})
    return [SecretRef(service, n, present(n)) for service, n in wanted]


def stamped(specs: Sequence[ServiceSpec], get: Callable[[str], str | None] | None) -> list[ServiceSpec]:
    """The specs with the keyed digests of their secrets' current values (read with `get`), so a rotated secret
    is a changed spec (its replicas roll) and a changed intent (reconcile tries it). A secret the fleet lacks gets
    no digest (its service fails where it starts, naming it); secrets that cannot be read or opened raise
    SecretStoreError before anything changes."""
    names = sorted({n for s in specs for n in s.secret_names()})
    if not names:
        return list(specs)
    if not isinstance(get, SecretSource):
        raise SecretStoreError("no secret store for this run: the services' secrets cannot be read")
    digests = {}
    key: bytes | None = None
    for name in names:
        value = get(name)
        if value is not None:
            key = key if key is not None else get.digest_key()
            digests[name] = secret_digest(key, name, value)
    return [with_secret_digests(s, digests) for s in specs]


def stamped_for(specs: Sequence[ServiceSpec], command: str,
                get: Callable[[str], str | None] | None) -> tuple[list[ServiceSpec], dict[str, str]]:
    """`stamped(specs)`, and the services left out with why. When the secrets cannot be read, `reconcile`
    (cron, a timer, `fleet watch`) still converges the services that use no secret, and names the others:
    they keep running as they are, since whether a secret was rotated cannot be told. `apply` raises."""
    try:
        return stamped(specs, get), {}
    except SecretStoreError as exc:
        if command != "reconcile":
            raise
        return ([s for s in specs if not s.secret_names()],
                {s.name: f"not reconciled: {exc}" for s in specs if s.secret_names()})
