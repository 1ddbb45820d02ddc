"""Volumes across the fleet: where node-local data is (for placement), `fleet volume ls|inspect|rm|backup|restore|
revoke`, and the sshfs mounts of network volumes (each worker's own key on its tmpfs, authorized for the storage
node's confined storage user; mount at start, release at stop). Script texts and parsers are in fleet.node.storage
and fleet.node.storage_access.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import TypeVar

from fleet.config.spec import ServiceSpec
from fleet.config.volumes import STORAGE_ROLE, storage_of
from fleet.core.errors import ScriptOutputError, StorageError, VolumeError
from fleet.core.model import CommandResult, Inventory, Node
from fleet.core.shell import Script
from fleet.engine.calls import LIST_TIMEOUT
from fleet.engine.containers import ps
from fleet.engine.nodes import NO_RUNTIME, NOT_ANSWERING, READY, NodeReport
from fleet.node import storage as S
from fleet.node import storage_access as A
from fleet.node.paths import NOT_TMPFS_EXIT, write_file
from fleet.plan.volumes import VolumeView
from fleet.results.volumes import Kind as Kind
from fleet.results.volumes import VolumeListing as VolumeListing
from fleet.results.volumes import VolumeRow as VolumeRow
from fleet.transport import Pool

T = TypeVar("T")
# A backup or restore moves the whole volume at the network's speed; the deadline only ends a stalled one.
TRANSFER_TIMEOUT = 3600.0


def export_of(node: Node) -> str:
    """The directory a storage node keeps sshfs volumes under."""
    return node.labels.get(S.STORAGE_DIR_LABEL) or S.STORAGE_DIR


def _failure(result: CommandResult) -> str:
    if result.error is not None:
        return result.error
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"exited {result.exit_status}"


# ---- listing ----------------------------------------------------------------------------------------------------

def _usable(r: NodeReport) -> bool:
    """Ready, or a storage node that answers without a container runtime (it only keeps files)."""
    storage_only = r.node.has_role(STORAGE_ROLE) and not r.node.has_role("worker")
    return r.ok or (storage_only and r.status in (READY, NO_RUNTIME, NOT_ANSWERING))


def _listed_nodes(reports: Sequence[NodeReport]) -> list[Node]:
    return [r.node for r in reports if _usable(r) and (r.node.has_role("worker") or r.node.has_role(STORAGE_ROLE))]


async def _list(pool: Pool, reports: Sequence[NodeReport], *, sizes: bool,
                timeout: float) -> tuple[list[tuple[Node, S.VolumeDir]], dict[str, str], set[str]]:
    nodes = _listed_nodes(reports)
    results = await asyncio.gather(*(pool.run(n, S.list_script(
        sizes=sizes, export=export_of(n) if n.has_role(STORAGE_ROLE) else None), timeout=timeout) for n in nodes))
    dirs: list[tuple[Node, S.VolumeDir]] = []
    errors: dict[str, str] = {r.node.name: f"{r.status}: {r.reason}" for r in reports
                              if not _usable(r) and (r.node.has_role("worker") or r.node.has_role(STORAGE_ROLE))}
    read: set[str] = set()
    for n, result in zip(nodes, results, strict=True):
        if not result.ok:
            errors[n.name] = f"listing volumes failed: {_failure(result)}"
            continue
        try:
            dirs += [(n, d) for d in S.parse_list(result.stdout)]
        except ScriptOutputError as exc:
            errors[n.name] = str(exc)
            continue
        read.add(n.name)
    return dirs, errors, read


async def volume_view(pool: Pool, reports: Sequence[NodeReport], *, timeout: float = LIST_TIMEOUT) -> VolumeView:
    """Where node-local volume directories are, from every ready worker (one round trip each, no sizes)."""
    dirs, _, read = await _list(pool, [r for r in reports if r.node.has_role("worker")], sizes=False,
                                timeout=timeout)
    return VolumeView.of(((n.name, d.service, d.name) for n, d in dirs if d.kind == "local"), read)


async def list_volumes(pool: Pool, reports: Sequence[NodeReport], *, timeout: float = 30.0) -> VolumeListing:
    """Every volume on every ready worker and storage node, with its size and the containers that use it."""
    (dirs, errors, _), containers = await asyncio.gather(_list(pool, reports, sizes=True, timeout=timeout),
                                                         ps(pool, list(reports), timeout=timeout))
    errors.update({n: f"listing containers failed: {why}" for n, why in containers.errors.items()
                   if n not in errors})
    by_service: dict[str, list[tuple[str, str]]] = {}
    for row in containers.rows:
        if row.service is not None:
            by_service.setdefault(row.service, []).append((row.node, row.info.id))
    rows = []
    for n, d in dirs:
        mine = by_service.get(d.service, [])
        if d.kind == "local":
            users = [f"{node}/{cid}" for node, cid in mine if node == n.name]
            path = S.local_dir(d.service, d.name)
        else:
            users = [f"{node}/{cid}" for node, cid in mine]
            path = S.export_dir(export_of(n), d.service, d.name)
        rows.append(VolumeRow(n.name, d.kind, d.service, d.name, d.size, path,  # type: ignore[arg-type]
                              tuple(sorted(users))))
    rows.sort(key=lambda r: (r.service, r.name, r.kind, r.node))
    return VolumeListing(tuple(rows), MappingProxyType(dict(sorted(errors.items()))))


def split_ref(ref: str) -> tuple[str, str]:
    """`SERVICE/NAME` → (service, name); raises VolumeError for anything else."""
    service, sep, name = ref.partition("/")
    try:
        if not sep:
            raise ValueError
        S.local_dir(service, name)
    except ValueError:
        raise VolumeError(f"expected a volume as SERVICE/NAME (as `fleet volume ls` shows it), got {ref!r}") from None
    return service, name


def find(listing: VolumeListing, ref: str, node: str | None = None) -> VolumeRow:
    """The one volume `ref` (SERVICE/NAME) names, on `node` when given; raises VolumeError when there is none
    or it is on several nodes and `node` does not choose."""
    service, name = split_ref(ref)
    rows = [r for r in listing.rows if (r.service, r.name) == (service, name) and (node is None or r.node == node)]
    if not rows:
        where = f" on {node}" if node else ""
        unread = f" (not read: {', '.join(sorted(listing.errors))})" if listing.errors else ""
        raise VolumeError(f"no volume {ref}{where}{unread}")
    if len(rows) > 1:
        raise VolumeError(f"volume {ref} is on several nodes ({', '.join(r.node for r in rows)}): choose one "
                          "with --node")
    return rows[0]


def _node(reports: Sequence[NodeReport], name: str) -> Node:
    for r in reports:
        if r.node.name == name:
            if not _usable(r):
                raise VolumeError(f"{name}: {r.status}: {r.reason}")
            return r.node
    raise VolumeError(f"no node {name!r} in the inventory")


async def remove(pool: Pool, reports: Sequence[NodeReport], row: VolumeRow) -> None:
    """Delete a volume's directory; refused while any container (running or stopped) uses it."""
    if row.users:
        raise VolumeError(f"volume {row.ref} on {row.node} is in use by {', '.join(row.users)}: stop or destroy "
                          f"the service {row.service} first")
    result = await pool.run(_node(reports, row.node), S.remove_script(row.path), timeout=300)
    if not result.ok:
        raise VolumeError(f"{row.node}: removing volume {row.ref} failed: {_failure(result)}")


