"""Converging services: start, health-check, route, drain and stop replicas, batch by batch.

Every step is read back from or written to the nodes (container labels) and the load balancers; nothing
else is kept, so a controller killed at any point is picked up by the next run.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .. import labels as L
from ..errors import FleetError, SchedulingError
from ..health import probe
from ..history import History
from ..reconcile import Plan, Replica, duplicates, placement_inputs, plan
from ..rollout.strategy import Verdict, canary_verdict, canary_weights
from ..runtime.base import Mount, RunSpec, Status
from ..scheduler import Assignment, place
from ..shell import Script
from ..spec import SecretRef, ServiceSpec, from_playbook_dict, to_playbook_dict
from ..transport import Pool
from .calls import driver_for, perform
from .images import ensure_image
from .lb import Balancers, Rotation
from .nodes import NodeReport
from .state import Observed, node_states, observe

NODE_DIR = "/var/lib/fleet"
HOSTS_FILE = f"{NODE_DIR}/hosts"
RESOLV_FILE = f"{NODE_DIR}/resolv.conf"
HOST_NETNS = f"{NODE_DIR}/netns/host"
# Prepares a node for fleet's containers: the hosts file (stdin) written in place (same inode, so running
# containers see changes), a copy of the node's resolv.conf, and the node's own network namespace pinned to
# a file that containers join: host networking, with fleet's hosts file rather than the node's.
PREPARE_NODE = r"""
set -e
mkdir -p "${HOSTS%/*}" "${NETNS%/*}"
cat >"$HOSTS"
cp /etc/resolv.conf "$RESOLV" 2>/dev/null || : >"$RESOLV"
if [ "$(stat -f -c %T "$NETNS" 2>/dev/null)" != nsfs ]; then
  : >"$NETNS"
  mount --bind /proc/self/ns/net "$NETNS"
