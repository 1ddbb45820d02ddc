"""`fleet run`, `fleet stop`, `fleet rm`: one-off containers, started and removed by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from fleet.cli import common
from fleet.cli.common import esc
from fleet.cli.completion import node_names
from fleet.core.units import parse_cpu, parse_memory

if TYPE_CHECKING:
    from fleet.api import Fleet
    from fleet.node.runtime.base import StopResult
    from fleet.results import PsRow

T = TypeVar("T")

RefArg = Annotated[str, typer.Argument(metavar="CONTAINER", help="Container ID, unique prefix, NODE/ID, or a "
                                       "service name (all its replicas).")]


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


def _on_containers(inventory: str | None, act: Callable[[Fleet], Awaitable[T]]) -> T:
    """Run one façade operation on the containers a reference names; a reference that names none (or a prefix
    that names several) is a usage error (exit 2)."""
    from fleet.api import Fleet
    from fleet.core.errors import ContainerLookupError

    inv = common.inventory(inventory)

    async def go() -> T:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            try:
                return await act(f)
            except ContainerLookupError as exc:
                common.fail(str(exc))

    return common.run(go)


def stop(ref: RefArg, inventory: common.InventoryOpt = None,
         grace: Annotated[float, typer.Option("--grace", "-t", metavar="DURATION", parser=common.duration(),
                                              help=f"Time between SIGTERM and SIGKILL {common.DURATION_HELP}.")] = 10.0
         ) -> None:
    """Stop a container (SIGTERM, then SIGKILL after the grace period) and delete it with its secret files.

    A running replica of a service goes through the fleet's lease: out of the load balancers and drained first
    (its connections finish, up to the grace period); reconcile or `fleet watch` starts its replacement (another
    run holding the lease: exit 75, nothing done).

    Example:

      fleet stop n1/3f2a --grace 30s"""
    results = _on_containers(inventory, lambda f: f.stop(ref, grace))
    con = common.console()
    for row, res in results:
        con.print(_stopped(row, res), highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if any(isinstance(r, str) for _, r in results) else common.EXIT_OK)


def rm(ref: RefArg, inventory: common.InventoryOpt = None) -> None:
    """Remove a container at once (kill, delete task, container, snapshot, log and secret files).

    A running replica of a service goes through the fleet's lease as with `fleet stop`: out of the load
    balancers and drained first (up to its stop_grace_period), then removed; reconcile or `fleet watch` starts
    its replacement (another run holding the lease: exit 75, nothing done). Any other container is removed at
    once.

    Example:

      fleet rm n1/3f2a"""
    results = _on_containers(inventory, lambda f: f.rm(ref))
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


def run(node: Annotated[str, typer.Argument(help="Node to run on.", autocompletion=node_names)],
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
    """Start a one-off container on NODE, labelled as a fleet service (shown by `fleet ps`).

    Example:

      fleet run n1 demo:v1 --name debug -e MODE=test"""
    if restart not in ("no", "always"):
        common.fail(f"--restart must be no or always, got {restart!r}")
    try:
        cpu_v = parse_cpu(cpu) if cpu is not None else None
        mem_v = parse_memory(memory) if memory is not None else None
    except ValueError as exc:
        common.fail(str(exc))
    from fleet.api import Fleet, one_off_spec

    service = name or image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    try:
        spec = one_off_spec(node, image, service, env=_env(env or []), port=port, cpu=cpu_v, memory=mem_v,
                            restart=restart, command=command or [])
    except ValueError as exc:
        common.fail(str(exc))
    inv = common.inventory(inventory)
    if node not in inv.names():
        common.fail(f"no node {node!r} in {inv.path}")

    async def go() -> None:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            # A node that is not ready is a FleetError naming it (exit 1).
            await f.run_one(node, spec)

    common.run(go)
    common.console().print(f"{node}/{spec.id}: started ({service}, {image})", highlight=False)
