"""Secrets from the OS keyring: a value type that cannot leak by accident, and keyring access."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """The secret `name` from the keyring (service "fleet"), or None when it is not there."""
    import keyring
    import keyring.errors

    try:
        value: str | None = keyring.get_password(SERVICE, name)
    except keyring.errors.KeyringError:
        return None
    return value


def set_secret(name: str, value: Secret) -> None:
    import keyring

    keyring.set_password(SERVICE, name, value.reveal())
