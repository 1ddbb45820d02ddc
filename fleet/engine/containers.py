"""Containers on nodes: list them all, find one by ID, prefix or service, run/stop/remove, logs and exec.

Every operation takes the node reports of this run; a node that cannot be read is reported, never raised.
Every remote call has a deadline (see `calls`): listings LIST_TIMEOUT, run 60 s, stop the grace period plus
STOP_MARGIN; only `logs -f` and `exec` stream without one, on purpose (the SSH keepalive ends them when the
node stops answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

from fleet.core import labels as L
from fleet.core.errors import (
    ContainerLookupError,
    FleetError,
    RuntimeCommandError,
    TransportError,
)
from fleet.core.labels import parse_labels
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.engine.calls import driver_for, on_ready_nodes, perform
from fleet.engine.nodes import NodeReport
from fleet.node import cni
from fleet.node.logdates import DatedLine, Dater
from fleet.node.paths import DEFAULT as NODE_PATHS
from fleet.node.runtime.base import Call, ContainerInfo, RunSpec, RuntimeDriver, StopResult, check, parse_ok
from fleet.node.storage import release_script
from fleet.results.containers import LIST_TIMEOUT
from fleet.results.containers import PsResult as PsResult
from fleet.results.containers import PsRow as PsRow
from fleet.transport import Pool

SHORT_ID = 20
STOP_MARGIN = 30.0  # seconds the stop script may take beyond the grace period (SIGKILL, tasks rm, containers rm)


def _sort_key(row: PsRow) -> tuple[int, str, int, str, str]:
    labels = row.labels
    return (1 if labels is None else 0, labels.service if labels else "",
            labels.replica if labels and labels.replica is not None else 0, row.node, row.info.id)


async def ps(pool: Pool, reports: list[NodeReport], *, timeout: float = LIST_TIMEOUT) -> PsResult:
    """List every container on every ready node in parallel: fleet's first (by service, replica), then foreign.

    Each node has `timeout` seconds; one that is not ready or does not answer in time is named in `errors`
    ("list containers did not answer within 8s") and the others are listed all the same."""
    found, errors = await on_ready_nodes(pool, reports, lambda d: d.list_containers(), timeout=timeout)
    return ps_result(found, errors)


def ps_result(found: Mapping[str, list[ContainerInfo]], errors: dict[str, str]) -> PsResult:
    """The listings of the nodes (`found`: node -> its containers) as `ps` returns them, in its order."""
    rows = [PsRow(node, info, parse_labels(info.labels)) for node, infos in found.items() for info in infos]
    return PsResult(tuple(sorted(rows, key=_sort_key)), errors)


def find(result: PsResult, ref: str) -> list[PsRow]:
    """Resolve `ref`: an exact container ID, else a service name (all its replicas), else a unique ID prefix.

    `NODE/REF` restricts the search to one node (the prefix `logs` prints). Raises ContainerLookupError.
    """
    rows = list(result.rows)
    node, sep, rest = ref.partition("/")
    if sep and any(r.node == node for r in rows):
        rows, ref = [r for r in rows if r.node == node], rest
    if not ref:
        raise ContainerLookupError("empty container reference")
    exact = [r for r in rows if r.info.id == ref]
    if exact:
        if len(exact) > 1:
            raise ContainerLookupError(_ambiguous(ref, exact, "exists on several nodes"))
        return exact
    service = [r for r in rows if r.service == ref]
    if service:
        return service
    prefixed = [r for r in rows if r.info.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed
    if prefixed:
        raise ContainerLookupError(_ambiguous(ref, prefixed, "matches several containers"))
    where = "" if not result.errors else f" (not read: {', '.join(sorted(result.errors))})"
    close = difflib.get_close_matches(ref, sorted({r.service for r in rows if r.service}), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ContainerLookupError(f"no container or service {ref!r} on any node{where}{hint}")


def find_one(result: PsResult, ref: str) -> PsRow:
    """Like `find`, but a service must have exactly one replica."""
    rows = find(result, ref)
    if len(rows) > 1:
        raise ContainerLookupError(_ambiguous(ref, rows, "has several replicas; name one container"))
    return rows[0]


def _ambiguous(ref: str, rows: list[PsRow], why: str) -> str:
    names = ", ".join(f"{r.node}/{r.info.id}" for r in rows[:6]) + (", …" if len(rows) > 6 else "")
    return f"{ref!r} {why}: {names}"


def report_of(reports: list[NodeReport], node: str) -> NodeReport:
    for r in reports:
        if r.node.name == node:
            return r
    raise ContainerLookupError(f"no node {node!r} in the inventory")


async def run_container(pool: Pool, report: NodeReport, spec: RunSpec, *, timeout: float = 60.0,
                        subnet: str | None = None) -> None:
    """Start the container; with `spec.ports` under ctr, in its own network namespace first (fleet.node.cni,
    on `subnet`, else the node's own), torn down again when the start fails."""
    driver = driver_for(report.node, report.facts)
    if not (spec.ports and driver.name == "ctr"):
        await perform(pool, report.node, driver.run(spec), timeout=timeout)
        return
    ports = [cni.PortMap(h, c, cni.bound_address(report.node.address)) for h, c in spec.ports]
    try:
        await perform(pool, report.node, cni.attach_and(driver.run(spec), spec.id, subnet or cni.node_subnet(0),
                                                        ports), timeout=timeout)
    except BaseException:
        # The script tears the namespace down when the start fails; not when the connection was cut.
        with contextlib.suppress(FleetError):
            await detach_network(pool, report.node, spec.id)
        raise


async def detach_network(pool: Pool, node: Node, container_id: str) -> None:
    """Tear down the container's network namespace, if it has one (CNI DEL, `ip netns delete`)."""
    await perform(pool, node, cni.detach([container_id]), timeout=STOP_MARGIN)


async def forget(pool: Pool, node: Node, container_id: str) -> None:
    """What a removed container leaves on its node, in one round trip: its secret files (see
    `drop_secret_files`) and its network namespace (see `detach_network`)."""
    await perform(pool, node, Call(_forget_script(container_id), parse_ok("cleanup"), what=f"cleanup {container_id}"),
                  timeout=STOP_MARGIN)


def _forget_script(container_id: str) -> Script:
    detach = cni.detach_script([container_id])
    return Script(detach.text + 'rm -rf -- "$SECRETS"\n',
                  {**detach.env, "SECRETS": f"{NODE_PATHS.secret_mounts_dir}/{container_id}"}, name=detach.name)


async def drop_secret_files(pool: Pool, node: Node, container_id: str) -> None:
    """Remove a container's secret files from the node's tmpfs (it is gone, or never started)."""
    await pool.run(node, ["rm", "-rf", "--", f"{NODE_PATHS.secret_mounts_dir}/{container_id}"], timeout=30)


async def stop_container(pool: Pool, report: NodeReport, container_id: str, grace: float = 10.0) -> StopResult:
    """SIGTERM, SIGKILL after `grace` seconds, then delete, with its secret files; the result carries the exit
    code."""
    call = driver_for(report.node, report.facts).stop(container_id, grace)
    result = await perform(pool, report.node, call, timeout=grace + STOP_MARGIN)
    await forget(pool, report.node, container_id)
    return result


async def end_replica(pool: Pool, report: NodeReport, container_id: str, grace: float, timeout: float, *,
                      remove: bool = True) -> StopResult:
    """Stop a replica and remove what it leaves on its node in one round trip (see `end_call`)."""
    call = end_call(driver_for(report.node, report.facts), container_id, grace, remove=remove)
    return await perform(pool, report.node, call, timeout=timeout)


async def finish_replica(pool: Pool, report: NodeReport, container_id: str, timeout: float) -> None:
    """What a replica stopped without `remove` (see `end_replica`) leaves on its node, removed (see `finish_call`)."""
    await perform(pool, report.node, finish_call(driver_for(report.node, report.facts), container_id),
                  timeout=timeout)


# What runs behind a rollout (`finish_call`: nothing waits for it but the service's end) at a lower CPU priority
# than the node's starts and stops, which the rollout waits for (nice 10, inherited by ctr, the CNI plugin and the
# rest). A stop is waited for (the next batch starts once the process is gone): it runs at the node's priority.
_NICE = "renice -n 10 -p $$ >/dev/null 2>&1 || :\n"


def end_call(driver: RuntimeDriver, container_id: str, grace: float, *, remove: bool = True) -> Call[StopResult]:
    """The runtime's stop, its exit code not read (a replica's is of no use), then what the container
    leaves on its node: its network namespace and secret files (as `forget`), its sshfs mounts (as
    `StorageAccess.release`, whose failure is left to the next run, as before). When the stop fails, nothing
    else is done and the failure is raised. Without `remove`, done once its process is gone: the rest is
    `finish_call`'s."""
    stop = driver.stop(container_id, grace, exit_code=False, remove=remove)
    if not isinstance(stop.command, Script):
        raise TypeError("a runtime's stop is a script")
    text = "out=$(\n" + stop.command.text + "\n)\n" + 'printf \'%s\\n\' "$out"\n'
    env = dict(stop.command.env)
    if remove:
        text, env = _and_cleanup(text, env, container_id)

    def parse(result: CommandResult) -> StopResult:
        stopped = stop.parse(result)
        _cleaned(result)
        return stopped

    return Call(Script(text, env, name="fleet-stop"), parse, what=f"stop {container_id}")


def finish_call(driver: RuntimeDriver, container_id: str) -> Call[None]:
    """The rest of a stop without `remove` (see `end_call`), at nice 10: the container (its log stays), then its
    network namespace, secret files and sshfs mounts."""
    delete = driver.delete(container_id)
    if not isinstance(delete.command, Script):
        raise TypeError("a runtime's delete is a script")
    text, env = _and_cleanup(_NICE + "out=$(\n" + delete.command.text + "\n) && out='@@rc 0'\n"
                             + 'printf \'%s\\n\' "$out"\n', dict(delete.command.env), container_id)

    def parse(result: CommandResult) -> None:
        check(result, "delete")
        if "@@rc 0" not in result.stdout:
            raise RuntimeCommandError(result.node, "delete", result.exit_status, result.stderr.strip())
        _cleaned(result)

    return Call(Script(text, env, name="fleet-finish"), parse, what=f"delete {container_id}")


def _and_cleanup(text: str, env: dict[str, str], container_id: str) -> tuple[str, dict[str, str]]:
    """A stop's script followed, once it printed `@@rc 0` (or found nothing), by the container's cleanup (see
    `end_call`), which prints `@@cleanup STATUS` (read by `_cleaned`)."""
    clean, release = _forget_script(container_id), release_script(container_id)
    text += ('case $out in *"@@rc 0"*|*"@@found false"*) ;; *) exit 0 ;; esac\n'
             + "(\n" + clean.text + "\n) >/dev/null\n" + 'echo "@@cleanup $?"\n'
             + "(\n" + release.text + "\n) >/dev/null 2>&1 || :\n")
    merged = {**env, **clean.env, **release.env}
    if len(merged) != len(env) + len(clean.env) + len(release.env):
        raise ValueError("the stop and cleanup scripts' variables collide")
    return text, merged


def _cleaned(result: CommandResult) -> None:
    """Raise when the cleanup `_and_cleanup` added failed."""
    _, mark, rest = result.stdout.partition("\n@@cleanup ")
    status = rest.split("\n", 1)[0].strip()
    if mark and status != "0":
        raise RuntimeCommandError(result.node, "cleanup", int(status) if status.isdigit() else None,
                                  result.stderr.strip())


async def remove_container(pool: Pool, report: NodeReport, container_id: str) -> None:
    """Kill and delete the container with its task, snapshot, log and secret files; fine when it is already
    gone."""
    await perform(pool, report.node, driver_for(report.node, report.facts).remove(container_id),
                  timeout=STOP_MARGIN)
    await forget(pool, report.node, container_id)


@dataclass(frozen=True)
class Target:
    """One container to read logs from."""

    report: NodeReport
    container_id: str

    @property
    def prefix(self) -> str:
        return f"{self.report.node.name}/{self.container_id[:SHORT_ID]}"


def targets(reports: list[NodeReport], rows: list[PsRow]) -> list[Target]:
    return [Target(report_of(reports, r.node), r.info.id) for r in rows]


@dataclass(frozen=True)
class _Done:
    prefix: str


class LogStream:
    """Log lines of several containers as `(prefix, line)`, merged like `docker compose logs`.

    Use `async with logs(...) as stream: async for prefix, line in stream:`; leaving the block stops every
    reader. Without follow, each container's tail comes whole, in target order. With follow, one stream per
    container feeds a bounded queue (a slow consumer pauses the readers). A container whose log cannot be read
    does not stop the others: `errors` maps its prefix to the reason.
    """

    def __init__(self, pool: Pool, targets: list[Target], tail: int | None, follow: bool, queue_size: int,
                 dated: bool = False) -> None:
        self._pool = pool
        self._targets = targets
        self._tail = tail
        self._follow = follow
        # Dated: each reader prints its file's size and times first (fleet.node.logdates); `dated()` reads them.
        self._token = L.random_suffix(12) if dated else None
        self._queue: asyncio.Queue[tuple[str, str] | _Done] = asyncio.Queue(queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self.errors: dict[str, str] = {}

    async def __aenter__(self) -> LogStream:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every reader (closing its SSH channel) and wait for them."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __aiter__(self) -> AsyncIterator[tuple[str, str]]:
        return self._follow_lines() if self._follow else self._tail_lines()

    async def dated(self) -> AsyncIterator[tuple[str, DatedLine]]:
        """The lines with what is known of their dates (a stream opened with `dated=True`)."""
        assert self._token is not None, "a dated stream is opened with dated=True"
        daters = {t.prefix: Dater(self._token) for t in self._targets}
        async for prefix, line in self:
            try:
                got = daters[prefix].feed(line, time.time())
            except ValueError as exc:
                self.errors[prefix] = str(exc)
                continue
            if got is not None:
                yield prefix, got

    def _call(self, t: Target, follow: bool) -> Call[str]:
        driver = driver_for(t.report.node, t.report.facts)
        if self._token is not None:
            return driver.logs_dated(t.container_id, self._tail, follow, self._token)
        return driver.logs(t.container_id, self._tail, follow)

    async def _tail_lines(self) -> AsyncIterator[tuple[str, str]]:
        async def read(t: Target) -> str | None:
            try:
                call = self._call(t, False)
            except ValueError as exc:
                self.errors[t.prefix] = str(exc)
                return None
            res = await self._pool.run(t.report.node, call.command, timeout=60)
            if not res.ok:
                self.errors[t.prefix] = res.error or (res.stderr.strip() or f"exit {res.exit_status}")
                return None
            return res.stdout

        texts = await asyncio.gather(*(read(t) for t in self._targets))
        for t, text in zip(self._targets, texts, strict=True):
            for line in (text or "").splitlines():
                yield t.prefix, line

    async def _reader(self, t: Target) -> None:
        # Following has no deadline: it lasts as long as the reader wants (the keepalive catches a dead node).
        try:
            call = self._call(t, True)
            async with self._pool.stream(t.report.node, call.command) as lines:
                async for line in lines:
                    await self._queue.put((t.prefix, line))
            if lines.exit_status:
                self.errors[t.prefix] = f"log reader exited {lines.exit_status}"
        except TransportError as exc:
            self.errors[t.prefix] = exc.message
        except ValueError as exc:  # a runtime that cannot give dated logs
            self.errors[t.prefix] = str(exc)
        finally:
            # put_nowait may not block in a finally that runs on cancellation; a full queue only delays the end.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_Done(t.prefix))

    async def _follow_lines(self) -> AsyncIterator[tuple[str, str]]:
        self._tasks = [asyncio.create_task(self._reader(t)) for t in self._targets]
        finished: set[str] = set()
        while len(finished) < len(self._targets):
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout=1.0)
            except TimeoutError:
                # A reader whose end marker did not fit in a full queue is still seen to finish.
                finished |= {t.prefix for t, task in zip(self._targets, self._tasks, strict=True) if task.done()}
                continue
            if isinstance(item, _Done):
                finished.add(item.prefix)
            elif isinstance(item, tuple):
                yield item
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, tuple):
                yield item


def logs(pool: Pool, targets: list[Target], tail: int | None = 100, follow: bool = False,
         queue_size: int = 1000, dated: bool = False) -> LogStream:
    """The logs of `targets` (see LogStream); `tail` None reads whole files; `dated` for `LogStream.dated`."""
    return LogStream(pool, targets, tail, follow, queue_size, dated)


async def exec_in(pool: Pool, report: NodeReport, container_id: str, argv: list[str],
                  on_line: Callable[[str], None]) -> int:
    """Run `argv` inside the running container, handing each output line (stdout and stderr) to `on_line`.

    Returns the command's exit code; a transport failure raises the mapped TransportError. No deadline: the
    command runs as long as it runs (the keepalive ends it if the node stops answering).
    """
    call = driver_for(report.node, report.facts).exec(container_id, argv)
    async with pool.stream(report.node, call.command) as lines:
        async for line in lines:
            on_line(line)
    return lines.exit_status if lines.exit_status is not None else 255
