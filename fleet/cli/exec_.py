"""`fleet exec`: run a command inside a running container, stream its output, exit with its exit code."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fleet.cli import common


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def exec_(container: Annotated[str, typer.Argument(help="Container ID, unique prefix, NODE/ID, or a service "
                                                  "with one replica.")],
          command: Annotated[list[str], typer.Argument(help="The command; put it after `--`.")],
          inventory: common.InventoryOpt = None) -> None:
    """Run CMD inside CONTAINER (stdout and stderr merged); exits with CMD's exit code.

    Example:

      fleet exec web -- cat /etc/hosts"""
    from fleet.api import Fleet
    from fleet.core.errors import ContainerLookupError

    inv = common.inventory(inventory)

    async def go() -> int:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            try:
                return await f.exec(container, list(command), _write)
            except ContainerLookupError as exc:
                common.fail(str(exc))

    raise typer.Exit(common.run(go))
