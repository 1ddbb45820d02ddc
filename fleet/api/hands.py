"""The façade's hands-on operations, apart from the fleet's changes and reads in fleet.api: containers by hand
(`fleet run`, `stop`, `rm`, `logs`, `exec`), volumes, images, preparing nodes and the record nodes' etcd members.
`Fleet` inherits them; they need of it only its pool, its inventory, this run's node reports and its lease.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from fleet.config.spec import ServiceSpec
from fleet.config.volumes import check_volumes
from fleet.core.model import Inventory, Node
from fleet.engine import handwork
from fleet.engine.etcd import EtcdMembership
from fleet.engine.handwork import LogLines
from fleet.engine.images import list_images, push
from fleet.engine.offline import Download, download_debs
from fleet.engine.preflight import PrepareReport, check_nodes, prepare_nodes
from fleet.engine.volumes import list_volumes, restore, revoke
from fleet.node.preflight import NodeCheck
from fleet.node.provision import Plan
from fleet.node.runtime.base import RunSpec, StopResult
from fleet.results import NodeReport, PsRow, PushResult, VolumeListing, VolumeRow
from fleet.store.access import client_port
from fleet.store.etcd import EtcdStore
from fleet.store.nodes import record_nodes
from fleet.transport import Pool
from fleet.transport.terminal import Session, Terminal


class Hands(abc.ABC):
    """Operations that act on nodes directly (no records), or under the lease only to keep two changes apart."""

    pool: Pool
    inventory: Inventory

    @abc.abstractmethod
    async def reports(self, *, ports: bool = False) -> list[NodeReport]:
        """This run's node reports (fleet.api.Fleet.reports)."""

    @abc.abstractmethod
    def leased(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The fleet's lease for one operation (fleet.api.Fleet.leased)."""

    @abc.abstractmethod
    async def retire(self, ids: frozenset[str], grace: float | None) -> None:
        """Stop running replicas of services under the lease, drained first (fleet.api.Fleet.retire); `grace`
        None: each service's stop_grace_period."""

    @abc.abstractmethod
    def known(self, name: str) -> Node:
        """The inventory's node `name`, or InventoryError (fleet.api.Fleet.known)."""

    # --- containers by hand (`fleet run`, `stop`, `rm`, `logs`, `exec`): no records; a replica under the lease -
    async def run_one(self, node: str, spec: RunSpec, *, timeout: float = 60.0) -> None:
        """Start one container on `node` (see fleet.engine.handwork.run_one)."""
        await handwork.run_one(self.pool, await self.reports(), node, spec, timeout=timeout)

    async def stop(self, ref: str, grace: float = 10.0) -> list[tuple[PsRow, StopResult | str]]:
        """Stop every container `ref` names, one entry per container (see fleet.engine.handwork.stop); a running
        replica of a service goes under the lease, out of the load balancers and drained first."""
        return await handwork.stop(self.pool, await self.reports(), ref, grace,
                                   lambda ids: self.retire(ids, grace))

    async def rm(self, ref: str) -> list[tuple[PsRow, str | None]]:
        """Remove every container `ref` names, one entry per container (see fleet.engine.handwork.rm); a running
        replica of a service goes under the lease, out of the load balancers and drained first (its service's
        stop_grace_period), as `stop` takes it."""
        return await handwork.rm(self.pool, await self.reports(), ref, lambda ids: self.retire(ids, None))

    @contextlib.asynccontextmanager
    async def logs(self, ref: str, *, follow: bool = False, tail: int | None = 100,
                   dated: bool = False) -> AsyncIterator[LogLines]:
        """The logs of the containers `ref` names, as `(prefix, line)`: `async with fleet.logs("web", follow=True)
        as lines: async for prefix, line in lines:`; with `dated`, `lines.dated()` (see fleet.engine.handwork.logs)."""
        async with handwork.logs(self.pool, await self.reports(), ref, follow=follow, tail=tail,
                                 dated=dated) as lines:
            yield lines

    async def exec(self, ref: str, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
        """Run `argv` inside the one running container `ref` names; its exit code (fleet.engine.handwork.exec_in)."""
        return await handwork.exec_in(self.pool, await self.reports(), ref, argv, on_line)

    @contextlib.asynccontextmanager
    async def exec_session(self, ref: str, argv: Sequence[str], terminal: Terminal | None = None,
                           ) -> AsyncIterator[Session]:
        """`argv` inside the one running container `ref` names, interactive, on a pty when `terminal` is given
        (fleet.engine.handwork.exec_session)."""
        async with handwork.exec_session(self.pool, await self.reports(), ref, argv, terminal) as opened:
            yield opened

    # --- volumes (`fleet volume`) ------------------------------------------------------------------------
    def check_volumes(self, specs: Sequence[ServiceSpec]) -> None:
        """Raise SpecError (file:line) for an sshfs volume whose storage node the inventory lacks; pure."""
        check_volumes(specs, self.inventory)

    async def volumes(self) -> VolumeListing:
        """Every volume on every ready worker (local) and storage node (sshfs): size, the containers using it;
        nodes that could not be read are named in `errors`."""
        return await list_volumes(self.pool, await self.reports())

    async def volume(self, ref: str, node: str | None = None) -> VolumeRow:
        """The one volume `SERVICE/NAME` names (on `node`); raises VolumeError when none or several."""
        return await handwork.volume(self.pool, await self.reports(), ref, node)

    async def volume_rm(self, ref: str, node: str | None = None) -> VolumeRow:
        """Delete a volume's data, under the fleet's lease; refused (VolumeError) while a container uses it."""
        async with self.leased():
            return await handwork.volume_rm(self.pool, await self.reports(), ref, node)

    async def volume_backup(self, ref: str, path: str, node: str | None = None,
                            on_progress: Callable[[int], None] | None = None) -> tuple[VolumeRow, int]:
        """Stream a tar of the volume over SSH into the local file `path`; returns the volume and the size."""
        return await handwork.volume_backup(self.pool, await self.reports(), ref, path, node, on_progress)

    async def volume_restore(self, path: str, ref: str, node: str, *, sshfs: bool = False,
                             on_progress: Callable[[int], None] | None = None) -> VolumeRow:
        """Unpack the tar `path` into a new volume `SERVICE/NAME` on `node` (a worker; with `sshfs`, a storage
        node), under the fleet's lease; refused when that volume already holds data."""
        async with self.leased():
            return await restore(self.pool, await self.reports(), ref, node, path,
                                 kind="sshfs" if sshfs else "local", on_progress=on_progress)

    async def volume_revoke(self, worker: str) -> tuple[dict[str, bool], dict[str, str]]:
        """Take `worker`'s key off every storage node's storage user, under the fleet's lease: ({storage node:
        whether it had one}, {storage node: why not}). Its mounts already made stay until they end."""
        async with self.leased():
            return await revoke(self.pool, await self.reports(), worker)

    # --- images -----------------------------------------------------------------------------------------
    async def push(self, archive: str, nodes: Sequence[str] | None = None, *, limit: int = 8,
                   on_progress: Callable[[str, int], None] | None = None,
                   on_status: Callable[[str, str], None] | None = None) -> list[PushResult]:
        """Stream an image archive into the containerd of `nodes` (default: every worker), `limit` at once; one
        result per node, never raising for one node (see fleet.engine.images.push)."""
        return await push(self.pool, await self.reports(), archive, list(nodes) if nodes is not None else None,
                          limit, on_progress=on_progress, on_status=on_status)

    async def image_list(self) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """({node: {image ref: manifest digest}} of every ready node, {node: why it could not be read})."""
        return await list_images(self.pool, await self.reports())

    # --- preparing nodes (`fleet node check|prepare`) ----------------------------------------------------
    async def check(self, names: Sequence[str] = ()) -> list[NodeCheck]:
        """What each named node (default: all) has and lacks for its roles; read-only, no lease."""
        return await check_nodes(self.pool, self.inventory, [self.known(n) for n in names] or self.inventory.nodes)

    async def prepare(self, plans: Sequence[Plan], offline: str | None = None) -> list[PrepareReport]:
        """Carry out `plan_for(check)` plans, then check those nodes again (no lease: see engine/preflight.py);
        `offline`: the local directory the plans' .deb files are sent from (`offline_plan`)."""
        return await prepare_nodes(self.pool, self.inventory, plans, offline)

    async def download(self, checks: Sequence[NodeCheck], dest: str) -> list[Download]:
        """Fill the local directory `dest` with the .deb files each checked node lacks, worked out by this machine's
        apt against the node's dpkg status (see engine/offline.py); changes nothing on the nodes."""
        return await download_debs(self.pool, self.inventory, checks, dest)

    def membership(self, on_step: Callable[[str], None] | None = None, store: EtcdStore | None = None
                   ) -> EtcdMembership:
        """The etcd cluster's members and the steps toward the inventory's record nodes (`fleet records`; a
        change runs under `leased()`); its `plan()` gives the next apply's lines ("records: add member n4").
        `store`: a client of the fleet's etcd that answers already (the run's)."""
        return EtcdMembership(self.pool, self.inventory.nodes, record_nodes(self.inventory), cluster_token="fleet",
                              port=client_port(), on_step=on_step, store=store)
