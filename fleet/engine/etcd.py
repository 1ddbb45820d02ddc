"""etcd on the record nodes, kept running over SSH like HAProxy and keepalived: each member's peer certificates
written, the members started together (a cluster being formed is healthy only once a quorum is up), a member
found dead started again by the next run. One report per record node; one node's failure never stops the others.

`EtcdMembership` changes who the members are, one at a time, as `fleet.plan.members` plans it: an add joins the
node as a learner through a running member, starts it with `initial-cluster-state existing`, promotes it once it
has caught up and waits until it is healthy; a remove takes the member out, then stops that node's etcd and moves
its data aside. `view()` is what `fleet records status` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from fleet.core.errors import FleetError, RecordsError
from fleet.core.model import Node
from fleet.core.shell import Script
from fleet.node import etcd as E
from fleet.node.paths import write_file
from fleet.plan.members import Member, MembershipPlan, Step, plan_members, plan_one, quorum
from fleet.store.etcd import EtcdStore
from fleet.store.etcd_pki import PeerCa, PeerCert, issue_peer, peer_files
from fleet.store.secrets import Secret
from fleet.transport import Pool

T = TypeVar("T")
START_TIMEOUT = 40.0
STATUS_TIMEOUT = 10.0
# How long a starting member waits for its cluster to become healthy before it is reported as started anyway.
START_WAIT_S = 20
DEFAULT_FILES = E.EtcdFiles()
OnNode = Callable[[Node], Awaitable[E.MemberState]]


@dataclass(frozen=True)
class MemberReport:
    """What one record node's member did or is: its script's outcome, or why it could not be had."""

    node: str
    state: E.MemberState | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.state is not None and self.state.running


async def install_pki(pool: Pool, node: Node, ca: PeerCa, cert: PeerCert, files: E.EtcdFiles) -> None:
    """Write a member's CA certificate, peer certificate and key (the key on stdin only, 0600)."""
    for path, mode, content in peer_files(ca, cert, files):
        data = content.reveal() if isinstance(content, Secret) else content
        await pool.check(node, write_file(path, mode, size=len(data.encode()), fsync=True), stdin=data,
                         timeout=STATUS_TIMEOUT)


class EtcdMembers:
    """The members of the fleet's etcd cluster, one per record node, configured from the same list on every
    controller (`nodes` in the same order gives the same initial cluster)."""

    def __init__(self, pool: Pool, nodes: Sequence[Node], *, cluster_token: str,
                 state: Literal["new", "existing"] = "new", files: E.EtcdFiles = DEFAULT_FILES) -> None:
        if not nodes:
            raise ValueError("etcd needs at least one record node")
        self.pool = pool
        self.nodes = tuple(nodes)
        members = tuple(E.Member(n.name, n.address) for n in self.nodes)
        self.configs = {m.name: E.MemberConfig(m, members, cluster_token=cluster_token, state=state, files=files)
                        for m in members}

    async def _ensure(self, node: Node, pki: tuple[PeerCa, Mapping[str, PeerCert]] | None) -> E.MemberState:
        if pki is not None:
            await install_pki(self.pool, node, pki[0], pki[1][node.name], self.configs[node.name].files)
        cfg = self.configs[node.name]
        text = E.render_config(cfg)
        result = await self.pool.check(node, E.start_script(cfg, len(text.encode()), START_WAIT_S), stdin=text,
                                       timeout=START_TIMEOUT)
        return E.parse_start(result.stdout)

    async def ensure(self, pki: tuple[PeerCa, Mapping[str, PeerCert]] | None = None) -> list[MemberReport]:
        """Start every member that is not running (writing its certificates first when `pki` gives the CA and
        each node's certificate); members already running are left alone. All nodes at once, since a new
        cluster needs a quorum of them up before any is healthy."""
        return await self._each(lambda node: self._ensure(node, pki))

    async def status(self) -> list[MemberReport]:
        """`running`, `unhealthy` (alive, not serving: no quorum) or `stopped`, per record node."""
        return await self._each(lambda node: self._script(node, E.status_script(self.configs[node.name])))

    async def stop(self, nodes: Sequence[Node] | None = None) -> list[MemberReport]:
        """Stop the members on `nodes` (all by default); their data stays, so a start brings them back."""
        return await self._each(lambda node: self._script(node, E.stop_script(self.configs[node.name])), nodes)

    async def _script(self, node: Node, script: Script) -> E.MemberState:
        return E.parse_start((await self.pool.check(node, script, timeout=STATUS_TIMEOUT)).stdout)

    async def _each(self, one: OnNode, nodes: Sequence[Node] | None = None) -> list[MemberReport]:
        chosen = self.nodes if nodes is None else tuple(nodes)

        async def report(node: Node) -> MemberReport:
            try:
                return MemberReport(node.name, await one(node))
            except (FleetError, ValueError) as exc:
                return MemberReport(node.name, error=str(exc))

        return list(await asyncio.gather(*(report(n) for n in chosen)))