async def backup(pool: Pool, reports: Sequence[NodeReport], row: VolumeRow, path: str, *,
                 on_progress: Callable[[int], None] | None = None, timeout: float = TRANSFER_TIMEOUT) -> int:
    """Stream a tar of the volume into the local file `path` (written as it arrives; removed on failure);
    returns its size in bytes."""
    tmp = f"{path}.part"
    result = await pool.run(_node(reports, row.node), S.archive_script(row.path), stdout_path=tmp,
                            timeout=timeout, on_progress=on_progress)
    if not result.ok:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise VolumeError(f"{row.node}: backing up volume {row.ref} failed: {_failure(result)}")
    os.replace(tmp, path)
    return os.path.getsize(path)


async def restore(pool: Pool, reports: Sequence[NodeReport], ref: str, node: str, path: str, *,
                  kind: Kind = "local", on_progress: Callable[[int], None] | None = None,
                  timeout: float = TRANSFER_TIMEOUT) -> VolumeRow:
    """Unpack the tar `path` into a new volume `ref` on `node` (a worker's local volume, or an sshfs volume on
    a storage node), streamed from the file; refused when that volume already holds data."""
    service, name = split_ref(ref)
    if not os.path.isfile(path):
        raise VolumeError(f"{path}: no such backup file")
    target = _node(reports, node)
    if kind == "sshfs":
        if not target.has_role(STORAGE_ROLE):
            raise VolumeError(f"{node} is not a storage node (role storage)")
        directory = S.export_dir(export_of(target), service, name)
    else:
        if not target.has_role("worker"):
            raise VolumeError(f"{node} is not a worker: local volumes live on workers")
        directory = S.local_dir(service, name)
    empty = await pool.run(target, S.empty_script(directory), timeout=30)
    if not empty.ok:
        raise VolumeError(f"{node}: restoring volume {ref} refused: {_failure(empty)}")
    result = await pool.run(target, S.restore_script(directory), stdin_path=path, timeout=timeout,
                            on_progress=on_progress)
    if not result.ok:
        raise VolumeError(f"{node}: restoring volume {ref} failed: {_failure(result)}")
    return VolumeRow(node, kind, service, name, None, directory)


