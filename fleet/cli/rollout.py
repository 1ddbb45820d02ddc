"""`fleet history`, `fleet rollback`, `fleet promote`, `fleet abort`: revisions kept on the fleet."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import time
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from fleet.cli import common
from fleet.cli.apply import _exit, _run
from fleet.cli.completion import ServiceArg

if TYPE_CHECKING:
    from fleet.api import Fleet
    from fleet.results import Revision, RunResult

OUTCOME_STYLE = {"succeeded": "green", "failed": "red", "rolled-back": "yellow", "aborted": "yellow",
                 "in-progress": "cyan"}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def history(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Every revision of SERVICE, as the fleet records it: spec, image, who, when, outcome and why.

    Example:

      fleet history web --json"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> list[Revision]:
        async with Fleet.connect(inv) as f:
            return await f.history(service)

    revs = common.run(go)
    if json:
        common.print_json([dataclasses.asdict(r) | {"spec": jsonlib.loads(r.spec_json)} for r in revs])
        raise typer.Exit(common.EXIT_OK)
    if not revs:
        common.fail(f"no history for service {service!r} on this fleet")
    t = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    for col in ("REV", "IMAGE", "SPEC", "USER", "STARTED", "FINISHED", "OUTCOME", "REASON"):
        t.add_column(col, no_wrap=col != "REASON")
    for r in revs:
        t.add_row(str(r.revision), common.esc(r.image), r.spec_hash[:12], common.esc(r.user), _when(r.created_at),
                  _when(r.finished_at), f"[{OUTCOME_STYLE.get(r.outcome, 'white')}]{r.outcome}[/]",
                  common.esc(r.reason))
    common.console().print(t)


def _say(json: bool, text: str) -> None:
    if not json:
        common.console().print(common.esc(text))


def rollback(service: ServiceArg, to: int | None = typer.Option(None, "--to", help="Revision (default: the last good "
                                                                          "one before the latest)."),
             inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
             wait: common.WaitOpt = None) -> None:
    """Bring back an earlier revision of SERVICE, rolling and health-checked as a deploy.

    The service stays pinned there (reconcile keeps it) until the playbook changes or `fleet apply` runs.

    Example:

      fleet rollback web --to 3"""

    async def op(f: Fleet) -> RunResult:
        rev, result = await f.rollback(service, to)
        _say(json, f"rolled {service} back to revision {rev.revision} ({rev.image})")
        return result

    raise _exit(_run(op, inventory, json, wait))


def promote(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
            wait: common.WaitOpt = None) -> None:
    """Promote a waiting canary: roll the rest of SERVICE to the canary's revision, batch by batch.

    Example:

      fleet promote web"""

    async def op(f: Fleet) -> RunResult:
        rev, result = await f.promote(service)
        _say(json, f"promoted {service} revision {rev.revision} ({rev.image})")
        return result

    raise _exit(_run(op, inventory, json, wait))


def abort(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
          wait: common.WaitOpt = None) -> None:
    """Abort a waiting canary: its replicas are removed, SERVICE stays at its accepted revision.

    Reconcile keeps it at that revision.

    Example:

      fleet abort web"""

    async def op(f: Fleet) -> RunResult:
        rev, result = await f.abort(service)
        _say(json, f"aborted {service} revision {rev.revision}")
        return result

    raise _exit(_run(op, inventory, json, wait))
