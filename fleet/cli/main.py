"""`fleet`: the command-line entry point; one sub-module per noun."""

from __future__ import annotations

import importlib.metadata
from typing import Annotated

import typer

import fleet
from fleet.cli import (
    apply,
    common,
    completion,
    container,
    controller,
    deploy,
    describe,
    events,
    exec_,
    image,
    job,
    lab,
    lb,
    lock,
    logs,
    node,
    nodes,
    ps,
    records,
    rollout,
    secret,
    status,
    ui,
    volume,
    watch,
)

# The command list, grouped as a user looks for a command: change the fleet, look at it, its nodes and
# containers, what it keeps, then the local lab and the shell's set-up.
DEPLOY, INSPECT, NODES, STATE, LAB = "Deploy", "Inspect", "Nodes and containers", "State", "Lab and setup"

app = typer.Typer(name="fleet", help="Agentless SSH-based container orchestrator.", epilog=common.EXIT_CODES_HELP,
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True,
                  context_settings={"help_option_names": ["-h", "--help"]})
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


app.command("plan", rich_help_panel=DEPLOY)(apply.plan)
app.command("apply", rich_help_panel=DEPLOY)(apply.apply)
app.command("scale", rich_help_panel=DEPLOY)(apply.scale)
app.command("destroy", rich_help_panel=DEPLOY)(apply.destroy)
app.command("reconcile", rich_help_panel=DEPLOY)(apply.reconcile)
app.command("watch", rich_help_panel=DEPLOY)(watch.watch)
app.command("history", rich_help_panel=DEPLOY)(rollout.history)
app.command("rollback", rich_help_panel=DEPLOY)(rollout.rollback)
app.command("promote", rich_help_panel=DEPLOY)(rollout.promote)
app.command("abort", rich_help_panel=DEPLOY)(rollout.abort)
app.add_typer(rollout.app, name="rollout", rich_help_panel=DEPLOY)
app.command("restart", rich_help_panel=DEPLOY)(deploy.restart)
app.command("deploy", rich_help_panel=DEPLOY)(deploy.deploy)
app.add_typer(job.app, name="job", rich_help_panel=DEPLOY)
app.command("events", rich_help_panel=INSPECT)(events.events)
app.command("status", rich_help_panel=INSPECT)(status.status_cmd)
app.command("ps", rich_help_panel=INSPECT)(ps.ps)
app.command("describe", rich_help_panel=INSPECT)(describe.describe)
app.command("logs", rich_help_panel=INSPECT)(logs.logs)
app.command("exec", rich_help_panel=INSPECT)(exec_.exec_)
app.command("ui", rich_help_panel=INSPECT)(ui.ui)
app.add_typer(lb.app, name="lb", rich_help_panel=INSPECT)
app.command("nodes", rich_help_panel=NODES)(nodes.nodes)
app.add_typer(node.app, name="node", rich_help_panel=NODES)
app.command("run", rich_help_panel=NODES)(container.run)
app.command("stop", rich_help_panel=NODES)(container.stop)
app.command("rm", rich_help_panel=NODES)(container.rm)
app.add_typer(image.app, name="image", rich_help_panel=STATE)
app.add_typer(secret.app, name="secret", rich_help_panel=STATE)
app.add_typer(controller.app, name="controller", rich_help_panel=STATE)
app.add_typer(lock.app, name="lock", rich_help_panel=STATE)
app.add_typer(records.app, name="records", rich_help_panel=STATE)
app.add_typer(volume.app, name="volume", rich_help_panel=STATE)
app.add_typer(lab.app, name="lab", rich_help_panel=LAB)
app.add_typer(completion.app, name="completion", rich_help_panel=LAB)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
