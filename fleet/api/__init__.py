"""The Fleet façade: the one entry point for the CLI, the terminal UI and a watcher.

Reading operations (nodes, plan, status, ps, logs, images, history, the lease's state) never take the fleet's
lease; every operation that changes the fleet (apply, reconcile, scale, destroy, rollback, promote, abort, and the
node operations cordon, uncordon, drain, label) runs under it, with the fleet's records. One-off containers
(run_one, stop, rm, exec) and image pushes act on the nodes directly, as `fleet run` always has. Every method
opens what it needs (this run's node reports, the records, the lease), calls one operation of the engine or the
store, and returns its values; nothing is printed. One-shot reads (`reader`: nodes, status, ps) take the one read
path, fleet.engine.reader: a running `fleet watch`'s warm connections when one answers, else a pool of their own.

Importing this module loads the engine and the transport (asyncssh): the CLI imports it inside its commands, and
takes the values it renders from the pure fleet.results (tests/test_layers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TypedDict, Unpack

from fleet.api.hands import Hands
from fleet.api.jobs import JobLog, Jobs
from fleet.api.turns import Turns
from fleet.config.spec import ServiceSpec
from fleet.core.errors import (
    ContainerLookupError,
    FleetError,
    InventoryError,
    SecretStoreError,
)
from fleet.core.model import Inventory, Node
from fleet.core.nodeops import NodeMark, relabel
from fleet.engine import byhand, handwork
from fleet.engine.apply import Engine
from fleet.engine.concurrency import Coalesced
from fleet.engine.digests import needs_login, pinned
from fleet.engine.drain import drain_node
from fleet.engine.etcd import MemberRow, RecordsView, StepReport
from fleet.engine.guarded import confirm
from fleet.engine.handwork import LogLines, one_off_spec
from fleet.engine.lbview import read_configs
from fleet.engine.look import Observed, lb_rows, look, observe, observed
from fleet.engine.nodes import collect, facts_command, report_from
from fleet.engine.offline import Download
from fleet.engine.preflight import PrepareReport
from fleet.engine.reader import Reader
from fleet.engine.shared import restart_dead, start_members
from fleet.engine.status import status
from fleet.node.haproxy.stats import StatRow
from fleet.node.offline import MANIFEST as OFFLINE_MANIFEST
from fleet.node.offline import read_manifest
from fleet.node.preflight import NodeCheck
from fleet.node.provision import Plan, offline_plan, plan_for
from fleet.plan.members import MembershipPlan, Step
from fleet.plan.reconcile import Replica
from fleet.plan.rollout.decide import Command
from fleet.results import (
    LIST_TIMEOUT,
    Event,
    FleetStatus,
    LbConfig,
    NodeLease,
    NodeReport,
    Outcome,
    PlanView,
    PsResult,
    PsRow,
    PushResult,
    ReplicaStatus,
    Revision,
    RunResult,
    Secret,
    SecretRef,
    ServiceStatus,
    VolumeListing,
    VolumeRow,
    majority,
)
from fleet.results.jobs import JobRun
from fleet.store.access import (
    brand_new,
    break_lock,
    change_mark,
    check_lb_nodes,
    checked_label_change,
    client_port,
    etcd_store,
    fleet_records,
    known_node,
    lease_ttl,
    lock_status,
    marked,
    marks_of,
    open_shared,
    run_lease,
    stand_in,
    watcher_lease,
)
from fleet.store.changes import Me, RecordsFollower, follow_records
from fleet.store.etcd import EtcdLease, EtcdStore
from fleet.store.etcd_records import EtcdRecords
from fleet.store.follow import EventLog
from fleet.store.nodes import record_nodes, record_warnings
from fleet.store.pause import read_pause
from fleet.store.sealed import SecretKeeper, SecretsView, check_name, open_secrets
from fleet.store.secrets import init_identity, load_identity, secret_check, stamped, stamped_for
from fleet.transport import Pool, RemoteStream
from fleet.transport.terminal import Session, Terminal
from fleet.transport.warm import ask as ask_watcher
from fleet.transport.warm import serve as serve_reads

__all__ = [
    "LIST_TIMEOUT", "ContainerLookupError", "EtcdLease", "Event", "Fleet", "FleetStatus", "LbConfig", "LogLines",
    "NodeLease", "NodeReport", "Outcome", "PlanView", "PoolOptions", "PsResult", "PsRow", "PushResult", "Reader",
    "ReplicaStatus", "Revision", "RunResult", "Secret", "SecretKeeper", "SecretRef", "SecretStoreError",
    "SecretsView", "ServiceStatus", "Session", "Terminal", "VolumeListing", "VolumeRow", "ask_watcher", "check_name",
    "converge_accepted", "event_log", "facts_command", "follow_changes", "init_identity", "keeper", "lease_ttl",
    "load_identity", "majority", "one_off_spec", "reader", "report_from", "secret_check", "serve_reads",
]
__all__ += ["MemberRow", "MembershipPlan", "RecordsView", "Step", "StepReport"]  # fleet records
# `fleet node check|prepare`.
__all__ += ["NodeCheck", "Plan", "PrepareReport", "offline_plan", "plan_for"]
__all__ += ["OFFLINE_MANIFEST", "Download", "read_manifest"]
__all__ += ["JobLog", "JobRun"]  # `fleet job`


Stamped = tuple[list[ServiceSpec], dict[str, str]]  # the specs stamped, and the services left out with why


class PoolOptions(TypedDict, total=False):
    """Connection settings for `Fleet.connect`; what is not given keeps the transport's default (see Pool)."""

    connect_timeout: float
    command_timeout: float | None
    connect_attempts: int


