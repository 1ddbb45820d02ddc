"""`fleet logs`: containers' logs, every replica of each service named merged with a `node/container` prefix;
`--since` and `--timestamps` from what fleet can know of when a line was written (fleet.node.logdates)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from fleet.cli import common, output
from fleet.cli.common import esc
from fleet.cli.completion import service_names
from fleet.node.logdates import DatedLine, LogFile, backlog_since

if TYPE_CHECKING:
    from fleet.api import LogLines

_COLORS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")
T = TypeVar("T")


def stamp(line: DatedLine) -> str:
    """RFC 3339 in UTC: the time read for a live line (milliseconds); `<=` the file's last write for a line that
    was in the file already, whose own time the file does not keep."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(line.at))
    if line.live:
        return f"{whole}.{int(line.at % 1 * 1000):03d}Z"
    return f"<={whole}Z"


class SinceFilter:
    """Which lines `--since` keeps: every live line; of the backlog, none when the file was last written before
    the cutoff, all when it was created after, else all with a warning (counted per container: the file cannot
    tell those lines apart)."""

    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff
        self.undated: dict[str, int] = {}

    def keep(self, prefix: str, line: DatedLine) -> bool:
        if line.live:
            return True
        window = backlog_since(line.file, self.cutoff)
        if window == "unknown":
            self.undated[prefix] = self.undated.get(prefix, 0) + 1
        return window != "none"


async def merged(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[T]:
    """The items of several streams as they come (one stream: as is)."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield item
        return
    queue: asyncio.Queue[tuple[T] | None] = asyncio.Queue(1000)

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((item,))
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        left = len(tasks)
        while left:
            got = await queue.get()
            if got is None:
                left -= 1
            else:
                yield got[0]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def logs(refs: Annotated[list[str], typer.Argument(
             metavar="SERVICE|CONTAINER...", autocompletion=service_names,
             help="Services (every replica), container IDs or unique prefixes, or NODE/CONTAINER.")],
         inventory: common.InventoryOpt = None, node: output.NodeOpt = None,
         follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
         tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end of each log; -1 for all.")]
         = 100,
         since: Annotated[float | None, typer.Option(
             metavar="DURATION", parser=common.duration(), show_default=False,
             help="Only lines written in the last DURATION (e.g. 10m). The log files keep no times: lines "
                  "already there are dropped only when the file was last written before, and are shown with a "
                  "warning when fleet cannot tell.")] = None,
         timestamps: Annotated[bool, typer.Option(
             "--timestamps", "-t", help="Prefix each line with its time (UTC): when fleet read it for a new "
                                        "line; `<=` the file's last write for a line that was there already.")]
         = False) -> None:
    """Print container logs (stdout and stderr interleaved), merged across services' replicas.

    Example:

      fleet logs web --tail 50 --follow
      fleet logs web api --since 10m --timestamps
      fleet logs web --node n1 -f"""
    from fleet.api import Fleet
    from fleet.core.errors import ContainerLookupError

    inv = common.inventory(inventory)
    output.check_names("node", node or [], inv.names())
    # NODE/REF: the reference looked up on that node only (fleet.engine.containers.find).
    refs = [f"{n}/{ref}" for ref in refs for n in node] if node else refs
    out = common.console()
    dated = since is not None or timestamps
    keep = SinceFilter(time.time() - since) if since is not None else None

    async def go() -> Mapping[str, str]:
        async with (Fleet.connect(inv, connect_timeout=10, command_timeout=None) as f,
                    contextlib.AsyncExitStack() as stack):
            opened: list[LogLines] = []
            missed: list[str] = []
            for ref in dict.fromkeys(refs):
                try:
                    opened.append(await stack.enter_async_context(
                        f.logs(ref, follow=follow, tail=None if tail < 0 else tail, dated=dated)))
                except ContainerLookupError as exc:
                    if not node:
                        common.fail(str(exc))
                    missed.append(ref)  # with --node: a service need not run on every node named
            if not opened:
                common.fail(f"nothing to read: none of {', '.join(refs)} runs there")
            for ref in missed:
                output.warn(f"[yellow]! {esc(ref)}: not there[/]")
            prefixes = [p for lines in opened for p in lines.prefixes]
            width = max(len(p) for p in prefixes)
            colors = {p: _COLORS[i % len(_COLORS)] for i, p in enumerate(prefixes)}
            streams = [lines.dated() if dated else _undated(lines) for lines in opened]
            async for prefix, item in merged(streams):
                if keep is not None and not keep.keep(prefix, item):
                    continue
                text = f"{stamp(item)} {item.text}" if timestamps else item.text
                if len(prefixes) > 1:
                    out.print(f"[{colors[prefix]}]{prefix.ljust(width)}[/] | ", end="", highlight=False)
                    out.out(text, highlight=False)
                else:
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
            return {p: why for lines in opened for p, why in lines.errors.items()}

    try:
        errors = common.run(go)
    except KeyboardInterrupt:
        raise typer.Exit(common.EXIT_OK) from None
    for prefix, count in (keep.undated.items() if keep is not None else ()):
        output.warn(f"[yellow]! {esc(prefix)}: {count} line(s) shown may be older than --since: the log file "
                    "keeps no times, and it was written both before and after the cutoff[/]")
    for prefix, reason in errors.items():
        output.warn(f"[red]{esc(prefix)}[/]: {esc(reason)}")
    raise typer.Exit(common.EXIT_PARTIAL if errors else common.EXIT_OK)


async def _undated(lines: LogLines) -> AsyncIterator[tuple[str, DatedLine]]:
    """Lines read without dates, in the dated shape (never printed with a time: no --since, no --timestamps)."""
    nowhere = LogFile(0, 0.0, None)
    async for prefix, line in lines:
        yield prefix, DatedLine(line, 0.0, False, nowhere)
