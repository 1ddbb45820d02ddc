"""One duration parser, in core/units, for the command line's flags and the YAML files' fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import spec
from fleet.config.inventory import load_inventory
from fleet.core.errors import InventoryError
from fleet.core.units import DAY, parse_duration, parse_duration_flag


def test_playbook_fields_and_flags_share_the_parser() -> None:
    assert spec.parse_duration is parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1m30s", 90.0), ("1h", 3600.0), ("1d", DAY), ("12h30m", 45000.0),
    (30, 30.0), (2.5, 2.5),
])
def test_durations_in_every_unit(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration_flag(text) == seconds


@pytest.mark.parametrize(("text", "seconds"), [("30", 30.0), ("2.5", 2.5), (" 7 ", 7.0), ("0", 0.0), (".5", 0.5),
                                               ("30.", 30.0), ("1e3", 1000.0)])
def test_a_flag_s_bare_number_is_seconds_but_a_field_s_quoted_number_is_refused(text: str, seconds: float) -> None:
    assert parse_duration_flag(text) == seconds
    with pytest.raises(ValueError, match="expected a duration such as"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "message"), [
    ("-1", "a duration cannot be negative, got -1.0"),
    ("nan", "expected a duration such as 2s or 500ms, got nan"),
    ("1e6", "a duration can be at most 24h (86400s), got 1000000.0"),
    ("-1s", "expected a duration such as 2s, 500ms or 1m, got '-1s'"),
    ("1d1s", "a duration can be at most 24h (86400s), got '1d1s'"),
    ("1w", "expected a duration such as 2s, 500ms or 1m, got '1w'"),
    ("0.0001s", "durations are counted in whole milliseconds, got '0.0001s'"),
])
def test_bad_flag_durations_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration_flag(text)
    assert str(info.value) == message


def test_a_longer_maximum_is_named_in_days() -> None:
    assert parse_duration("3650d", maximum=3650 * DAY) == 3650 * DAY
    with pytest.raises(ValueError, match=r"at most 3650d \(315360000s\), got '3651d'"):
        parse_duration("3651d", maximum=3650 * DAY)


def _edge(tmp_path: Path, renew_before: str) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text("nodes:\n  lb1: {address: 10.0.0.1, roles: [lb]}\nedge:\n"
                    f"  acme: {{directory: 'https://acme.example/dir', renew_before: {renew_before}}}\n")
    return path


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * DAY), ("1d12h", 1.5 * DAY), ("90m", 5400.0),
                                               ("3600", 3600.0)])
def test_inventory_renew_before_reads_the_same_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      text: str, seconds: float) -> None:
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    inv = load_inventory(str(_edge(tmp_path, text)))
    assert inv.edge.acme is not None and inv.edge.acme.renew_before == seconds


def test_a_bad_renew_before_names_its_field_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(InventoryError) as info:
        load_inventory(str(_edge(tmp_path, "soon")))
    text = "\n".join(str(p) for p in info.value.problems)
    # The acme block's validator checks it, so the problem is reported on that block's line.
    assert ":4: edge.acme: expected a duration such as 2s, 500ms or 1m, got 'soon'" in text