class Fleet(Hands, Jobs, Turns):
    """Operations on the fleet described by an inventory, over one connection pool (the hands-on ones,
    containers by hand, volumes, images and preparing nodes, in fleet.api.hands)."""

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
        self._records: EtcdRecords | None = None
        self._store: EtcdStore | None = None
        self._unsealed: Callable[[str], str | None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, inventory: Inventory, *, on_event: Callable[[Event], None] | None = None,
                      secrets: Callable[[str], str | None] | None = None, wait: float = 0.0,
                      command: str | None = None, **pool: Unpack[PoolOptions]) -> AsyncIterator[Fleet]:
        """A Fleet with its own connection pool (`pool`: connect and command deadlines), closed on exit."""
        async with Pool(**pool) as opened:
            yield cls(inventory, opened, on_event=on_event, secrets=secrets, wait=wait, command=command)

    # --- reading ----------------------------------------------------------------------------------------
    async def nodes(self, *, ports: bool = False) -> list[NodeReport]:
        """Facts from every node in one round trip each, concurrently, with each node's mark (cordoned, draining,
        labels) read from the records meanwhile; one report per node, in inventory order. `ports` adds the TCP
        ports in use on each node, which placement needs and `fleet nodes` does not."""
        reports, (marks, why) = await asyncio.gather(
            collect(self.pool, self.inventory.nodes, ports=ports, inventory=self.inventory.path),
            marks_of(self.pool, self.inventory))
        self._reports = marked(reports, marks, why)
        return self._reports

    async def reports(self, *, ports: bool = False) -> list[NodeReport]:
        """The node reports of this run (collected once, on first use)."""
        if self._reports is None:
            await self.nodes(ports=ports)
        assert self._reports is not None
        return self._reports

    def records(self) -> EtcdRecords:
        """The fleet's history and decisions in etcd; read-only but under the lease (`leased`: written fenced)."""
        if self._records is None:
            self._records = fleet_records(self._store or etcd_store(self.pool, self.inventory), command=self.command)
        return self._records

    async def shared(self) -> EtcdStore:
        """The fleet's etcd, answering (started on first contact: see `open_store`)."""
        if self._store is None:
            self._store = await open_store(self.pool, self.inventory, notes(self.on_event))
        return self._store

    def fresh(self, *, on_event: Callable[[Event], None] | None = None, command: str | None = None) -> Fleet:
        """A Fleet over the same pool with nothing read yet: a watcher's next round, one socket request."""
        return Fleet(self.inventory, self.pool, on_event=on_event, secrets=self.secrets,
                     command=command).with_jobs(self.jobs)

    async def engine(self, guard: Callable[[], Awaitable[None]] | None = None, held: Sequence[Replica] = (), *,
                     recorded: bool = True) -> Engine:
        """An engine over this run's reports; `held` are replicas of nodes in their grace period (see Engine);
        not `recorded`: one that reads no records (a fleet whose etcd was never started has none)."""
        reports, secrets = await asyncio.gather(self.reports(ports=True), self.unsealed())  # a slow node delays both
        records = self.records() if recorded else None
        return self.hook(Engine(self.pool, reports, on_event=self.on_event, secrets=secrets, records=records,
                                guard=guard, held=held, edge=self.inventory.edge,
                                image_retention=self.inventory.image_retention,
                                paused=functools.partial(read_pause, records.store) if records else None), secrets)

    async def unsealed(self, specs: Sequence[ServiceSpec] | None = None) -> Callable[[str], str | None] | None:
        """The getter given, else the fleet's sealed secrets read once (store.sealed); none if `specs` need none."""
        if self.secrets is not None or (specs is not None and not any(s.secret_names() for s in specs)):
            return self.secrets
        if self._unsealed is None:
            # No record node (an inventory with no nodes yet): no secrets to read, said where one is used.
            store = self._store or (etcd_store(self.pool, self.inventory) if record_nodes(self.inventory) else None)
            self._unsealed = await open_secrets(store, place=record_place(self.inventory))
        return self._unsealed

    async def stamped(self, specs: Sequence[ServiceSpec]) -> list[ServiceSpec]:
        """The specs with the keyed digests of their secrets' values (see fleet.store.secrets.stamped)."""
        return stamped(specs, await self.unsealed(specs))

    async def pinned(self, specs: Sequence[ServiceSpec]) -> list[ServiceSpec]:
        """The specs with their tags' digests now (fleet.engine.digests): `apply` and `plan` only."""
        secrets = await self.unsealed() if needs_login(specs, self.inventory) else None
        return await pinned(specs, self.inventory, secrets)

    async def stamped_for(self, specs: Sequence[ServiceSpec], command: Command) -> Stamped:
        """`stamped(specs)`, and the services a reconcile leaves out with why (fleet.store.secrets.stamped_for)."""
        return stamped_for(specs, command, await self.unsealed(specs))

    async def plan(self, specs: Sequence[ServiceSpec]) -> PlanView:
        """What `apply` would change; read-only (no lease)."""
        self.check_volumes(specs)
        specs = await self.stamped(specs)  # a keyring that cannot be read fails here, before any node is contacted
        if await brand_new(self.pool, self.inventory):  # nothing on record yet: the first writing run starts etcd
            return await (await self.engine(recorded=False)).preview(await self.pinned(specs))
        view = await (await self.engine()).preview(await self.pinned(specs))
        return view if stand_in() else dataclasses.replace(view, members=await self.membership().pending())

    async def lb_show(self, nodes: Sequence[str] | None = None) -> list[LbConfig]:
        """The HAProxy config each lb node runs (or those named), its stats password hash masked; read-only. A name
        that is not an lb node of the inventory is refused (FleetError) before any node is contacted."""
        check_lb_nodes(self.inventory, nodes or ())
        return await read_configs(await self.engine(), nodes)

    async def history(self, service: str) -> list[Revision]:
        return await fleet_records(await self.shared()).list(service)

    async def status(self, reports: Sequence[NodeReport] | None = None) -> FleetStatus:
        """Every service's replicas per node, their health in each load balancer and the service's address, read
        from the ready nodes of `reports` (default: this run's); what `fleet status` and the TUI show. A node or
        a balancer that cannot be read is named in the result's `errors` / `lb_errors`, never raised."""
        # The accepted specs give each service's address (replicas' labels keep the lb port they started with).
        try:
            records: EtcdRecords | None = self.records()
        except InventoryError:
            records = None  # an inventory with no node to keep records on
        return await status(self.pool, list(reports) if reports is not None else await self.reports(), records)

    async def ps(self, *, all: bool = False, timeout: float = LIST_TIMEOUT) -> PsResult:
        """The containers on every ready node: fleet's by service and replica, then foreign ones; only running
        ones unless `all`. Each node has `timeout` seconds to list them; one that is not ready or does not answer
        in time is named in `errors`, the others are listed all the same."""
        return await handwork.ps(self.pool, await self.reports(), all=all, timeout=timeout)

    # --- changing (under the fleet's lease) -------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def leased(self) -> AsyncIterator[EtcdLease]:
        """The fleet's lease for this operation, with this run's records under it (see store.access.run_lease)."""
        async with run_lease(self.pool, self.inventory, await self.shared(), command=self.command, wait=self.wait,
                             note=notes(self.on_event)) as (lease, records):
            before, self._records = self._records, records
            try:
                yield lease
            finally:
                self._records = before

    @contextlib.asynccontextmanager
    async def writing(self, held: Sequence[Replica] = ()) -> AsyncIterator[Engine]:
        """The fleet's lease, then an engine that confirms it with etcd before each step and action on nodes."""
        async with self.leased() as lease:
            yield await self.engine(guard=Coalesced(lease.check), held=held)

    async def apply(self, specs: Sequence[ServiceSpec], command: Command = "apply",
                    parallel: int | None = None, held: Sequence[Replica] = (),
                    images: Mapping[str, str] | None = None) -> RunResult:
        """`apply` tries the playbooks; `reconcile` restores the accepted state (see fleet.plan.rollout.decide).
        `parallel` services converge at once (default: `fleet.engine.concurrency.DEFAULT_PARALLEL`). `held`:
        replicas of nodes that stopped answering, kept as running where they were (`fleet watch`'s grace).
        `images` (`apply --set SERVICE.image=REF`): those services run that image, recorded as `fleet deploy`."""
        self.check_volumes(specs)
        specs, skipped = await self.stamped_for(specs, command)
        if command == "apply":  # reconcile heals the accepted revision, digest included
            specs = await self.pinned(specs)
        async with self.writing(held) as engine:
            if command == "apply" and not stand_in():  # the etcd members become the record nodes, step by step
                await self.membership(notes(self.on_event), self._store).apply(lambda: confirm(engine.stage.guard))
            return await engine.apply(specs, command, parallel, skipped, images)

    async def scale(self, spec: ServiceSpec, replicas: int) -> RunResult:
        """Run `replicas` of the service now; the count holds (reconcile keeps it) until the next `apply`."""
        self.check_volumes([spec])
        (spec,) = await self.stamped([spec])
        async with self.writing() as engine:
            return await engine.scale(spec, replicas)

    async def destroy(self, service: str, grace: float = 10.0) -> RunResult:
        """Remove the service; a node that is down now has its replicas removed by the next run that reaches it."""
        async with self.writing() as engine:
            return await engine.destroy(service, grace)

    async def retire(self, ids: frozenset[str], grace: float | None) -> None:
        """Stop the running replicas `ids` of services under the lease: out of the load balancers, drained (up to
        `grace`; None: each service's stop_grace_period), then stopped (fleet.engine.byhand.retire); FleetError
        when one could not be."""
        async with self.writing() as engine:
            result = await byhand.retire(engine, ids, grace)
        if not result.ok:
            raise FleetError("; ".join([*(o.reason or o.service for o in result.outcomes if not o.ok),
                                        *(f"{n}: {why}" for n, why in result.errors.items())]))

    async def renew(self, service: str, ref: str) -> RunResult:
        """Replace the replica `ref` names of `service` at its accepted revision as the records hold it under the
        lease, through its update policy (surge first where it allows): the UI's restart of one replica."""
        async with self.writing() as engine:
            state = await engine.ledger.state(service)
            spec = await engine.ledger.accepted_spec(service)
            if state is None or state.accepted is None or spec is None or state.decision == "destroyed":
                raise FleetError(f"{service}: no accepted revision on this fleet's records now")
            if state.replicas is not None:
                spec = dataclasses.replace(spec, replicas=state.replicas)
            return await byhand.renew(engine, spec, state.accepted, ref)

    # --- node operations (`fleet node`): marks kept on the fleet, under the lease -------------------------
    def known(self, name: str) -> Node:
        """The inventory's node `name`; InventoryError naming the node and the inventory file when there is none."""
        return known_node(self.inventory, name)

    async def _mark(self, node: str, change: Callable[[NodeMark], NodeMark]) -> NodeMark:
        """Change one node's mark on the fleet (under the lease, which the caller holds); this run's reports
        follow. Returns the node's mark after."""
        marks = await change_mark(self.records(), node, change)
        if self._reports is not None:
            self._reports = marked(self._reports, marks, None)
        return marks.get(node, NodeMark())

    async def _remark(self, node: str, change: Callable[[NodeMark], NodeMark]) -> NodeMark:
        """`_mark` for a node the inventory must have (InventoryError before anything else), under the lease."""
        self.known(node)
        async with self.leased():
            return await self._mark(node, change)

    async def cordon(self, node: str) -> None:
        """No new replica goes to `node` (those running there stay) until `uncordon`; every controller reads it
        from the fleet's records."""
        await self._remark(node, lambda m: dataclasses.replace(m, cordoned=True))

    async def uncordon(self, node: str) -> None:
        """Replicas may be placed on `node` again (clears a cordon and a drain left unfinished)."""
        await self._remark(node, lambda m: dataclasses.replace(m, cordoned=False, draining=False))

    async def label(self, node: str, set: Mapping[str, str], remove: Sequence[str]) -> dict[str, str]:
        """Set labels on `node` (they win over the inventory's) and remove others (a CLI label is dropped; an
        inventory label is recorded as removed); returns the node's labels after. `placement.require` uses them
        from the next apply or reconcile. LabelError for a key or value the label rules refuse."""
        entry = self.known(node)
        checked_label_change(set, remove)
        return (await self._remark(node, lambda m: relabel(m, entry.labels, set, remove))).effective(entry.labels)

    async def drain(self, node: str) -> RunResult:
        """Move every replica off `node` and leave it cordoned (see fleet.engine.drain.drain_node)."""
        self.known(node)
        async with self.leased() as lease:

            async def move() -> RunResult:
                await self.nodes(ports=True)  # this run's reports, with the node draining
                return await (await self.engine(guard=Coalesced(lease.check))).drain(node)

            return await drain_node(node, lease, lambda change: self._mark(node, change), move)

    # --- the fleet's lease, by hand (`fleet lock`) ------------------------------------------------------
    async def lock_status(self, *, timeout: float = 10.0) -> list[NodeLease]:
        """The lease on each record node, never taking it (see fleet.store.access.lock_status)."""
        return await lock_status(self.pool, self.inventory, timeout=timeout)

    async def break_lock(self, *, timeout: float = 10.0) -> list[NodeLease]:
        """Remove the lease on every record node, whoever holds it (see fleet.store.access.break_lock)."""
        return await break_lock(self.pool, self.inventory, timeout=timeout)

    # --- what `fleet watch` looks at each round, and its own lease ----------------------------------------
    async def observe(self, reports: list[NodeReport]) -> Observed:
        """The replicas the ready nodes of `reports` run; `errors` names the nodes that could not be listed."""
        return await observe(self.pool, reports)

    async def look(self, *, ports: bool = False) -> tuple[list[NodeReport], Observed]:
        """`nodes(ports=)` and `observe` of them, with one round trip per node instead of two (fleet.node.look):
        the same reports, marks, replicas and errors; what a watcher's round reads."""
        (reports, listed), (marks, why) = await asyncio.gather(
            look(self.pool, self.inventory.nodes, ports=ports, inventory=self.inventory.path),
            marks_of(self.pool, self.inventory))
        self._reports = marked(reports, marks, why)
        return self._reports, observed(listed)

    async def lb_rows(self, reports: list[NodeReport]) -> list[list[StatRow] | None]:
        """Every usable lb node's HAProxy server rows (None: that node could not be read)."""
        return await lb_rows(self.pool, reports)

    def watcher_lease(self, ttl: float) -> EtcdLease:
        """The lease that says which `fleet watch` acts (see fleet.store.access.watcher_lease); not yet taken."""
        return watcher_lease(self.pool, self.inventory, ttl)

    def stream(self, node: Node, argv: Sequence[str]) -> RemoteStream:
        """`argv`'s output on `node`, line by line, for as long as it runs (no deadline; the keepalive ends it)."""
        return self.pool.stream(node, list(argv))