async def revoke(pool: Pool, reports: Sequence[NodeReport], worker: str,
                 timeout: float = 30.0) -> tuple[dict[str, bool], dict[str, str]]:
    """Take `worker`'s key off the storage user of every storage node (the worker need not be in the inventory
    any more): ({storage node: whether it had one}, {storage node: why it was not done})."""
    try:
        A.revoke_script(worker)
    except ValueError as exc:
        raise VolumeError(str(exc)) from None
    storages = [r for r in reports if r.node.has_role(STORAGE_ROLE)]
    if not storages:
        raise VolumeError("the inventory has no storage node (role storage)")
    return await _on_storage_nodes(pool, storages, lambda n: A.revoke_script(worker, storage_user(n)),
                                   A.parse_revoked, timeout, f"revoking the key of {worker} failed: ")


async def revoke_departed(pool: Pool, reports: Sequence[NodeReport],
                          timeout: float = 30.0) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Take the key of every worker that is no longer in the inventory (`reports` are its nodes) off the storage
    user of every storage node: ({storage node: workers revoked}, {storage node: why it was not checked}).
    Nothing is asked when the inventory has no storage node."""
    storages = [r for r in reports if r.node.has_role(STORAGE_ROLE)]
    keep = sorted(r.node.name for r in reports)
    return await _on_storage_nodes(pool, storages, lambda n: A.prune_script(keep, storage_user(n)),
                                   A.parse_pruned, timeout)


async def _on_storage_nodes(pool: Pool, storages: Sequence[NodeReport], script_for: Callable[[Node], Script],
                            parse: Callable[[str], T], timeout: float,
                            failed: str = "") -> tuple[dict[str, T], dict[str, str]]:
    """One script on every usable storage node at once: ({node: its parsed answer}, {node: why not})."""
    done: dict[str, T] = {}
    errors: dict[str, str] = {r.node.name: f"{r.status}: {r.reason}" for r in storages if not _usable(r)}

    async def one(n: Node) -> None:
        try:
            result = await pool.run(n, script_for(n), timeout=timeout)
            if not result.ok:
                raise ScriptOutputError(_failure(result))
            done[n.name] = parse(result.stdout)
        except (ScriptOutputError, ValueError) as exc:
            errors[n.name] = f"{failed}{exc}"

    await asyncio.gather(*(one(r.node) for r in storages if _usable(r)))
    return done, errors


# ---- sshfs: mount at start, release at stop ----------------------------------------------------------------------

def storage_user(node: Node) -> str:
    """The user a storage node's workers mount as (confined to its export)."""
    return node.labels.get(A.USER_LABEL) or A.SFTP_USER


def known_hosts_file(node: Node) -> str:
    return node.known_hosts or os.path.expanduser("~/.ssh/known_hosts")


