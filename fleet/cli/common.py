"""What every CLI command shares: finding the inventory, the console, JSON output, duration flags and exit codes."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fleet.config.inventory import load_inventory
from fleet.core.errors import ConfigError, FleetError, LeaseHeld
from fleet.core.model import Inventory
from fleet.core.units import parse_duration_flag

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the fleet's lease; try again later
EXIT_CHANGES = 3  # `fleet plan`: the plan is not empty (as `terraform plan -detailed-exitcode`)

# Shown under `fleet --help`: every exit status a command uses, so scripts and cron jobs can tell them apart.
EXIT_CODES_HELP = f"""Exit codes:

  {EXIT_OK}   ok: every node answered and every change converged
  {EXIT_PARTIAL}   partial: some node, service or replica failed (the others went ahead)
  {EXIT_USAGE}   usage or spec error: a bad flag, playbook or inventory (nothing was changed)
  {EXIT_CHANGES}   fleet plan: changes pending
  {EXIT_LOCKED}  another run holds the fleet's lease (retry later, or pass --wait)
  fleet exec exits with the command's own exit code.

Run `fleet COMMAND -h` for a command's options and an example."""

WaitOpt = Annotated[
    str | None,
    typer.Option("--wait", envvar="FLEET_LOCK_WAIT", show_default=False, metavar="DURATION",
                 help="Wait up to this long (e.g. 60s, 5m) for the fleet's lease when another run holds it; "
                      "default: exit 75 at once."),
]

InventoryOpt = Annotated[
    str | None,
    typer.Option("-i", "--inventory", envvar="FLEET_INVENTORY",
                 help="Inventory file (fleet or Ansible YAML/INI); default: the running lab's."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

T = TypeVar("T")


def lab_root() -> str:
    return os.environ.get("FLEET_LAB_ROOT", "/var/lib/fleet-lab")


def default_inventory() -> str | None:
    """The running lab's inventory: $FLEET_LAB's, else `fl`'s, else the only lab there is."""
    root = lab_root()
    preferred = os.path.join(root, os.environ.get("FLEET_LAB", "fl"), "inventory.yaml")
    if os.path.exists(preferred):
        return preferred
    found = sorted(glob.glob(os.path.join(root, "*", "inventory.yaml")))
    return found[0] if len(found) == 1 else None


def console(stderr: bool = False) -> Console:
    """The terminal's width when there is one; a wide fixed width when piped, so tables are not cut."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def esc(text: str) -> str:
    """User or remote text made safe to print with rich markup (`[n1]` or `[/etc]` would be read as tags)."""
    return escape(text)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    console(stderr=True).print(f"[bold red]error:[/] {esc(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def inventory(path: str | None) -> Inventory:
    path = path or default_inventory()
    if path is None:
        fail("no inventory: pass -i PATH, set FLEET_INVENTORY, or start a lab with `fleet lab up`")
    try:
        return load_inventory(path)
    except ConfigError as exc:
        fail(str(exc))


def wait_seconds(value: str | None) -> float:
    """`--wait 90s` / `5m` / `1d` / `30` as seconds (exit 2 naming the option when it is not a duration)."""
    if not value:
        return 0.0
    try:
        return parse_duration_flag(value)
    except ValueError as exc:
        fail(f"--wait: {exc}")


def duration(minimum: float = 0.0) -> Callable[[str | float], float]:
    """A duration flag's `parser=` for typer: `500ms`, `30s`, `5m`, `1h`, `1d` or a bare number of seconds
    (what these flags took before), from `minimum` to 24 h. A bad value is a usage error (exit 2) naming the
    flag: `Invalid value for '--grace': a duration cannot be negative, got -1.0`."""
    def parse(value: str | float) -> float:
        try:
            seconds = parse_duration_flag(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None  # as is: a bare ValueError gets a "Value error, " prefix
        if seconds < minimum:
            raise typer.BadParameter(f"expected at least {minimum:g}s, got {value!r}")
        return seconds
    return parse


DURATION_HELP = "(e.g. 30s, 5m, 1h; a bare number is seconds)"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run one async operation at the program's edge, mapping fleet errors to a message and exit code."""
    try:
        return asyncio.run(_call(coro_fn))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except LeaseHeld as exc:
        fail(str(exc), EXIT_LOCKED)
    except FleetError as exc:
        fail(str(exc), EXIT_PARTIAL)


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()
