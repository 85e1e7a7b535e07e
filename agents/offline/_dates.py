"""Dates, times, ranges and durations named in plain English, for the offline planner.

A real model turns "tomorrow at 9am" into an ISO date-time because its prompt carries
the current time; the offline model does the same with these deterministic readers,
relative to a given `now` (an aware datetime). Each understands a small, documented
set of phrasings and answers None for anything else, so the planner can say it found
no value rather than guess:

- moments: ISO dates and date-times; today, tomorrow, yesterday; (on|this|next) <weekday>;
  in N minutes/hours/days/weeks; each optionally with a time of day: at 9am, 9:30 pm,
  14:00, noon, midnight.
- ranges: ISO dates (one day, or "from A to B" with both days included); today,
  tomorrow, yesterday, this/next/last week, this/next/last month,
  (last|past|previous) N days/weeks/hours, (next|coming) N days/weeks/hours.
- offsets: N units after/later/from now/before/ago/earlier, plus/minus N units.
- durations: for N minutes/hours, for an hour, for half an hour.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
UNITS_MINUTES = {"minute": 1.0, "hour": 60.0, "day": 1440.0, "week": 10080.0}
_NUMBER = r"(\d+(?:\.\d+)?|an?|one|two|three|four|five|six|seven|eight|nine|ten|twelve)"
_UNIT = r"(minute|min|hour|hr|day|week)s?"
_NUMBER_WORDS = {
    "a": 1.0,
    "an": 1.0,
    "one": 1.0,
    "two": 2.0,
    "three": 3.0,
    "four": 4.0,
    "five": 5.0,
    "six": 6.0,
    "seven": 7.0,
    "eight": 8.0,
    "nine": 9.0,
    "ten": 10.0,
    "twelve": 12.0,
}
_ISO = re.compile(r"\b(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)([+-]\d{2}:\d{2}|Z)?)?\b")
_TIME_12H = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\.?(?![a-z])", re.IGNORECASE)
_TIME_24H = re.compile(r"\b(?:at\s+)?([01]?\d|2[0-3]):([0-5]\d)\b(?!:\d)")
_IN = re.compile(rf"\bin\s+{_NUMBER}\s+{_UNIT}\b", re.IGNORECASE)
_OFFSET = re.compile(
    rf"(?:\b(plus|minus|add|subtract)\s+)?\b{_NUMBER}\s+{_UNIT}\b"
    r"(?:\s+(after|later|from|before|ago|earlier|prior))?",
    re.IGNORECASE,
)
_DURATION = re.compile(rf"\bfor\s+(?:{_NUMBER}\s+{_UNIT}|(half\s+an\s+hour))\b", re.IGNORECASE)
_SPAN = re.compile(rf"\b(last|past|previous|next|coming)\s+{_NUMBER}\s+{_UNIT}\b", re.IGNORECASE)
_RELATIVE_UNIT = re.compile(r"\b(this|next|last|previous)\s+(week|month)\b", re.IGNORECASE)
_WEEKDAY = re.compile(rf"\b(?:(on|this|next|coming)\s+)?({'|'.join(WEEKDAYS)})\b", re.IGNORECASE)


def iso_moments(text: str) -> list[str]:
    """ISO dates and date-times written in `text`, in order, as written."""
    return [match.group(0).replace(" ", "T") for match in _ISO.finditer(text)]


def moment(text: str, now: datetime) -> str | None:
    """The date or date-time a clause names, as ISO: a date-time when a time of day or
    a relative amount is given, a date otherwise; None when it names none."""
    written = iso_moments(text)
    if written and "T" in written[0]:
        return written[0]
    relative = _in_amount(text, now)
    if relative is not None and not written:
        return relative.isoformat(timespec="minutes")
    if written and _written_day(written[0]) is None:
        return None  # looks like a date but is none (2026-02-30): no guessing
    day = _written_day(written[0]) if written else _day(text, now.date())
    at = time_of_day(text)
    if day is None and at is None:
        return None
    day = day or now.date()
    if at is None:
        return day.isoformat()
    return datetime.combine(day, at, now.tzinfo).isoformat(timespec="minutes")


def time_of_day(text: str) -> time | None:
    """9am, 9:30 pm, at 14:00, noon, midnight; None when no time of day is named."""
    lowered = text.lower()
    if re.search(r"\bnoon\b|\bmidday\b", lowered):
        return time(12, 0)
    if re.search(r"\bmidnight\b", lowered):
        return time(0, 0)
    match = _TIME_12H.search(text)
    if match and 1 <= int(match.group(1)) <= 12:
        hour = int(match.group(1)) % 12 + (12 if match.group(3).lower() == "p" else 0)
        return time(hour, int(match.group(2) or 0))
    match = _TIME_24H.search(_ISO.sub(" ", text))
    if match:
        return time(int(match.group(1)), int(match.group(2)))
    return None


def date_range(text: str, now: datetime) -> tuple[str, str] | None:
    """[start, end) of a named period as ISO date-times in `now`'s zone, or None."""
    span = _span(text, now)
    if span is not None:
        return span[0].isoformat(timespec="seconds"), span[1].isoformat(timespec="seconds")
    return None


