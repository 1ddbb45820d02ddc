"""`fleet history`, `fleet rollback`, `fleet promote`, `fleet abort`: revisions kept on the fleet."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import time
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from fleet.cli import common, output
from fleet.cli.apply import _exit, _run
from fleet.cli.completion import ServiceArg
from fleet.cli.output import Column, Listing

if TYPE_CHECKING:
    from fleet.api import Fleet
    from fleet.results import Revision, RunResult

OUTCOME_STYLE = {"succeeded": "green", "failed": "red", "rolled-back": "yellow", "aborted": "yellow",
                 "in-progress": "cyan"}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


COLUMNS = [Column("REV", "right"), Column("IMAGE"), Column("SPEC"), Column("USER"), Column("STARTED"),
           Column("FINISHED"), Column("OUTCOME"), Column("REASON")]


def revision_json(r: Revision) -> dict[str, Any]:
    return dataclasses.asdict(r) | {"spec": jsonlib.loads(r.spec_json)}


def listing(revs: list[Revision]) -> Listing:
    rows = Listing(COLUMNS)
    for r in revs:
        rows.add(str(r.revision), r.image, r.spec_hash[:12], r.user, _when(r.created_at), _when(r.finished_at),
                 Text(r.outcome, style=OUTCOME_STYLE.get(r.outcome, "")), r.reason or "-")
    return rows


def history(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
            out: output.OutputOpt = None) -> None:
    """Every revision of SERVICE, as the fleet records it: spec, image, who, when, outcome and why.

    Example:

      fleet history web --json
      fleet history web -o yaml"""
    from fleet.api import Fleet

    fmt = output.chosen(out, json)
    inv = common.inventory(inventory)

    async def go() -> tuple[list[Revision], list[str]]:
        async with Fleet.connect(inv) as f:
            revs = await f.history(service)
            return revs, [] if revs else await f.records().services()

    revs, known = common.run(go)
    if not revs and fmt not in ("json", "yaml"):
        common.fail(output.unknown("history for service", service, known))
    output.show(fmt, [revision_json(r) for r in revs], listing(revs),
                (f"revision/{r.service}/{r.revision}" for r in revs))


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


app = typer.Typer(help="Rollout controls: pause a rollout before its next batch, resume it.", no_args_is_help=True)


@app.command("pause")
def pause(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Pause SERVICE's rollout before its next batch (the batch under way finishes).

    Recorded on the fleet, taken without the lease (the rollout holds it): the rollout stops, saying who
    paused it, and apply, reconcile and `fleet watch` take no further batch until `fleet rollout resume`.

    Example:

      fleet rollout pause web"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> tuple[str, float]:
        async with Fleet.connect(inv) as f:
            p = await f.pause(service)
            return p.by, p.at

    by, at = common.run(go)
    if json:
        common.print_json({"service": service, "paused_by": by, "at": at})
    else:
        common.console().print(f"{common.esc(service)}: rollouts paused by {common.esc(by)} at {_when(at)}; "
                               f"`fleet rollout resume {common.esc(service)}` continues")


@app.command("resume")
def resume(service: ServiceArg, inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
           wait: common.WaitOpt = None) -> None:
    """Lift SERVICE's pause and carry its paused rollout on to the end, batch by batch (under the lease).

    Example:

      fleet rollout resume web"""

    async def op(f: Fleet) -> RunResult:
        was, result = await f.resume(service)
        _say(json, f"{service}: pause by {was.by} lifted" if was is not None else f"{service}: was not paused")
        return result

    raise _exit(_run(op, inventory, json, wait))