def keeper(fleet: Fleet, identity_file: str | None = None) -> SecretKeeper:
    """The fleet's sealed secrets and controllers, changed by this controller (`fleet secret`, `fleet controller`)."""
    return SecretKeeper(etcd_store(fleet.pool, fleet.inventory), command=fleet.command, identity_file=identity_file,
                        wait=fleet.wait, place=record_place(fleet.inventory))


def record_place(inventory: Inventory) -> str:
    """Which record nodes keep the fleet's controller list: what a controller remembers its verified list by."""
    return ",".join(sorted(n.name for n in record_nodes(inventory)))


def notes(on_event: Callable[[Event], None] | None) -> Callable[..., None]:
    """Lines about the fleet's shared state, as events (`records`) to whoever follows this run's."""
    def note(*lines: str) -> None:
        for line in lines:
            if on_event is not None:
                on_event(Event("records", "", line))
    return note


async def open_store(pool: Pool, inventory: Inventory, note: Callable[..., None]) -> EtcdStore:
    """The fleet's etcd, answering: on first contact (no member answers) every record node's member is started with
    its peer certificates, and a member that died is started again (fleet.store.access.open_shared); what is
    unsafe about the record nodes the inventory names goes to `note`."""
    nodes = record_nodes(inventory)
    note(*record_warnings(inventory))
    return await open_shared(pool, inventory, lambda: start_members(pool, nodes),
                             lambda: restart_dead(pool, nodes, client_port()))