def offset(text: str) -> dict[str, float]:
    """Signed amounts per unit (weeks, days, hours, minutes) of "N units after/before"."""
    amounts: dict[str, float] = {}
    for match in _OFFSET.finditer(text):
        verb, number, unit, direction = match.groups()
        sign = -1.0 if (verb or direction or "").lower() in _BACKWARDS else 1.0
        key = _unit(unit) + "s"
        amounts[key] = amounts.get(key, 0.0) + sign * _number(number)
    return amounts


def duration_minutes(text: str) -> float | None:
    """Minutes of "for 30 minutes", "for 2 hours", "for an hour", "for half an hour"."""
    match = _DURATION.search(text)
    if match is None:
        return None
    if match.group(3):
        return 30.0
    return _number(match.group(1)) * UNITS_MINUTES[_unit(match.group(2))]


_BACKWARDS = frozenset({"minus", "subtract", "before", "ago", "earlier", "prior"})


def _number(word: str) -> float:
    return _NUMBER_WORDS.get(word.lower()) or float(word)


def _unit(word: str) -> str:
    return {"min": "minute", "hr": "hour"}.get(word.lower(), word.lower())


def _in_amount(text: str, now: datetime) -> datetime | None:
    match = _IN.search(text)
    if match is None:
        return None
    minutes = _number(match.group(1)) * UNITS_MINUTES[_unit(match.group(2))]
    return now + timedelta(minutes=minutes)


def _written_day(iso: str) -> date | None:
    try:
        return date.fromisoformat(iso)
    except ValueError:  # 2026-13-45: not a date, whatever it looks like
        return None


def _day(text: str, today: date) -> date | None:
    lowered = text.lower()
    for word, days in (("day after tomorrow", 2), ("tomorrow", 1), ("yesterday", -1)):
        if re.search(rf"\b{word}\b", lowered):
            return today + timedelta(days=days)
    if re.search(r"\b(today|tonight)\b", lowered):
        return today
    match = _WEEKDAY.search(text)
    if match is None:
        return None
    ahead = (WEEKDAYS.index(match.group(2).lower()) - today.weekday()) % 7
    if ahead == 0 and (match.group(1) or "").lower() in ("next", "coming"):
        ahead = 7
    return today + timedelta(days=ahead)


def _span(text: str, now: datetime) -> tuple[datetime, datetime] | None:
    written = _written_days(text, now)
    if written is not None:
        return written
    match = _SPAN.search(text)
    if match is not None:
        amount = timedelta(minutes=_number(match.group(2)) * UNITS_MINUTES[_unit(match.group(3))])
        if match.group(1).lower() in ("next", "coming"):
            return now, now + amount
        return now - amount, now
    match = _RELATIVE_UNIT.search(text)
    if match is not None:
        return _calendar_unit(match.group(1).lower(), match.group(2).lower(), now)
    day = _day(text, now.date())
    if day is None:
        return None
    start = datetime.combine(day, time(0, 0), now.tzinfo)
    return start, start + timedelta(days=1)


def _written_days(text: str, now: datetime) -> tuple[datetime, datetime] | None:
    """The days from the first to the last ISO date written ("from 2026-12-01 to
    2026-12-31": both included), the one day written, or from it to now ("since
    2026-12-01"); None when a time of day is written with it (a moment, not a period)
    or no date is."""
    days = [_written_day(m.group(1)) for m in _ISO.finditer(text) if not m.group(2)]
    found = [d for d in days if d is not None]
    if not found or len(found) != len(_ISO.findall(text)) or time_of_day(text) is not None:
        return None
    start = datetime.combine(found[0], time(0, 0), now.tzinfo)
    if len(found) == 1 and re.search(r"\b(since|after)\b", text, re.IGNORECASE):
        return start, max(start, now)
    end = datetime.combine(max(found[-1], found[0]) + timedelta(days=1), time(0, 0), now.tzinfo)
    return start, end


def _calendar_unit(which: str, unit: str, now: datetime) -> tuple[datetime, datetime]:
    """This/next/last week (Monday to Monday) or month, from midnight."""
    step = {"this": 0, "next": 1}.get(which, -1)
    if unit == "week":
        monday = now.date() - timedelta(days=now.weekday()) + timedelta(weeks=step)
        start = datetime.combine(monday, time(0, 0), now.tzinfo)
        return start, start + timedelta(weeks=1)
    months = now.year * 12 + now.month - 1 + step
    start = datetime(months // 12, months % 12 + 1, 1, tzinfo=now.tzinfo)
    following = months + 1
    return start, datetime(following // 12, following % 12 + 1, 1, tzinfo=now.tzinfo)
