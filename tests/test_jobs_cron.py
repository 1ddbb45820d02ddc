"""The cron parser (fleet.core.cron), checked against a brute-force walk over every UTC minute."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import cron

UTC = dt.UTC
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


def brute(c: cron.Cron, tz: str, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """Every whole UTC minute in (after, until] whose wall time in `tz` matches: the definition of a slot."""
    zone = cron.zone(tz)
    t = after.replace(second=0, microsecond=0) + cron.MINUTE
    out = []
    while t <= until:
        if c.matches(t.astimezone(zone)):
            out.append(t)
        t += cron.MINUTE
    return out


def _item(draw: st.DrawFn, low: int, high: int) -> str:
    kind = draw(st.sampled_from(["star", "n", "range", "step", "rangestep"]))
    a = draw(st.integers(low, high))
    b = draw(st.integers(a, high))
    s = draw(st.integers(1, max(1, (high - low) // 2)))
    return {"star": "*", "n": str(a), "range": f"{a}-{b}", "step": f"*/{s}", "rangestep": f"{a}-{b}/{s}"}[kind]


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = []
    for low, high in ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7)):
        fields.append(",".join(_item(draw, low, high) for _ in range(draw(st.integers(1, 2)))))
    return " ".join(fields)


@settings(max_examples=150, deadline=None)
@given(expr=expressions(), tz=st.sampled_from(ZONES),
       start=st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2027, 12, 1)))
def test_slots_are_the_minutes_a_brute_force_walk_finds(expr: str, tz: str, start: dt.datetime) -> None:
    c = cron.parse(expr)
    after = start.replace(tzinfo=UTC)
    until = after + dt.timedelta(days=2)
    expected = brute(c, tz, after, until)
    assert cron.slots_between(c, cron.zone(tz), after, until) == expected
    nxt = cron.next_after(c, cron.zone(tz), after)
    if expected:
        assert nxt == expected[0]
    else:
        assert nxt is None or nxt > until


@pytest.mark.parametrize("start", [dt.datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # Berlin springs forward at 01:00Z
                                   dt.datetime(2026, 10, 24, 23, 59, tzinfo=UTC)])  # and falls back at 01:00Z
def test_dst_days_in_berlin_match_the_walk(start: dt.datetime) -> None:
    c = cron.parse("*/15 2 * * *")
    until = start + dt.timedelta(hours=4)
    got = cron.slots_between(c, cron.zone("Europe/Berlin"), start, until)
    assert got == brute(c, "Europe/Berlin", start, until)
    # 02:xx does not exist on the spring day and happens twice on the autumn day.
    assert len(got) == (0 if start.month == 3 else 8)  # 00:00Z-01:45Z: 02:00-02:45 twice


def test_every_minute_and_names() -> None:
    c = cron.parse("* * * * *")
    t = dt.datetime(2026, 12, 5, 3, 0, 30, tzinfo=UTC)
    assert cron.next_after(c, cron.zone("UTC"), t) == dt.datetime(2026, 12, 5, 3, 1, tzinfo=UTC)
    weekdays = cron.parse("0 9 * jan-mar mon-fri")
    assert weekdays.months == frozenset({1, 2, 3}) and weekdays.weekdays == frozenset({1, 2, 3, 4, 5})
    assert cron.parse("0 0 * * 7").weekdays == frozenset({0})
    assert cron.parse("@daily") == cron.parse("0 0 * * *").__class__(**{**cron.parse("0 0 * * *").__dict__,
                                                                       "text": "@daily"})
    assert cron.slot_name(dt.datetime(2026, 12, 5, 3, 0, tzinfo=UTC)) == "2026-12-05T03:00Z"


def test_day_fields_either_when_both_restricted() -> None:
    c = cron.parse("0 0 1 * mon")  # the 1st, and every Monday
    days = [s.date() for s in cron.slots_between(c, cron.zone("UTC"), dt.datetime(2026, 6, 1, tzinfo=UTC),
                                                 dt.datetime(2026, 7, 1, 1, tzinfo=UTC))]
    assert days == [dt.date(2026, 6, d) for d in (8, 15, 22, 29)] + [dt.date(2026, 7, 1)]


@pytest.mark.parametrize(("expr", "message"), [
    ("* * * *", "expected 5 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 5-2 * * *", "hour: '5-2' runs backwards"),
    ("*/0 * * * *", "minute: a step of 0"),
    ("* * * foo *", "month: 'foo' is not a number or a name"),
    ("* * * * 1;2", "day-of-week: cannot read"),
])
def test_bad_expressions_say_which_field(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        cron.parse(expr)


def test_never_matching_expression_has_no_next_slot() -> None:
    assert cron.next_after(cron.parse("0 0 31 2 *"), cron.zone("UTC"), dt.datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_unknown_zone_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        cron.zone("Mars/Olympus")


def test_due_runs_the_newest_slot_and_records_the_others_missed() -> None:
    c, utc = cron.parse("*/10 * * * *"), cron.zone("UTC")
    now = dt.datetime(2026, 12, 5, 3, 0, 20, tzinfo=UTC)
    # Never claimed: only the slot on time.
    assert cron.due(c, utc, now, None, "last") == cron.Due(dt.datetime(2026, 12, 5, 3, 0, tzinfo=UTC), ())
    # Claimed up to 02:30: 02:40 and 02:50 missed, 03:00 runs.
    last = dt.datetime(2026, 12, 5, 2, 30, tzinfo=UTC)
    d = cron.due(c, utc, now, last, "none")
    assert d.run == dt.datetime(2026, 12, 5, 3, 0, tzinfo=UTC) and [s.minute for s in d.missed] == [40, 50]
    # Late: `last` runs the newest late, `none` misses it too.
    later = now + dt.timedelta(minutes=5)
    assert cron.due(c, utc, later, last, "last").run == dt.datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
    late = cron.due(c, utc, later, last, "none")
    assert late.run is None and len(late.missed) == 3
    # Nothing new since the claimed slot.
    assert cron.due(c, utc, now, dt.datetime(2026, 12, 5, 3, 0, tzinfo=UTC), "last") == cron.Due(None, ())
    assert cron.parse_slot(cron.slot_name(now.replace(second=0))) == now.replace(second=0)
