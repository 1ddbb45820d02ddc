"""`fleet ui`: the operator's console; the connection pool stays open while it runs and closes when it quits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from fleet.cli import common

IntervalOpt = Annotated[float, typer.Option(metavar="DURATION", parser=common.duration(0.2),
                                            help=f"Time between refreshes {common.DURATION_HELP}.")]
ReadOnlyOpt = Annotated[bool, typer.Option("--read-only", help="Only look: every action is hidden.")]


def ui(inventory: common.InventoryOpt = None, interval: IntervalOpt = 2.0, read_only: ReadOnlyOpt = False) -> None:
    """Views of nodes, services, replicas, history, logs and events, and actions on them (? lists every key).

    Example:

      fleet ui --read-only"""
    # Textual is imported only when the UI runs: the other commands start without it.
    from fleet.api import Fleet, ask_watcher
    from fleet.tui import FleetApp, FleetSource

    inv = common.inventory(inventory)

    async def watcher(path: str, op: Literal["nodes", "status"]) -> Any:
        """Refresh through a running `fleet watch`'s warm connections when there is one."""
        return await ask_watcher(path, op, timeout=5.0)

    async def go() -> None:
        # One attempt with a short timeout: a down node must not hold up every refresh for long.
        async with Fleet.connect(inv, connect_timeout=5.0, command_timeout=10.0, connect_attempts=1,
                                 command="fleet ui") as fleet:
            await FleetApp(FleetSource(fleet, watcher=watcher), interval=interval, read_only=read_only).run_async()

    common.run(go)
