"""`fleet completion bash|zsh|fish`: the shell's completion script for fleet, printed to stdout; and the node and
service names completed from the inventory and the playbooks."""

from __future__ import annotations

import enum
import os
from typing import Annotated

import typer

# Typer writes the script it answers (`add_completion=True` in main registers its completion classes, which the
# script calls back through this variable) but exposes no public function for it; this one has had the same
# signature since typer 0.12, the oldest fleet accepts.
from typer._completion_shared import get_completion_script

COMPLETE_VAR = "_FLEET_COMPLETE"  # what typer derives from the program's name, so script and fleet agree

# Names are completed from local files only (the inventory, the playbooks), never by connecting: a TAB must
# answer at once, and a file that does not read offers nothing rather than an error in the middle of a line.


def node_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The inventory's node names (the -i already typed, else $FLEET_INVENTORY or the running lab's)."""
    from fleet.cli.common import default_inventory
    from fleet.config.inventory import load_inventory
    from fleet.core.errors import ConfigError

    path = ctx.params.get("inventory") or os.environ.get("FLEET_INVENTORY") or default_inventory()
    if not path:
        return []
    try:
        names = [n.name for n in load_inventory(path).nodes]
    except (ConfigError, OSError):
        return []
    return sorted(n for n in names if n.startswith(incomplete))


def service_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The services of the playbooks (the -f already typed, else $FLEET_PLAYBOOKS or ./playbooks)."""
    paths = ctx.params.get("playbooks") or ctx.params.get("file")
    return sorted(n for n in playbook_services(paths) if n.startswith(incomplete))


def playbook_services(paths: list[str] | None = None) -> list[str]:
    """The services the playbooks name (`paths`, else $FLEET_PLAYBOOKS or ./playbooks); none when they do not
    read."""
    from fleet.config.spec import load_playbooks
    from fleet.core.errors import ConfigError

    try:
        return [s.name for s in load_playbooks(list(paths or [os.environ.get("FLEET_PLAYBOOKS", "playbooks")]))]
    except (ConfigError, OSError):
        return []


NodeArg = Annotated[str, typer.Argument(help="The node, by its name in the inventory.", show_default=False,
                                        autocompletion=node_names)]
ServiceArg = Annotated[str, typer.Argument(help="The service, by its name in the playbooks.", show_default=False,
                                           autocompletion=service_names)]


class Shell(enum.StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def script(shell: Shell) -> str:
    """The completion script for `shell`: on TAB it runs fleet with COMPLETE_VAR set and offers its answers."""
    return get_completion_script(prog_name="fleet", complete_var=COMPLETE_VAR, shell=shell.value)


app = typer.Typer(help="Shell completion for fleet: commands, options, node and service names on TAB.",
                  no_args_is_help=True)


# One sub-command per shell (not one command with a SHELL argument) so that `fleet completion` is a group and
# its help panel comes after the other groups' in `fleet --help`.
@app.command("bash")
def bash() -> None:
    """Print the bash completion script.

    Example:

      fleet completion bash > ~/.local/share/bash-completion/completions/fleet"""
    typer.echo(script(Shell.bash))


@app.command("zsh")
def zsh() -> None:
    """Print the zsh completion script (a directory of $fpath holds it as _fleet).

    Example:

      fleet completion zsh > "${fpath[1]}/_fleet"
    """
    typer.echo(script(Shell.zsh))


@app.command("fish")
def fish() -> None:
    """Print the fish completion script.

    Example:

      fleet completion fish > ~/.config/fish/completions/fleet.fish"""
    typer.echo(script(Shell.fish))
