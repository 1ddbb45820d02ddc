"""Every duration flag takes the one duration syntax (core/units): units or bare seconds, and a usage error that
names the flag."""

from __future__ import annotations

from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from fleet.cli import common
from fleet.cli.main import app

ROOT: Any = typer.main.get_command(app)


DURATION_FLAGS = [(["destroy", "web"], "--grace"), (["stop", "x"], "--grace"), (["nodes"], "--timeout"),
                  (["ps"], "--timeout"), (["lock", "status"], "--timeout"), (["ui"], "--interval"),
                  (["watch"], "--interval")]


def _unboxed(text: str) -> str:
    """An error panel's text as one line: its border and the line breaks of its wrapping taken out."""
    return " ".join(text.replace("│", " ").split())


def _params(command: list[str], args: list[str]) -> dict[str, Any]:
    group: Any = ROOT
    depth = 2 if command[0] == "lock" else 1
    for name in command[:depth]:
        group = group.commands[name]
    with group.make_context("fleet", [*command[depth:], *args]) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize(("command", "flag"), DURATION_FLAGS)
def test_duration_flags_take_units_and_bare_seconds(command: list[str], flag: str) -> None:
    key = flag.lstrip("-")
    assert _params(command, [flag, "90s"])[key] == 90.0
    assert _params(command, [flag, "1m30s"])[key] == 90.0
    assert _params(command, [flag, "2"])[key] == 2.0  # what these flags took before
    assert _params(command, [flag, "1h"])[key] == 3600.0


@pytest.mark.parametrize(("command", "flag"), DURATION_FLAGS)
def test_a_bad_duration_flag_is_a_usage_error_naming_the_flag(command: list[str], flag: str) -> None:
    result = CliRunner().invoke(app, [*command, flag, "soon"])
    assert result.exit_code == common.EXIT_USAGE
    text = _unboxed(result.output)
    assert f"Invalid value for '{flag}'" in text
    assert "expected a duration such as 2s, 500ms or 1m, got 'soon'" in text


def test_interval_flags_keep_their_minimum() -> None:
    result = CliRunner().invoke(app, ["ui", "--interval", "100ms"])
    assert result.exit_code == common.EXIT_USAGE and "expected at least 0.2s" in _unboxed(result.output)


def test_wait_takes_days_as_the_other_flags() -> None:
    assert common.wait_seconds("1d") == 86400.0
    assert common.wait_seconds("30") == 30.0
    with pytest.raises(typer.Exit):
        common.wait_seconds("1d1s")
