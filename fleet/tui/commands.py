"""The command palette's provider: every view and action of `fleet ui` by name, for the services and nodes of
the current snapshot (actions only where the app allows them)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from fleet.tui.app import FleetApp

VIEWS = frozenset({"describe", "history", "logs"})  # offered in read-only mode too
SERVICE_COMMANDS = (("describe", "Describe"), ("history", "History of"), ("logs", "Logs of"), ("scale", "Scale"),
                    ("rollback", "Roll back"), ("promote", "Promote the canary of"),
                    ("abort", "Abort the canary of"), ("destroy", "Destroy"))
NODE_COMMANDS = (("describe", "Describe node"), ("cordon", "Cordon"), ("uncordon", "Uncordon"), ("drain", "Drain"))


def commands(app: FleetApp) -> list[tuple[str, Callable[[], object], str]]:
    """(name, callback, help) of every command the palette offers now."""
    out: list[tuple[str, Callable[[], object], str]] = [
        ("Events", app.action_events, "what the controller did and when"),
        ("Help: keys", app.action_help, "every key, by view"),
        ("Refresh", app.action_refresh, "read the fleet now"),
        ("Volumes", partial(app.action_list, "volumes"), "every volume, as fleet volume ls"),
        ("Images", partial(app.action_list, "images"), "the images on every node, as fleet image ls"),
        ("Lease", partial(app.action_list, "lease"), "who holds the fleet's lease, as fleet lock status"),
        ("Jobs", partial(app.action_list, "jobs"), "the job runs the fleet recorded, as fleet job ls"),
    ]
    snap = app.snapshot
    for s in snap.services if snap is not None else ():
        for what, label in SERVICE_COMMANDS:
            if what in VIEWS or app.allows(what):
                out.append((f"{label} {s.name}", partial(app.request, what, s.name, s.name), f"service {s.name}"))
    for r in snap.nodes if snap is not None else ():
        for what, label in NODE_COMMANDS:
            if what in VIEWS or app.allows(what):
                out.append((f"{label} {r.node.name}", partial(app.request, what, r.node.name), f"node {r.node.name}"))
    return out


class FleetCommands(Provider):
    """Views and actions by name (ctrl+p)."""

    def _app(self) -> FleetApp:
        return self.app  # type: ignore[return-value]

    async def discover(self) -> Hits:
        for name, callback, help in commands(self._app()):
            yield DiscoveryHit(name, callback, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help in commands(self._app()):
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help)