# Membership changes. etcd refuses one until every member has been connected for 5 s ("unhealthy cluster"), and
# a learner's promotion until it has caught up with the leader: both are retried for up to these many seconds.
CHANGE_WAIT = 20.0
PROMOTE_WAIT = 60.0
HEALTHY_WAIT = 30.0
_RETRY_EVERY = 0.5


@dataclass(frozen=True)
class MemberRow:
    """One member of the cluster as `fleet records status` shows it. `node` is the inventory node it runs on
    (by name, or by its peer URL's address for a member not started yet), None when no inventory node matches;
    `state` is running, unhealthy (alive, not serving), stopped, unreachable (its node could not be reached:
    `error`) or elsewhere (not an inventory node)."""

    id: int
    name: str
    node: str | None
    learner: bool
    state: str
    leader: bool = False
    revision: int | None = None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        # A learner never passes `endpoint health`; alive is all it can be.
        return self.state == "running" or (self.learner and self.state == "unhealthy")


@dataclass(frozen=True)
class RecordsView:
    """The cluster's members, the inventory's record nodes, and the plan from one to the other. `error` is set
    (and `members` empty) when no record node's member answered."""

    members: tuple[MemberRow, ...]
    record_nodes: tuple[str, ...]
    plan: MembershipPlan
    error: str | None = None

    @property
    def voters(self) -> int:
        return sum(1 for m in self.members if not m.learner)

    @property
    def healthy(self) -> int:
        return sum(1 for m in self.members if not m.learner and m.healthy)

    @property
    def quorum(self) -> int:
        return quorum(self.voters)

    @property
    def leader(self) -> MemberRow | None:
        return next((m for m in self.members if m.leader), None)


@dataclass(frozen=True)
class StepReport:
    """What one step did: `done` lists what happened in order; `error` says where it stopped."""

    step: Step
    done: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _peer(member: E.EtcdMember) -> tuple[str, int] | None:
    """(host, port) of a member's first peer URL."""
    if not member.peer_urls:
        return None
    url = urlsplit(member.peer_urls[0])
    return (url.hostname, url.port or E.PEER_PORT) if url.hostname else None


