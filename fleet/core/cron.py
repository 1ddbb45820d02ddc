"""Cron schedules, pure: a 5-field expression (`minute hour day-of-month month day-of-week`) and the instants it
names in a time zone.

A *slot* is a whole UTC minute whose wall time in the schedule's zone matches the expression. So a wall time the
zone skips (spring forward) names no slot, and one it repeats (fall back) names two; every slot is one instant,
never ambiguous, which is what a scheduled job claims (`/fleet/jobs/NAME/slots/<ISO>`). Fields take `*`, `N`,
`A-B`, `*/S`, `A-B/S`, `N/S` and lists of those; months and days also by name (`jan`, `mon`); day-of-week 0 and
7 are Sunday. As in Vixie cron, when both day fields are restricted a day matching either one matches. The
macros `@yearly`, `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for their expressions.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
# How far ahead `next_after` looks: past it, an expression such as `0 0 31 2 *` (February 31st) never matches.
HORIZON_DAYS = 366 * 5

_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                                    "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day-of-month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS))
_ITEM = re.compile(r"^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/([0-9]+))?$")


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the values each field allows; `dom_star`/`dow_star` when that day field was `*`."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday … 6 = Saturday
    dom_star: bool
    dow_star: bool

    def day_matches(self, day: dt.date) -> bool:
        in_dom = day.day in self.days
        in_dow = (day.isoweekday() % 7) in self.weekdays
        if day.month not in self.months:
            return False
        if self.dom_star or self.dow_star:
            return in_dom and in_dow
        return in_dom or in_dow

    def matches(self, wall: dt.datetime) -> bool:
        """Whether a wall time (naive, or aware in the schedule's zone) matches, to the minute."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.day_matches(wall.date())


def _value(token: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    if token in names:
        return names[token]
    if not token.isdigit():
        raise ValueError(f"{field}: {token!r} is not a number" + (" or a name" if names else ""))
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{field}: {value} is out of range {low}-{high}")
    return value


def _field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for item in text.lower().split(","):
        m = _ITEM.match(item)
        if m is None:
            raise ValueError(f"{field}: cannot read {item!r} (expected *, N, A-B, */S, A-B/S or a list of them)")
        star, first, last, step = m.groups()
        if step is not None and int(step) == 0:
            raise ValueError(f"{field}: a step of 0 in {item!r}")
        if star:
            start, end = low, high
        else:
            start = _value(first, field, low, high, names)
            end = _value(last, field, low, high, names) if last is not None else (high if step else start)
            if end < start:
                raise ValueError(f"{field}: {item!r} runs backwards ({start} > {end})")
        out.update(range(start, end + 1, int(step) if step else 1))
    return frozenset(out)


def parse(expr: str) -> Cron:
    """The expression's schedule; ValueError says which field is wrong and why."""
    text = " ".join(expr.split())
    fields = _MACROS.get(text.lower(), text).split(" ")
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as "
                         f"@daily, got {len(fields) if text else 0} in {expr!r}")
    sets = [_field(f, name, low, high, names) for f, (name, low, high, names) in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(text, sets[0], sets[1], sets[2], sets[3], weekdays, fields[2] == "*", fields[4] == "*")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (`UTC`, `Europe/Berlin`); ValueError when there is none such."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as UTC or Europe/Berlin)") from exc


def _instants(wall: dt.datetime, tz: ZoneInfo) -> list[dt.datetime]:
    """The UTC instants whose wall time in `tz` is `wall` (naive): none in a gap, two in a repeated hour."""
    out = []
    for fold in (0, 1):
        utc = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if utc.astimezone(tz).replace(tzinfo=None) == wall and utc not in out:
            out.append(utc)
    return out


def _day_slots(cron: Cron, day: dt.date, tz: ZoneInfo) -> list[dt.datetime]:
    if not cron.day_matches(day):
        return []
    out: list[dt.datetime] = []
    for h in sorted(cron.hours):
        for m in sorted(cron.minutes):
            out += _instants(dt.datetime(day.year, day.month, day.day, h, m), tz)
    return sorted(out)


def _floor(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError("an aware datetime is needed")
    return t.astimezone(UTC).replace(second=0, microsecond=0)


def slots_between(cron: Cron, tz: ZoneInfo, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """Every slot `s` (UTC) with `after < s <= until`, oldest first."""
    lo, hi = after.astimezone(UTC), until.astimezone(UTC)
    if hi <= lo:
        return []
    # A wall date may hold instants of the UTC day before or after: look one local day either side.
    day = lo.astimezone(tz).date() - dt.timedelta(days=1)
    last = hi.astimezone(tz).date() + dt.timedelta(days=1)
    out: list[dt.datetime] = []
    while day <= last:
        out += [s for s in _day_slots(cron, day, tz) if lo < s <= hi]
        day += dt.timedelta(days=1)
    return sorted(set(out))


def next_after(cron: Cron, tz: ZoneInfo, t: dt.datetime) -> dt.datetime | None:
    """The first slot strictly after `t` (UTC), None when there is none within HORIZON_DAYS."""
    start = _floor(t)
    day = start.astimezone(tz).date() - dt.timedelta(days=1)
    for _ in range(HORIZON_DAYS):
        found = [s for s in _day_slots(cron, day, tz) if s > t.astimezone(UTC)]
        if found:
            return min(found)
        day += dt.timedelta(days=1)
    return None


def latest_at(cron: Cron, tz: ZoneInfo, t: dt.datetime, since: dt.datetime) -> dt.datetime | None:
    """The newest slot `s` with `since < s <= t`, None when there is none (the slot a watcher runs now)."""
    found = slots_between(cron, tz, since, t)
    return found[-1] if found else None


def slot_name(slot: dt.datetime) -> str:
    """A slot's key segment: its UTC minute in ISO 8601 (`2026-12-05T03:00Z`), sorting by time."""
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


# A slot is run on time when a controller sees it this long after it began; later, `catch_up` decides.
ON_TIME = dt.timedelta(seconds=60)
# At most this many missed slots are recorded at once (a schedule every minute left for a month would be 43200).
MISSED_KEPT = 100


@dataclass(frozen=True)
class Due:
    """What a controller does with a schedule now: `run` this slot (None: nothing) and record `missed` ones."""

    run: dt.datetime | None
    missed: tuple[dt.datetime, ...]


def due(cron: Cron, tz: ZoneInfo, now: dt.datetime, last: dt.datetime | None, catch_up: str) -> Due:
    """The slots since `last` (the newest one claimed; None: none ever was, so only a slot on time counts): the
    newest is run when it is on time (within ON_TIME of its start), or late with `catch_up: last`; every other
    one is missed (at most the newest MISSED_KEPT of them)."""
    since = last if last is not None else now - ON_TIME
    slots = slots_between(cron, tz, since, now)
    if not slots:
        return Due(None, ())
    newest = slots[-1]
    if now - newest <= ON_TIME or (catch_up == "last" and last is not None):
        return Due(newest, tuple(slots[:-1][-MISSED_KEPT:]))
    return Due(None, tuple(slots[-MISSED_KEPT:]))


def parse_slot(name: str) -> dt.datetime:
    """`slot_name`'s inverse."""
    return dt.datetime.strptime(name, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
