"""`fleet exec`: run a command inside a running container, stream its output, exit with its exit code."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..api import Fleet
from ..engine import containers
from ..transport import Pool
from . import common


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def exec_(container: Annotated[str, typer.Argument(help="Container ID, unique prefix, NODE/ID, or a service "
                                                  "with one replica.")],
          command: Annotated[list[str], typer.Argument(help="The command; put it after `--`.")],
          inventory: common.InventoryOpt = None) -> None:
    """Run CMD inside CONTAINER (stdout and stderr merged); exits with CMD's exit code."""
    inv = common.inventory(inventory)

    async def go() -> int:
        async with Pool(connect_timeout=10) as pool:
            reports = await Fleet(inv, pool).reports()
            try:
                row = containers.find_one(await containers.ps(pool, reports), container)
            except containers.ContainerLookupError as exc:
                common.fail(str(exc))
            report = containers.report_of(reports, row.node)
            return await containers.exec_in(pool, report, row.info.id, list(command), _write)

    raise typer.Exit(common.run(go))
