"""`fleet watch`: one long-running controller that keeps a fleet at its accepted state with warm connections.

Two leases, both etcd leases in the fleet's shared state (fleet.store.etcd.EtcdLease):
- the *watcher's* lease (the key `/fleet/watch/leader`) says which `fleet watch` is active. The active one holds
  and renews it for as long as it runs and releases it on SIGTERM; every other watcher is a standby that tries
  to take it every ttl/3, so it takes over within the lease's ttl when the active one dies (SIGKILL).
  This is the leader election of kube-controller-manager or a Nomad server: one controller acts, the others wait.
- the *fleet's* lease (`Fleet.writing()`), which every writer takes: the active watcher takes it only for a
  round that acts, exactly as `fleet reconcile` does, and gives it back after. So `fleet apply` and the other
  writers keep working while a watcher runs (as `kubectl apply` does beside the controllers); one that comes
  while the watcher heals waits with `--wait`, or exits 75 naming the watcher; a watcher that finds a writer
  holding it logs `lease-held` and tries again next round.

A round reads the nodes (facts, containers, HAProxy's view) over the warm pool, and when something drifted
runs `Fleet.apply(specs, "reconcile")`: the same rules and the same engine as `fleet reconcile`, which reads the
records, the node marks and the containers again under the fleet's lease before it changes anything, so what
another controller did meanwhile (destroy, rollback, scale, abort, cordon, drain) is what it acts on. A round
starts every `interval` seconds, and at once when containerd reports a container exit (fleet.watch.events) or
another controller changes the records (an etcd watch: fleet.store.changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.api import EtcdLease, Fleet, follow_changes, lease_ttl
from fleet.config.spec import JobSpec, ServiceSpec, jobs_of, load_playbook_files
from fleet.core.errors import ConfigError, FleetError, LeaseError, LeaseHeld, LeaseLost
from fleet.core.model import Inventory
from fleet.node.haproxy.render import backend_name
from fleet.plan.reconcile import Replica, duplicates
from fleet.results import Event, NodeReport
from fleet.watch.events import ContainerEvent, follow
from fleet.watch.grace import DEFAULT_GRACE, Grace, GraceView
from fleet.watch.notify import sd_notify
from fleet.watch.schedule import Schedules
from fleet.watch.server import serving

Log = Callable[..., None]


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher runs. `interval`: seconds between rounds when nothing wakes it; `node_grace`: how long a
    node that stops answering keeps its replicas; `retry`: a round that still finds a problem after acting acts
    again after this long; `resync`: a full reconcile at least this often, drift seen or not."""

    playbooks: tuple[str, ...]
    interval: float = 1.0
    node_grace: float = DEFAULT_GRACE
    retry: float = 2.0
    resync: float = 60.0
    events: bool = True
    variables: Mapping[str, str] | None = None  # what `${NAME}` expands from (None: the environment)


@dataclass(frozen=True)
class Look:
    """One round's reading of the fleet: what runs where, what HAProxy finds down, and the grace verdict."""

    reports: tuple[NodeReport, ...]
    replicas: tuple[Replica, ...]
    down: frozenset[tuple[str, str]]
    lost: frozenset[str]
    view: GraceView
    signature: frozenset[Any] = field(default_factory=frozenset)

    @property
    def problems(self) -> list[str]:
        """What a reconcile should fix now (empty: nothing, or only nodes still in their grace)."""
        out = [f"{r.service}: {r.id} on {r.node} is not running" for r in self.replicas if not r.running]
        out += [f"{proxy}/{server} is down in HAProxy" for proxy, server in sorted(self.down)]
        out += [f"{n}: not answering for longer than node_grace" for n in sorted(self.view.expired)]
        # A node back after its grace still runs the copies that were started elsewhere meanwhile.
        out += [f"{r.service}: {r.id} on {r.node} is a second copy of replica {r.replica}"
                for r in duplicates(self.replicas)]
        return out


def signature(replicas: Sequence[Replica], down: frozenset[tuple[str, str]], lost: frozenset[str],
              expired: frozenset[str]) -> frozenset[Any]:
    """What a round compares with the round the watcher last acted on: a change is something new."""
    return frozenset({("replica", r.id, r.node, r.running) for r in replicas}
                     | {("down", *d) for d in down} | {("lost", n) for n in lost} | {("expired", n) for n in expired})


