"""`fleet`: the command-line entry point; one sub-module per noun."""

from __future__ import annotations

import importlib.metadata
from typing import Annotated

import typer

import fleet
from fleet.cli import (
    apply,
    container,
    exec_,
    image,
    lab,
    lb,
    lock,
    logs,
    node,
    nodes,
    ps,
    rollout,
    secret,
    status,
    ui,
    volume,
    watch,
)

app = typer.Typer(name="fleet", help="Agentless SSH-based container orchestrator.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
DISTRIBUTION = "fleet-orchestrator"  # the name on the package index (pyproject.toml); the command stays `fleet`


def version() -> str:
    """The installed distribution's version; the package's own `__version__` when run from a checkout that was
    never installed (pyproject.toml reads the version from `fleet.__version__`, so the two agree)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return fleet.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {version()}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                           help="Print fleet's version and exit.")] = False,
) -> None:
    # Eager: `--version` answers before any command is parsed, like `--help`.
    pass


app.add_typer(lab.app, name="lab")
app.command("nodes")(nodes.nodes)
app.command("plan")(apply.plan)
app.command("apply")(apply.apply)
app.command("scale")(apply.scale)
app.command("destroy")(apply.destroy)
app.command("reconcile")(apply.reconcile)
app.command("history")(rollout.history)
app.command("rollback")(rollout.rollback)
app.command("promote")(rollout.promote)
app.command("abort")(rollout.abort)
app.command("ui")(ui.ui)
app.command("watch")(watch.watch)
app.command("status")(status.status_cmd)
app.command("ps")(ps.ps)
app.command("logs")(logs.logs)
app.command("exec")(exec_.exec_)
app.command("run")(container.run)
app.command("stop")(container.stop)
app.command("rm")(container.rm)
app.add_typer(image.app, name="image")
app.add_typer(secret.app, name="secret")
app.add_typer(lock.app, name="lock")
app.add_typer(volume.app, name="volume")
app.add_typer(node.app, name="node")
app.add_typer(lb.app, name="lb")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
