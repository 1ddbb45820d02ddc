"""Secrets from the OS keyring: a value type that cannot leak by accident, keyring access whose errors say what
to do, and the keyed digests that let a rotated secret roll its services.

A playbook names a secret (`env: {API_KEY: {secret: api-key}}` or `secrets: [{secret: api-key}]`); its value is
read from the keyring (service "fleet") by the controller at apply time and reaches the node only on stdin, into
a 0600 file on the node's tmpfs. It is never in a playbook, argv, a label, a log or the history. What leaves the
controller is a keyed digest (HMAC-SHA256 with the fleet's key, kept in the same keyring): it changes when the
value changes, and without the key it says nothing about the value (not even whether two are equal elsewhere).

Keyring failures are told apart (`fleet.core.errors`): `KeyringUnavailable` (no backend: cron, a service),
`KeyringLocked`, `SecretMissing`; each message says what to do.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Sequence

from fleet.config.spec import ServiceSpec, with_secret_digests
from fleet.core.errors import KeyringLocked, KeyringUnavailable, SecretMissing, SecretStoreError
from fleet.results.secrets import Secret as Secret
from fleet.results.secrets import SecretRef

SERVICE = "fleet"
# The fleet's digest key, beside the secrets. A secret's name cannot start with "_", so no secret is this.
DIGEST_KEY = "_digest-key"
DIGEST_HEX = 32  # 128 bits of HMAC-SHA256
HOWTO = ("see README \"Secrets\": under cron or a service set PYTHON_KEYRING_BACKEND to a file backend "
         "(keyrings.alt), or run inside an unlocked Secret Service session")


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


def get_secret(name: str) -> str | None:
    """The secret `name` from the keyring, or None when the keyring has no such name. Raises
    KeyringUnavailable or KeyringLocked (SecretStoreError) when the keyring itself cannot be read."""
    import keyring
    import keyring.errors

    try:
        value: str | None = keyring.get_password(SERVICE, name)
    except keyring.errors.KeyringError as exc:
        raise _mapped(exc, f"cannot read secret {name!r}") from None
    return value


def require_secret(name: str) -> str:
    """The secret `name`; SecretMissing (saying how to set it) when the keyring has no such name."""
    value = get_secret(name)
    if value is None:
        raise SecretMissing(f"secret {name!r} is not in the keyring ({backend_name()}): set it with "
                            f"`fleet secret set {name}`")
    return value


def set_secret(name: str, value: Secret) -> None:
    import keyring
    import keyring.errors

    try:
        keyring.set_password(SERVICE, name, value.reveal())
    except keyring.errors.KeyringError as exc:
        raise _mapped(exc, f"cannot store secret {name!r}") from None


def delete_secret(name: str) -> bool:
    """Remove `name`; False when it was not there."""
    import keyring
    import keyring.errors

    try:
        keyring.delete_password(SERVICE, name)
    except keyring.errors.PasswordDeleteError:
        return False
    except keyring.errors.KeyringError as exc:
        raise _mapped(exc, f"cannot delete secret {name!r}") from None
    return True


def backend_name() -> str:
    import keyring

    return type(keyring.get_keyring()).__name__


def digest_key() -> bytes:
    """The fleet's key for secret digests, from the keyring; made (256 random bits) on first use. Every controller
    of one fleet needs the same key, or each would see every secret as rotated (README "Secrets")."""
    import keyring
    import keyring.errors

    try:
        text = keyring.get_password(SERVICE, DIGEST_KEY)
        if text is None:
            text = os.urandom(32).hex()
            keyring.set_password(SERVICE, DIGEST_KEY, text)
    except keyring.errors.KeyringError as exc:
        raise _mapped(exc, "cannot read the fleet's secret digest key") from None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise SecretStoreError(f"the fleet's secret digest key in the keyring ({SERVICE}/{DIGEST_KEY}) is not hex; "
                               "remove it to make a new one (every service with secrets then rolls once)") from None


def secret_digest(key: bytes, name: str, value: str) -> str:
    """HMAC-SHA256 of the secret's name and value under the fleet's key (hex, 128 bits)."""
    return hmac.new(key, name.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()[:DIGEST_HEX]


def secret_digests(names: Iterable[str], get: Callable[[str], str | None] = get_secret,
                   key: Callable[[], bytes] = digest_key) -> dict[str, str]:
    """The keyed digest of each named secret; SecretMissing for a name the keyring does not have."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    k = key()
    out = {}
    for name in wanted:
        value = get(name)
        if value is None:
            raise SecretMissing(f"secret {name!r} is not in the keyring: set it with `fleet secret set {name}`")
        out[name] = secret_digest(k, name, value)
    return out


def secret_check(specs: Sequence[ServiceSpec]) -> list[SecretRef]:
    """Every (service, secret) the specs reference, sorted, with whether the keyring has the secret."""
    wanted = sorted({(s.name, n) for s in specs for n in s.secret_names()})
    found = {n: get_secret(n) is not None for _, n in wanted}
    return [SecretRef(service, n, found[n]) for service, n in wanted]


def stamped(specs: Sequence[ServiceSpec], get: Callable[[str], str | None] | None = None) -> list[ServiceSpec]:
    """The specs with the keyed digests of their secrets' current values (read with `get`, default the keyring),
    so a rotated secret is a changed spec (its replicas roll) and a changed intent (reconcile tries it). A secret
    the keyring lacks gets no digest (its service fails where it starts, naming it); a keyring that cannot be
    read raises KeyringUnavailable or KeyringLocked before anything changes."""
    names = sorted({n for s in specs for n in s.secret_names()})
    if not names:
        return list(specs)
    get = get or get_secret
    key = digest_key()
    digests = {}
    for name in names:
        value = get(name)
        if value is not None:
            digests[name] = secret_digest(key, name, value)
    return [with_secret_digests(s, digests) for s in specs]


def stamped_for(specs: Sequence[ServiceSpec], command: str,
                get: Callable[[str], str | None] | None = None) -> tuple[list[ServiceSpec], dict[str, str]]:
    """`stamped(specs)`, and the services left out with why. When the keyring cannot be read, `reconcile`
    (cron, a timer, `fleet watch`) still converges the services that use no secret, and names the others:
    they keep running as they are, since whether a secret was rotated cannot be told. `apply` raises."""
    try:
        return stamped(specs, get), {}
    except SecretStoreError as exc:
        if command != "reconcile":
            raise
        return ([s for s in specs if not s.secret_names()],
                {s.name: f"not reconciled: {exc}" for s in specs if s.secret_names()})