def should_act(look: Look, *, first: bool, acted: frozenset[Any] | None, since_act: float, retry: float,
               resync: float, playbooks_changed: bool = False, records_changed: bool = False) -> str | None:
    """Why this round reconciles, or None. Pure: the rules of the loop, tested as data.

    It acts on a problem (a replica not running, a server HAProxy finds down, a node past its grace) as soon as
    the fleet looks different from the round it last acted on (`acted`), and again every `retry` seconds while
    the problem stays; on a playbook change; when another controller changed the records (a destroy, rollback,
    scale or node mark: the reconcile reads them again under the lease); and every `resync` seconds whatever it
    sees. A lost node never seen answering holds every round back (its replicas are unknown: a reconcile now
    would replace them at once) until its grace is over."""
    if look.view.unknown:
        return None
    if first:
        return "start"
    if playbooks_changed:
        return "playbooks"
    if records_changed:
        return "records"
    if look.problems and (look.signature != acted or since_act >= retry):
        return "problem"
    if since_act >= resync:
        return "resync"
    return None


class Watcher:
    """The loop behind `fleet watch` (see the module docstring), a client of the façade: `base` gives the
    inventory and the warm pool, each round reads through a fresh Fleet on it. `log(event, **fields)` receives
    every line."""

    def __init__(self, base: Fleet, options: WatchOptions, log: Log,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.base = base
        self.inventory = base.inventory
        self.options = options
        self.log = log
        self.on_ready = on_ready or (lambda: None)
        self.grace = Grace(options.node_grace)
        self.wake = asyncio.Event()
        self.state = "starting"
        self._specs: list[ServiceSpec] = []
        self._jobs: dict[str, JobSpec] = {}
        self.schedules = Schedules(log)
        self._specs_key: tuple[tuple[str, float], ...] | None = None
        self._acted: frozenset[Any] | None = None
        self._playbooks_changed = False
        self._lost: frozenset[str] = frozenset()
        self._expired: frozenset[str] = frozenset()
        self._last_act = 0.0
        self._first = True
        self.rounds = 0
        self._latest: tuple[float, list[NodeReport]] | None = None
        self.last_ok = True
        self._news: set[str] = set()

    # --- playbooks -------------------------------------------------------------------------------------
    def _files(self) -> tuple[tuple[str, float], ...]:
        found: list[tuple[str, float]] = []
        for path in self.options.playbooks:
            if os.path.isdir(path):
                for root, _, files in os.walk(path):
                    found += [(os.path.join(root, f), os.stat(os.path.join(root, f)).st_mtime)
                              for f in files if f.endswith((".yaml", ".yml"))]
            elif os.path.exists(path):
                found.append((path, os.stat(path).st_mtime))
        return tuple(sorted(found))

    def specs(self) -> list[ServiceSpec]:
        """The playbooks' services, read again when a file changed; a file that no longer parses is logged and
        the last good specs are kept (the watcher never acts on a half-edited playbook)."""
        key = self._files()
        if key != self._specs_key:
            try:
                playbooks = load_playbook_files(self.options.playbooks, self.options.variables)
                self._specs = [s for pb in playbooks for s in pb.services]
                self._jobs = jobs_of(playbooks)
                if self._specs_key is not None:
                    self._playbooks_changed = True
                    self.log("playbooks", message="playbooks changed: read again",
                             services=[s.name for s in self._specs])
                self._specs_key = key
            except ConfigError as exc:
                self.log("playbooks-error", level="error", message=str(exc))
                if self._specs_key is None:
                    raise
                self._specs_key = key
        return self._specs

    # --- one round -------------------------------------------------------------------------------------
    async def look(self, fleet: Fleet) -> Look:
        """Read the fleet over the warm pool: facts, containers, HAProxy's server states."""
        reports, obs = await fleet.look(ports=True)  # one round trip per node: its facts and its containers
        self._latest = (time.monotonic(), reports)
        workers = {r.node.name for r in reports if r.node.has_role("worker")}
        lost = frozenset(n for n in workers if n in obs.errors)
        self.grace, view = self.grace.update(time.monotonic(), workers - lost, lost, obs.replicas)
        ids = {r.id: r for r in obs.replicas}
        held = {r.id for r in view.held}
        down: set[tuple[str, str]] = set()
        for rows in await fleet.lb_rows(reports):
            if rows is None:
                continue  # an lb node that cannot be read shows in `fleet status`; nothing to heal from here
            for row in rows:
                r = ids.get(row.name)
                if (row.kind == "server" and r is not None and row.proxy == backend_name(r.service)
                        and row.health == "down" and r.id not in held):
                    down.add((row.proxy, row.name))
        frozen_down = frozenset(down)
        return Look(tuple(reports), obs.replicas, frozen_down, lost, view,
                    signature(obs.replicas, frozen_down, lost, view.expired))

    async def round(self, fleet: Fleet, *, force: bool = False) -> str | None:
        """One round: look, and reconcile when something drifted. Returns why it acted (None: it did not)."""
        started = time.monotonic()
        specs = self.specs()
        look = await self.look(fleet)
        news = frozenset(self._news)  # what others changed in the records so far: the reconcile reads it later
        self.rounds += 1
        why = "once" if force else should_act(look, first=self._first, acted=self._acted,
                                              since_act=started - self._last_act, retry=self.options.retry,
                                              resync=self.options.resync, playbooks_changed=self._playbooks_changed,
                                              records_changed=bool(news))
        self._log_nodes(look)
        if why is None:
            return None
        self._first = False
        self._playbooks_changed = False
        self._acted = look.signature
        if look.view.held:
            self.log("grace", message="the replicas of nodes in their grace period are held where they were",
                     nodes={n: round(s, 1) for n, s in look.view.waiting.items()},
                     held=[r.id for r in look.view.held])
        self.log("reconcile", reason=why, problems=look.problems)
        try:
            # A Fleet with nothing read yet: the reconcile reads the nodes, their marks, the containers and the
            # records after it took the fleet's lease, so it acts on what is true then, not on this round's look.
            result = await fleet.fresh(on_event=fleet.on_event, command=fleet.command).with_jobs(self._jobs).apply(
                specs, "reconcile", held=() if force else look.view.held)
        except LeaseHeld as exc:
            if force:
                raise
            self.log("lease-held", level="warning", message=str(exc), holder=exc.info.holder,
                     command=exc.info.command)
            self._last_act = time.monotonic()
            return None
        self._last_act = time.monotonic()
        self._news -= news  # read again under the lease by that reconcile
        self.last_ok = result.ok
        changed = [o for o in result.outcomes if o.changed]
        self.log("reconciled", reason=why, ok=result.ok, seconds=round(time.monotonic() - started, 3),
                 changed={o.service: {"started": o.started, "stopped": o.stopped} for o in changed},
                 failed={o.service: o.reason for o in result.outcomes if not o.ok}, errors=result.errors)
        return why

    def _log_nodes(self, look: Look) -> None:
        """A line when a node stops answering, when its grace is over, and when it answers again."""
        for n in sorted(look.lost - self._lost):
            unknown = " (never read by this watcher: no round acts until then)" if n in look.view.unknown else ""
            self.log("node-lost", level="warning", node=n, grace=round(look.view.waiting.get(n, 0.0), 1),
                     message=f"{n} does not answer: its replicas stay where they are for node_grace{unknown}")
        for n in sorted(look.view.expired - self._expired):
            self.log("node-grace-over", level="warning", node=n,
                     message=f"{n} did not answer within node_grace: its replicas start elsewhere")
        for n in sorted(self._lost - look.lost):
            self.log("node-back", node=n, message=f"{n} answers again")
        self._lost, self._expired = look.lost, look.view.expired

    def recent(self) -> list[NodeReport] | None:
        """The node reports of the last round while they are fresh (two rounds' interval, at least 2 s), for
        one-shot reads through the socket; None otherwise (a standby, or rounds held up)."""
        if self._latest is None or self.state != "active":
            return None
        at, reports = self._latest
        return reports if time.monotonic() - at <= max(2.0, 2 * self.options.interval) else None

    # --- the loop --------------------------------------------------------------------------------------
    def _on_event(self, e: Event) -> None:
        self.log("step", step=e.step, service=e.service, message=e.message, node=e.node, container=e.container)

    def _on_drift(self, node: str) -> Callable[[ContainerEvent], None]:
        def wake(event: ContainerEvent) -> None:
            self.log("event", node=node, topic=event.topic, container=event.container, exit_status=event.exit_status)
            self.wake.set()
        return wake

    def _on_news(self, keys: list[str]) -> None:
        self.log("records-changed", message="another controller changed the fleet's records", keys=keys[:20])
        self._news.update(keys)
        self.wake.set()

    def _on_watch_note(self, message: str) -> None:
        self.log("records-watch", level="warning", message=message)

    def fleet(self) -> Fleet:
        return self.base.fresh(on_event=self._on_event, command="fleet watch")

    async def once(self) -> bool:
        """`fleet watch --once`: one round that reconciles whatever it finds (as `fleet reconcile`; with no
        earlier round to remember, a node that does not answer gets no grace). True when all went well; raises
        LeaseHeld when another run holds the fleet's lease."""
        await self.round(self.fleet(), force=True)
        return self.last_ok

    async def active(self, lease: EtcdLease) -> None:
        """Rounds while this watcher holds the watcher's lease; returns when it is lost (raises LeaseLost)."""
        fleet = self.fleet()
        # The event streams belong to this active period: cancelled (and awaited) when it ends, however it ends.
        streams = [asyncio.create_task(follow(fleet, n, self._on_drift(n.name)), name=f"events-{n.name}")
                   for n in self.inventory.nodes if n.has_role("worker")] if self.options.events else []
        # The records too, from now on: what another controller changes wakes this watcher at once.
        streams.append(asyncio.create_task(follow_changes(fleet, self._on_news, self._on_watch_note),
                                           name="records"))
        try:
            while True:
                if not lease.held:  # its renewal found it gone (expired, or taken over after a pause)
                    raise LeaseLost("the watcher's lease was lost: another watcher may lead now")
                self.wake.clear()
                try:
                    # Each round reads the nodes again (Fleet.nodes); a failed round is logged and the next one
                    # tries afresh. A lost *fleet's* lease (broken by `fleet lock break`) ends that round only:
                    # the watcher's own lease is checked above.
                    await self.round(fleet)
                    await self.schedules.tick(fleet, list(self._jobs.values()))
                except FleetError as exc:
                    self.log("round-error", level="error", message=str(exc))
                if self.state != "active":
                    self.state = "active"
                    self.on_ready()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.options.interval)
        finally:
            for task in streams:
                task.cancel()
            for task in streams:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run(self) -> None:
        """Standby until the watcher's lease is free, then active; forever (cancel it to stop: the lease is
        released on the way out)."""
        ttl = lease_ttl()
        lease = self.base.watcher_lease(ttl)
        holder: str | None = None
        while True:
            try:
                async with lease:
                    self.log("active", message="this watcher acts for the fleet", ttl=ttl)
                    holder = None
                    await self.active(lease)
            except LeaseHeld as exc:
                if self.state != "standby" or holder != exc.info.holder:
                    self.log("standby", message=f"another watcher is active: {exc.info}", holder=exc.info.holder,
                             pid=exc.info.pid)
                    holder = exc.info.holder
                if self.state == "starting":
                    self.on_ready()
                self.state = "standby"
                await asyncio.sleep(min(1.0, ttl / 3))
            except LeaseLost as exc:
                self.log("lease-lost", level="warning", message=str(exc))
                self.state = "standby"
            except LeaseError as exc:
                self.log("lease-error", level="warning", message=str(exc))
                await asyncio.sleep(min(1.0, ttl / 3))


