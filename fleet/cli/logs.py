"""`fleet logs`: one container's log, or every replica of a service merged with a `node/container` prefix."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Annotated

import typer

from fleet.cli import common
from fleet.cli.common import esc

_COLORS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")


def logs(ref: Annotated[str, typer.Argument(metavar="SERVICE|CONTAINER", help="Service name, container ID or "
                                            "unique prefix, or NODE/CONTAINER.")],
         inventory: common.InventoryOpt = None,
         follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
         tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end of each log; -1 for all.")]
         = 100) -> None:
    """Print container logs (stdout and stderr interleaved), merged across a service's replicas.

    Example:

      fleet logs web --tail 50 --follow"""
    from fleet.api import Fleet
    from fleet.core.errors import ContainerLookupError

    inv = common.inventory(inventory)
    out = common.console()

    async def go() -> Mapping[str, str]:
        async with (Fleet.connect(inv, connect_timeout=10, command_timeout=None) as f,
                    contextlib.AsyncExitStack() as stack):
            try:
                lines = await stack.enter_async_context(f.logs(ref, follow=follow, tail=None if tail < 0 else tail))
            except ContainerLookupError as exc:
                common.fail(str(exc))
            width = max(len(p) for p in lines.prefixes)
            colors = {p: _COLORS[i % len(_COLORS)] for i, p in enumerate(lines.prefixes)}
            async for prefix, line in lines:
                if len(lines.prefixes) > 1:
                    out.print(f"[{colors[prefix]}]{prefix.ljust(width)}[/] | ", end="", highlight=False)
                    out.out(line, highlight=False)
                else:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
            return lines.errors

    try:
        errors = common.run(go)
    except KeyboardInterrupt:
        raise typer.Exit(common.EXIT_OK) from None
    for prefix, reason in errors.items():
        common.console(stderr=True).print(f"[red]{prefix}[/]: {esc(reason)}", highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if errors else common.EXIT_OK)
