"""`fleet image`: build the demo image, push an archive to nodes over SSH (no registry), list node images."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fleet.cli import common
from fleet.cli.common import esc
from fleet.core.units import format_memory

if TYPE_CHECKING:
    from rich.progress import TaskID

    from fleet.results import PushResult

# The façade, the archive reader and rich's progress bars are imported inside the commands, so that other
# commands do not pay for them at start.

app = typer.Typer(help="Images: build the demo image, push archives to nodes, list what nodes hold.",
                  no_args_is_help=True)

STATUS_STYLE = {"sent": "green", "present": "cyan", "failed": "red"}


def summary(results: list[PushResult], elapsed: float) -> Table:
    t = Table(pad_edge=False, box=None, header_style="bold", padding=(0, 1))
    for col, just in [("NODE", "left"), ("STATUS", "left"), ("SENT", "right"), ("TIME", "right"),
                      ("ERROR", "left")]:
        t.add_column(col, justify=just, no_wrap=(col != "ERROR"))  # type: ignore[arg-type]
    for r in results:
        t.add_row(r.node, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", format_memory(r.bytes_sent),
                  f"{r.seconds:.2f}s", r.error or "")
    return t


def result_json(r: PushResult) -> dict[str, Any]:
    return {"node": r.node, "status": r.status, "bytes_sent": r.bytes_sent, "seconds": round(r.seconds, 4),
            "error": r.error}


@app.command("push")
def push(archive: Annotated[str, typer.Argument(metavar="IMAGE.tar", help="OCI or Docker image archive "
                                                "(uncompressed tar).")],
         inventory: common.InventoryOpt = None, json: common.JsonOpt = False,
         nodes: Annotated[str | None, typer.Option("--nodes", help="Comma-separated node names (default: every "
                                                   "worker).")] = None,
         limit: Annotated[int, typer.Option("--limit", help="Nodes receiving at once.")] = 8) -> None:
    """Stream an image archive to nodes over SSH into containerd; nodes that already hold it are skipped.

    Example:

      fleet image push demo-v1.tar --nodes n1,n2"""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from fleet.api import Fleet
    from fleet.core.errors import ImageArchiveError
    from fleet.image.oci import read_archive

    try:
        info = read_archive(archive)
    except ImageArchiveError as exc:
        common.fail(f"{exc}; nothing was sent")
    inv = common.inventory(inventory)
    names = [n.strip() for n in nodes.split(",") if n.strip()] if nodes else None
    size = info.size
    con = common.console()
    show = not json and con.is_terminal

    async def go() -> list[PushResult]:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            if not show:
                return await f.push(archive, names, limit=limit)
            columns = (TextColumn("{task.fields[node]:<10}"), TextColumn("{task.description:<9}"), BarColumn(),
                       DownloadColumn(binary_units=True), TimeElapsedColumn())
            with Progress(*columns, console=con) as bar:
                tasks: dict[str, TaskID] = {}

                def task(node: str) -> TaskID:
                    if node not in tasks:
                        tasks[node] = bar.add_task("waiting", total=size, node=node)
                    return tasks[node]

                def on_status(node: str, state: str) -> None:
                    bar.update(task(node), description=state,
                               completed=size if state in ("present", "sent") else None)

                def on_progress(node: str, sent: int) -> None:
                    bar.update(task(node), completed=sent)

                return await f.push(archive, names, limit=limit, on_progress=on_progress, on_status=on_status)

    started = time.perf_counter()
    results = common.run(go)
    elapsed = time.perf_counter() - started
    failed = [r for r in results if r.status == "failed"]
    if json:
        common.print_json({"archive": archive, "images": info.names, "digest": info.digest, "size": size,
                           "elapsed_s": round(elapsed, 4), "nodes": [result_json(r) for r in results]})
    else:
        con.print(summary(results, elapsed))
        sent = [r for r in results if r.status == "sent"]
        total = sum(r.bytes_sent for r in results)
        con.print(f"{', '.join(info.names) or os.path.basename(archive)}: sent to {len(sent)}, present on "
                  f"{len(results) - len(sent) - len(failed)}, failed on {len(failed)}; "
                  f"{format_memory(total)} in {elapsed:.2f}s", highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if failed else common.EXIT_OK)


@app.command("build-demo")
def build_demo_cmd(version: Annotated[str, typer.Option("--version", help="Image tag.")] = "v1",
                   output: Annotated[str | None, typer.Option("--output", "-o", help="Archive path "
                                                              "(default: demo-VERSION.tar).")] = None,
                   size_mb: Annotated[int, typer.Option("--size-mb", help="Incompressible padding, MiB.")] = 0
                   ) -> None:
    """Build the demo web image (busybox httpd) as an OCI archive, deterministically.

    Example:

      fleet image build-demo --version v2 -o demo-v2.tar"""
    from fleet.image.demo import build_demo

    path = output or f"demo-{version}.tar"
    try:
        built = build_demo(version, path, size_mb=size_mb)
    except (ValueError, OSError) as exc:
        common.fail(str(exc))
    common.console().print(f"{built.name} {built.digest} {format_memory(built.size)} -> {built.path}",
                           highlight=False)


@app.command("ls")
def ls(inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """List the images on every node, with their manifest digests.

    Example:

      fleet image ls --json"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        async with Fleet.connect(inv, connect_timeout=10, command_timeout=30) as f:
            return await f.image_list()

    found, errors = common.run(go)
    if json:
        common.print_json({"nodes": {n: [{"ref": ref, "digest": d} for ref, d in sorted(imgs.items())]
                                     for n, imgs in found.items()}, "errors": errors})
    else:
        t = Table(pad_edge=False, box=None, header_style="bold", padding=(0, 1))
        for col in ("NODE", "IMAGE", "DIGEST"):
            t.add_column(col, no_wrap=True)
        for node, imgs in found.items():
            for ref, digest in sorted(imgs.items()):
                t.add_row(node, ref, digest[:19])
        con = common.console()
        con.print(t)
        for node, reason in sorted(errors.items()):
            con.print(f"[red]{node}[/]: {esc(reason)}", highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if errors else common.EXIT_OK)