class StorageAccess:
    """Mounts a container's sshfs volumes on its worker as the storage node's confined storage user
    (fleet.node.storage_access); per run, each worker makes (or reuses) its key once per storage node, and each
    storage node authorizes it and prepares each new volume directory once."""

    def __init__(self, pool: Pool, timeout: float = 30.0) -> None:
        self.pool = pool
        self.timeout = timeout
        self._users: dict[str, str] = {}
        self._dirs: set[tuple[str, str]] = set()
        self._authorized: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()

    def _unreachable(self, storage: Node, result: CommandResult) -> StorageError:
        return StorageError(f"storage node {storage.name} ({storage.address}:{storage.port}) could not be used: "
                            f"{_failure(result)}")

    def _host_keys(self, storage: Node) -> str:
        path = known_hosts_file(storage)
        try:
            with open(path, encoding="utf-8") as fh:
                lines = S.known_host_lines(fh.read(), storage.address, storage.port)
        except OSError as exc:
            raise StorageError(f"storage node {storage.name}: cannot read its host key from {path}: "
                               f"{exc.strerror or exc}") from None
        if not lines:
            raise StorageError(f"storage node {storage.name}: no host key for {storage.address} in {path} "
                               "(workers check the storage node's key against the one fleet pinned)")
        return "\n".join(lines) + "\n"

    async def _worker_key(self, worker: Node, storage: Node) -> str:
        """The worker's public key for `storage` (made on its tmpfs), with the storage node's pinned host key
        written beside it."""
        hosts = self._host_keys(storage)
        made, wrote_hosts = await asyncio.gather(
            self.pool.run(worker, A.worker_key_script(S.access_key(storage.name)), timeout=self.timeout),
            self.pool.run(worker, write_file(S.access_known_hosts(storage.name), "0644",
                                             size=len(hosts.encode())), stdin=hosts, timeout=self.timeout))
        for result in (made, wrote_hosts):
            if result.exit_status == NOT_TMPFS_EXIT:
                raise StorageError(f"{worker.name}: {result.stderr.strip()} (the storage key is kept on tmpfs only)")
            if not result.ok:
                raise StorageError(f"{worker.name}: making its key for storage node {storage.name} failed: "
                                   f"{_failure(result)}")
        try:
            public = A.parse_public_key(made.stdout)
        except ScriptOutputError as exc:
            raise StorageError(f"{worker.name}: {exc}") from None
        return public

    async def _prepare(self, storage: Node, dirs: list[str], worker: Node | None = None,
                       public: str | None = None) -> None:
        try:
            script = A.prepare_script(export_of(storage), dirs, worker=worker.name if worker else None,
                                      public_key=public, user=storage_user(storage),
                                      old_authorized_keys=storage.labels.get(S.AUTHORIZED_KEYS_LABEL))
        except ValueError as exc:  # the storage node's labels (export, user)
            raise StorageError(f"storage node {storage.name}: {exc}") from None
        result = await self.pool.run(storage, script, timeout=self.timeout)
        if not result.ok:
            raise self._unreachable(storage, result)
        try:
            self._users[storage.name], _, _ = A.parse_prepared(result.stdout)
        except ScriptOutputError as exc:
            raise StorageError(f"storage node {storage.name}: {exc}") from None

    async def _authorize(self, worker: Node, storage: Node, volume_dir: str) -> str:
        """The storage user, once the storage node confines it, has `volume_dir` and accepts the worker's key.
        The storage node is asked first: one that is down or cannot confine the user fails the mount before the
        worker makes anything."""
        if (storage.name, volume_dir) not in self._dirs:
            await self._prepare(storage, [volume_dir])
            self._dirs.add((storage.name, volume_dir))
        if (worker.name, storage.name) not in self._authorized:
            await self._prepare(storage, [], worker, await self._worker_key(worker, storage))
            self._authorized.add((worker.name, storage.name))
        return self._users[storage.name]

    async def mount(self, worker: Node, storage: Node, service: str, name: str, container_id: str) -> str:
        """Mount the volume for one container; returns the mountpoint. Raises StorageError naming the storage
        node when it is down or refuses (within the mount deadline), or the worker lacks sshfs or FUSE."""
        volume_dir = f"{service}/{name}"
        async with self._lock:
            user = await self._authorize(worker, storage, volume_dir)
        mp = S.mountpoint(container_id, name)
        # The export is the storage user's root (its chroot).
        script = S.mount_script(mp, user=user, address=storage.address, port=storage.port,
                                remote=S.export_dir("", service, name),
                                key=S.access_key(storage.name), known_hosts=S.access_known_hosts(storage.name))
        result = await self.pool.run(worker, script, timeout=S.MOUNT_DEADLINE + 10)
        if result.exit_status == S.MISSING_EXIT:
            raise StorageError(f"{worker.name}: {result.stderr.strip()}")
        if not result.ok:
            # ssh's own line (host key, refused, no route) comes before sshfs's last word ("read: …"): keep all.
            said = "; ".join(line.strip() for line in result.stderr.strip().splitlines() if line.strip())
            raise StorageError(f"{worker.name}: mounting volume {volume_dir} from storage node {storage.name} "
                               f"({storage.address}:{storage.port}) failed: {said or _failure(result)}")
        return mp

    async def release(self, worker: Node, container_id: str) -> str | None:
        """Unmount a container's sshfs volumes (if it had any); None when done, else why not."""
        result = await self.pool.run(worker, S.release_script(container_id), timeout=self.timeout)
        return None if result.ok else f"{worker.name}: releasing the volumes of {container_id}: {_failure(result)}"


async def mount_all(access: StorageAccess, spec: ServiceSpec, worker: Node, nodes: Sequence[Node],
                    container_id: str) -> None:
    """Mount every sshfs volume of `spec` for one container on `worker` (before the container is created);
    on a failure, the mounts already made are released and the StorageError raised."""
    wanted = [v for v in spec.volumes if v.type == "sshfs"]
    if not wanted:
        return
    inventory = Inventory("the inventory", tuple(nodes))
    try:
        for v in wanted:
            storage = storage_of(v, inventory)
            if isinstance(storage, str):
                raise StorageError(f"{spec.name}: volume {v.source}: {storage}")
            await access.mount(worker, storage, spec.name, v.source or "", container_id)
    except BaseException:
        await access.release(worker, container_id)
        raise