class MembershipReader:
    """The fleet's etcd members as they are and as the inventory wants them, over `pool` (`fleet records status`,
    `fleet plan`): `nodes` are the inventory's, `record` the record nodes it names (the members wanted). etcdctl
    runs on a record node whose member answers."""

    def __init__(self, pool: Pool, nodes: Sequence[Node], record: Sequence[Node], *, cluster_token: str,
                 files: E.EtcdFiles = DEFAULT_FILES, port: int = E.CLIENT_PORT,
                 command_timeout_s: int = E.COMMAND_TIMEOUT_S, on_step: Callable[[str], None] | None = None,
                 store: EtcdStore | None = None) -> None:
        self.pool = pool
        self.command_timeout_s = command_timeout_s
        self.nodes = {n.name: n for n in nodes}
        self.record = tuple(record)
        self.cluster_token = cluster_token
        self.files = files
        self.port = port
        self.on_step = on_step or (lambda _line: None)
        self._client = store  # the client kept for calls that leave no node out (given: one that answers already)

    def _store(self, without: str | None = None) -> EtcdStore:
        """A client on the record nodes, then every other inventory node (a member not yet unnamed answers too),
        leaving out `without` (the member being removed). Without `without`, one client is kept: it stays on the
        node that answered (a record node whose member is not running costs etcdctl's command timeout)."""
        if without is None and self._client is not None:
            return self._client
        order = [*self.record, *(n for n in self.nodes.values() if n not in self.record)]
        # The member list read first through this store settles on a node whose member answers, so the change
        # that follows goes there (a write sent to a member that does not answer is not retried elsewhere).
        store = EtcdStore(self.pool, [n for n in order if n.name != without], port=self.port,
                          command_timeout_s=self.command_timeout_s)
        if without is None:
            self._client = store
        return store

    def node_of(self, member: E.EtcdMember) -> Node | None:
        """The inventory node a member runs on: by its name, or by its peer address (a member not started yet has
        no name)."""
        if member.name:
            return self.nodes.get(member.name)
        peer = _peer(member)
        return next((n for n in self.nodes.values() if peer and n.address == peer[0]), None)

    async def members(self) -> tuple[E.EtcdMember, ...]:
        return await self._store().call(E.member_list_argv(at=self._at), E.parse_member_list)

    @property
    def _at(self) -> E.Endpoint:
        return E.Endpoint(self.port, self.command_timeout_s)

    async def _probe(self, node: Node) -> tuple[str, E.EndpointStatus | None, str | None]:
        """(state, its endpoint status when it runs, why it could not be probed)."""
        state = await self.pool.run(node, E.status_script(self._config(node, ())), timeout=STATUS_TIMEOUT)
        if state.error is not None or state.exit_status != 0:
            return "unreachable", None, state.error or f"status script exited {state.exit_status}"
        try:
            word = E.parse_start(state.stdout).result
            if word == "stopped":
                return word, None, None
            status = await self.pool.run(node, E.endpoint_status_argv(at=self._at),
                                         timeout=STATUS_TIMEOUT)
            found = E.parse_endpoint_status(status.stdout) if status.ok else ()
        except ValueError as exc:
            return "unreachable", None, str(exc)
        return word, (found[0] if found else None), None

    async def view(self, listed: Sequence[E.EtcdMember] | None = None) -> RecordsView:
        """Every member (`listed`: as just read) with its node, state, role and revision, and the plan to the
        inventory's record nodes."""
        wanted = tuple(n.name for n in self.record)
        try:
            listed = listed if listed is not None else await self.members()
        except RecordsError as exc:
            return RecordsView((), wanted, MembershipPlan(refused=f"the etcd cluster could not be read: {exc}"),
                               str(exc))
        hosts = [self.node_of(m) for m in listed]
        probes = await asyncio.gather(*(self._probe(n) for n in hosts if n is not None))
        by_node = dict(zip([n.name for n in hosts if n is not None], probes, strict=True))
        leaders = {s.leader for _, s, _ in probes if s is not None and s.leader}
        rows = []
        for member, node in zip(listed, hosts, strict=True):
            state, status, error = by_node[node.name] if node is not None else ("elsewhere", None, None)
            rows.append(MemberRow(member.id, member.name, node.name if node else None, member.is_learner, state,
                                  member.id in leaders, status.revision if status else None, error))
        plan = plan_members([Member(r.node or r.name or f"{r.id:x}", r.healthy, r.learner) for r in rows], wanted)
        return RecordsView(tuple(rows), wanted, plan)

    async def plan(self) -> MembershipPlan:
        """The steps the next apply takes (`plan.lines()`: "records: add member n4"), or why it refuses."""
        return (await self.view()).plan

    async def plan_one(self, action: Literal["add", "remove"], node: str) -> tuple[RecordsView, MembershipPlan]:
        view = await self.view()
        if view.error is not None:
            return view, view.plan
        current = [Member(r.node or r.name or f"{r.id:x}", r.healthy, r.learner) for r in view.members]
        return view, plan_one(current, action, node)

    def settled(self, listed: Sequence[E.EtcdMember]) -> bool:
        """Whether the members are already the record nodes, all voting (nothing for an apply to change)."""
        on = {getattr(self.node_of(m), "name", None) for m in listed}
        return not any(m.is_learner for m in listed) and len(on) == len(listed) and on == {n.name for n in self.record}

    async def pending(self, *, forming: bool = True) -> MembershipPlan:
        """The membership steps of the next apply (`fleet plan`'s lines), read cheaply: one member list, and each
        member probed (`view`) only when the members are not the record nodes already. A cluster that does not
        answer plans nothing when `forming` (the first run that writes forms it from the record nodes), else is
        refused."""
        wanted = [n.name for n in self.record]
        if not wanted:
            return MembershipPlan()  # an inventory with no node yet: nothing to keep the shared state on
        try:
            listed = await self.members()
        except RecordsError as exc:
            return plan_members([], wanted) if forming else MembershipPlan(
                refused=f"the etcd cluster could not be read: {exc}")
        if self.settled(listed):
            return plan_members([Member(n, True) for n in wanted], wanted)
        return (await self.view(listed)).plan

    def _config(self, node: Node, members: Sequence[E.Member]) -> E.MemberConfig:
        me = E.Member(node.name, node.address)
        everyone = (*(m for m in members if m.name != me.name), me)
        return E.MemberConfig(me, everyone, cluster_token=self.cluster_token, state="existing",
                              client_port=self.port, files=self.files)


