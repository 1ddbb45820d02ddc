"""`fleet controller init|add|rm|ls`: who can read the fleet's secrets, each controller by its age public key."""

from __future__ import annotations

from collections.abc import Mapping

import typer

from fleet.cli import common
from fleet.cli.secret import IdentityOpt, key_name, read_view, when, with_keeper

app = typer.Typer(help="The fleet's controllers: the machines (laptops, CI, a cron host) whose age identities can "
                       "read its secrets.", no_args_is_help=True)


@app.command("init")
def init(identity_file: IdentityOpt = None) -> None:
    """Give this controller an age identity if it has none, and print its public key.

    The identity is kept in the keyring, or in a 0600 file with --identity-file (a headless controller: cron,
    systemd, CI). Hand the public key to a controller of the fleet for `fleet controller add`; the first
    controller to store a secret in a fleet registers itself.

    Example:

      fleet controller init --identity-file /etc/fleet/identity"""
    from fleet.api import SecretStoreError, init_identity

    try:
        identity, made = init_identity(identity_file)
    except SecretStoreError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    err = common.console(stderr=True)
    err.print(f"{'made a new' if made else 'this controller has an'} age identity, in {common.esc(identity.where)}",
              soft_wrap=True)
    err.print("to let it read the fleet's secrets, run on a controller of the fleet: "
              f"fleet controller add NAME {identity.public}", soft_wrap=True)
    print(identity.public)


@app.command("add")
def add(name: str, public_key: str, inventory: common.InventoryOpt = None, identity_file: IdentityOpt = None,
        wait: common.WaitOpt = None) -> None:
    """Let the controller NAME read the fleet's secrets, by its age public key.

    Run on a controller of the fleet, with the key the new one's `fleet controller init` printed: every secret
    and the digest key are re-sealed to the new set.

    Example:

      fleet controller add ci age1qy…"""
    key_name("controller", name)
    new = with_keeper(inventory, wait, identity_file, lambda k: k.add_controller(name, public_key.strip()))
    common.console().print(f"added controller {common.esc(new.name)} ({new.key})")


@app.command("rm")
def rm(name: str, inventory: common.InventoryOpt = None, identity_file: IdentityOpt = None,
       wait: common.WaitOpt = None) -> None:
    """Stop the controller NAME reading the fleet's secrets.

    Every secret and the digest key are re-sealed to the others, so it cannot open any value set from now on.
    Values it has already read stay known to it: rotate them (`fleet secret set` each with a new value).

    Example:

      fleet controller rm old-laptop"""
    gone = with_keeper(inventory, wait, identity_file, lambda k: k.rm_controller(name))
    common.console().print(f"removed controller {common.esc(gone.name)}; rotate the secrets it could read")


@app.command("ls")
def ls(inventory: common.InventoryOpt = None, identity_file: IdentityOpt = None, json: common.JsonOpt = False) -> None:
    """The fleet's controllers: name, public key, who added it and when, checked against the sealed list.

    A registration the fleet's sealed controller list does not back is shown as forged (nothing is sealed to
    it); a controller the list names whose registration is gone, as removed without the fleet's key (it still
    reads the secrets). Checking needs this controller's identity; exit 1 when anything is not vouched for.

    Example:

      fleet controller ls --json"""
    view = read_view(inventory, identity_file)
    unlisted = {c.name for c in view.unlisted}
    if json:
        common.print_json({"controllers": [c.doc() | {"status": status(c.name, view.forged, unlisted)}
                                           for c in (*view.controllers, *view.unlisted)],
                           "unverified": view.unverified})
    else:
        out = common.console()
        for c in view.controllers:
            mark = f"  [red]forged: {common.esc(view.forged[c.name])}[/]" if c.name in view.forged else ""
            out.print(f"{common.esc(c.name)}  {c.key}  added by {common.esc(c.added_by)} at {when(c.added_at)}{mark}",
                      soft_wrap=True)
        for c in view.unlisted:
            out.print(f"{common.esc(c.name)}  {c.key}  [red]its registration was removed without the fleet's key; "
                      f"it still reads the secrets (`fleet controller rm {common.esc(c.name)}` to take it out)[/]",
                      soft_wrap=True)
        if view.unverified is not None:
            out.print(f"[yellow]not checked against the sealed controller list:[/] {common.esc(view.unverified)}",
                      soft_wrap=True)
    raise typer.Exit(common.EXIT_PARTIAL if view.forged or view.unlisted or view.unverified else common.EXIT_OK)


def status(name: str, forged: Mapping[str, str], unlisted: set[str]) -> str:
    """One controller's standing in `ls --json`: listed, forged or unlisted (its registration removed)."""
    return "forged" if name in forged else "unlisted" if name in unlisted else "listed"
