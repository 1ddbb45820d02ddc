"""The command line's conventions: `-h`, grouped help with an example on every command, exit codes in `--help`,
shell completion (-f/--file: test_cli_files; durations: test_cli_durations)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import pytest
import typer.main
import typer.rich_utils
from typer.testing import CliRunner

from fleet.cli import common
from fleet.cli.main import app

ROOT: Any = typer.main.get_command(app)


def _commands(group: Any = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf command with its path under `fleet`, sub-commands of groups included."""
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


COMMANDS = list(_commands())
PATHS = [" ".join(p) for p, _ in COMMANDS]


def _help(args: list[str], width: int = 80) -> str:
    # typer reads TERMINAL_WIDTH once, when its help renderer is first imported (`typer.rich_utils.MAX_WIDTH`): in
    # one process the first help's width would hold for every later one (the 80-column check failed after a
    # 200-column help ran first on its worker), so each help here sets it for its own call.
    with patch.object(typer.rich_utils, "MAX_WIDTH", width):
        result = CliRunner().invoke(app, args, env={"COLUMNS": str(width), "TERMINAL_WIDTH": str(width)},
                                    terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def _examples(text: str) -> list[str]:
    """The `fleet …` lines of a help's Example block, cut where a shell redirect or pipe would follow."""
    block = text.split("Example:", 1)[1].split("╭", 1)[0]  # up to the first panel (arguments, options)
    lines = []
    for raw in block.splitlines():
        line = raw.strip()
        if not line.startswith(("fleet ", "printf ")):
            continue
        words = shlex.split(line[line.index("fleet "):])
        for stop in ("|", ">"):
            if stop in words:
                words = words[:words.index(stop)]
        lines.append(words)
    return [shlex.join(w) for w in lines]


def test_there_are_commands_to_check() -> None:
    assert {"apply", "plan", "nodes", "node drain", "lab up", "completion bash"} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS)
def test_every_command_help_has_an_example_and_fits_80_columns(path: str) -> None:
    for flag in ("-h", "--help"):
        text = _help([*path.split(), flag])
        assert "Example:" in text, f"fleet {path} {flag} has no example"
        wide = [line for line in text.splitlines() if len(line) > 80]
        assert not wide, f"fleet {path} {flag} is wider than 80 columns: {wide}"
        assert f"fleet {path}" in text.split("Example:", 1)[1]


@pytest.mark.parametrize("path", PATHS)
def test_every_example_parses_with_the_commands_options(path: str) -> None:
    """An example that names a flag the command lacks, or a bad value, fails here (parsed, not run)."""
    examples = _examples(_help([*path.split(), "--help"], width=200))
    assert examples
    for example in examples:
        words = shlex.split(example)[1:]
        depth = len(path.split())
        assert words[:depth] == path.split(), example
        group: Any = ROOT
        for name in words[:depth]:
            group = group.commands[name]
        with group.make_context(" ".join(["fleet", *words[:depth]]), words[depth:]):
            pass


def test_top_level_help_groups_commands_and_lists_the_exit_codes() -> None:
    text = _help(["-h"])
    panels = ("Deploy", "Inspect", "Nodes and containers", "State", "Lab and setup")
    at = [text.find(f"─ {panel} ─") for panel in panels]
    assert -1 not in at and at == sorted(at), at  # every panel, in this order
    deploy = text.split("─ Deploy ─", 1)[1].split("╰", 1)[0]
    assert all(f"│ {name} " in deploy for name in ("apply", "plan", "rollback"))
    codes = text.split("Exit codes:", 1)[1]
    for code, meaning in ((common.EXIT_OK, "ok"), (common.EXIT_PARTIAL, "partial"),
                          (common.EXIT_USAGE, "usage or spec error"), (common.EXIT_CHANGES, "changes pending"),
                          (common.EXIT_LOCKED, "lease")):
        assert any(line.split()[:1] == [str(code)] and meaning in line for line in codes.splitlines()), code
    assert not [line for line in text.splitlines() if len(line) > 80]


# ---- shell completion ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_generates_for_each_shell(shell: str) -> None:
    result = CliRunner().invoke(app, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert "_FLEET_COMPLETE=complete_" + shell in result.output
    assert {"bash": "complete -o", "zsh": "#compdef fleet", "fish": "complete --command fleet"}[shell] in result.output


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["completion", "tcsh"])
    assert result.exit_code == common.EXIT_USAGE and "No such command 'tcsh'" in result.output


@pytest.mark.parametrize(("env", "expected"), [
    ({"_FLEET_COMPLETE": "complete_bash", "COMP_WORDS": "fleet ap", "COMP_CWORD": "1"}, "apply"),
    ({"_FLEET_COMPLETE": "complete_bash", "COMP_WORDS": "fleet node dr", "COMP_CWORD": "2"}, "drain"),
    ({"_FLEET_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "fleet apply --wa"}, "--wait"),
])
def test_the_script_s_requests_are_answered_with_fleet_s_commands_and_options(env: dict[str, str],
                                                                               expected: str) -> None:
    """What the generated script asks (the environment it sets) gets fleet's own words back."""
    result = CliRunner().invoke(app, [], env=env, prog_name="fleet")
    assert result.exit_code == 0, result.output
    assert expected in result.output


def _complete(words: str, **env: str) -> list[str]:
    """What `fleet` answers bash's completion request for the last word of `words`."""
    parts = words.split(" ")
    result = CliRunner().invoke(app, [], prog_name="fleet", env={
        "_FLEET_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1), **env})
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_node_and_service_names_complete_from_the_inventory_and_playbooks(tmp_path: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from the files only: the inventory's nodes sit on ports nothing listens on."""
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("nodes:\n  web-1: {address: 127.0.0.1, port: 1, roles: [worker]}\n"
                         "  web-2: {address: 127.0.0.1, port: 1, roles: [worker]}\n"
                         "  lb1: {address: 127.0.0.1, port: 1, roles: [lb]}\n")
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "svc.yaml").write_text(
        "services:\n  web: {image: 'demo:v1', replicas: 1}\n  worker: {image: 'demo:v1', replicas: 1}\n"
        "  api: {image: 'demo:v1', replicas: 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_PLAYBOOKS", raising=False)
    assert _complete(f"fleet node drain -i {inventory} web") == ["web-1", "web-2"]
    assert _complete("fleet node cordon ", FLEET_INVENTORY=str(inventory)) == ["lb1", "web-1", "web-2"]
    assert _complete("fleet rollback w") == ["web", "worker"]
    assert _complete("fleet scale ") == ["api", "web", "worker"]


def test_names_complete_to_nothing_when_the_files_do_not_read(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_PLAYBOOKS", raising=False)
    assert _complete("fleet history ") == []
    assert _complete("fleet node drain ", FLEET_INVENTORY=str(tmp_path / "missing.yaml")) == []


def test_a_misspelled_command_gets_a_suggestion() -> None:
    for words, suggestion in ((["aply"], "apply"), (["node", "drian"], "drain")):
        result = CliRunner().invoke(app, words)
        assert result.exit_code == common.EXIT_USAGE
        assert f"Did you mean '{suggestion}'" in result.output  # `aply`: 'apply', 'deploy'?


@pytest.mark.parametrize("path", PATHS)
def test_every_command_s_summary_is_one_line(path: str) -> None:
    """The first paragraph is what `fleet -h` lists: one line, or the listing breaks mid-sentence."""
    cmd: Any = ROOT
    for name in path.split():
        cmd = cmd.commands[name]
    summary = (cmd.help or "").strip().split("\n\n")[0]
    assert summary and "\n" not in summary, summary
