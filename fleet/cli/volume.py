"""`fleet volume`: the fleet's volumes across nodes (ls, inspect), removing one no container uses, backing one
up to a local tar file or restoring one from it, streamed over SSH, and revoking a worker's storage key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fleet.cli import common
from fleet.cli.common import esc
from fleet.cli.completion import node_names
from fleet.core.units import short_size

if TYPE_CHECKING:
    from fleet.results import VolumeListing, VolumeRow

app = typer.Typer(help="Volumes: list them across nodes, inspect, remove, back up and restore.",
                  no_args_is_help=True)

RefArg = Annotated[str, typer.Argument(metavar="SERVICE/NAME", help="The volume, as `fleet volume ls` shows it.")]
NodeOpt = Annotated[str | None, typer.Option("--node", help="The node holding it (when it is on several).",
                                             autocompletion=node_names)]


def row_json(r: VolumeRow) -> dict[str, Any]:
    return {"volume": r.ref, "service": r.service, "name": r.name, "type": r.kind, "node": r.node,
            "size": r.size, "path": r.path, "used_by": list(r.users)}


def table(listing: VolumeListing) -> Table:
    t = Table(pad_edge=False, box=None, header_style="bold", padding=(0, 1))
    for col, just in [("VOLUME", "left"), ("TYPE", "left"), ("NODE", "left"), ("SIZE", "right"),
                      ("USED BY", "left")]:
        t.add_column(col, justify=just, no_wrap=(col != "USED BY"))  # type: ignore[arg-type]
    for r in listing.rows:
        t.add_row(esc(r.ref), r.kind, esc(r.node), short_size(r.size) if r.size is not None else "-",
                  esc(", ".join(r.users)) or "[dim]-[/]")
    return t


@app.command("ls")
def ls(inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """Every volume on every worker (local) and storage node (sshfs): size and the containers using it.

    Example:

      fleet volume ls"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> VolumeListing:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            return await f.volumes()

    listing = common.run(go)
    if json:
        common.print_json({"volumes": [row_json(r) for r in listing.rows], "errors": dict(listing.errors)})
    else:
        con = common.console()
        con.print(table(listing))
        for node, why in listing.errors.items():
            common.console(stderr=True).print(f"[yellow]{esc(node)}: {esc(why)}[/]", highlight=False)
    raise typer.Exit(common.EXIT_PARTIAL if listing.errors else common.EXIT_OK)


@app.command("inspect")
def inspect(ref: RefArg, node: NodeOpt = None, inventory: common.InventoryOpt = None) -> None:
    """One volume as JSON: node, type, size, path on the node, the containers using it.

    Example:

      fleet volume inspect web-data --node n1"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> VolumeRow:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            return await f.volume(ref, node)

    common.print_json(row_json(common.run(go)))


@app.command("rm")
def rm(ref: RefArg, node: NodeOpt = None, inventory: common.InventoryOpt = None,
       wait: common.WaitOpt = None) -> None:
    """Delete a volume's data; refused while any container (running or stopped) uses it.

    Example:

      fleet volume rm web-data --node n1"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> VolumeRow:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            f.wait = common.wait_seconds(wait)
            return await f.volume_rm(ref, node)

    row = common.run(go)
    common.console().print(f"removed volume {esc(row.ref)} on {esc(row.node)}", highlight=False)


@app.command("backup")
def backup(ref: RefArg,
           output: Annotated[str, typer.Option("-o", "--output", metavar="FILE", help="The tar file to write.")],
           node: NodeOpt = None, inventory: common.InventoryOpt = None) -> None:
    """Stream a tar of the volume over SSH into FILE (written as it arrives, never whole in memory).

    Example:

      fleet volume backup web-data --node n1 -o web-data.tar"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> tuple[VolumeRow, int]:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            return await f.volume_backup(ref, output, node)

    row, size = common.run(go)
    common.console().print(f"{esc(row.ref)} on {esc(row.node)}: {short_size(size)} written to {esc(output)}",
                           highlight=False)


@app.command("restore")
def restore(ref: RefArg,
            file: Annotated[str, typer.Argument(metavar="FILE", help="A tar written by `fleet volume backup`.")],
            node: Annotated[str, typer.Option("--node", help="The worker (or, with --sshfs, the storage node) "
                                              "to put it on.")],
            sshfs: Annotated[bool, typer.Option("--sshfs", help="Restore as a network (sshfs) volume.")] = False,
            inventory: common.InventoryOpt = None, wait: common.WaitOpt = None) -> None:
    """Unpack a backup into a new volume, streamed over SSH (refused when that volume already holds data).

    Example:

      fleet volume restore web-data web-data.tar --node n2"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> VolumeRow:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            f.wait = common.wait_seconds(wait)
            return await f.volume_restore(file, ref, node, sshfs=sshfs)

    row = common.run(go)
    common.console().print(f"restored {esc(row.ref)} on {esc(row.node)} from {esc(file)}", highlight=False)


@app.command("revoke")
def revoke(worker: Annotated[str, typer.Argument(metavar="NODE", help="The worker whose storage key goes.",
                                                 autocompletion=node_names)],
           inventory: common.InventoryOpt = None, wait: common.WaitOpt = None) -> None:
    """Take a worker's storage key off every storage node: it can mount no sshfs volume any more.

    Remove the node from the inventory (or drain it) first: fleet authorizes a worker again when it mounts a
    volume there. Mounts already made stay until they end.

    Example:

      fleet volume revoke n3"""
    from fleet.api import Fleet

    inv = common.inventory(inventory)

    async def go() -> tuple[dict[str, bool], dict[str, str]]:
        async with Fleet.connect(inv, connect_timeout=10) as f:
            f.wait = common.wait_seconds(wait)
            return await f.volume_revoke(worker)

    done, errors = common.run(go)
    out = common.console()
    for node, had in sorted(done.items()):
        out.print(f"{esc(node)}: {'revoked the key of' if had else 'no key for'} {esc(worker)}", highlight=False)
    for node, why in sorted(errors.items()):
        common.console(stderr=True).print(f"{esc(node)}: {esc(why)}", highlight=False)
    if errors:
        raise typer.Exit(1)
