"""`fleet ui`: the live terminal view; the connection pool stays open while it runs and closes when it quits."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli import common

IntervalOpt = Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")]


def ui(inventory: common.InventoryOpt = None, interval: IntervalOpt = 2.0) -> None:
    """Live view of nodes, services and replicas: r refresh, tab switch pane, q quit."""
    # Textual is imported only when the UI runs: the other commands start without it.
    from fleet.api import Fleet
    from fleet.tui import FleetApp, FleetSource

    inv = common.inventory(inventory)

    async def go() -> None:
        # One attempt with a short timeout: a down node must not hold up every refresh for long.
        async with Fleet.connect(inv, connect_timeout=5.0, command_timeout=10.0, connect_attempts=1) as fleet:
            await FleetApp(FleetSource(fleet), interval=interval).run_async()

    common.run(go)
