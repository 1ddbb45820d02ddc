"""The Fleet façade: the one entry point for the CLI, the terminal UI and a watcher.

Reading operations (nodes, plan, status, ps, logs, images, history, the lease's state) never take the fleet's
lease; every operation that changes the fleet (apply, reconcile, scale, destroy, rollback, promote, abort, and the
node operations cordon, uncordon, drain, label) runs under it, with the fleet's records. One-off containers
(run_one, stop, rm, exec) and image pushes act on the nodes directly, as `fleet run` always has. Every method
returns values and prints nothing.

Importing this module is cheap: the transport, the engines and the store are loaded by the methods that use them,
and the value types callers need (NodeReport, PsRow, FleetStatus, Event, Outcome…) are importable from here
without their layers being loaded until first use. The CLI and the TUI import nothing below this module but pure
values (tests/test_layers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from fleet.core.errors import (
    ContainerLookupError,
    DrainError,
    FleetError,
    InventoryError,
    LabelError,
    Problem,
    SchedulingError,
    SecretStoreError,
)
from fleet.core.model import Inventory, Node
from fleet.core.nodeops import NodeMark, check_label_change, relabel
from fleet.results import Event, Outcome, PlanView, RunResult

if TYPE_CHECKING:
    from fleet.config.spec import ServiceSpec
    from fleet.engine.apply import Engine
    from fleet.engine.containers import LogStream, PsResult, PsRow
    from fleet.engine.images import PushResult
    from fleet.engine.lbview import LbConfig
    from fleet.engine.nodes import NodeReport, facts_command, report_from
    from fleet.engine.status import FleetStatus, ReplicaStatus, ServiceStatus
    from fleet.engine.volumes import VolumeListing, VolumeRow
    from fleet.node.runtime.base import RunSpec, RuntimeDriver, StopResult
    from fleet.plan.reconcile import Replica
    from fleet.plan.rollout.decide import Command
    from fleet.store.history import Revision
    from fleet.store.lease import Lease, NodeLease
    from fleet.store.nodes import majority
    from fleet.store.records import FleetHistory
    from fleet.store.secrets import Secret
    from fleet.transport import Pool

__all__ = [
    "LIST_TIMEOUT",
    "ContainerLookupError",
    "Event",
    "Fleet",
    "FleetStatus",
    "LogLines",
    "NodeLease",
    "NodeReport",
    "Outcome",
    "PlanView",
    "PoolOptions",
    "PsResult",
    "PsRow",
    "PushResult",
    "ReplicaStatus",
    "Revision",
    "RunResult",
    "Secret",
    "SecretRef",
    "SecretStoreError",
    "ServiceStatus",
    "VolumeListing",
    "VolumeRow",
    "facts_command",
    "majority",
    "one_off_spec",
    "report_from",
    "secret_backend",
    "secret_check",
    "secret_get",
    "secret_rm",
    "secret_set",
]

T = TypeVar("T")

# Values and helpers that live below the façade, importable from here; their module is imported on first use
# only, so that `fleet --help`, `fleet lab` or `fleet secret` never load asyncssh (PEP 562).
_LAZY: dict[str, str] = {
    "PsResult": ".engine.containers", "PsRow": ".engine.containers",
    "PushResult": ".engine.images",
    "VolumeListing": ".engine.volumes", "VolumeRow": ".engine.volumes",
    "NodeReport": ".engine.nodes", "facts_command": ".engine.nodes", "report_from": ".engine.nodes",
    "FleetStatus": ".engine.status", "ReplicaStatus": ".engine.status", "ServiceStatus": ".engine.status",
    "NodeLease": ".store.lease", "majority": ".store.nodes",
    "Secret": ".store.secrets", "Revision": ".store.history",
}

if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any name as an attribute of this module

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __package__), name)
        globals()[name] = value
        return value


# The engine's listing deadline (fleet.engine.calls.LIST_TIMEOUT), here so that `fleet ps --help` can show it
# without loading the engine; tests/test_layers.py checks the two agree.
LIST_TIMEOUT = 8.0


class PoolOptions(TypedDict, total=False):
    """Connection settings for `Fleet.connect`; what is not given keeps the transport's default (see Pool)."""

    connect_timeout: float
    command_timeout: float | None
    connect_attempts: int


LEASE_TTL = 30.0  # seconds; `$FLEET_LEASE_TTL` overrides (a SIGKILLed holder frees the lease after this)


