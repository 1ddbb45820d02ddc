"""Work by hand on a fleet's nodes (`fleet ps`, `run`, `stop`, `rm`, `logs`, `exec`, `volume`): each operation
takes the run's node reports, finds what a reference names and acts on it; no lease, no records (the façade takes
the lease for the volume operations that change data, and `stop` and `rm` hand a service's running replicas to
it: fleet.engine.byhand.retire)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from fleet.core import labels as L
from fleet.core.errors import FleetError, LeaseHeld
from fleet.engine import containers as C
from fleet.engine import volumes as V
from fleet.engine.calls import driver_for
from fleet.node.logdates import DatedLine
from fleet.node.runtime.base import RunSpec, Status, StopResult
from fleet.results.containers import LIST_TIMEOUT, PsResult, PsRow
from fleet.results.nodes import NodeReport
from fleet.results.volumes import VolumeRow
from fleet.transport import Pool
from fleet.transport.terminal import Session, Terminal, session

Reports = list[NodeReport]


# --- containers ---------------------------------------------------------------------------------------------------
async def ps(pool: Pool, reports: Reports, *, all: bool = False, timeout: float = LIST_TIMEOUT) -> PsResult:
    """The containers on every ready node (see fleet.engine.containers.ps); only running ones unless `all`."""
    result = await C.ps(pool, reports, timeout=timeout)
    if all:
        return result
    return dataclasses.replace(result, rows=tuple(r for r in result.rows if r.info.status is Status.RUNNING))


async def run_one(pool: Pool, reports: Reports, node: str, spec: RunSpec, *, timeout: float = 60.0) -> None:
    """Start one container on `node` (its image must be there: `push`). Raises FleetError naming the node
    when it is not ready, ContainerLookupError when there is no such node, RuntimeDriverError when the
    runtime refuses."""
    report = C.report_of(reports, node)
    if not report.ok:
        raise FleetError(f"{node}: {report.status}: {report.reason}")
    await C.run_container(pool, report, spec, timeout=timeout)


async def stop(pool: Pool, reports: Reports, ref: str, grace: float = 10.0,
               drained: Callable[[frozenset[str]], Awaitable[None]] | None = None,
               ) -> list[tuple[PsRow, StopResult | str]]:
    """Stop every container `ref` names (SIGTERM, SIGKILL after `grace` seconds, then delete): one entry per
    container, with how it stopped or why it could not be. With `drained`, the running replicas of services
    are stopped through it instead (the lease, then out of HAProxy and drained first: fleet.engine.byhand.retire);
    their entries say only that they stopped."""
    rows = C.find(await C.ps(pool, reports), ref)
    served, failed = await _retired(rows, drained)
    out: list[tuple[PsRow, StopResult | str]] = []
    for row in rows:
        if row.info.id in served:
            out.append((row, failed if failed is not None else StopResult(row.info.id, True)))
            continue
        try:
            out.append((row, await C.stop_container(pool, C.report_of(reports, row.node), row.info.id, grace)))
        except FleetError as exc:
            out.append((row, str(exc)))
    return out


async def rm(pool: Pool, reports: Reports, ref: str,
             drained: Callable[[frozenset[str]], Awaitable[None]] | None = None) -> list[tuple[PsRow, str | None]]:
    """Remove every container `ref` names (kill, then its task, container, snapshot and log): one entry per
    container, None when removed, else why not. With `drained`, the running replicas of services are first
    stopped through it as `stop` does (the lease, out of HAProxy and drained), then removed with their log; when
    that fails they are left as they are, their entries saying why."""
    rows = C.find(await C.ps(pool, reports), ref)
    served, failed = await _retired(rows, drained)
    out: list[tuple[PsRow, str | None]] = []
    for row in rows:
        if row.info.id in served and failed is not None:
            out.append((row, failed))
            continue
        try:
            await C.remove_container(pool, C.report_of(reports, row.node), row.info.id)
        except FleetError as exc:
            out.append((row, str(exc)))
        else:
            out.append((row, None))
    return out


async def _retired(rows: Sequence[PsRow], drained: Callable[[frozenset[str]], Awaitable[None]] | None,
                   ) -> tuple[frozenset[str], str | None]:
    """The running replicas of services among `rows`, stopped through `drained` (none without it), and why that
    failed (None: it did not). A lease another run holds raises (LeaseHeld), before anything is done: the command
    ends as every writer does then (exit 75)."""
    served = frozenset(r.info.id for r in rows if drained is not None and r.labels is not None
                       and r.labels.replica is not None and r.info.status is Status.RUNNING)
    if served and drained is not None:
        try:
            await drained(served)
        except LeaseHeld:
            raise
        except FleetError as exc:
            return served, str(exc)
    return served, None


class LogLines:
    """The log lines of the containers a reference names, as `(prefix, line)`; `prefixes` are the containers read
    (`node/short id`, in order) and `errors` names, by prefix, each log that could not be read (filled as they
    fail)."""

    def __init__(self, prefixes: tuple[str, ...], stream: C.LogStream) -> None:
        self.prefixes = prefixes
        self._stream = stream

    @property
    def errors(self) -> Mapping[str, str]:
        return self._stream.errors

    def __aiter__(self) -> AsyncIterator[tuple[str, str]]:
        return self._stream.__aiter__()

    def dated(self) -> AsyncIterator[tuple[str, DatedLine]]:
        """The lines with what is known of when each was written (opened with `dated=True`)."""
        return self._stream.dated()


@contextlib.asynccontextmanager
async def logs(pool: Pool, reports: Reports, ref: str, *, follow: bool = False,
               tail: int | None = 100, dated: bool = False) -> AsyncIterator[LogLines]:
    """The logs of the containers `ref` names (a service: all its replicas): `tail` lines from the end of each
    (None: whole logs); `follow` keeps reading until the block is left, which stops every reader; `dated` for
    `LogLines.dated`. Raises ContainerLookupError on entry when `ref` names nothing."""
    chosen = C.targets(reports, C.find(await C.ps(pool, reports), ref))
    async with C.logs(pool, chosen, tail, follow, dated=dated) as stream:
        yield LogLines(tuple(t.prefix for t in chosen), stream)


async def exec_in(pool: Pool, reports: Reports, ref: str, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
    """Run `argv` inside the one running container `ref` names, handing each output line (stdout and stderr
    merged) to `on_line` as it comes; returns the command's exit code. No deadline: it runs as long as it
    runs. Raises ContainerLookupError when `ref` names no container, or a service with several replicas."""
    row = C.find_one(await C.ps(pool, reports), ref)
    return await C.exec_in(pool, C.report_of(reports, row.node), row.info.id, list(argv), on_line)


@contextlib.asynccontextmanager
async def exec_session(pool: Pool, reports: Reports, ref: str, argv: Sequence[str],
                       terminal: Terminal | None) -> AsyncIterator[Session]:
    """`argv` inside the one running container `ref` names, as an interactive session (stdin from the caller),
    on a pseudo-terminal of `terminal`'s type and size when given (the container's process gets a console of its
    own). Raises ContainerLookupError as `exec_in`."""
    row = C.find_one(await C.ps(pool, reports), ref)
    report = C.report_of(reports, row.node)
    call = driver_for(report.node, report.facts).exec(row.info.id, list(argv), tty=terminal is not None)
    async with session(pool, report.node, call.command, terminal) as opened:
        yield opened


def one_off_spec(node: str, image: str, name: str, *, env: Mapping[str, str] | None = None, port: int | None = None,
                 cpu: float | None = None, memory: int | None = None, restart: str = "no",
                 command: Sequence[str] = (), suffix: str | None = None) -> RunSpec:
    """A one-off container's RunSpec (`fleet run`): labelled as replica 1 of service `name`; PORT (when given),
    FLEET_NODE and FLEET_REPLICA are set in its environment unless `env` sets them. Pure: raises ValueError for
    a name or value the labels refuse, before any node is contacted."""
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


# --- volumes ------------------------------------------------------------------------------------------------------
async def volume(pool: Pool, reports: Reports, ref: str, node: str | None = None) -> VolumeRow:
    """The one volume `SERVICE/NAME` names (on `node`); raises VolumeError when none or several."""
    return V.find(await V.list_volumes(pool, reports), ref, node)


async def volume_rm(pool: Pool, reports: Reports, ref: str, node: str | None = None) -> VolumeRow:
    """Delete a volume's data (the caller holds the fleet's lease); refused (VolumeError) while a container uses
    it."""
    row = await volume(pool, reports, ref, node)
    await V.remove(pool, reports, row)
    return row


async def volume_backup(pool: Pool, reports: Reports, ref: str, path: str, node: str | None = None,
                        on_progress: Callable[[int], None] | None = None) -> tuple[VolumeRow, int]:
    """Stream a tar of the volume over SSH into the local file `path`; returns the volume and the size."""
    row = await volume(pool, reports, ref, node)
    return row, await V.backup(pool, reports, row, path, on_progress=on_progress)
