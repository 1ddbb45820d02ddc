"""`fleet run`, `fleet stop`, `fleet rm`: one-off containers, started and removed by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from .. import labels as L
from ..api import Fleet
from ..engine import containers
from ..engine.containers import PsRow
from ..engine.nodes import NodeReport
from ..errors import FleetError
from ..runtime.base import RunSpec, StopResult
from ..transport import Pool
from ..units import parse_cpu, parse_memory
from . import common
from .common import esc

T = TypeVar("T")

RefArg = Annotated[str, typer.Argument(metavar="CONTAINER", help="Container ID, unique prefix, NODE/ID, or a "
                                       "service name (all its replicas).")]


def _lookup(result: containers.PsResult, ref: str) -> list[PsRow]:
    try:
        return containers.find(result, ref)
    except containers.ContainerLookupError as exc:
        common.fail(str(exc))


def _stopped(row: PsRow, res: StopResult | str) -> str:
    where = f"{row.node}/{row.info.id}"
    if isinstance(res, str):
        return f"[red]{where}: {res}[/]"
    if not res.found:
        return f"{where}: already gone"
    how = " (killed after the grace period)" if res.killed else ""
    oom = " (it had been OOM-killed)" if row.info.oom_killed else ""
    code = "-" if res.exit_code is None else str(res.exit_code)
    return f"{where}: stopped, exit code {code}{how}{oom}"


def _each(ref: str, inventory: str | None,
          act: Callable[[Pool, NodeReport, PsRow], Awaitable[T]]) -> list[tuple[PsRow, T | str]]:
    """Run `act` on every container `ref` names; a container that fails gets its error message instead."""
    inv = common.inventory(inventory)

    async def go() -> list[tuple[PsRow, T | str]]:
        async with Pool(connect_timeout=10) as pool:
            reports = await Fleet(inv, pool).reports()
            out: list[tuple[PsRow, T | str]] = []
            for row in _lookup(await containers.ps(pool, reports), ref):
                try:
                    out.append((row, await act(pool, containers.report_of(reports, row.node), row)))
                except FleetError as exc:
                    out.append((row, str(exc)))
            return out

    return common.run(go)


def stop(ref: RefArg, inventory: common.InventoryOpt = None,
         grace: Annotated[float, typer.Option("--grace", "-t", help="Seconds between SIGTERM and SIGKILL.")] = 10.0
         ) -> None:
    """Stop a container (SIGTERM, then SIGKILL after the grace period) and delete it."""
    results = _each(ref, inventory,
                    lambda pool, report, row: containers.stop_container(pool, report, row.info.id, grace))
    con = common.console()
    for row, res in results:
        con.print(_stopped(row, res), highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if any(isinstance(r, str) for _, r in results) else common.EXIT_OK)


def rm(ref: RefArg, inventory: common.InventoryOpt = None) -> None:
    """Remove a container at once (kill, delete task, container, snapshot and log)."""
    results = _each(ref, inventory, lambda pool, report, row: containers.remove_container(pool, report, row.info.id))
    con = common.console()
    for row, err in results:
        con.print(f"[red]{esc(err)}[/]" if isinstance(err, str) else f"{row.node}/{row.info.id}: removed",
                  highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if any(isinstance(err, str) for _, err in results) else common.EXIT_OK)


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            common.fail(f"--env expects NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def build_spec(node: str, image: str, name: str, env: dict[str, str], port: int | None, cpu: float | None,
               memory: int | None, restart: str, command: list[str], suffix: str | None = None) -> RunSpec:
    """A one-off container's RunSpec: labelled as replica 1 of service `name`; PORT (when given), FLEET_NODE
    and FLEET_REPLICA are set in its environment unless the user set them."""
    defaults = {"FLEET_NODE": node, "FLEET_REPLICA": "1"}
    if port is not None:
        defaults["PORT"] = str(port)
    return RunSpec(
        id=L.container_id(name, 1, suffix),
        image=image,
        command=tuple(command) or None,
        env={**defaults, **env},
        cpu=cpu,
        memory=memory,
        labels=L.build_labels(name, replica=1, cpu=cpu, memory=memory, port=port, node=node),
        restart="always" if restart == "always" else "no",
    )


def run(node: Annotated[str, typer.Argument(help="Node to run on.")],
        image: Annotated[str, typer.Argument(help="Image reference (already on the node: `fleet image push`).")],
        command: Annotated[list[str] | None, typer.Argument(help="Arguments after `--` (appended to the "
                                                            "image's entrypoint).")] = None,
        inventory: common.InventoryOpt = None,
        name: Annotated[str | None, typer.Option("--name", help="Service name (default: from the image).")] = None,
        env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE, repeatable.")] = None,
        port: Annotated[int | None, typer.Option("--port", "-p", help="Port it listens on (host network); "
                                                 "also passed as $PORT.")] = None,
        cpu: Annotated[str | None, typer.Option("--cpu", help="CPU limit: 0.5 or 500m.")] = None,
        memory: Annotated[str | None, typer.Option("--memory", help="Memory limit: 64Mi, 1G.")] = None,
        restart: Annotated[str, typer.Option("--restart", help="no or always (containerd restart monitor).")]
        = "no") -> None:
    """Start a one-off container on NODE, labelled as a fleet service (shown by `fleet ps`)."""
    if restart not in ("no", "always"):
        common.fail(f"--restart must be no or always, got {restart!r}")
    try:
        cpu_v = parse_cpu(cpu) if cpu is not None else None
        mem_v = parse_memory(memory) if memory is not None else None
    except ValueError as exc:
        common.fail(str(exc))
    service = name or image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    try:
        spec = build_spec(node, image, service, _env(env or []), port, cpu_v, mem_v, restart, command or [])
    except ValueError as exc:
        common.fail(str(exc))
    inv = common.inventory(inventory)
    if node not in inv.names():
        common.fail(f"no node {node!r} in {inv.path}")

    async def go() -> None:
        async with Pool(connect_timeout=10) as pool:
            reports = await Fleet(inv, pool).reports()
            report = containers.report_of(reports, node)
            if not report.ok:
                common.fail(f"{node}: {report.status}: {report.reason}", common.EXIT_PARTIAL)
            await containers.run_container(pool, report, spec)

    common.run(go)
    common.console().print(f"{node}/{spec.id}: started ({service}, {image})", highlight=False)
