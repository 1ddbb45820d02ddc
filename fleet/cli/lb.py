"""`fleet lb show [NODE]`: the HAProxy config each lb node runs (the stats password's hash masked)."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli import common
from fleet.cli.common import esc
from fleet.cli.completion import node_names

app = typer.Typer(help="The load balancers (HAProxy on the lb nodes).", no_args_is_help=True)


@app.command("show")
def show(node: Annotated[list[str] | None, typer.Argument(help="lb node(s); default: every lb node",
                                                                      autocompletion=node_names)] = None,
         inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Print the rendered HAProxy config of an lb node as it runs there. Exit 1 when a node could not be read.

    Example:

      fleet lb show lb1"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> list:  # type: ignore[type-arg]
        async with Fleet.connect(inv) as f:
            return await f.lb_show(node or None)

    configs = common.run(go)
    if json:
        common.print_json([{"node": c.node, "config": c.text, "error": c.error} for c in configs])
    else:
        out = common.console()
        for c in configs:
            if len(configs) > 1:
                out.print(f"[bold]# {c.node}[/]")
            if c.error is not None:
                out.print(f"[red]! {c.node}: {esc(c.error)}[/]")
            elif c.text is None:
                out.print(f"[dim]# {c.node}: no HAProxy config yet (nothing applied)[/]")
            else:
                out.print(c.text, markup=False, highlight=False, end="")
    if any(c.error is not None for c in configs):
        raise typer.Exit(common.EXIT_PARTIAL)
