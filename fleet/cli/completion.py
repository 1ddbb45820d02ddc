"""`fleet completion bash|zsh|fish`: the shell's completion script for fleet, printed to stdout."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

# Typer writes the script it answers (`add_completion=True` in main registers its completion classes, which the
# script calls back through this variable) but exposes no public function for it; this one has had the same
# signature since typer 0.12, the oldest fleet accepts.
from typer._completion_shared import get_completion_script

COMPLETE_VAR = "_FLEET_COMPLETE"  # what typer derives from the program's name, so script and fleet agree


class Shell(enum.StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def script(shell: Shell) -> str:
    """The completion script for `shell`: on TAB it runs fleet with COMPLETE_VAR set and offers its answers."""
    return get_completion_script(prog_name="fleet", complete_var=COMPLETE_VAR, shell=shell.value)


def completion(shell: Annotated[Shell, typer.Argument(help="The shell to complete in.", show_default=False)]) -> None:
    """Print the shell completion script for fleet: commands, options and file names complete on TAB.

    Example:

      fleet completion bash > ~/.local/share/bash-completion/completions/fleet
      fleet completion zsh > "${fpath[1]}/_fleet"
      fleet completion fish > ~/.config/fish/completions/fleet.fish"""
    typer.echo(script(shell))
