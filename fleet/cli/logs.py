"""`fleet logs`: one container's log, or every replica of a service merged with a `node/container` prefix."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..api import Fleet
from ..engine import containers
from ..transport import Pool
from . import common
from .common import esc

_COLORS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")


def logs(ref: Annotated[str, typer.Argument(metavar="SERVICE|CONTAINER", help="Service name, container ID or "
                                            "unique prefix, or NODE/CONTAINER.")],
         inventory: common.InventoryOpt = None,
         follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
         tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end of each log; -1 for all.")]
         = 100) -> None:
    """Print container logs (stdout and stderr interleaved), merged across a service's replicas."""
    inv = common.inventory(inventory)
    out = common.console()

    async def go() -> dict[str, str]:
        async with Pool(connect_timeout=10, command_timeout=None) as pool:
            reports = await Fleet(inv, pool).reports()
            try:
                rows = containers.find(await containers.ps(pool, reports), ref)
            except containers.ContainerLookupError as exc:
                common.fail(str(exc))
            targets = containers.targets(reports, rows)
            width = max(len(t.prefix) for t in targets)
            colors = {t.prefix: _COLORS[i % len(_COLORS)] for i, t in enumerate(targets)}
            async with containers.logs(pool, targets, None if tail < 0 else tail, follow) as stream:
                async for prefix, line in stream:
                    if len(targets) > 1:
                        out.print(f"[{colors[prefix]}]{prefix.ljust(width)}[/] | ", end="", highlight=False)
                        out.out(line, highlight=False)
                    else:
                        sys.stdout.write(line + "\n")
                        sys.stdout.flush()
            return stream.errors

    try:
        errors = common.run(go)
    except KeyboardInterrupt:
        raise typer.Exit(common.EXIT_OK) from None
    for prefix, reason in errors.items():
        common.console(stderr=True).print(f"[red]{prefix}[/]: {esc(reason)}", highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if errors else common.EXIT_OK)
