"""Secrets from the OS keyring: a value type that cannot leak by accident, and keyring access.

A playbook names a secret (`env: {API_KEY: {secret: api-key}}`); its value is read from the keyring (service
"fleet") by the controller at apply time and reaches the node only on stdin, into a 0600 env file that is
deleted once the container is created. It is never in a playbook, argv, a label, a log or the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.core.errors import (
    SecretStoreError,
)

SERVICE = "fleet"


@dataclass(frozen=True)
class Secret:
    """A secret value; its repr and str never show it."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def reveal(self) -> str:
        return self.value


def get_secret(name: str) -> str | None:
    """The secret `name` from the keyring, or None when it is not there (or there is no keyring)."""
    import keyring
    import keyring.errors

    try:
        value: str | None = keyring.get_password(SERVICE, name)
    except keyring.errors.KeyringError:
        return None
    return value


def set_secret(name: str, value: Secret) -> None:
    import keyring
    import keyring.errors

    try:
        keyring.set_password(SERVICE, name, value.reveal())
    except keyring.errors.KeyringError as exc:
        raise SecretStoreError(f"cannot store secret {name!r}: {exc}") from None


def delete_secret(name: str) -> bool:
    """Remove `name`; False when it was not there."""
    import keyring
    import keyring.errors

    try:
        keyring.delete_password(SERVICE, name)
    except keyring.errors.PasswordDeleteError:
        return False
    except keyring.errors.KeyringError as exc:
        raise SecretStoreError(f"cannot delete secret {name!r}: {exc}") from None
    return True


def backend_name() -> str:
    import keyring

    return type(keyring.get_keyring()).__name__
