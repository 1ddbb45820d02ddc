"""`-f/--file` names playbooks on every command that reads them, beside the positional arguments; with neither,
the default's absence is explained."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from fleet.cli import common
from fleet.cli.main import app

ROOT: Any = typer.main.get_command(app)


PLAYBOOK_COMMANDS = [["plan"], ["apply"], ["reconcile"], ["watch"], ["secret", "check"], ["scale", "web", "3"]]


@pytest.mark.parametrize("command", PLAYBOOK_COMMANDS, ids=" ".join)
def test_every_playbook_command_takes_dash_f_and_long_file(command: list[str]) -> None:
    group: Any = ROOT
    depth = 2 if command[0] == "secret" else 1
    for name in command[:depth]:
        group = group.commands[name]
    for flag in ("-f", "--file"):
        with group.make_context("fleet", [*command[depth:], flag, "a.yaml", flag, "more/"]) as ctx:
            given = ctx.params.get("file") or ctx.params.get("playbooks")
            assert given == ["a.yaml", "more/"]


def _inventory(tmp_path: Any) -> str:
    path = tmp_path / "inventory.yaml"
    path.write_text("nodes:\n  n1: {address: 127.0.0.1, port: 1, roles: [worker]}\n")
    return str(path)


def test_playbooks_by_argument_and_by_file_are_read_together(tmp_path: Any) -> None:
    """A bad playbook named with -f is read (and refused, before any connection) beside the positional one."""
    good = tmp_path / "good.yaml"
    good.write_text("services:\n  web: {image: 'demo:v1', replicas: 1}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  api: {image: 'demo:v1', replicas: three}\n")
    result = CliRunner().invoke(app, ["plan", str(good), "-f", str(bad), "-i", _inventory(tmp_path)])
    assert result.exit_code == common.EXIT_USAGE, result.output
    assert f"{bad}:2: services.api.replicas" in result.output


def test_no_playbooks_directory_names_the_default_and_the_variable(tmp_path: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_PLAYBOOKS", raising=False)
    result = CliRunner().invoke(app, ["plan", "-i", _inventory(tmp_path)])
    assert result.exit_code == common.EXIT_USAGE
    assert "./playbooks does not exist" in result.output and "FLEET_PLAYBOOKS" in result.output
    monkeypatch.setenv("FLEET_PLAYBOOKS", str(tmp_path / "nowhere"))
    result = CliRunner().invoke(app, ["apply", "-i", _inventory(tmp_path)])
    assert result.exit_code == common.EXIT_USAGE
    assert f"FLEET_PLAYBOOKS={tmp_path / 'nowhere'} does not exist" in result.output
