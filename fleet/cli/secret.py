"""`fleet secret set|rm|check`: secrets live in the OS keyring; playbooks only name them."""

from __future__ import annotations

import getpass
import re
import sys

import typer

from fleet.cli import common
from fleet.cli.apply import FileOpt, PlaybooksArg

app = typer.Typer(help="Secrets in the OS keyring (service \"fleet\"), referenced from playbooks as "
                       "`env: {NAME: {secret: KEY}}`.", no_args_is_help=True)
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _key(name: str) -> str:
    if not KEY_RE.match(name):
        common.fail(f"secret name {name!r}: letters, digits, . _ - (up to 128)")
    return name


@app.command("set")
def set_(name: str) -> None:
    """Store a secret: the value is read from stdin (or asked for on a terminal), never from the command line.

    Example:

      printf %s "$DB_PASSWORD" | fleet secret set db-password"""
    from fleet.api import secret_set
    from fleet.core.errors import SecretStoreError
    from fleet.results import Secret

    key = _key(name)
    value = getpass.getpass(f"value for {key}: ") if sys.stdin.isatty() else sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        common.fail("empty value; nothing stored")
    try:
        secret_set(key, Secret(value))
    except SecretStoreError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    common.console().print(f"stored {key} in the keyring")


@app.command("rm")
def rm(name: str) -> None:
    """Remove a secret from the keyring.

    Example:

      fleet secret rm db-password"""
    from fleet.api import secret_rm
    from fleet.core.errors import SecretStoreError

    try:
        gone = secret_rm(_key(name))
    except SecretStoreError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    common.console().print(f"removed {name}" if gone else f"{name}: not in the keyring")
    raise typer.Exit(common.EXIT_OK if gone else common.EXIT_PARTIAL)


@app.command("check")
def check(playbooks: PlaybooksArg = None, file: FileOpt = None, json: common.JsonOpt = False) -> None:
    """List the secrets the playbooks reference and whether the keyring has each (values are never shown).

    Example:

      fleet secret check -f playbooks/"""
    from fleet.api import secret_backend, secret_check
    from fleet.cli.apply import specs_from
    from fleet.core.errors import SecretStoreError

    try:
        refs = secret_check(specs_from(playbooks, file))
    except SecretStoreError as exc:
        common.fail(str(exc), common.EXIT_PARTIAL)
    if json:
        common.print_json({"backend": secret_backend(), "secrets": [
            {"service": r.service, "secret": r.name, "present": r.present} for r in refs]})
    else:
        out = common.console()
        out.print(f"keyring backend: {secret_backend()}")
        for r in refs:
            out.print(f"  {r.service}: {r.name} " + ("[green]present[/]" if r.present else "[red]missing[/]"))
    raise typer.Exit(common.EXIT_OK if all(r.present for r in refs) else common.EXIT_PARTIAL)