fi
"""


@dataclass(frozen=True)
class Event:
    """One step of an apply, for progress bars and `--json` event streams."""

    step: str
    service: str
    message: str
    node: str | None = None
    container: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Outcome:
    service: str
    ok: bool
    started: int = 0
    stopped: int = 0
    reason: str | None = None


class RolloutFailed(FleetError):
    """New replicas did not become ready (or crashed); they were removed and the old ones kept serving."""


class CanaryAborted(RolloutFailed):
    """The canary served more errors than the baseline allows; it was removed, the old replicas kept serving."""


class CanaryPaused(FleetError):
    """The canary went through its steps and waits for `fleet promote` or `fleet abort`."""


def _revision(spec: ServiceSpec, replicas: Sequence[Replica]) -> int:
    """The revision of `spec`: that of replicas already running it, else one past the newest seen."""
    h = spec.spec_hash()
    same = [r.revision for r in replicas if r.service == spec.name and r.spec_hash == h and r.revision]
    if same:
        return max(same)
    seen = [r.revision or 0 for r in replicas if r.service == spec.name]
    return max(seen, default=0) + 1


class Engine:
    """Plans and applies playbooks over one pool, with the node reports of this run."""

    def __init__(self, pool: Pool, reports: list[NodeReport], *, on_event: Callable[[Event], None] | None = None,
                 secrets: Callable[[str], str | None] | None = None, history: History | None = None,
                 user: str | None = None) -> None:
        self.pool = pool
        self.history = history
        self.user = user or getpass.getuser()
        self.reports = reports
        self.by_name = {r.node.name: r for r in reports}
        self.addresses = {r.node.name: r.node.address for r in reports}
        self.on_event = on_event or (lambda e: None)
        self.secrets = secrets
        self.lbs = Balancers(pool, reports)
        self.rotation = Rotation()
        self.live: list[Replica] = []
        self.errors: dict[str, str] = {}
        self._images: dict[str, set[str]] = {}

    def emit(self, step: str, service: str, message: str, node: str | None = None,
             container: str | None = None) -> None:
        self.on_event(Event(step, service, message, node, container))

    # --- reading ----------------------------------------------------------------------------------------
    async def observe(self) -> Observed:
        obs = await observe(self.pool, self.reports)
        self.live = [r for r in obs.replicas if r.running]
        self.errors = dict(obs.errors)
        self.rotation = Rotation()
        for r in self.live:
            self.rotation.put(r)
        return obs

    async def plan(self, specs: Sequence[ServiceSpec]) -> tuple[Plan, Observed]:
        obs = await self.observe()
        return plan(specs, node_states(self.reports, self.errors), obs.replicas), obs

    # --- applying ---------------------------------------------------------------------------------------
    async def apply(self, specs: Sequence[ServiceSpec]) -> list[Outcome]:
        """Carry out the plan; an unschedulable request fails before anything changes."""
        the_plan, obs = await self.plan(specs)
        if the_plan.unplaced:
            raise SchedulingError("cannot place every replica; nothing was changed:\n  "
                                  + "\n  ".join(str(u) for u in the_plan.unplaced))
        await self._check_images(the_plan)
        await self.sync_hosts(specs)
        outcomes = []
        for sp in the_plan.services:
            for r in sp.cleanup:
                await self._remove(r, "stopped container left behind")
            outcomes.append(await self.rollout(sp.spec, obs.replicas))
        await self.lbs.sync(self.rotation)
        return outcomes

    async def rollout(self, spec: ServiceSpec, seen: Sequence[Replica]) -> Outcome:
        """Converge one service under a history record; on failure, roll back to the last good revision."""
        h = spec.spec_hash()
        if self.history is None:
            try:
                return await self.converge(spec, _revision(spec, seen))
            except CanaryPaused as exc:
                return Outcome(spec.name, True, reason=str(exc))
            except RolloutFailed as exc:
                return Outcome(spec.name, False, reason=str(exc))
        spec_json = json.dumps(to_playbook_dict(spec), sort_keys=True)
        revision = self.history.record(spec.name, spec_json, h, spec.image, self.user)
        try:
            outcome = await self.converge(spec, revision)
        except CanaryPaused as exc:
            return Outcome(spec.name, True, reason=str(exc))
        except CanaryAborted as exc:
            self.history.finish(spec.name, revision, "aborted", str(exc))
            return Outcome(spec.name, False, reason=str(exc))
        except RolloutFailed as exc:
            reason = str(exc)
            prev = self.history.latest_succeeded(spec.name, before=revision)
            if prev is None or prev.spec_hash == h:
                self.history.finish(spec.name, revision, "failed", reason)
                return Outcome(spec.name, False, reason=reason)
            self.emit("rollback", spec.name, f"{spec.name}: rolling back to revision {prev.revision}: {reason}")
            try:
                back = from_playbook_dict(spec.name, json.loads(prev.spec_json))
                await self.converge(back, prev.revision)
            except (RolloutFailed, FleetError) as exc2:
                self.history.finish(spec.name, revision, "failed", f"{reason}; rollback failed too: {exc2}")
                why = f"{reason}; rollback to revision {prev.revision} failed: {exc2}"
                return Outcome(spec.name, False, reason=why)
            self.history.finish(spec.name, revision, "rolled-back", reason)
            return Outcome(spec.name, False, reason=f"{reason}; rolled back to revision {prev.revision}")
        self.history.finish(spec.name, revision, "succeeded")
        return outcome

    async def _check_images(self, the_plan: Plan) -> None:
        """Every image a new replica needs is on its node, or pulled now; else fail before any change."""
        wanted: dict[str, set[str]] = {}
        for sp in the_plan.services:
            for a in sp.start:
                wanted.setdefault(a.node, set()).add(sp.spec.image)
            for r in sp.replace:
                wanted.setdefault(r.node, set()).add(sp.spec.image)
        await asyncio.gather(*(self.ensure_images(node, images) for node, images in wanted.items()))

    async def ensure_images(self, node: str, images: set[str]) -> None:
        """Every image present on the node (pulled if need be); each (node, image) is checked once per run."""
        known = self._images.setdefault(node, set())
        for image in sorted(images - known):
            if await ensure_image(self.pool, self.by_name[node], image, timeout=600) == "pulled":
                self.emit("pull", "", f"pulled {image}", node)
            known.add(image)

    async def converge(self, spec: ServiceSpec, revision: int) -> Outcome:
        """Bring one service to its spec: rolling replacement in batches, then scale, then surplus stops."""
        h = spec.spec_hash()
        for r in duplicates([r for r in self.live if r.service == spec.name]):
            await self._retire(spec, r, f"second copy of {r.service}[{r.replica}]")
        mine = [r for r in self.live if r.service == spec.name]
        current = [r for r in mine if r.spec_hash == h]
        sick = await self._failing(spec, current)
        for r in sick:
            await self._retire(spec, r, "failing its health check")
        current = [r for r in current if r not in sick]
        outdated = sorted((r for r in mine if r.spec_hash != h), key=lambda r: (r.replica, r.id))
        u = spec.update
        batch = max(1, u.batch_size or (u.max_surge + u.max_unavailable) or 1)
        started = stopped = 0
        if u.strategy == "canary" and outdated and not current and self.lbs.nodes:
            canary = await self._canary(spec, revision, outdated)
            started += len(canary)
            current += canary
        # Scale down first: the highest replica numbers go.
        surplus = sorted(current, key=lambda r: (r.replica, r.id))[spec.replicas:]
        for r in surplus:
            await self._retire(spec, r, "surplus")
            stopped += 1
        current = [r for r in current if r not in surplus]
        while True:
            need = spec.replicas - len(current)
            if need <= 0:
                for r in outdated:
                    await self._retire(spec, r, "replaced")
                    stopped += 1
                break
            if not outdated:
                # Scaling up risks no running replica: start every missing one at once.
                k, pre = need, 0
            else:
                # Stop-first only as far as max_unavailable allows (at least one when there is no surge
                # room); then start up to max_surge more than that, so running ≤ wanted + max_surge and
                # ready ≥ wanted − max_unavailable throughout.
                pre = min(len(outdated), u.max_unavailable, need)
                if u.max_surge == 0:
                    pre = max(pre, 1)
                for r in outdated[:pre]:
                    await self._retire(spec, r, "replaced")
                    stopped += 1
                outdated = outdated[pre:]
                k = min(need, u.max_surge + pre, max(batch, pre))
            new = await self._start_batch(spec, revision, len(current), k)
            started += len(new)
            current += new
            victims = outdated[: max(0, len(new) - pre)]
            for r in victims:
                await self._retire(spec, r, "replaced")
                stopped += 1
            outdated = outdated[len(victims):]
        self.emit("done", spec.name, f"{spec.name}: {len(current)}/{spec.replicas} replicas at revision {revision}")
        return Outcome(spec.name, True, started, stopped)

    async def _canary(self, spec: ServiceSpec, revision: int, old: Sequence[Replica]) -> list[Replica]:
        """One new replica gets each step's share of traffic (HAProxy weights) for `pause`; its 5xx rate is
        compared with the old replicas' after every window. Promoted on its own, or left waiting."""
        c = spec.update.canary
        steps, pause = (c.steps, c.pause) if c else ((10, 50), 30.0)
        new = await self._start_batch(spec, revision, 0, 1)
        for step in canary_weights(steps, len(new), len(old)):
            for r in new:
                self.rotation.weight(r, step.new_weight)
            for r in old:
                self.rotation.weight(r, step.old_weight)
            await self.lbs.sync(self.rotation)
            self.emit("canary", spec.name, f"canary at {step.pct}% of traffic (weights {step.new_weight} new / "
                                           f"{step.old_weight} old) for {pause:g}s")
            before = await self.lbs.counters(spec.name)
            deadline = time.monotonic() + pause
            while True:
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                after = await self.lbs.counters(spec.name)
                verdict = self._verdict(spec, before, after, new, old)
                if verdict.ok is False:
                    for r in new:
                        await self._retire(spec, r, "canary aborted")
                    for r in old:
                        self.rotation.weight(r, 1)
                    await self.lbs.sync(self.rotation)
                    raise CanaryAborted(f"{spec.name}: canary aborted at {step.pct}%: {verdict.reason}")
                if time.monotonic() >= deadline:
                    break
        if c is not None and not c.auto_promote:
            raise CanaryPaused(f"{spec.name}: canary at {steps[-1]}% waits: `fleet promote {spec.name}` or "
                               f"`fleet abort {spec.name}`")
        for r in [*new, *old]:
            self.rotation.weight(r, 1)
        self.emit("canary", spec.name, f"{spec.name}: canary promoted; rolling the rest")
        return new

    def _verdict(self, spec: ServiceSpec, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                 new: Sequence[Replica], old: Sequence[Replica]) -> Verdict:
        def delta(rs: Sequence[Replica]) -> tuple[int, int]:
            bad = sum(after.get(r.id, (0, 0))[0] - before.get(r.id, (0, 0))[0] for r in rs)
            total = sum(after.get(r.id, (0, 0))[1] - before.get(r.id, (0, 0))[1] for r in rs)
            return max(bad, 0), max(total, 0)

        c = spec.update.canary
        (nb, nt), (ob, ot) = delta(new), delta(old)
        return canary_verdict(min(nb, nt), nt, min(ob, ot), ot, c.max_error_rate_delta if c else 1.0)

    async def _failing(self, spec: ServiceSpec, replicas: Sequence[Replica]) -> list[Replica]:
        """Replicas that fail their check `failure_threshold` times in a row (a few tenths of a second apart)."""
        h = spec.health
        tries = h.failure_threshold if h else 1

        async def sick(r: Replica) -> bool:
            for _ in range(tries):
                if (await probe(self.addresses[r.node], r.port, h)).ok:
                    return False
                await asyncio.sleep(0.3)
            return True

        verdicts = await asyncio.gather(*(sick(r) for r in replicas))
        return [r for r, bad in zip(replicas, verdicts, strict=True) if bad]

    # --- one batch --------------------------------------------------------------------------------------
    async def _place(self, spec: ServiceSpec, have: int, k: int) -> list[Assignment]:
        """Place k more replicas of `spec` against the live state (outdated replicas still hold their room)."""
        target = replace(spec, replicas=have + k)
        nodes = node_states(self.reports, self.errors)
        shaped, existing, demands, _ = placement_inputs([target], nodes, self.live, hold_outdated=True)
        placement = place(shaped, existing, demands)
        if placement.unplaced:
            raise RolloutFailed(f"{spec.name}: no room for {k} more replica(s) during the update: "
                                + "; ".join(u.reason for u in placement.unplaced))
        return [a for a in placement.assignments if a.service == spec.name and a.reason != "keep"]

    async def _start_batch(self, spec: ServiceSpec, revision: int, have: int, k: int) -> list[Replica]:
        assignments = await self._place(spec, have, k)
        for node in {a.node for a in assignments}:
            await self.ensure_images(node, {spec.image})
        new = await asyncio.gather(*(self._start(spec, revision, a) for a in assignments), return_exceptions=True)
        ok = [r for r in new if isinstance(r, Replica)]
        failed = [e for e in new if isinstance(e, BaseException)]
        if not failed:
            ready = await asyncio.gather(*(self._wait_ready(spec, r) for r in ok))
            failed_reasons = [why for why in ready if why is not None]
        else:
            failed_reasons = [str(e) for e in failed]
        if failed_reasons:
            for r in ok:
                await self._remove(r, "not ready")
            raise RolloutFailed(f"{spec.name}: new replicas did not become ready: " + "; ".join(failed_reasons))
        for r in ok:
            self.live.append(r)
            self.rotation.put(r)
        await self.lbs.sync(self.rotation)
        self.emit("routed", spec.name, f"{len(ok)} new replica(s) in the load balancer")
        return ok

    def _run_spec(self, spec: ServiceSpec, revision: int, a: Assignment, env_file: str | None) -> RunSpec:
        cid = L.container_id(spec.name, a.replica)
        labels = L.build_labels(spec.name, revision=revision, replica=a.replica, spec_hash=spec.spec_hash(),
                                cpu=spec.resources.cpu, memory=spec.resources.memory, port=a.port, node=a.node)
        if spec.lb is not None:
            labels[L.LB] = L.lb_label(spec.lb.port, spec.lb.mode, spec.lb.balance)
        if spec.health is not None:
            h = spec.health
            labels[L.HEALTH] = L.health_label(h.kind, h.path, h.interval, h.timeout, h.failure_threshold,
                                              h.success_threshold)
        env = {k: v for k, v in spec.env.items() if not isinstance(v, SecretRef)}
        env.update({"PORT": str(a.port), "FLEET_SERVICE": spec.name, "FLEET_NODE": a.node,
                    "FLEET_REPLICA": str(a.replica), "FLEET_REVISION": str(revision)})
        mounts = [Mount("bind", "/etc/hosts", HOSTS_FILE, readonly=True),
                  Mount("bind", "/etc/resolv.conf", RESOLV_FILE, readonly=True)]
        for v in spec.volumes:
            if v.type == "tmpfs":
                mounts.append(Mount("tmpfs", v.target, "tmpfs", options=(f"size={v.size}",) if v.size else ()))
            elif v.type == "volume":
                mounts.append(Mount("bind", v.target, f"{NODE_DIR}/volumes/{spec.name}/{v.source}", v.readonly))
            else:
                mounts.append(Mount("bind", v.target, v.source or "", v.readonly))
        return RunSpec(id=cid, image=spec.image, command=spec.command, env=env, env_file=env_file,
                       mounts=tuple(mounts), cpu=spec.resources.cpu, memory=spec.resources.memory, labels=labels,
                       netns=HOST_NETNS, restart="always")

    async def _start(self, spec: ServiceSpec, revision: int, a: Assignment) -> Replica:
        report = self.by_name[a.node]
        driver = driver_for(report.node, report.facts)
        dirs = [f"{NODE_DIR}/volumes/{spec.name}/{v.source}" for v in spec.volumes if v.type == "volume"]
        env_file = await self._secrets_file(spec, a) if spec.secret_names() else None
        if dirs:
            await self.pool.check(report.node, ["mkdir", "-p", *dirs])
        run = self._run_spec(spec, revision, a, env_file)
        self.emit("start", spec.name, f"starting {run.id} on {a.node}:{a.port}", a.node, run.id)
        try:
            await perform(self.pool, report.node, driver.run(run), timeout=120)
        finally:
            if env_file is not None:
                # The runtime copied the values into the container's spec when it created it.
                await self.pool.run(report.node, ["rm", "-f", env_file])
        return Replica(a.node, run.id, spec.name, a.replica, revision, spec.spec_hash(), a.port, True,
                       spec.resources, spec.image,
                       lb=L.parse_lb_label(run.labels.get(L.LB)), health=L.parse_health_label(run.labels.get(L.HEALTH)))

    async def _secrets_file(self, spec: ServiceSpec, a: Assignment) -> str:
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
        path = f"{NODE_DIR}/secrets/{spec.name}-{a.replica}-{L.random_suffix()}.env"
        node = self.by_name[a.node].node
        await self.pool.check(node, ["sh", "-c", 'umask 077 && mkdir -p "${1%/*}" && cat >"$1"', "sh", path],
                              stdin="".join(lines))
        return path

    async def _wait_ready(self, spec: ServiceSpec, r: Replica) -> str | None:
        """None once the replica passes its check `success_threshold` times in a row and then keeps passing,
        in the same process, for `min_ready`; else why not (deadline passed, or it crashed)."""
        h = spec.health
        deadline = time.monotonic() + spec.update.ready_deadline
        need = h.success_threshold if h else 1
        address = self.addresses[r.node]
        streak, checks, last = 0, 0, "no check yet"
        ready_since: float | None = None
        pid: int | None = None
        while time.monotonic() < deadline:
            result = await probe(address, r.port, h)
            checks += 1
            if result.ok:
                streak += 1
                if streak >= need and ready_since is None:
                    ready_since, pid = time.monotonic(), await self._pid(r)
                if ready_since is not None and time.monotonic() - ready_since >= spec.update.min_ready:
                    now = await self._pid(r)
                    if now is not None and now == pid:
                        self.emit("ready", spec.name, f"{r.id} ready on {r.node}:{r.port}", r.node, r.id)
                        return None
                    last = "its process restarted while it was becoming ready (crashed)"
                    streak, ready_since = 0, None
                    if now is None:
                        return f"{r.id} on {r.node} crashed ({last})"
            else:
                again = ready_since is not None
                last = f"failed again after passing ({result.detail})" if again else result.detail
                streak, ready_since = 0, None
                if checks % 4 == 0 and await self._pid(r) is None:
                    return f"{r.id} on {r.node} crashed ({last})"
            await asyncio.sleep(0.25)
        return f"{r.id} on {r.node} not ready within {spec.update.ready_deadline:g}s (last check: {last})"

    async def _pid(self, r: Replica) -> int | None:
        """The PID of the replica's running task, None when it is not running."""
        report = self.by_name[r.node]
        infos = await perform(self.pool, report.node, driver_for(report.node, report.facts).list_containers())
        return next((i.pid or -1 for i in infos if i.id == r.id and i.status == Status.RUNNING), None)

    async def _retire(self, spec: ServiceSpec, r: Replica, why: str) -> None:
        """Drain (no new connections; existing ones finish, up to the grace period), unroute, then stop."""
        if r.lb is not None and self.lbs.nodes:
            self.rotation.state(r, "drain")
            await self.lbs.set_state(r, "drain")
            self.emit("drain", spec.name, f"draining {r.id} ({why})", r.node, r.id)
            deadline = time.monotonic() + spec.stop_grace_period
            while time.monotonic() < deadline and await self.lbs.connections(r) > 0:
                await asyncio.sleep(0.2)
            self.rotation.drop(r)
            await self.lbs.sync(self.rotation)
            await self.lbs.settle(min(max(spec.stop_grace_period, 1.0), 10.0))
        await self._stop(r, spec.stop_grace_period, why)

    async def _stop(self, r: Replica, grace: float, why: str) -> None:
        report = self.by_name[r.node]
        self.emit("stop", r.service, f"stopping {r.id} on {r.node} ({why})", r.node, r.id)
        await perform(self.pool, report.node, driver_for(report.node, report.facts).stop(r.id, grace),
                      timeout=grace + 30)
        self.live = [x for x in self.live if x.id != r.id]
        self.rotation.drop(r)

    async def _remove(self, r: Replica, why: str) -> None:
        report = self.by_name[r.node]
        self.emit("remove", r.service, f"removing {r.id} on {r.node} ({why})", r.node, r.id)
        await perform(self.pool, report.node, driver_for(report.node, report.facts).stop(r.id, 1.0), timeout=60)
        self.live = [x for x in self.live if x.id != r.id]
        self.rotation.drop(r)

    # --- removing a service -----------------------------------------------------------------------------
    async def destroy(self, service: str, grace: float = 10.0) -> int:
        """Take every replica of `service` out of the load balancers, then stop and remove them."""
        await self.observe()
        mine = [r for r in self.live if r.service == service]
        for r in mine:
            self.rotation.drop(r)
        if mine:
            await self.lbs.sync(self.rotation)
        await asyncio.gather(*(self._stop(r, grace, "destroy") for r in mine))
        return len(mine)

    # --- service discovery ------------------------------------------------------------------------------
    def hosts_text(self, specs: Sequence[ServiceSpec]) -> str:
        """The hosts file every container gets: each load-balanced service's name → the first lb node."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lb = next((r.node.address for r in self.reports if r.node.has_role("lb") and r.ok), None)
        names = sorted({s.name for s in specs if s.lb} | {r.service for r in self.live if r.lb})
        if lb is not None:
            lines += [f"{lb}\t{name}.fleet {name}" for name in names]
        return "\n".join(lines) + "\n"

    async def sync_hosts(self, specs: Sequence[ServiceSpec]) -> None:
        """Prepare every worker: hosts file, resolv.conf, pinned network namespace (see PREPARE_NODE)."""
        text = self.hosts_text(specs)
        workers = [r.node for r in self.reports if r.ok and r.node.has_role("worker")]
        script = Script(PREPARE_NODE, {"HOSTS": HOSTS_FILE, "RESOLV": RESOLV_FILE, "NETNS": HOST_NETNS},
                        name="fleet-prepare-node")
        await asyncio.gather(*(self.pool.check(n, script, stdin=text) for n in workers))
