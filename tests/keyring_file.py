"""A file-backed keyring backend for tests.

The OS keyring service (Secret Service over D-Bus) does not run on this machine, so the tests point the
`keyring` library at this backend with PYTHON_KEYRING_BACKEND=keyring_file.FileKeyring. It stands in for the OS
keyring only; fleet's own code runs unchanged and talks to it through `keyring` as it would to the real one.
"""

from __future__ import annotations

import json
import os

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def _path(self) -> str:
        return os.environ["FLEET_TEST_KEYRING"]

    def _load(self) -> dict[str, str]:
        try:
            with open(self._path(), encoding="utf-8") as fh:
                data: dict[str, str] = json.load(fh)
                return data
        except FileNotFoundError:
            return {}

    def _save(self, data: dict[str, str]) -> None:
        fd = os.open(self._path(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self._save(data)
