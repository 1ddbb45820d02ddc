"""`fleet secret set|rm|ls|check`: secrets kept in the fleet's shared state, sealed to its controllers; playbooks
only name them."""

from __future__ import annotations

import datetime
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from fleet.cli import common
from fleet.cli.apply import FileOpt, PlaybooksArg

if TYPE_CHECKING:
    from fleet.api import SecretKeeper, SecretsView

app = typer.Typer(help="Secrets in the fleet's shared state, sealed (age) to its controllers' public keys, "
                       "referenced from playbooks as `env: {NAME: {secret: KEY}}`.", no_args_is_help=True)

T = TypeVar("T")

IdentityOpt = Annotated[
    str | None,
    typer.Option("--identity-file", envvar="FLEET_IDENTITY_FILE", show_default=False, metavar="PATH",
                 help="This controller's age identity in a 0600 file (a headless controller); default: the "
                      "keyring."),
]


def key_name(kind: str, name: str) -> str:
    """`name` if it is a valid secret or controller name, else exit 2 saying what is allowed."""
    from fleet.api import check_name

    try:
        return check_name(kind, name)
    except ValueError as exc:
        common.fail(str(exc))


def when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def with_keeper(inventory: str | None, wait: str | None, identity_file: str | None,
                op: Callable[[SecretKeeper], Awaitable[T]]) -> T:
    """Run `op` on the inventory's sealed secrets (exit 1 with the message on a fleet error, 2 on a bad
    inventory or name)."""
    from fleet.api import Fleet, keeper

    inv = common.inventory(inventory)
    seconds = common.wait_seconds(wait)

    async def go() -> T:
        async with Fleet.connect(inv, wait=seconds) as f:
            k = keeper(f, identity_file)
            try:
                return await op(k)
            except ValueError as exc:
                common.fail(str(exc))
            finally:
                for name, why in sorted(k.refused.items()):
                    common.console(stderr=True).print(f"[yellow]refused controller {common.esc(name)}:[/] "
                                                      f"{common.esc(why)}", soft_wrap=True)

    return common.run(go)


@app.command("set")
def set_(name: str, inventory: common.InventoryOpt = None, identity_file: IdentityOpt = None,
         wait: common.WaitOpt = None) -> None:
    """Store a secret for every controller of the fleet; the value is read from stdin.

    The value is read from stdin (or asked for on a terminal), never from the command line, and sealed to each
    controller's public key before it leaves this machine.

    Example:

      printf %s "$DB_PASSWORD" | fleet secret set db-password -i inventory.yaml"""
    from fleet.api import Secret

    key = key_name("secret", name)
    value = getpass.getpass(f"value for {key}: ") if sys.stdin.isatty() else sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        common.fail("empty value; nothing stored")
    box = with_keeper(inventory, wait, identity_file, lambda k: k.set(key, Secret(value)))
    common.console().print(f"stored {key}, readable by {', '.join(box.readers)}")


@app.command("rm")
def rm(name: str, inventory: common.InventoryOpt = None, identity_file: IdentityOpt = None,
       wait: common.WaitOpt = None) -> None:
    """Remove a secret from the fleet (exit 1 when there was none).

    Example:

      fleet secret rm db-password"""
    key = key_name("secret", name)
    gone = with_keeper(inventory, wait, identity_file, lambda k: k.rm(key))
    common.console().print(f"removed {key}" if gone else f"{key}: the fleet has no such secret")
    raise typer.Exit(common.EXIT_OK if gone else common.EXIT_PARTIAL)


def read_view(inventory: str | None, identity_file: str | None = None) -> SecretsView:
    async def view(k: SecretKeeper) -> SecretsView:
        return await k.view()

    return with_keeper(inventory, None, identity_file, view)


@app.command("ls")
def ls(inventory: common.InventoryOpt = None, json: common.JsonOpt = False) -> None:
    """The fleet's secrets: names, which controllers can read each, who set it and when (never a value).

    Example:

      fleet secret ls --json"""
    view = read_view(inventory)
    rows = [{"name": b.name, "readers": list(b.readers), "set_by": b.set_by, "set_at": b.set_at}
            for b in view.secrets]
    if json:
        common.print_json({"secrets": rows, "unreadable": dict(view.broken)})
    else:
        out = common.console()
        for b in view.secrets:
            out.print(f"{common.esc(b.name)}  readers: {common.esc(', '.join(b.readers))}  "
                      f"set by {common.esc(b.set_by)} at {when(b.set_at)}", soft_wrap=True)
        for key, why in sorted(view.broken.items()):
            out.print(f"[red]{common.esc(key)}: {common.esc(why)}[/]", soft_wrap=True)
    raise typer.Exit(common.EXIT_PARTIAL if view.broken else common.EXIT_OK)


@app.command("check")
def check(playbooks: PlaybooksArg = None, file: FileOpt = None, inventory: common.InventoryOpt = None,
          identity_file: IdentityOpt = None, json: common.JsonOpt = False) -> None:
    """List the secrets the playbooks reference and whether this controller can read each.

    Values are never shown; exit 1 when one is missing or sealed to other controllers only.

    Example:

      fleet secret check -f playbooks/"""
    from fleet.api import SecretStoreError, load_identity, secret_check
    from fleet.cli.apply import specs_from

    specs = specs_from(playbooks, file)
    try:
        me = load_identity(identity_file)  # before any node is contacted
    except SecretStoreError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    view = read_view(inventory)
    boxes = {b.name: b for b in view.secrets}
    mine = {c.name for c in view.controllers if c.key == me.public}
    refs = secret_check(specs, lambda n: n in boxes)
    readable = {r.name: r.present and bool(mine & set(boxes[r.name].readers)) for r in refs}
    if json:
        common.print_json({"identity": me.public, "controller": sorted(mine), "secrets": [
            {"service": r.service, "secret": r.name, "present": r.present, "readable": readable[r.name]}
            for r in refs]})
    else:
        out = common.console()
        out.print(f"this controller: {common.esc(', '.join(sorted(mine)) or 'not registered')} ({me.public})")
        for r in refs:
            state = ("[green]present[/]" if readable[r.name] else "[yellow]present, not readable here[/]"
                     if r.present else "[red]missing[/]")
            out.print(f"  {common.esc(r.service)}: {common.esc(r.name)} {state}")
    raise typer.Exit(common.EXIT_OK if all(readable.values()) else common.EXIT_PARTIAL)
