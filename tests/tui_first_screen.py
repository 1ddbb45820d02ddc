"""Start `fleet ui`'s app headless over a fleet with no nodes and print its first screen's status line.

Run by an installed `fleet` (tests/test_packaging.py, and by hand against a venv of the lowest allowed
dependency versions): it imports only the installed package and Textual, so a missing stylesheet or an
incompatible Textual fails here as it would in `fleet ui`. The source is a stand-in for the fleet (no nodes, no
services); the app, its screens, stylesheet and refresh worker are the real ones. Exits 0 and prints
`first screen: <status line>` once the first snapshot is on screen, else raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

from fleet.results import Revision
from fleet.tui import Action, ActionResult, EventRing, FleetApp, Snapshot
from fleet.tui.widgets import NodesTable, StatusLine


class NoNodes:
    """A fleet with no nodes: every refresh reads an empty snapshot; it can carry out no action."""

    def __init__(self) -> None:
        self.events = EventRing()

    async def collect(self, partial: Callable[[Snapshot], None] | None = None) -> Snapshot:
        return Snapshot((), None)

    async def history(self, service: str) -> Sequence[Revision]:
        return []

    @contextlib.asynccontextmanager
    async def logs(self, ref: str, *, follow: bool, tail: int) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        raise LookupError(ref)
        yield  # unreachable: makes this an async generator for asynccontextmanager

    def can(self, verb: str) -> bool:
        return False

    async def act(self, action: Action, on_line: Callable[[str], None]) -> ActionResult:
        raise NotImplementedError(action.verb)


async def first_screen(timeout: float = 10.0) -> str:
    """The status line once the app has drawn its first snapshot (raises TimeoutError if it never does)."""
    app = FleetApp(NoNodes(), interval=3600)  # type: ignore[arg-type]  # a structural Source
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + timeout
        while app.snapshot is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the first snapshot never reached the screen")
            await pilot.pause(0.02)
        await pilot.pause()
        app.screen.query_one(NodesTable)  # the first screen's nodes pane is mounted
        return app.screen.query_one(StatusLine).text().plain


if __name__ == "__main__":
    print("first screen:", asyncio.run(first_screen()))
