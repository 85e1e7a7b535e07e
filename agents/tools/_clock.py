"""The `clock` agent: `now` in any IANA time zone, and date arithmetic.

`add` moves a date or time by weeks, days, hours and minutes; `difference` measures
the time between two. Dates are ISO 8601 (`2024-03-01`, `2024-03-01T09:30:00+01:00`)
or `now` / `today` (UTC). A time without an offset counts as UTC when it meets one with
an offset, so any two moments can be compared.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Mapping
from typing import Any

from agents.errors import InvalidParameters, ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid

Moment = dt.date | dt.datetime

NOW = ToolSpec(
    agent="clock",
    action="now",
    description="The current date and time in a time zone (IANA name like Asia/Tokyo).",
    parameters={
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "IANA zone, default UTC"}},
        "required": [],
    },
    idempotent=True,
    keywords=("time", "date", "clock", "now", "today", "timezone"),
)


_MOMENT = {
    "type": "string",
    "description": "ISO 8601 date or date-time (2024-03-01, 2024-03-01T09:30:00+01:00), or now",
}
_AMOUNT = {"type": "number", "description": "negative to go back"}
UNITS = ("weeks", "days", "hours", "minutes")

ADD = ToolSpec(
    agent="clock",
    action="add",
    description="Add (or subtract) weeks, days, hours or minutes to a date or date-time.",
    parameters={
        "type": "object",
        "properties": {
            "start": _MOMENT | {"description": _MOMENT["description"] + "; default now"},
            **{unit: _AMOUNT for unit in UNITS},
        },
        "required": [],
    },
    idempotent=True,
    keywords=("add", "plus", "minus", "later", "after", "before", "ago", "days", "weeks"),
)
DIFFERENCE = ToolSpec(
    agent="clock",
    action="difference",
    description="The time between two dates or date-times, in days, hours and seconds.",
    parameters={
        "type": "object",
        "properties": {"start": _MOMENT, "end": _MOMENT},
        "required": ["start", "end"],
    },
    idempotent=True,
    keywords=("difference", "between", "until", "since", "elapsed", "long", "days"),
)


def parse_moment(value: str, parameter: str) -> Moment:
    """An ISO 8601 date or date-time, or `now` / `today` (UTC); `InvalidParameters` if not."""
    text = value.strip()
    if text.lower() == "now":
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    if text.lower() == "today":
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(text) if len(text) <= 10 else dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameters(
            f"{parameter}: not a date or time: {value!r} "
            "(use ISO 8601, e.g. 2024-03-01 or 2024-03-01T09:30:00+01:00)"
        ) from None


def as_utc(moment: Moment) -> dt.datetime:
    """A comparable instant: a date is its midnight, a time without offset is UTC."""
    if not isinstance(moment, dt.datetime):
        return dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def iso(moment: Moment) -> str:
    """ISO 8601 text: a date as a date, a time to the second."""
    if isinstance(moment, dt.datetime):
        return moment.isoformat(timespec="seconds")
    return moment.isoformat()


def shift(start: Moment, offset: dt.timedelta) -> Moment:
    """`start` moved by `offset`; a date stays a date when the offset is whole days."""
    if not isinstance(start, dt.datetime) and offset % dt.timedelta(days=1):
        start = dt.datetime(start.year, start.month, start.day)
    try:
        return start + offset
    except OverflowError:
        raise ToolError("the result is outside the supported dates (years 1 to 9999)") from None


def _offset(parameters: Mapping[str, Any]) -> dt.timedelta:
    amounts = {unit: parameters.get(unit, 0) for unit in UNITS}
    for unit, amount in amounts.items():
        if not math.isfinite(amount):
            raise InvalidParameters(f"clock.add: {unit} must be a finite number")
    try:
        return dt.timedelta(**amounts)
    except OverflowError:
        raise ToolError("the offset is too large (at most 999999999 days)") from None


def describe_span(span: dt.timedelta) -> str:
    """`3 days, 4 hours` (negative spans get a leading minus)."""
    seconds = int(abs(span.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{n} {unit}{'' if n == 1 else 's'}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (seconds, "second"))
        if n
    ]
    text = ", ".join(parts) or "0 seconds"
    return f"-{text}" if span < dt.timedelta(0) else text


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
        raise InvalidParameters(
            f"unknown time zone {name!r} (use an IANA name like Europe/Paris)"
        ) from None


def describe(moment: dt.datetime) -> dict[str, Any]:
    return {
        "timezone": str(moment.tzinfo),
        "iso": moment.isoformat(timespec="seconds"),
        "date": moment.date().isoformat(),
        "time": moment.strftime("%H:%M:%S"),
        "weekday": moment.strftime("%A"),
        "utc_offset": moment.strftime("%z"),
    }


class NowTool(Tool):
    spec = NOW

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        tz = zone(parameters.get("timezone") or "UTC")
        return describe(dt.datetime.now(tz))


class AddTool(Tool):
    spec = ADD

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        start = parse_moment(parameters.get("start") or "now", "start")
        result = shift(start, _offset(parameters))
        return {"start": iso(start), "result": iso(result), "weekday": result.strftime("%A")}


class DifferenceTool(Tool):
    spec = DIFFERENCE

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        start = parse_moment(parameters["start"], "start")
        end = parse_moment(parameters["end"], "end")
        span = as_utc(end) - as_utc(start)
        seconds = span.total_seconds()
        return {
            "start": iso(start),
            "end": iso(end),
            "days": round(seconds / 86400, 6),
            "hours": round(seconds / 3600, 6),
            "seconds": seconds,
            "text": describe_span(span),
        }


class ClockAgent(Agent):
    name = "clock"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (NOW, ADD, DIFFERENCE)

    def __init__(self, context: object = None) -> None:
        self._tools: dict[str, Tool] = {
            "now": NowTool(),
            "add": AddTool(),
            "difference": DifferenceTool(),
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