# --- the shared state as it changes (`fleet events`, `fleet watch`, the UI's actions) -----------------------------
async def event_log(fleet: Fleet) -> EventLog:
    """The fleet's event log: `read()` it, `follow()` it as it grows (fleet.store.follow.EventLog)."""
    return EventLog(await fleet.shared())


async def follow_changes(fleet: Fleet, on_news: Callable[[list[str]], None], note: Callable[[str], None]) -> None:
    """Until cancelled: `on_news(keys)` with the records and node marks another controller changes, as they land
    (an etcd watch; see fleet.store.changes); `note` hears when the watch had to start again."""
    # A store with no I/O yet: a record node that does not answer now is the follower's to wait for.
    await follow_records(RecordsFollower(etcd_store(fleet.pool, fleet.inventory), Me.here(), on_news, note))


async def converge_accepted(fleet: Fleet, service: str, replicas: int | None = None, *,
                            first: Callable[[], Awaitable[None]] | None = None) -> RunResult:
    """Converge `service` to its accepted revision as the records hold it under the lease (the UI's scale and
    restart), so a rollback, destroy or scale another controller made since the caller looked is what counts;
    `replicas` scales it (kept by reconcile until the next apply); `first` runs under the lease once the records
    were read (the UI's restart stops its replica there). FleetError, nothing changed, when the service has no
    accepted revision now or was destroyed."""
    async with fleet.writing() as engine:
        await engine.ledger.reread(service)
        state = await engine.ledger.state(service)
        spec = await engine.ledger.accepted_spec(service)
        if state is None or spec is None or state.decision == "destroyed":
            why = "it was destroyed" if state is not None and state.decision == "destroyed" else "apply it first"
            raise FleetError(f"{service}: no accepted revision on this fleet's records now ({why})")
        fleet.check_volumes([spec])
        if first is not None:
            await first()
        if replicas is not None:
            return await engine.scale((await fleet.stamped([spec]))[0], replicas)
        specs, skipped = await fleet.stamped_for([spec], "reconcile")
        return await engine.apply(specs, "reconcile", None, skipped)


def reader(inventory: Inventory, **pool: Unpack[PoolOptions]) -> Reader:
    """The one read path for a one-shot read of `inventory`'s fleet (`fleet nodes`, `status`, `ps`): a running
    `fleet watch`'s answer, else a Fleet on a pool of its own, opened on first use and closed with the reader:
    `async with reader(inv) as read: st = await read.status()`."""
    return Reader(inventory.path, open=lambda: Fleet.connect(inventory, **pool))
