"""The `calendar` agent: list and create events in an iCalendar (.ics) file in the workspace.

The file is `agents.calendar_path` (relative to the first workspace root) unless a step
names another `.ics` inside the workspace. Recurring events (RRULE, minus EXDATE) are
expanded into the occurrences that fall in the range asked for. Creating an event reads
the file, adds a VEVENT and replaces the file atomically, one creation at a time per
agent; it is not idempotent (every call adds an event with a new UID). Event texts are
untrusted data and come back as values only.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import icalendar
import trio
from dateutil.rrule import rrulestr  # type: ignore[import-untyped]

from agents.errors import FileTooLarge, InvalidParameters, ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._clock import Moment, as_utc, iso, parse_moment
from agents.tools._context import AgentContext, positive_or
from agents.tools._workspace import (
    DEFAULT_MAX_FILE_BYTES,
    Workspace,
    read_bytes,
    write_replace,
)

DEFAULT_CALENDAR = "calendar.ics"
DEFAULT_RANGE = dt.timedelta(days=30)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_RECURRENCE_STEPS = 50_000
MAX_TEXT_CHARS = 2000
PRODID = "-//autoagent//calendar agent//EN"

_MOMENT = {"type": "string", "description": "ISO 8601 date or date-time, or now / today"}
_CALENDAR = {
    "type": "string",
    "description": "an .ics file in the workspace; default the configured one",
}

LIST_EVENTS = ToolSpec(
    agent="calendar",
    action="list_events",
    description="List the calendar's events in a date range (default: the next 30 days).",
    parameters={
        "type": "object",
        "properties": {
            "start": _MOMENT | {"description": "range start; default now"},
            "end": _MOMENT | {"description": "range end; default 30 days after the start"},
            "limit": {"type": "integer", "description": f"most events to return (1-{MAX_LIMIT})"},
            "calendar": _CALENDAR,
        },
        "required": [],
    },
    idempotent=True,
    keywords=("calendar", "events", "agenda", "appointments", "upcoming", "busy"),
)
CREATE_EVENT = ToolSpec(
    agent="calendar",
    action="create_event",
    description="Add an event (title, start, end or duration) to the calendar file.",
    parameters={
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "start": _MOMENT,
            "end": _MOMENT | {"description": "default: start plus duration_minutes"},
            "duration_minutes": {"type": "number", "description": "default 60 (all day: 1 day)"},
            "location": {"type": "string"},
            "description": {"type": "string"},
            "calendar": _CALENDAR,
        },
        "required": ["title", "start"],
    },
    idempotent=False,
    keywords=("event", "meeting", "appointment", "schedule", "book", "add"),
)


class _CalendarTool(Tool):
    def __init__(self, workspace: Workspace, default_file: str, max_bytes: int) -> None:
        self._workspace = workspace
        self._default_file = default_file
        self._max_bytes = max_bytes

    def _file(self, parameters: Mapping[str, Any]) -> Path:
        return self._workspace.resolve(parameters.get("calendar") or self._default_file)

    def _load(self, real: Path) -> icalendar.Calendar | None:
        """The calendar in `real`, or None when the file does not exist yet."""
        if not real.exists():
            return None
        data, size = read_bytes(real, self._max_bytes + 1)
        if size > self._max_bytes:
            raise FileTooLarge(real.name, size, self._max_bytes)
        try:
            return icalendar.Calendar.from_ical(data)
        except ValueError as exc:
            raise ToolError(f"{real.name} is not a valid iCalendar file: {exc}") from exc


class ListEventsTool(_CalendarTool):
    spec = LIST_EVENTS

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        start = as_utc(parse_moment(parameters.get("start") or "now", "start"))
        end = (
            as_utc(parse_moment(parameters["end"], "end"))
            if parameters.get("end")
            else start + DEFAULT_RANGE
        )
        if end <= start:
            raise InvalidParameters("calendar.list_events: the end must be after the start")
        limit = parameters.get("limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidParameters(f"limit must be 1 to {MAX_LIMIT}, got {limit}")
        return await trio.to_thread.run_sync(self._list, parameters, start, end, limit)

    def _list(
        self, parameters: Mapping[str, Any], start: dt.datetime, end: dt.datetime, limit: int
    ) -> dict[str, Any]:
        real = self._file(parameters)
        calendar = self._load(real)
        found, unreadable = ([], 0) if calendar is None else _events_between(calendar, start, end)
        events = [event for _, event in found[:limit]]
        return {
            "calendar": self._workspace.display(real),
            "start": iso(start),
            "end": iso(end),
            "events": events,
            "count": len(events),
            "truncated": len(found) > limit,
            "unreadable_events": unreadable,
        }


def _events_between(
    calendar: icalendar.Calendar, start: dt.datetime, end: dt.datetime
) -> tuple[list[tuple[dt.datetime, dict[str, Any]]], int]:
    """Occurrences in the range, by start; and how many events were unreadable."""
    found: list[tuple[dt.datetime, dict[str, Any]]] = []
    unreadable = 0
    for event in calendar.events:
        try:
            occurrences = list(_occurrences(event, start, end))
        except (ValueError, TypeError, OverflowError):
            unreadable += 1  # no DTSTART, an end before its start...: not listable
            continue
        found.extend((as_utc(first), _describe(event, first, last)) for first, last in occurrences)
    found.sort(key=lambda item: item[0])
    return found, unreadable


def _occurrences(
    event: icalendar.Event, start: dt.datetime, end: dt.datetime
) -> Iterator[tuple[Moment, Moment]]:
    """(start, end) of each occurrence overlapping [start, end); RRULE expanded, EXDATE out."""
    first, last = event.start, event.end
    duration = last - first
    for moment in _recurrences(event, first):
        occurrence_start, occurrence_end = as_utc(moment), as_utc(moment + duration)
        if occurrence_start >= end:
            return
        if occurrence_end > start or occurrence_start >= start:
            yield moment, moment + duration


def _recurrences(event: icalendar.Event, first: Moment) -> Iterator[Moment]:
    """Start of every occurrence in order: the first alone without an RRULE."""
    rule = event.get("RRULE")
    if rule is None:
        yield first
        return
    all_day = not isinstance(first, dt.datetime)
    anchor = dt.datetime(first.year, first.month, first.day) if all_day else first
    try:
        recurrence = rrulestr(_rule_text(rule), dtstart=anchor)
    except (ValueError, TypeError):
        yield first  # a rule dateutil cannot read: the first occurrence is still real
        return
    excluded = _exdates(event)
    for moment in itertools.islice(recurrence, MAX_RECURRENCE_STEPS):
        if as_utc(moment) not in excluded:
            yield moment.date() if all_day else moment


def _rule_text(rule: Any) -> str:
    text = rule.to_ical()
    return text.decode() if isinstance(text, bytes) else str(text)


def _exdates(event: icalendar.Event) -> set[dt.datetime]:
    values = event.get("EXDATE")
    lists = values if isinstance(values, list) else [values] if values is not None else []
    return {as_utc(d.dt) for exdate in lists for d in exdate.dts}


def _describe(event: icalendar.Event, first: Moment, last: Moment) -> dict[str, Any]:
    described: dict[str, Any] = {
        "uid": str(event.get("UID", "")),
        "title": str(event.get("SUMMARY", "")),
        "start": iso(first),
        "end": iso(last),
        "all_day": not isinstance(first, dt.datetime),
    }
    for key, name in (("LOCATION", "location"), ("DESCRIPTION", "description")):
        if key in event:
            described[name] = str(event[key])[:MAX_TEXT_CHARS]
    if "RRULE" in event:
        described["recurrence"] = _rule_text(event["RRULE"])
    return described


class CreateEventTool(_CalendarTool):
    spec = CREATE_EVENT

    def __init__(self, workspace: Workspace, default_file: str, max_bytes: int) -> None:
        super().__init__(workspace, default_file, max_bytes)
        self._lock = trio.Lock()

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        event, described = _new_event(parameters)
        async with self._lock:
            path = await trio.to_thread.run_sync(self._add, parameters, event)
        return described | {"calendar": path}

    def _add(self, parameters: Mapping[str, Any], event: icalendar.Event) -> str:
        real = self._file(parameters)
        calendar = self._load(real) or icalendar.Calendar.new(prodid=PRODID)
        calendar.add_component(event)
        data = calendar.to_ical()
        if len(data) > self._max_bytes:
            raise FileTooLarge(f"{real.name} with the new event", len(data), self._max_bytes)
        write_replace(real, data)
        return self._workspace.display(real)


def _new_event(parameters: Mapping[str, Any]) -> tuple[icalendar.Event, dict[str, Any]]:
    title = " ".join(str(parameters["title"]).split())[:200]
    if not title:
        raise InvalidParameters("calendar.create_event: the title is empty")
    start = _stored(parse_moment(parameters["start"], "start"))
    end = _end(parameters, start)
    uid = f"{uuid.uuid4()}@autoagent"
    location = str(parameters.get("location") or "")[:MAX_TEXT_CHARS] or None
    description = str(parameters.get("description") or "")[:MAX_TEXT_CHARS] or None
    event = icalendar.Event.new(
        summary=title, start=start, end=end, uid=uid, location=location, description=description
    )
    texts = {"location": location, "description": description}
    texts = {key: value for key, value in texts.items() if value}
    return event, {"uid": uid, "title": title, "start": iso(start), "end": iso(end)} | texts


def _stored(moment: Moment) -> Moment:
    """Times with an offset are stored in UTC (no VTIMEZONE needed); others as given."""
    if isinstance(moment, dt.datetime) and moment.tzinfo is not None:
        return moment.astimezone(dt.UTC)
    return moment


def _end(parameters: Mapping[str, Any], start: Moment) -> Moment:
    all_day = not isinstance(start, dt.datetime)
    if parameters.get("end"):
        end = _stored(parse_moment(parameters["end"], "end"))
        if isinstance(end, dt.datetime) == all_day:
            raise InvalidParameters(
                "calendar.create_event: start and end must both be dates or both date-times"
            )
    else:
        end = start + _length(parameters, all_day)
    if as_utc(end) <= as_utc(start):
        raise InvalidParameters("calendar.create_event: the end must be after the start")
    return end


def _length(parameters: Mapping[str, Any], all_day: bool) -> dt.timedelta:
    """`duration_minutes` (default an hour, or a day for an all-day event)."""
    minutes = parameters.get("duration_minutes", 24 * 60 if all_day else 60)
    if not 0 < minutes <= 366 * 24 * 60:
        raise InvalidParameters("duration_minutes must be more than 0 and at most a year")
    if all_day:
        return dt.timedelta(days=max(1, round(minutes / 1440)))
    return dt.timedelta(minutes=minutes)


class CalendarAgent(Agent):
    name = "calendar"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (LIST_EVENTS, CREATE_EVENT)

    def __init__(self, context: AgentContext) -> None:
        workspace = Workspace.of(context.workspace_roots)
        default_file = context.settings.calendar_path or DEFAULT_CALENDAR
        max_bytes = int(positive_or(context.settings.max_file_bytes, DEFAULT_MAX_FILE_BYTES))
        self._tools: dict[str, Tool] = {
            "list_events": ListEventsTool(workspace, default_file, max_bytes),
            "create_event": CreateEventTool(workspace, default_file, max_bytes),
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
