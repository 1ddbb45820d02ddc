"""The files a replica needs on its node before it starts: config files (on disk, once per run and spec) and its
secrets (env file and secret files, on the node's tmpfs only, written over stdin, never argv)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fleet.config.spec import SecretRef, ServiceSpec
from fleet.core import labels as L
from fleet.core.errors import FleetError
from fleet.core.model import Node
from fleet.engine.containers import drop_secret_files
from fleet.engine.runspec import config_file, secret_env_path, secret_mount
from fleet.node.paths import NOT_TMPFS_EXIT, write_file, write_secret_file
from fleet.plan.scheduler import Assignment
from fleet.transport import Pool


class NodeFiles:
    """Writes a replica's files on its node; `secrets` reads a secret's value from the keyring (None: not there)."""

    def __init__(self, pool: Pool, secrets: Callable[[str], str | None] | None) -> None:
        self.pool = pool
        self.secrets = secrets
        self._configs_written: set[tuple[str, str]] = set()

    async def configs(self, spec: ServiceSpec, node: Node) -> None:
        """The service's config files on the node, once per run and spec hash: written over stdin (content and
        mode, size-checked, by rename) under fleet's disk directory, whose directories are 0700 (only root on the
        node reads them; only this service's containers have them mounted)."""
        key = (node.name, spec.spec_hash())
        if key in self._configs_written:
            return
        results = await asyncio.gather(*(
            self.pool.run(node, write_file(config_file(spec, i), c.mode, size=len(c.content.encode())),
                          stdin=c.content, timeout=30) for i, c in enumerate(spec.configs)))
        for c, result in zip(spec.configs, results, strict=True):
            if not result.ok:
                raise FleetError(f"{spec.name}: {node.name}: writing config {c.target} failed: "
                                 f"{result.error or result.stderr.strip()}")
        self._configs_written.add(key)

    async def secret_files(self, spec: ServiceSpec, node: Node, container: str) -> None:
        """Each secret file's value into its own file on the node's tmpfs (stdin, never argv; refused off tmpfs),
        in a 0700 directory of this container, bind-mounted read-only; removed with the container."""
        for i, f in enumerate(spec.secret_files):
            value = self.secrets(f.secret) if self.secrets else None
            if value is None:
                await drop_secret_files(self.pool, node, container)
                raise FleetError(f"{spec.name}: secret {f.secret!r} for file {f.target} is not in the keyring "
                                 f"(set it with `fleet secret set {f.secret}`)")
            data = value.encode()
            result = await self.pool.run(node, write_secret_file(secret_mount(container, i), size=len(data),
                                                                 mode=f.mode), stdin=value, timeout=30)
            if not result.ok:
                await drop_secret_files(self.pool, node, container)
                why = result.stderr.strip() if result.exit_status == NOT_TMPFS_EXIT else (
                    f"writing secret file {f.target} failed: {result.error or result.stderr.strip()}")
                raise FleetError(f"{spec.name}: {node.name}: {why}")

    async def env_file(self, spec: ServiceSpec, a: Assignment, node: Node) -> str:
        """Secret env values go to a 0600 file on the node through stdin, never through argv."""
        lines = []
        for key, value in sorted(spec.env.items()):
            if isinstance(value, SecretRef):
                secret = self.secrets(value.name) if self.secrets else None
                if secret is None:
                    raise FleetError(f"{spec.name}: secret {value.name!r} for env {key} is not in the keyring "
                                     f"(set it with `fleet secret set {value.name}`)")
                if "\n" in secret:
                    raise FleetError(f"{spec.name}: secret {value.name!r} holds a newline; env files cannot carry it")
                lines.append(f"{key}={secret}\n")
        # On the node's tmpfs (/run/fleet), never its disk; removed once the container exists, and swept by the
        # next run if this one is killed in between.
        path = secret_env_path(spec.name, a.replica, L.random_suffix())
        data = "".join(lines)
        result = await self.pool.run(node, write_secret_file(path, size=len(data.encode())), stdin=data, timeout=30)
        if result.exit_status == NOT_TMPFS_EXIT:
            raise FleetError(f"{spec.name}: {a.node}: {result.stderr.strip()} (secrets are written to a tmpfs only)")
        if not result.ok:
            raise FleetError(f"{spec.name}: {a.node}: writing the secret env file failed: "
                             f"{result.error or result.stderr.strip()}")
        return path
