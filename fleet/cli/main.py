"""`fleet`: the command-line entry point; one sub-module per noun."""

from __future__ import annotations

import typer

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
