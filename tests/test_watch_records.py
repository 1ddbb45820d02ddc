"""`fleet watch` and what another controller changes in the records (fleet.watch.controller with an in-process
double of the façade: the reading and the reconcile are tested elsewhere, on etcd and on the lab). A change
heard through the etcd watch makes the next round reconcile, with a Fleet that has read nothing yet (so the
nodes, marks, containers and records are read after the lease is taken); a reconcile refused by a held lease
keeps the change pending, and one that ran clears it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tui_source import HOLDER

from fleet.core.errors import LeaseHeld
from fleet.core.model import Inventory
from fleet.engine.state import Observed
from fleet.results import RunResult
from fleet.watch.controller import Watcher, WatchOptions


class Base:
    """The façade as a round uses it; `apply` goes to `fresh()` Fleets, counted, refused while `held`."""

    def __init__(self) -> None:
        self.inventory = Inventory("/etc/fleet/inventory.yaml", ())
        self.on_event: Any = None
        self.command = "fleet watch"
        self.held = False
        self.applied: list[tuple[str, int]] = []  # (command, which fresh Fleet)
        self.fresh_count = 0

    def fresh(self, **_: Any) -> Base:
        self.fresh_count += 1
        return self

    def with_jobs(self, jobs: Any) -> Base:  # the playbooks' jobs (none here): the same façade
        return self

    async def look(self, *, ports: bool = False) -> tuple[list[Any], Observed]:
        return [], Observed((), ())

    async def lb_rows(self, reports: list[Any]) -> list[Any]:
        return []

    async def apply(self, specs: Any, command: str, held: Any = ()) -> RunResult:
        if self.held:
            raise LeaseHeld(HOLDER)
        self.applied.append((command, self.fresh_count))
        return RunResult([])


@pytest.fixture
def watcher(tmp_path: Path) -> tuple[Watcher, Base, list[tuple[str, dict[str, Any]]]]:
    pb = tmp_path / "web.yaml"
    pb.write_text("services:\n  web:\n    image: fleet.local/demo:v1\n    replicas: 2\n")
    base = Base()
    logged: list[tuple[str, dict[str, Any]]] = []
    w = Watcher(base, WatchOptions(playbooks=(str(pb),)), lambda event, **f: logged.append((event, f)))  # type: ignore[arg-type]
    return w, base, logged


async def test_a_change_by_another_controller_reconciles_on_a_fresh_read_and_waits_out_a_held_lease(watcher):
    w, base, logged = watcher
    assert await w.round(base) == "start"  # type: ignore[arg-type]
    assert await w.round(base) is None  # type: ignore[arg-type]
    w._on_news(["/fleet/services/web/state"])
    assert w.wake.is_set() and logged[-1][0] == "records-changed"
    base.held = True  # the other controller still holds the fleet's lease
    assert await w.round(base) is None  # type: ignore[arg-type]
    assert logged[-1][0] == "lease-held" and w._news == {"/fleet/services/web/state"}
    base.held = False
    assert await w.round(base) == "records"  # type: ignore[arg-type]
    assert w._news == set() and await w.round(base) is None  # type: ignore[arg-type]
    # Every reconcile ran on a Fleet made for it (nothing read before its lease), never on the round's own.
    assert base.applied == [("reconcile", 1), ("reconcile", 3)]