async def watch(inventory: Inventory, options: WatchOptions, log: Log, *, once: bool = False,
                serve: bool = True, connect_timeout: float = 5.0) -> int:
    """Run the watcher until SIGTERM or SIGINT (exit status 0, the watcher's lease released), or one round with
    `once` (0 all ok, 1 partial). Readiness goes to systemd (READY=1) once the first round is done or the
    watcher is a standby; the socket for one-shot commands is served meanwhile unless `serve` is False."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    assert me is not None
    stopping: list[str] = []

    def stop(name: str) -> None:
        stopping.append(name)
        me.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        # One connect attempt with a short deadline: a node that does not answer costs a round that long.
        async with Fleet.connect(inventory, connect_timeout=connect_timeout, connect_attempts=1,
                                 command="fleet watch") as base:
            watcher = Watcher(base, options, log, on_ready=_ready)
            if once:
                return 0 if await watcher.once() else 1
            async with contextlib.AsyncExitStack() as stack:
                if serve:
                    await stack.enter_async_context(serving(base, log, recent=watcher.recent))
                log("start", message="fleet watch", inventory=inventory.path, playbooks=list(options.playbooks),
                    interval=options.interval, node_grace=options.node_grace, events=options.events)
                await watcher.run()
        return 0
    except asyncio.CancelledError:
        if not stopping:
            raise
        sd_notify("STOPPING=1")
        log("stop", message=f"stopped by {stopping[0]}: the watcher's lease was released")
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _ready() -> None:
    sd_notify("READY=1")