def lease_ttl() -> float:
    try:
        ttl = float(os.environ.get("FLEET_LEASE_TTL", LEASE_TTL))
    except ValueError:
        return LEASE_TTL
    return ttl if 1.0 <= ttl <= 3600.0 else LEASE_TTL


class Fleet:
    """Operations on the fleet described by an inventory, over one connection pool."""

    def __init__(self, inventory: Inventory, pool: Pool, *, on_event: Callable[[Event], None] | None = None,
                 secrets: Callable[[str], str | None] | None = None, wait: float = 0.0,
                 command: str | None = None) -> None:
        self.inventory = inventory
        self.pool = pool
        self.on_event = on_event
        self.secrets = secrets
        self.wait = wait
        self.command = command or shlex.join(["fleet", *sys.argv[1:]])[:200]
        self._reports: list[NodeReport] | None = None
        self._records: FleetHistory | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, inventory: Inventory, *, on_event: Callable[[Event], None] | None = None,
                      secrets: Callable[[str], str | None] | None = None, wait: float = 0.0,
                      command: str | None = None, **pool: Unpack[PoolOptions]) -> AsyncIterator[Fleet]:
        """A Fleet with its own connection pool (`pool`: connect and command deadlines), closed on exit."""
        from fleet.transport import Pool

        async with Pool(**pool) as opened:
            yield cls(inventory, opened, on_event=on_event, secrets=secrets, wait=wait, command=command)

    # --- reading ----------------------------------------------------------------------------------------
    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        """Facts from every node in one round trip each, concurrently; one report per node, in inventory order.

        `ports` adds the TCP ports in use on each node, which placement needs and `fleet nodes` does not."""
        from fleet.engine.nodes import collect

        # The nodes' marks (cordoned, draining, CLI labels) are read from the fleet's records meanwhile.
        reports, (marks, why) = await asyncio.gather(
            collect(self.pool, self.inventory.nodes, ports=ports, inventory=self.inventory.path), self._marks())
        self._reports = _marked(reports, marks, why)
        return self._reports

    async def _marks(self) -> tuple[dict[str, NodeMark], str | None]:
        """Every node's mark, read from the record nodes now, and why they could not be read (if so)."""
        from fleet.store.nodeops import fetch_marks
        from fleet.store.nodes import record_nodes

        return await fetch_marks(self.pool, record_nodes(self.inventory))

    async def reports(self, *, ports: bool = False) -> list[NodeReport]:
        """The node reports of this run (collected once, on first use)."""
        if self._reports is None:
            await self.nodes(ports=ports)
        assert self._reports is not None
        return self._reports

    async def ready(self) -> list[NodeReport]:
        return [r for r in await self.reports() if r.ok]

    def driver(self, report: NodeReport) -> RuntimeDriver:
        from fleet.engine.calls import driver_for

        return driver_for(report.node, report.facts)

    def node(self, name: str) -> Node:
        return self.inventory.node(name)

    def records(self) -> FleetHistory:
        """The fleet's revision history and decisions, kept on the record nodes (a local copy as a cache)."""
        if self._records is None:
            from fleet.store.history import History
            from fleet.store.nodes import record_nodes
            from fleet.store.records import FleetHistory

            cache = None
            with contextlib.suppress(FleetError, OSError):
                cache = History()
            self._records = FleetHistory(self.pool, record_nodes(self.inventory), cache=cache)
        return self._records

    async def engine(self, guard: Callable[[], None] | None = None, held: Sequence[Replica] = ()) -> Engine:
        """An engine over this run's reports; `held` are replicas of nodes in their grace period (see Engine)."""
        from fleet.engine.apply import Engine

        return Engine(self.pool, await self.reports(ports=True), on_event=self.on_event, secrets=self.secrets,
                      records=self.records(), guard=guard, held=held, edge=self.inventory.edge)

    def stamped(self, specs: Sequence[ServiceSpec]) -> list[ServiceSpec]:
        """The specs with the keyed digests of their secrets' current values (`fleet.store.secrets`), so a
        rotated secret is a changed spec (its replicas roll) and a changed intent (reconcile tries it). A secret
        the keyring lacks gets no digest (its service fails where it starts, naming it); a keyring that cannot be
        read raises KeyringUnavailable or KeyringLocked before anything changes."""
        from fleet.config.spec import with_secret_digests
        from fleet.store.secrets import get_secret, secret_digest

        names = sorted({n for s in specs for n in s.secret_names()})
        if not names:
            return list(specs)
        get = self.secrets or get_secret
        key = self.digest_key()
        digests = {}
        for name in names:
            value = get(name)
            if value is not None:
                digests[name] = secret_digest(key, name, value)
        return [with_secret_digests(s, digests) for s in specs]

    def stamped_for(self, specs: Sequence[ServiceSpec], command: Command) -> tuple[list[ServiceSpec], dict[str, str]]:
        """`stamped(specs)`, and the services left out with why. When the keyring cannot be read, `reconcile`
        (cron, a timer, `fleet watch`) still converges the services that use no secret, and names the others:
        they keep running as they are, since whether a secret was rotated cannot be told. `apply` raises."""
        try:
            return self.stamped(specs), {}
        except SecretStoreError as exc:
            if command != "reconcile":
                raise
            return ([s for s in specs if not s.secret_names()],
                    {s.name: f"not reconciled: {exc}" for s in specs if s.secret_names()})

    def digest_key(self) -> bytes:
        """The fleet's key for secret digests (from the keyring; made on first use)."""
        from fleet.store.secrets import digest_key

        return digest_key()

    async def plan(self, specs: Sequence[ServiceSpec]) -> PlanView:
        """What `apply` would change; read-only (no lease)."""
        self.check_volumes(specs)
        return await (await self.engine()).preview(self.stamped(specs))

    async def lb_show(self, nodes: Sequence[str] | None = None) -> list[LbConfig]:
        """The HAProxy config each lb node runs (or those named), its stats password hash masked; read-only."""
        from fleet.engine.lbview import read_configs

        unknown = [n for n in nodes or () if n not in self.inventory.names()
                   or not self.inventory.node(n).has_role("lb")]
        if unknown:
            raise FleetError(f"not an lb node of {self.inventory.path}: {', '.join(unknown)}")
        return await read_configs(await self.engine(), nodes)

    async def history(self, service: str) -> list[Revision]:
        return await self.records().list(service)

    async def status(self, reports: Sequence[NodeReport] | None = None) -> FleetStatus:
        """Every service's replicas per node, their health in each load balancer and the service's address, read
        from the ready nodes of `reports` (default: this run's); what `fleet status` and the TUI show. A node or
        a balancer that cannot be read is named in the result's `errors` / `lb_errors`, never raised."""
        from fleet.engine.status import status

        # The accepted specs give each service's address (replicas' labels keep the lb port they started with).
        try:
            records: FleetHistory | None = self.records()
        except ValueError:
            records = None  # an inventory with no node to keep records on
        return await status(self.pool, list(reports) if reports is not None else await self.reports(), records)

    async def ps(self, *, all: bool = False, timeout: float = LIST_TIMEOUT) -> PsResult:
        """The containers on every ready node: fleet's by service and replica, then foreign ones; only running
        ones unless `all`. Each node has `timeout` seconds to list them; one that is not ready or does not answer
        in time is named in `errors`, the others are listed all the same."""
        from fleet.engine.containers import ps
        from fleet.node.runtime.base import Status

        result = await ps(self.pool, await self.reports(), timeout=timeout)
        if all:
            return result
        return dataclasses.replace(result, rows=tuple(r for r in result.rows if r.info.status is Status.RUNNING))

    # --- changing (under the fleet's lease) -------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def leased(self) -> AsyncIterator[Lease]:
        """The fleet's lease for this operation: taken (waiting up to `wait`), renewed, released on exit."""
        from fleet.store.lease import Lease
        from fleet.store.nodes import record_nodes

        async with Lease(self.pool, record_nodes(self.inventory), command=self.command, ttl=lease_ttl(),
                         wait=self.wait) as lease:
            yield lease

    @contextlib.asynccontextmanager
    async def writing(self, held: Sequence[Replica] = ()) -> AsyncIterator[Engine]:
        """The fleet's lease for this operation, then an engine whose every step checks it is still held."""
        async with self.leased() as lease:
            yield await self.engine(guard=lease.check, held=held)

    async def apply(self, specs: Sequence[ServiceSpec], command: Command = "apply",
                    parallel: int | None = None, held: Sequence[Replica] = ()) -> RunResult:
        """`apply` tries the playbooks; `reconcile` restores the accepted state (see fleet.plan.rollout.decide).
        `parallel` services converge at once (default: `fleet.engine.concurrency.DEFAULT_PARALLEL`). `held`:
        replicas of nodes that stopped answering, kept as running where they were (`fleet watch`'s grace)."""
        self.check_volumes(specs)
        specs, skipped = self.stamped_for(specs, command)
        async with self.writing(held) as engine:
            return await engine.apply(specs, command, parallel, skipped)

    async def scale(self, spec: ServiceSpec, replicas: int) -> RunResult:
        """Run `replicas` of the service now; the count holds (reconcile keeps it) until the next `apply`."""
        self.check_volumes([spec])
        (spec,) = self.stamped([spec])
        async with self.writing() as engine:
            return await engine.scale(spec, replicas)

    async def destroy(self, service: str, grace: float = 10.0) -> RunResult:
        """Remove the service; a node that is down now has its replicas removed by the next run that reaches it."""
        async with self.writing() as engine:
            return await engine.destroy(service, grace)

    async def rollback(self, service: str, to: int | None = None) -> tuple[Revision, RunResult]:
        """Back to revision `to` (default: the last good one before the newest), pinned: reconcile keeps it."""
        async with self.writing() as engine:
            return await engine.turn("rollback", service, to)

    async def promote(self, service: str) -> tuple[Revision, RunResult]:
        """Roll the rest of the service to the waiting canary's revision, batch by batch."""
        async with self.writing() as engine:
            return await engine.turn("promote", service)

    async def abort(self, service: str) -> tuple[Revision, RunResult]:
        """Remove the waiting canary: the service goes back to its accepted revision; reconcile keeps it so."""
        async with self.writing() as engine:
            return await engine.turn("abort", service)

    # --- node operations (`fleet node`): marks kept on the fleet, under the lease -------------------------
    def known(self, name: str) -> Node:
        """The inventory's node `name`; InventoryError naming the node and the inventory file when there is none."""
        try:
            return self.inventory.node(name)
        except KeyError:
            raise InventoryError([Problem(self.inventory.path, None, "", f"no node {name!r} in this inventory "
                                          f"(its nodes: {', '.join(self.inventory.names()) or 'none'})")]) from None

    async def _mark(self, node: str, change: Callable[[NodeMark], NodeMark]) -> NodeMark:
        """Change one node's mark on the fleet (under the lease, which the caller holds); this run's reports
        follow. Returns the node's mark after."""
        from fleet.store.lease import default_holder
        from fleet.store.nodeops import update_mark

        marks = await update_mark(self.records(), node, change, by=default_holder())
        if self._reports is not None:
            self._reports = _marked(self._reports, marks, None)
        return marks.get(node, NodeMark())

    async def cordon(self, node: str) -> None:
        """No new replica goes to `node` (those running there stay) until `uncordon`; every controller reads it
        from the fleet's records."""
        self.known(node)
        async with self.leased():
            await self._mark(node, lambda m: dataclasses.replace(m, cordoned=True))

    async def uncordon(self, node: str) -> None:
        """Replicas may be placed on `node` again (clears a cordon and a drain left unfinished)."""
        self.known(node)
        async with self.leased():
            await self._mark(node, lambda m: dataclasses.replace(m, cordoned=False, draining=False))

    async def label(self, node: str, set: Mapping[str, str], remove: Sequence[str]) -> dict[str, str]:
        """Set labels on `node` (they win over the inventory's) and remove others (a CLI label is dropped; an
        inventory label is recorded as removed); returns the node's labels after. `placement.require` uses them
        from the next apply or reconcile. LabelError for a key or value the label rules refuse."""
        entry = self.known(node)
        try:
            check_label_change(set, remove)
        except ValueError as exc:
            raise LabelError(str(exc)) from exc
        async with self.leased():
            mark = await self._mark(node, lambda m: relabel(m, entry.labels, set, remove))
        return mark.effective(entry.labels)

    async def drain(self, node: str) -> RunResult:
        """Move every replica off `node` and leave it cordoned.

        Marked draining on the fleet first (so every controller moves its replicas, should this one stop), then
        each service with a replica there converges to its accepted state through the engine, as reconcile does:
        its replicas there are misplaced and replaced surge first, drained from the load balancers before they
        stop. Then the node is recorded cordoned. DrainError when they cannot all be placed elsewhere (nothing
        was changed; the node is left cordoned with its replicas running); a service that fails to move makes
        the result not ok, and any other failure is raised, also leaving the node cordoned. A drain cut short (the
        process killed, the lease lost) leaves it draining: whoever converges the fleet next carries it on."""
        def cordon_only(m: NodeMark) -> NodeMark:
            return dataclasses.replace(m, cordoned=True, draining=False)

        self.known(node)
        async with self.leased() as lease:
            await self._mark(node, lambda m: dataclasses.replace(m, cordoned=True, draining=True))
            try:
                await self.nodes(ports=True)  # this run's reports, with the node draining
                result = await (await self.engine(guard=lease.check)).drain(node)
            except SchedulingError as exc:
                await self._mark(node, cordon_only)
                raise DrainError(f"cannot drain {node}: {exc}\n{node} is cordoned; its replicas still run there "
                                 f"(`fleet node uncordon {node}` to undo)") from exc
            except FleetError:
                # A drain that failed ends cordoned (run it again to finish); one cut short (the controller killed,
                # the lease lost) stays draining, and the next controller to converge the fleet carries it on.
                if lease.held:
                    with contextlib.suppress(FleetError):
                        await self._mark(node, cordon_only)
                raise
            await self._mark(node, cordon_only)
            return result

    # --- containers by hand (`fleet run`, `stop`, `rm`, `logs`, `exec`): no lease, no records ----------------
    async def _lookup(self, ref: str) -> tuple[list[NodeReport], list[PsRow]]:
        """This run's reports and the containers `ref` names (see fleet.engine.containers.find): raises
        ContainerLookupError when it names none, or a prefix names several."""
        from fleet.engine.containers import find, ps

        reports = await self.reports()
        return reports, find(await ps(self.pool, reports), ref)

    async def run_one(self, node: str, spec: RunSpec, *, timeout: float = 60.0) -> None:
        """Start one container on `node` (its image must be there: `push`). Raises FleetError naming the node
        when it is not ready, ContainerLookupError when there is no such node, RuntimeDriverError when the
        runtime refuses."""
        from fleet.engine.containers import report_of, run_container

        report = report_of(await self.reports(), node)
        if not report.ok:
            raise FleetError(f"{node}: {report.status}: {report.reason}")
        await run_container(self.pool, report, spec, timeout=timeout)

    async def stop(self, ref: str, grace: float = 10.0) -> list[tuple[PsRow, StopResult | str]]:
        """Stop every container `ref` names (SIGTERM, SIGKILL after `grace` seconds, then delete): one entry per
        container, with how it stopped or why it could not be (one failure never stops the others)."""
        from fleet.engine.containers import stop_container

        return await self._each(ref, lambda report, row: stop_container(self.pool, report, row.info.id, grace))

    async def rm(self, ref: str) -> list[tuple[PsRow, str | None]]:
        """Remove every container `ref` names at once (kill, then its task, container, snapshot and log): one
        entry per container, None when removed, else why not."""
        from fleet.engine.containers import remove_container

        return await self._each(ref, lambda report, row: remove_container(self.pool, report, row.info.id))

    async def _each(self, ref: str, act: Callable[[NodeReport, PsRow], Awaitable[T]]) -> list[tuple[PsRow, T | str]]:
        from fleet.engine.containers import report_of

        reports, rows = await self._lookup(ref)
        out: list[tuple[PsRow, T | str]] = []
        for row in rows:
            try:
                out.append((row, await act(report_of(reports, row.node), row)))
            except FleetError as exc:
                out.append((row, str(exc)))
        return out

    @contextlib.asynccontextmanager
    async def logs(self, ref: str, *, follow: bool = False, tail: int | None = 100) -> AsyncIterator[LogLines]:
        """The logs of the containers `ref` names (a service: all its replicas), as an async iterator of
        `(prefix, line)`: `async with fleet.logs("web", follow=True) as lines: async for prefix, line in lines:`.

        `tail` lines from the end of each log (None: whole logs); `follow` keeps reading until the block is left,
        which stops every reader. Raises ContainerLookupError on entry when `ref` names nothing."""
        from fleet.engine.containers import logs, targets

        reports, rows = await self._lookup(ref)
        chosen = targets(reports, rows)
        async with logs(self.pool, chosen, tail, follow) as stream:
            yield LogLines(tuple(t.prefix for t in chosen), stream)

    async def exec(self, ref: str, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
        """Run `argv` inside the one running container `ref` names, handing each output line (stdout and stderr
        merged) to `on_line` as it comes; returns the command's exit code. No deadline: it runs as long as it
        runs. Raises ContainerLookupError when `ref` names no container, or a service with several replicas."""
        from fleet.engine.containers import exec_in, find_one, ps, report_of

        reports = await self.reports()
        row = find_one(await ps(self.pool, reports), ref)
        return await exec_in(self.pool, report_of(reports, row.node), row.info.id, list(argv), on_line)

    # --- volumes (`fleet volume`) ------------------------------------------------------------------------
    def check_volumes(self, specs: Sequence[ServiceSpec]) -> None:
        """Raise SpecError (file:line) for an sshfs volume whose storage node the inventory lacks; pure."""
        from fleet.config.volumes import check_volumes

        check_volumes(specs, self.inventory)

    async def volumes(self) -> VolumeListing:
        """Every volume on every ready worker (local) and storage node (sshfs): size, the containers using it;
        nodes that could not be read are named in `errors`."""
        from fleet.engine.volumes import list_volumes

        return await list_volumes(self.pool, await self.reports())

    async def volume(self, ref: str, node: str | None = None) -> VolumeRow:
        """The one volume `SERVICE/NAME` names (on `node`); raises VolumeError when none or several."""
        from fleet.engine.volumes import find

        return find(await self.volumes(), ref, node)

    async def volume_rm(self, ref: str, node: str | None = None) -> VolumeRow:
        """Delete a volume's data, under the fleet's lease; refused (VolumeError) while a container uses it."""
        from fleet.engine.volumes import remove

        async with self.leased():
            row = await self.volume(ref, node)
            await remove(self.pool, await self.reports(), row)
            return row

    async def volume_backup(self, ref: str, path: str, node: str | None = None,
                            on_progress: Callable[[int], None] | None = None) -> tuple[VolumeRow, int]:
        """Stream a tar of the volume over SSH into the local file `path`; returns the volume and the size."""
        from fleet.engine.volumes import backup

        row = await self.volume(ref, node)
        return row, await backup(self.pool, await self.reports(), row, path, on_progress=on_progress)

    async def volume_restore(self, path: str, ref: str, node: str, *, sshfs: bool = False,
                             on_progress: Callable[[int], None] | None = None) -> VolumeRow:
        """Unpack the tar `path` into a new volume `SERVICE/NAME` on `node` (a worker; with `sshfs`, a storage
        node), under the fleet's lease; refused when that volume already holds data."""
        from fleet.engine.volumes import restore

        async with self.leased():
            return await restore(self.pool, await self.reports(), ref, node, path,
                                 kind="sshfs" if sshfs else "local", on_progress=on_progress)

    # --- images -----------------------------------------------------------------------------------------
    async def push(self, archive: str, nodes: Sequence[str] | None = None, *, limit: int = 8,
                   on_progress: Callable[[str, int], None] | None = None,
                   on_status: Callable[[str, str], None] | None = None) -> list[PushResult]:
        """Stream an image archive over SSH into the containerd of `nodes` (default: every worker), `limit` at
        once, skipping nodes that already hold it; one result per node, never raising for one node.

        `on_progress(node, bytes_sent)` follows each upload, `on_status(node, state)` each node's state
        (checking, present, sending, sent, failed). Raises ImageArchiveError before contacting any node when the
        archive is unusable, PushError when a named node is not in the inventory."""
        from fleet.engine.images import push

        return await push(self.pool, await self.reports(), archive, list(nodes) if nodes is not None else None,
                          limit, on_progress=on_progress, on_status=on_status)

    async def image_list(self) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """({node: {image ref: manifest digest}} of every ready node, {node: why it could not be read})."""
        from fleet.engine.images import list_images

        return await list_images(self.pool, await self.reports())

    # --- the fleet's lease, by hand (`fleet lock`) ------------------------------------------------------
    def record_nodes(self) -> list[Node]:
        """The nodes that keep the fleet's lease and records (see fleet.store.nodes.record_nodes)."""
        from fleet.store.nodes import record_nodes

        return record_nodes(self.inventory)

    def _lease_nodes(self) -> list[Node]:
        nodes = self.record_nodes()
        if not nodes:
            raise InventoryError([Problem(self.inventory.path, None, "",
                                          "no nodes, so no record node to keep the fleet's lease")])
        return nodes

    async def lock_status(self, *, timeout: float = 10.0) -> list[NodeLease]:
        """The lease on each record node, each within `timeout` seconds: `(node, LeaseInfo)` (possibly expired),
        `(node, None)` when free, `(node, why)` when it could not be read. Never takes the lease."""
        from fleet.store.lease import lease_status

        return await lease_status(self.pool, self._lease_nodes(), timeout=timeout)

    async def break_lock(self, *, timeout: float = 10.0) -> list[NodeLease]:
        """Remove the lease on every record node, whoever holds it; returns what was broken there (None: it was
        free; a string: the node could not be reached). A holder still running stops at its next renewal."""
        from fleet.store.lease import break_lease

        return await break_lease(self.pool, self._lease_nodes(), timeout=timeout)


def _marked(reports: Sequence[NodeReport], marks: Mapping[str, NodeMark], why: str | None) -> list[NodeReport]:
    """The reports with each node's mark (`why`: the marks could not be read, so none is known)."""
    return [dataclasses.replace(r, mark=marks.get(r.node.name, NodeMark()), mark_error=why) for r in reports]


class LogLines:
    """The log lines `Fleet.logs` reads, as `(prefix, line)`; `prefixes` are the containers read (`node/short
    id`, in order) and `errors` names, by prefix, each log that could not be read (filled as they fail)."""

    def __init__(self, prefixes: tuple[str, ...], stream: LogStream) -> None:
        self.prefixes = prefixes
        self._stream = stream

    @property
    def errors(self) -> Mapping[str, str]:
        return self._stream.errors

    def __aiter__(self) -> AsyncIterator[tuple[str, str]]:
        return self._stream.__aiter__()


def one_off_spec(node: str, image: str, name: str, *, env: Mapping[str, str] | None = None, port: int | None = None,
                 cpu: float | None = None, memory: int | None = None, restart: str = "no",
                 command: Sequence[str] = (), suffix: str | None = None) -> RunSpec:
    """A one-off container's RunSpec (`fleet run`): labelled as replica 1 of service `name`; PORT (when given),
    FLEET_NODE and FLEET_REPLICA are set in its environment unless `env` sets them. Pure: raises ValueError for
    a name or value the labels refuse, before any node is contacted."""
    from fleet.core import labels as L
    from fleet.node.runtime.base import RunSpec

    defaults = {"FLEET_NODE": node, "FLEET_REPLICA": "1"}
    if port is not None:
        defaults["PORT"] = str(port)
    return RunSpec(
        id=L.container_id(name, 1, suffix),
        image=image,
        command=tuple(command) or None,
        env={**defaults, **(env or {})},
        cpu=cpu,
        memory=memory,
        labels=L.build_labels(name, replica=1, cpu=cpu, memory=memory, port=port, node=node),
        restart="always" if restart == "always" else "no",
    )


# --- secrets: the controller's keyring; playbooks only name them -----------------------------------------------
# Module functions, not Fleet methods: they touch no node and need no inventory. They are here (rather than the
# CLI calling fleet.store.secrets) so that callers depend on the façade alone, wherever the keyring code lives.


@dataclass(frozen=True)
class SecretRef:
    """A secret a playbook's service references, and whether the keyring has it (its value is never read out)."""

    service: str
    name: str
    present: bool


def secret_get(name: str) -> str | None:
    """The value of secret `name` from the keyring; None when it is not there. Raises KeyringUnavailable (no
    backend) or KeyringLocked, both SecretStoreError, when the keyring cannot be read."""
    from fleet.store.secrets import get_secret

    return get_secret(name)


def secret_set(name: str, value: Secret) -> None:
    """Store a secret in the keyring; raises SecretStoreError when the keyring cannot be used."""
    from fleet.store.secrets import set_secret

    set_secret(name, value)


def secret_rm(name: str) -> bool:
    """Remove a secret from the keyring; False when it was not there. Raises SecretStoreError."""
    from fleet.store.secrets import delete_secret

    return delete_secret(name)


def secret_check(specs: Sequence[ServiceSpec]) -> list[SecretRef]:
    """Every (service, secret) the specs reference, sorted, with whether the keyring has the secret."""
    wanted = sorted({(s.name, n) for s in specs for n in s.secret_names()})
    found = {n: secret_get(n) is not None for _, n in wanted}
    return [SecretRef(service, n, found[n]) for service, n in wanted]


def secret_backend() -> str:
    """The name of the keyring backend in use on this machine."""
    from fleet.store.secrets import backend_name

    return backend_name()
