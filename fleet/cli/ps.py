"""`fleet ps`: every container on every node, fleet's own by service and replica, foreign ones marked."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fleet.cli import common, output
from fleet.cli.completion import playbook_services, service_names
from fleet.cli.output import Column, Listing
from fleet.core.units import format_cpu, format_memory
from fleet.node.runtime.base import Status
from fleet.results import LIST_TIMEOUT

if TYPE_CHECKING:
    from fleet.results import PsResult, PsRow

STATUS_STYLE = {Status.RUNNING: "green", Status.STOPPED: "red", Status.CREATED: "yellow", Status.UNKNOWN: "red"}


def status_text(row: PsRow, now: float | None = None) -> str:
    info = row.info
    text = info.status.value.lower()
    if info.status is Status.RUNNING and info.started_at is not None:
        text += f" {output.age((now if now is not None else time.time()) - info.started_at)}"
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


COLUMNS = [Column("NODE"), Column("CONTAINER"), Column("SERVICE"), Column("REPLICA", "right"), Column("REV", "right"),
           Column("STATUS"), Column("PORT", "right"), Column("IMAGE"), Column("CPU", "right"), Column("MEM", "right"),
           Column("PID", "right", wide=True), Column("CREATED", wide=True), Column("LABELS", wide=True)]


def listing(rows: list[PsRow], now: float | None = None) -> Listing:
    out = Listing(COLUMNS, keys=2)  # a container ID is unique on its node
    for r in rows:
        lab = r.labels

        def cell(value: object) -> str:
            return "-" if value is None else str(value)

        status = Text(status_text(r, now), style=STATUS_STYLE.get(r.info.status, ""))
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.info.labels.items())) or "-"
        more = (cell(r.info.pid), r.info.created_at or "-", labels)
        if lab is None:
            out.add(r.node, r.info.id, Text("(foreign)", style="dim"), "-", "-", status, "-", r.info.image, "-", "-",
                    *more)
            continue
        out.add(r.node, r.info.id, lab.service, cell(lab.replica), cell(lab.revision), status, cell(lab.port),
                r.info.image, format_cpu(lab.cpu) if lab.cpu is not None else "-",
                format_memory(lab.memory) if lab.memory is not None else "-", *more)
    return out


def table(rows: list[PsRow], now: float | None = None) -> Table:
    return output.table(listing(rows, now))


def select(rows: list[PsRow], services: Sequence[str], nodes: set[str] | None) -> list[PsRow]:
    """The rows of the services named (all, foreign ones too, when none) on `nodes` (all when None)."""
    return [r for r in rows if (not services or r.service in services) and (nodes is None or r.node in nodes)]


def ps(services: Annotated[list[str] | None, typer.Argument(
           metavar="[SERVICE]...", show_default=False, autocompletion=service_names,
           help="Only these services' containers (default: every container).")] = None,
       inventory: common.InventoryOpt = None, json: common.JsonOpt = False, out: output.OutputOpt = None,
       node: output.NodeOpt = None, selector: output.SelectorOpt = None,
       show_all: Annotated[bool, typer.Option("--all", "-a", help="Also stopped and created containers.")] = False,
       timeout: Annotated[float, typer.Option(
           metavar="DURATION", parser=common.duration(),
           help=f"How long each node has to list its containers, connecting has 10 s {common.DURATION_HELP}.")]
       = LIST_TIMEOUT) -> None:
    """List containers on every node: fleet's own by service and replica, foreign ones marked and left alone.

    A node that is not ready or does not answer in time is named on stderr (exit 1); the others are listed.

    Example:

      fleet ps --all
      fleet ps web --node n1 -o wide"""
    from fleet.api import reader

    fmt = output.chosen(out, json)
    wanted = output.parse_selector(selector or [])
    inv = common.inventory(inventory)
    output.check_names("node", node or [], inv.names())

    async def go() -> tuple[PsResult, set[str] | None]:
        # Every container, running or not: the summary line counts those --all would show.
        async with reader(inv, connect_timeout=10.0) as read:
            chosen = set(node) if node else None
            if wanted:  # the labels `fleet node label` set are read with the nodes
                chosen = {r.node.name for r in await read.nodes() if output.matches(r.labels, wanted)
                          and (chosen is None or r.node.name in chosen)}
            return await read.ps(all=True, timeout=timeout), chosen

    result, nodes = common.run(go)
    known = {r.service for r in result.rows if r.service} | set(playbook_services())
    output.check_names("service", services or [], known)
    every = select(list(result.rows), services or [], nodes)
    rows = [r for r in every if show_all or r.info.status is Status.RUNNING]
    errors = {n: why for n, why in sorted(result.errors.items()) if nodes is None or n in nodes}
    output.show(fmt, {"containers": [row_json(r) for r in rows], "errors": errors}, listing(rows),
                (f"container/{r.node}/{r.info.id}" for r in rows))
    if fmt not in ("json", "yaml", "name"):
        for name, reason in errors.items():
            output.warn(f"[red]{common.esc(name)}[/]: {common.esc(reason)}")
        hidden = len(every) - len(rows)
        more = f", {hidden} not running (--all shows them)" if hidden else ""
        output.warn(f"{len(rows)} container(s){more}")
    raise typer.Exit(common.EXIT_PARTIAL if errors else common.EXIT_OK)
