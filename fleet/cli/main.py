"""`fleet`: the command-line entry point; one sub-module per noun."""

from __future__ import annotations

import typer

from fleet.cli import (
    apply,
    common,
    completion,
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

# The command list, grouped as a user looks for a command: change the fleet, look at it, its nodes and
# containers, what it keeps, then the local lab and the shell's set-up.
DEPLOY, INSPECT, NODES, STATE, LAB = "Deploy", "Inspect", "Nodes and containers", "State", "Lab and setup"

app = typer.Typer(name="fleet", help="Agentless SSH-based container orchestrator.", epilog=common.EXIT_CODES_HELP,
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True,
                  context_settings={"help_option_names": ["-h", "--help"]})
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
app.command("status", rich_help_panel=INSPECT)(status.status_cmd)
app.command("ps", rich_help_panel=INSPECT)(ps.ps)
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
app.add_typer(lock.app, name="lock", rich_help_panel=STATE)
app.add_typer(volume.app, name="volume", rich_help_panel=STATE)
app.add_typer(lab.app, name="lab", rich_help_panel=LAB)
app.add_typer(completion.app, name="completion", rich_help_panel=LAB)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