class EtcdMembership(MembershipReader):
    """Membership changes of the fleet's etcd cluster, one step at a time, for a caller holding the fleet's lease
    (`fleet records add|remove`, `fleet apply`)."""

    async def change(self, action: Literal["add", "remove"], node: str,
                     expected: Sequence[Step] | None = None) -> tuple[MembershipPlan, list[StepReport]]:
        """`fleet records add|remove NODE`, for a caller holding the fleet's lease: planned again on a fresh view
        (the one shown before may be stale), refused when it is unsafe or differs from `expected` (the steps
        the user confirmed), else carried out; the CA's key is read only when a member is added."""
        _, plan = await self.plan_one(action, node)
        if plan.ok and expected is not None and plan.steps != tuple(expected):
            return MembershipPlan(refused=f"the etcd cluster changed since it was read (now: "
                                          f"{'; '.join(plan.lines()) or 'nothing to do'}); run it again"), []
        return await self._carry_out(plan)

    async def converge(self, guard: Callable[[], Awaitable[None]] | None = None
                       ) -> tuple[MembershipPlan, list[StepReport]]:
        """What the next apply does, for a caller holding the fleet's lease: every step toward the inventory's
        record nodes, carried out in order, `guard` (the lease's check) awaited before each (none when the plan
        is refused: its reason is in the plan)."""
        return await self._carry_out(await self.pending(forming=False), guard)

    async def apply(self, guard: Callable[[], Awaitable[None]] | None = None) -> list[StepReport]:
        """`fleet apply`'s membership change (`converge`), each step and what it did told to `on_step`.
        RecordsError with the planner's reason when the change is refused (nothing changed), or naming the step
        that failed (the steps before it stay: each left the cluster with a quorum; the next apply goes on)."""
        def told(report: StepReport) -> None:
            for line in report.done:
                self.on_step(f"  {line}")

        plan, reports = await self._carry_out(await self.pending(forming=False), guard, told)
        if not plan.ok:
            raise RecordsError(f"the record nodes the inventory names cannot be had: {plan.refused}")
        failed = next((r for r in reports if not r.ok), None)
        if failed is not None:
            raise RecordsError(f"{failed.step.line()} failed: {failed.error}")
        return reports

    async def _carry_out(self, plan: MembershipPlan, guard: Callable[[], Awaitable[None]] | None = None,
                         told: Callable[[StepReport], None] | None = None) -> tuple[MembershipPlan, list[StepReport]]:
        if not plan.ok or not plan.steps:
            return plan, []
        ca = await self.load_ca() if any(s.action == "add" for s in plan.steps) else None
        return plan, await self.run(plan, ca, guard, told)

    async def load_ca(self) -> PeerCa:
        """The fleet's etcd CA (certificate and key) from the first record node that keeps its key
        (`EtcdFiles.ca_key`, 0600): a new member's peer certificate is issued with it, here on the controller."""
        problems = []
        for node in [*self.record, *(n for n in self.nodes.values() if n not in self.record)]:
            result = await self.pool.run(node, ["cat", self.files.ca_cert, self.files.ca_key], timeout=STATUS_TIMEOUT)
            found = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", result.stdout, re.S)
            key = re.search(r"-----BEGIN (EC )?PRIVATE KEY-----.*?-----END (EC )?PRIVATE KEY-----\n", result.stdout,
                            re.S)
            if result.ok and found and key:
                return PeerCa(found.group(0), Secret(key.group(0)))
            problems.append(f"{node.name}: {result.error or 'no CA key'}")
        raise RecordsError(f"the fleet's etcd CA key ({self.files.ca_key}) was found on no node "
                           f"({'; '.join(problems)}): it is written when the cluster is first formed")

    async def run(self, plan: MembershipPlan, ca: PeerCa | None, guard: Callable[[], Awaitable[None]] | None = None,
                  told: Callable[[StepReport], None] | None = None) -> list[StepReport]:
        """Carry out the steps in order, `guard` awaited before each (it raises when the lease was lost), `told`
        each step's report as it ends; the first that fails stops the rest (each step leaves the cluster with a
        quorum, so stopping between steps is safe, and the next run plans from where it stopped)."""
        if not plan.ok:
            raise ValueError(f"a refused plan cannot run: {plan.refused}")
        reports: list[StepReport] = []
        for step in plan.steps:
            if guard is not None:
                await guard()
            self.on_step(step.line())
            if step.action == "remove":
                report = await self.remove(step.node)
            elif ca is None:
                raise ValueError("adding a member needs the fleet's etcd CA")
            else:
                report = await self.add(step.node, ca)
            reports.append(report)
            if told is not None:
                told(report)
            if not report.ok:
                break
        return reports

    async def _change(self, argv: list[str], parse: Callable[[str], T], store: EtcdStore,
                      wait: float = CHANGE_WAIT, again: tuple[str, ...] = ("unhealthy cluster",)) -> T:
        """A membership command, retried while etcd answers with one of `again` (a passing condition)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return await store.call(argv, parse, retry=False)
            except RecordsError as exc:
                if not any(a in str(exc) for a in again) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(_RETRY_EVERY)

    async def _retire(self, node: Node) -> str | None:
        """Stop `node`'s etcd and move its data dir aside; what was done (None: nothing was there)."""
        how, moved = E.parse_retire((await self.pool.check(node, E.retire_script(self._config(node, ())),
                                                           timeout=STATUS_TIMEOUT)).stdout)
        if how == "not-running" and moved is None:
            return None
        return f"etcd on {node.name} {how}" + (f", its data moved to {moved}" if moved else "")

    def _as_members(self, listed: Sequence[E.EtcdMember], new: int, node: Node) -> list[E.Member]:
        """The members for a joining member's initial-cluster; `new` (its ID) is `node`, the others are named by
        their node, else their own name, else their ID."""
        out = []
        for m in listed:
            known, peer = (node if m.id == new else self.node_of(m)), _peer(m)
            if peer is not None:
                out.append(E.Member(known.name if known else (m.name or f"m{m.id:x}"), peer[0], peer[1]))
        return out

    async def add(self, name: str, ca: PeerCa) -> StepReport:
        """Join `name` as a learner (or finish an add that stopped midway), start it, promote it once caught up,
        and wait until it serves."""
        step, done = Step("add", name), []
        node = self.nodes.get(name)
        if node is None:
            return StepReport(step, (), f"{name} is not a node of the inventory")
        try:
            store = self._store(without=name)
            at = self._at
            listed = await store.call(E.member_list_argv(at=at), E.parse_member_list)
            mine = next((m for m in listed if self.node_of(m) is node), None)
            if mine is not None and not mine.is_learner:
                return StepReport(step, (f"{name} is already a member ({mine.id:x})",))
            state, _, error = await self._probe(node)
            if error is not None:
                raise RecordsError(f"{name}: {error}")
            running = state in ("running", "unhealthy")
            if running and mine is None:
                if state == "running":
                    return StepReport(step, (), f"{name} runs an etcd that serves but is not a member of this "
                                                f"cluster (another cluster's?): stop it by hand, then retry")
                # Started on its own and refused by the cluster: it never held any of this cluster's data.
                done.append(f"{await self._retire(node)} (it was not a member)")
                running = False
            fresh = mine is None
            if mine is None:
                added = await self._change(E.member_add_argv(E.Member(node.name, node.address), at=at),
                                           E.parse_member_add, store)
                mine, listed = added.member, added.members
                done.append(f"added {name} as a learner (member {mine.id:x}) through {store.node.name}")
            try:
                if not running:
                    done += await self._start_learner(node, ca, self._as_members(listed, mine.id, node), mine.id)
                begun = time.monotonic()
                await self._promote(store, mine.id)
                done.append(f"promoted {name} to a voting member after {time.monotonic() - begun:.1f} s")
            except (FleetError, ValueError):
                if fresh:
                    # Added by this call and never promoted: taken out again, the cluster is as it was.
                    with contextlib.suppress(FleetError):
                        await self._change(E.member_remove_argv(mine.id, at=at), E.parse_member_list, store)
                        done.append(f"removed the learner {mine.id:x} again")
                        done.append(await self._retire(node) or f"etcd on {name} was not running")
                raise
            await self._healthy(node)
            done.append(f"{name} is healthy")
        except (FleetError, ValueError) as exc:
            return StepReport(step, tuple(done), str(exc))
        return StepReport(step, tuple(done))

    async def _promote(self, store: EtcdStore, member_id: int) -> None:
        """Promote a learner once etcd finds it caught up; a member that already votes is left as it is."""
        try:
            await self._change(E.member_promote_argv(member_id, at=self._at), E.parse_member_promote, store,
                               wait=PROMOTE_WAIT, again=("in sync with leader", "unhealthy cluster"))
        except RecordsError as exc:
            if "in sync" in str(exc) or "can only promote a learner member" not in str(exc):
                raise

    async def _start_learner(self, node: Node, ca: PeerCa, members: Sequence[E.Member], member_id: int
                             ) -> list[str]:
        """Start `node`'s etcd from an empty data dir (a learner's partial copy is set aside: it fetches
        everything from the leader), with its peer certificate, to join `members`."""
        done = [retired] if (retired := await self._retire(node)) is not None else []
        await install_pki(self.pool, node, ca, issue_peer(ca, E.Member(node.name, node.address)), self.files)
        cfg = self._config(node, members)
        text = E.render_config(cfg)
        started = E.parse_start((await self.pool.check(
            node, E.start_script(cfg, len(text.encode()), START_WAIT_S, ready="status"), stdin=text,
            timeout=START_TIMEOUT)).stdout)
        status = await self.pool.run(node, E.endpoint_status_argv(at=self._at), timeout=STATUS_TIMEOUT)
        answer = E.parse_endpoint_status(status.stdout) if status.ok else ()
        # The member on the node's client port must be the one just added (not a stale etcd, nor one that died).
        if not started.running or not answer or answer[0].member_id != member_id:
            raise RecordsError(f"etcd on {node.name} did not start as member {member_id:x} ({started.result}"
                               f"{', another member answers' if answer else ''}): {started.log[-500:]}")
        return [*done, f"started etcd on {node.name} (pid {started.pid}), joining the existing cluster"]

    async def _healthy(self, node: Node) -> None:
        deadline = time.monotonic() + HEALTHY_WAIT
        while (state := (await self._probe(node))[0]) != "running":
            if time.monotonic() > deadline:
                raise RecordsError(f"etcd on {node.name} is {state}, not healthy, {HEALTHY_WAIT:.0f} s after joining")
            await asyncio.sleep(_RETRY_EVERY)

    async def remove(self, name: str) -> StepReport:
        """Take `name`'s member out of the cluster (through another member), then stop its etcd and move its data
        aside."""
        step, done = Step("remove", name), []
        try:
            store = self._store(without=name)
            at = self._at
            listed = await store.call(E.member_list_argv(at=at), E.parse_member_list)
            mine = next((m for m in listed if m.name == name or getattr(self.node_of(m), "name", None) == name),
                        None)
            if mine is None:
                return StepReport(step, (f"{name} is not a member",))
            await self._change(E.member_remove_argv(mine.id, at=at), E.parse_member_list, store)
            done.append(f"removed member {mine.id:x} ({name}) through {store.node.name}")
            node = self.nodes.get(name) or self.node_of(mine)
            if node is None:
                return StepReport(step, tuple(done), f"{name} is not an inventory node: stop its etcd and move its "
                                                     f"data dir ({self.files.data_dir}) aside by hand")
            done.append(await self._retire(node) or f"etcd on {name} was not running and had no data")
        except (FleetError, ValueError) as exc:
            return StepReport(step, tuple(done), str(exc))
        return StepReport(step, tuple(done))
