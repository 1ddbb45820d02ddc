"""CLI output shows remote and user text literally: brackets in it are not rich markup."""

from __future__ import annotations

import pytest
import typer

from fleet.cli import common


def test_error_text_with_brackets_printed_as_is(capsys):
    with pytest.raises(typer.Exit) as exc:
        common.fail("haproxy: parsing [bad.cfg:2] : unknown keyword; path [/etc]; node [n1]")
    assert exc.value.exit_code == common.EXIT_USAGE
    assert "parsing [bad.cfg:2] : unknown keyword; path [/etc]; node [n1]" in capsys.readouterr().err
