"""`fleet secret set|rm|check`: secrets live in the OS keyring; playbooks only name them."""

from __future__ import annotations

import getpass
import re
import sys

import typer

from . import common
from .apply import PlaybooksArg

app = typer.Typer(help="Secrets in the OS keyring (service \"fleet\"), referenced from playbooks as "
                       "`env: {NAME: {secret: KEY}}`.", no_args_is_help=True)
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _key(name: str) -> str:
    if not KEY_RE.match(name):
        common.fail(f"secret name {name!r}: letters, digits, . _ - (up to 128)")
    return name


@app.command("set")
def set_(name: str) -> None:
    """Store a secret: the value is read from stdin (or asked for on a terminal), never from the command line."""
    from ..secrets import Secret, SecretStoreError, set_secret

    key = _key(name)
    value = getpass.getpass(f"value for {key}: ") if sys.stdin.isatty() else sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        common.fail("empty value; nothing stored")
    try:
        set_secret(key, Secret(value))
    except SecretStoreError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    common.console().print(f"stored {key} in the keyring")


@app.command("rm")
def rm(name: str) -> None:
    """Remove a secret from the keyring."""
    from ..secrets import SecretStoreError, delete_secret

    try:
        gone = delete_secret(_key(name))
    except SecretStoreError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    common.console().print(f"removed {name}" if gone else f"{name}: not in the keyring")
    raise typer.Exit(common.EXIT_OK if gone else common.EXIT_PARTIAL)


@app.command("check")
def check(playbooks: PlaybooksArg = None, json: common.JsonOpt = False) -> None:
    """List the secrets the playbooks reference and whether the keyring has each (values are never shown)."""
    from ..secrets import backend_name, get_secret
    from .apply import specs_from

    wanted = sorted({(s.name, n) for s in specs_from(playbooks) for n in s.secret_names()})
    found = {n: get_secret(n) is not None for _, n in wanted}
    if json:
        common.print_json({"backend": backend_name(), "secrets": [
            {"service": svc, "secret": n, "present": found[n]} for svc, n in wanted]})
    else:
        out = common.console()
        out.print(f"keyring backend: {backend_name()}")
        for svc, n in wanted:
            out.print(f"  {svc}: {n} " + ("[green]present[/]" if found[n] else "[red]missing[/]"))
    raise typer.Exit(common.EXIT_OK if all(found.values()) else common.EXIT_PARTIAL)
