"""`fleet events`: the fleet's event log (who changed what, when, from which command), oldest first; `--follow`
streams new entries as they land."""

from __future__ import annotations

import contextlib
import json as jsonlib
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from fleet.cli import common
from fleet.results.eventlog import LoggedEvent, LogNotice

# Fields every entry has, shown in their own columns; the others follow as key=value.
_FIXED = ("who", "command", "what", "at")


def event_doc(e: LoggedEvent) -> dict[str, Any]:
    """An entry as `--json` prints it: its number and key, then its fields."""
    return {"number": e.number, "key": e.key, **(e.value or {})}


def event_line(e: LoggedEvent) -> str:
    """An entry as one line: number, time (the writer's clock), who, what and its details, then the command."""
    value = e.value or {}
    at = value.get("at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "-"
    details = " ".join(f"{k}={_show(v)}" for k, v in value.items() if k not in _FIXED and v not in (None, ""))
    return (f"{e.number:>8}  {when}  {_show(value.get('who', '?'))}  {_show(value.get('what', '?'))}"
            f"{'  ' + details if details else ''}  ({_show(value.get('command', ''))})")


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else jsonlib.dumps(value, separators=(",", ":"), sort_keys=True)
    return text.replace("\n", " ")


def wanted(e: LoggedEvent, service: str | None) -> bool:
    """Whether `--service` keeps the entry (an unreadable one is always kept: it must be named)."""
    return service is None or e.error is not None or e.service == service


def selected(entries: Sequence[LoggedEvent], service: str | None, last: int | None) -> list[LoggedEvent]:
    """The entries `--service` keeps, only the last `last` of them when given (`-n`)."""
    kept = [e for e in entries if wanted(e, service)]
    if last is None:
        return kept
    return kept[-last:] if last else []


class Printer:
    """Prints entries as text or JSON lines; an unreadable one goes to stderr by name and is counted."""

    def __init__(self, json: bool, service: str | None) -> None:
        self.json = json
        self.service = service
        self.bad = 0

    def __call__(self, item: LoggedEvent | LogNotice) -> None:
        if isinstance(item, LogNotice):
            common.console(stderr=True).print(f"[yellow]note:[/] {common.esc(item.message)}", highlight=False)
            return
        if item.error is not None:
            self.bad += 1
            common.console(stderr=True).print(f"[bold red]error:[/] event {item.number}: {common.esc(item.error)}",
                                              highlight=False, soft_wrap=True)
            return
        if not wanted(item, self.service):
            return
        sys.stdout.write((jsonlib.dumps(event_doc(item), default=str) if self.json else event_line(item)) + "\n")
        sys.stdout.flush()


def events(inventory: common.InventoryOpt = None,
           json: Annotated[bool, typer.Option("--json", help="One JSON object per entry and line (the same with "
                                                             "--follow).")] = False,
           follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new entries as they land.")]
           = False,
           last: Annotated[int | None, typer.Option("-n", "--last", min=0, metavar="N",
                                                    help="Only the last N entries (before following).")] = None,
           service: Annotated[str | None, typer.Option("--service", metavar="SERVICE",
                                                       help="Only the entries about this service.")] = None) -> None:
    """The fleet's event log: who changed what, when and with which command, oldest first.

    Every change of the shared state (revisions, decisions, node marks) is one entry. An entry that cannot be
    read is named on stderr, and the command exits 1 after printing the others.

    Example:

      fleet events --service web -n 20 --follow"""
    from fleet.api import Fleet, event_log

    inv = common.inventory(inventory)
    show = Printer(json, service)

    async def go() -> None:
        async with Fleet.connect(inv, connect_timeout=10, command_timeout=None, command="fleet events") as f:
            log = await event_log(f)
            revision, entries = await log.read()
            for e in selected(entries, service, last):
                show(e)
            if follow:
                after = max((e.number for e in entries), default=0)
                async with contextlib.aclosing(log.follow(after, revision + 1)) as items:
                    async for item in items:
                        show(item)

    with contextlib.suppress(KeyboardInterrupt):
        common.run(go)
    raise typer.Exit(common.EXIT_PARTIAL if show.bad else common.EXIT_OK)
