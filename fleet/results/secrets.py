"""Secrets as values: a value whose repr never shows it, and a playbook's reference to one."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Secret:
    """A secret value; its repr and str never show it."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def reveal(self) -> str:
        return self.value




@dataclass(frozen=True)
class SecretRef:
    """A secret a playbook's service references, and whether the keyring has it (its value is never read out)."""

    service: str
    name: str
    present: bool
