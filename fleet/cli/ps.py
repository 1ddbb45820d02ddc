"""`fleet ps`: every container on every node, fleet's own by service and replica, foreign ones marked."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fleet.cli import common
from fleet.cli.common import esc
from fleet.core.units import format_cpu, format_memory
from fleet.node.runtime.base import Status
from fleet.results import LIST_TIMEOUT

if TYPE_CHECKING:
    from fleet.results import PsResult, PsRow

STATUS_STYLE = {Status.RUNNING: "green", Status.STOPPED: "red", Status.CREATED: "yellow", Status.UNKNOWN: "red"}


def _age(seconds: float) -> str:
    s = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def status_text(row: PsRow, now: float | None = None) -> str:
    info = row.info
    text = info.status.value.lower()
    if info.status is Status.RUNNING and info.started_at is not None:
        text += f" {_age((now if now is not None else time.time()) - info.started_at)}"
    if info.oom_killed:
        text += " (oom-killed)"
    return text


def row_json(row: PsRow) -> dict[str, Any]:
    info, lab = row.info, row.labels
    return {
        "node": row.node,
        "id": info.id,
        "image": info.image,
        "status": info.status.value.lower(),
        "pid": info.pid,
        "started_at": info.started_at,
        "created_at": info.created_at,
        "oom_killed": info.oom_killed,
        "foreign": row.foreign,
        "service": lab.service if lab else None,
        "replica": lab.replica if lab else None,
        "revision": lab.revision if lab else None,
        "port": lab.port if lab else None,
        "cpu": lab.cpu if lab else None,
        "memory": lab.memory if lab else None,
        "labels": dict(info.labels),
    }


def visible(result: PsResult, show_all: bool) -> list[PsRow]:
    return [r for r in result.rows if show_all or r.info.status is Status.RUNNING]


def table(rows: list[PsRow], now: float | None = None) -> Table:
    t = Table(pad_edge=False, box=None, header_style="bold", padding=(0, 1))
    for col, just in [("NODE", "left"), ("CONTAINER", "left"), ("SERVICE", "left"), ("REPLICA", "right"),
                      ("REV", "right"), ("STATUS", "left"), ("PORT", "right"), ("IMAGE", "left"),
                      ("CPU", "right"), ("MEM", "right")]:
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        lab = r.labels

        def cell(value: object) -> str:
            return "-" if value is None else str(value)

        style = STATUS_STYLE.get(r.info.status, "white")
        if lab is None:
            t.add_row(r.node, r.info.id, "[dim](foreign)[/]", "-", "-", f"[{style}]{status_text(r, now)}[/]",
                      "-", r.info.image, "-", "-")
            continue
        t.add_row(r.node, r.info.id, lab.service, cell(lab.replica), cell(lab.revision),
                  f"[{style}]{status_text(r, now)}[/]", cell(lab.port), r.info.image,
                  format_cpu(lab.cpu) if lab.cpu is not None else "-",
                  format_memory(lab.memory) if lab.memory is not None else "-")
    return t


def ps(inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
       show_all: Annotated[bool, typer.Option("--all", "-a", help="Also stopped and created containers.")] = False,
       timeout: Annotated[float, typer.Option(
           metavar="DURATION", parser=common.duration(),
           help=f"How long each node has to list its containers, connecting has 10 s {common.DURATION_HELP}.")]
       = LIST_TIMEOUT) -> None:
    """List containers on every node: fleet's own by service and replica, foreign ones marked and left alone.

    A node that is not ready or does not answer in time is named under the table (exit 1); the others are listed.

    Example:

      fleet ps --all"""
    from fleet.api import reader

    inv = common.inventory(inventory)

    async def go() -> PsResult:
        # Every container, running or not: the summary line counts those --all would show.
        async with reader(inv, connect_timeout=10.0) as read:
            return await read.ps(all=True, timeout=timeout)

    result = common.run(go)
    rows = visible(result, show_all)
    if json:
        common.print_json({"containers": [row_json(r) for r in rows], "errors": dict(result.errors)})
    else:
        out = common.console()
        out.print(table(rows))
        for node, reason in sorted(result.errors.items()):
            out.print(f"[red]{node}[/]: {esc(reason)}", highlight=False)
        hidden = len(result.rows) - len(rows)
        more = f", {hidden} not running (--all shows them)" if hidden else ""
        out.print(f"{len(rows)} container(s){more}", highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if result.errors else common.EXIT_OK)
