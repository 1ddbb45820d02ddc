"""`fleet`: the command-line entry point; one sub-module per noun."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

import fleet
from fleet.cli import common

# The command list, grouped as a user looks for a command: change the fleet, look at it, its nodes and
# containers, what it keeps, then the local lab and the shell's set-up.
DEPLOY, INSPECT, NODES, STATE, LAB = "Deploy", "Inspect", "Nodes and containers", "State", "Lab and setup"

DISTRIBUTION = "fleet-orchestrator"  # the name on the package index (pyproject.toml); the command stays `fleet`


def version() -> str:
    """The installed distribution's version; the package's own `__version__` when run from a checkout that was
    never installed (pyproject.toml reads the version from `fleet.__version__`, so the two agree)."""
    import importlib.metadata  # only here: 25 ms of every start otherwise

    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return fleet.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {version()}")
        raise typer.Exit()


def _options(
    _version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                           help="Print fleet's version and exit.")] = False,
) -> None:
    # Eager: `--version` answers before any command is parsed, like `--help`.
    pass


# Every command: (name, its module in fleet.cli, the function, or None for a group of sub-commands (the module's
# `app`), its help panel), in the order `fleet --help` lists them. A command line naming one loads that module only
# (a CLI start spends most of its CPU importing: about 0.3 s less each), `--help`, completion or a name fleet does
# not know load them all.
COMMANDS: tuple[tuple[str, str, str | None, str], ...] = (
    ("plan", "apply", "plan", DEPLOY),
    ("apply", "apply", "apply", DEPLOY),
    ("scale", "apply", "scale", DEPLOY),
    ("destroy", "apply", "destroy", DEPLOY),
    ("reconcile", "apply", "reconcile", DEPLOY),
    ("watch", "watch", "watch", DEPLOY),
    ("history", "rollout", "history", DEPLOY),
    ("rollback", "rollout", "rollback", DEPLOY),
    ("promote", "rollout", "promote", DEPLOY),
    ("abort", "rollout", "abort", DEPLOY),
    ("rollout", "rollout", None, DEPLOY),
    ("restart", "deploy", "restart", DEPLOY),
    ("deploy", "deploy", "deploy", DEPLOY),
    ("job", "job", None, DEPLOY),
    ("events", "events", "events", INSPECT),
    ("status", "status", "status_cmd", INSPECT),
    ("ps", "ps", "ps", INSPECT),
    ("describe", "describe", "describe", INSPECT),
    ("logs", "logs", "logs", INSPECT),
    ("exec", "exec_", "exec_", INSPECT),
    ("ui", "ui", "ui", INSPECT),
    ("lb", "lb", None, INSPECT),
    ("nodes", "nodes", "nodes", NODES),
    ("node", "node", None, NODES),
    ("run", "container", "run", NODES),
    ("stop", "container", "stop", NODES),
    ("rm", "container", "rm", NODES),
    ("image", "image", None, STATE),
    ("secret", "secret", None, STATE),
    ("controller", "controller", None, STATE),
    ("lock", "lock", None, STATE),
    ("records", "records", None, STATE),
    ("volume", "volume", None, STATE),
    ("lab", "lab", None, LAB),
    ("completion", "completion", None, LAB),
)


def build(only: str | None = None) -> typer.Typer:
    """The `fleet` command with every command, or with only the one named `only`."""
    app = typer.Typer(name="fleet", help="Agentless SSH-based container orchestrator.",
                      epilog=common.EXIT_CODES_HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                      add_completion=True, context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_options)
    for name, module, function, panel in COMMANDS:
        if only is not None and name != only:
            continue
        mod = importlib.import_module(f"fleet.cli.{module}")
        if function is None:
            app.add_typer(mod.app, name=name, rich_help_panel=panel)
        else:
            app.command(name, rich_help_panel=panel)(getattr(mod, function))
    return app


def named(argv: Sequence[str]) -> str | None:
    """The command a command line names (its first word that is not an option), when fleet has it; None for
    a line with none, a name fleet does not know (the full command then says so, with its suggestions) or shell
    completion (which lists them all)."""
    if any("_COMPLETE" in k for k in os.environ):
        return None
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if any(first == c[0] for c in COMMANDS) else None


def __getattr__(name: str) -> typer.Typer:
    # `fleet.cli.main.app`: the full command, for tests and the reference docs, built once when first asked.
    if name != "app":
        raise AttributeError(name)
    globals()["app"] = full = build()
    return full


def main() -> None:
    build(named(sys.argv[1:]))()


if __name__ == "__main__":
    main()
