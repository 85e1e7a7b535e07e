"""The calendar agent on real .ics files: create events, list a range, recurrences, errors."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import icalendar
import pytest
import trio

from agents.errors import InvalidParameters, ToolError
from agents.tools._calendar import CalendarAgent
from agents.tools._workspace import FileTooLarge, PathNotAllowed

from .conftest import TIMEOUT_S, call, context, names

MARCH = {"start": "2024-03-01", "end": "2024-04-01"}

RECURRING = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:standup@test
SUMMARY:Standup
DTSTART;TZID=Europe/Paris:20240304T093000
DTEND;TZID=Europe/Paris:20240304T094500
RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10
EXDATE;TZID=Europe/Paris:20240318T093000
END:VEVENT
BEGIN:VEVENT
UID:holiday@test
SUMMARY:Holiday
DTSTART;VALUE=DATE:20240329
DTEND;VALUE=DATE:20240402
END:VEVENT
BEGIN:VEVENT
UID:broken@test
SUMMARY:No start
END:VEVENT
END:VCALENDAR
"""


@pytest.fixture
def calendar(workspace: Path) -> CalendarAgent:
    return CalendarAgent(context(workspace))


async def test_create_event_writes_the_ics_file(calendar: CalendarAgent, workspace: Path) -> None:
    created = await call(
        calendar,
        "create_event",
        title="Dentist",
        start="2024-03-05T14:00:00+01:00",
        location="Main St 1",
    )
    assert created["start"] == "2024-03-05T13:00:00+00:00"
    assert created["end"] == "2024-03-05T14:00:00+00:00"
    assert created["calendar"] == "calendar.ics"
    assert created["uid"].endswith("@autoagent")
    parsed = icalendar.Calendar.from_ical((workspace / "calendar.ics").read_bytes())
    [event] = parsed.events
    assert (str(event["SUMMARY"]), str(event["LOCATION"]), str(event["UID"])) == (
        "Dentist",
        "Main St 1",
        created["uid"],
    )


async def test_created_events_are_listed_in_order(calendar: CalendarAgent) -> None:
    await call(calendar, "create_event", title="Late", start="2024-03-20T10:00:00Z")
    await call(
        calendar,
        "create_event",
        title="Early",
        start="2024-03-02T10:00:00Z",
        end="2024-03-02T12:00:00Z",
    )
    await call(calendar, "create_event", title="April", start="2024-04-02T10:00:00Z")
    listed = await call(calendar, "list_events", **MARCH)
    assert [(e["title"], e["start"], e["end"]) for e in listed["events"]] == [
        ("Early", "2024-03-02T10:00:00+00:00", "2024-03-02T12:00:00+00:00"),
        ("Late", "2024-03-20T10:00:00+00:00", "2024-03-20T11:00:00+00:00"),
    ]
    assert (listed["count"], listed["truncated"]) == (2, False)


async def test_all_day_events(calendar: CalendarAgent) -> None:
    created = await call(
        calendar, "create_event", title="Trip", start="2024-03-10", duration_minutes=2880
    )
    assert (created["start"], created["end"]) == ("2024-03-10", "2024-03-12")
    listed = await call(calendar, "list_events", start="2024-03-11", end="2024-03-11T12:00:00")
    assert listed["events"] == [
        {
            "uid": created["uid"],
            "title": "Trip",
            "start": "2024-03-10",
            "end": "2024-03-12",
            "all_day": True,
        }
    ]


async def test_recurring_events_are_expanded_without_exdates(
    calendar: CalendarAgent, workspace: Path
) -> None:
    (workspace / "calendar.ics").write_text(RECURRING)
    listed = await call(calendar, "list_events", **MARCH)
    assert [(e["title"], e["start"]) for e in listed["events"]] == [
        ("Standup", "2024-03-04T09:30:00+01:00"),
        ("Standup", "2024-03-11T09:30:00+01:00"),
        ("Standup", "2024-03-25T09:30:00+01:00"),
        ("Holiday", "2024-03-29"),
    ]
    assert listed["events"][0]["recurrence"] == "FREQ=WEEKLY;COUNT=10;BYDAY=MO"
    assert listed["unreadable_events"] == 1


async def test_recurrences_keep_local_time_across_daylight_saving(
    calendar: CalendarAgent, workspace: Path
) -> None:
    (workspace / "calendar.ics").write_text(RECURRING)
    listed = await call(calendar, "list_events", start="2024-04-01", end="2024-04-09")
    assert [e["start"] for e in listed["events"] if e["title"] == "Standup"] == [
        "2024-04-01T09:30:00+02:00",
        "2024-04-08T09:30:00+02:00",
    ]


async def test_an_event_overlapping_the_range_start_is_listed(
    calendar: CalendarAgent, workspace: Path
) -> None:
    (workspace / "calendar.ics").write_text(RECURRING)
    listed = await call(
        calendar, "list_events", start="2024-04-01T12:00:00Z", end="2024-04-01T13:00:00Z"
    )
    assert [e["title"] for e in listed["events"]] == ["Holiday"]


async def test_list_is_bounded_by_limit(calendar: CalendarAgent, workspace: Path) -> None:
    (workspace / "calendar.ics").write_text(RECURRING)
    listed = await call(calendar, "list_events", limit=2, **MARCH)
    assert (listed["count"], listed["truncated"]) == (2, True)


async def test_list_without_a_calendar_file_is_empty(calendar: CalendarAgent) -> None:
    listed = await call(calendar, "list_events", **MARCH)
    assert (listed["events"], listed["calendar"]) == ([], "calendar.ics")


async def test_list_defaults_to_the_next_30_days(calendar: CalendarAgent) -> None:
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    later = soon + dt.timedelta(days=40)
    await call(calendar, "create_event", title="Soon", start=soon.isoformat())
    await call(calendar, "create_event", title="Later", start=later.isoformat())
    listed = await call(calendar, "list_events")
    assert [e["title"] for e in listed["events"]] == ["Soon"]


async def test_concurrent_creations_all_land(calendar: CalendarAgent, workspace: Path) -> None:
    async def create(day: int) -> None:
        await call(calendar, "create_event", title=f"Day {day}", start=f"2024-05-0{day}")

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for day in range(1, 9):
                nursery.start_soon(create, day)
    parsed = icalendar.Calendar.from_ical((workspace / "calendar.ics").read_bytes())
    assert sorted(str(e["SUMMARY"]) for e in parsed.events) == [f"Day {d}" for d in range(1, 9)]


async def test_another_calendar_file_in_the_workspace(
    calendar: CalendarAgent, workspace: Path
) -> None:
    await call(calendar, "create_event", title="Team", start="2024-03-05", calendar="team/work.ics")
    assert (workspace / "team" / "work.ics").exists()
    listed = await call(calendar, "list_events", calendar="team/work.ics", **MARCH)
    assert [e["title"] for e in listed["events"]] == ["Team"]


async def test_the_configured_calendar_path_is_used(workspace: Path) -> None:
    agent = CalendarAgent(context(workspace, calendar_path="cal/main.ics"))
    created = await call(agent, "create_event", title="X", start="2024-03-05")
    assert created["calendar"] == "cal/main.ics"
    assert (workspace / "cal" / "main.ics").exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param("../outside/evil.ics", "'..' is not allowed", id="dotdot"),
        pytest.param("/tmp/evil.ics", "outside the workspace roots", id="absolute"),
        pytest.param("linked/evil.ics", "a symlink in it leads outside", id="symlink"),
    ],
)
async def test_calendar_files_outside_the_workspace_are_refused(
    calendar: CalendarAgent, workspace: Path, outside: Path, path: str, message: str
) -> None:
    (workspace / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathNotAllowed, match=message):
        await call(calendar, "create_event", title="X", start="2024-03-05", calendar=path)
    with pytest.raises(PathNotAllowed, match=message):
        await call(calendar, "list_events", calendar=path)
    assert names(outside) == ["secret.txt"]


async def test_a_broken_ics_file_is_a_clear_error(calendar: CalendarAgent, workspace: Path) -> None:
    (workspace / "calendar.ics").write_text("this is not a calendar")
    with pytest.raises(ToolError, match=re.escape("calendar.ics is not a valid iCalendar file")):
        await call(calendar, "list_events")


async def test_a_calendar_over_the_size_limit_is_refused(workspace: Path) -> None:
    agent = CalendarAgent(context(workspace, max_file_bytes=100))
    (workspace / "calendar.ics").write_text(RECURRING)
    with pytest.raises(FileTooLarge, match=re.escape("calendar.ics is")):
        await call(agent, "list_events")
    with pytest.raises(FileTooLarge):
        await call(agent, "create_event", title="X", start="2024-03-05", calendar="new.ics")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        pytest.param(
            {"title": "X", "start": "soon"}, "start: not a date or time: 'soon'", id="bad-start"
        ),
        pytest.param(
            {"title": "X", "start": "2024-03-05T10:00:00", "end": "2024-03-05T09:00:00"},
            "the end must be after the start",
            id="end-first",
        ),
        pytest.param(
            {"title": "X", "start": "2024-03-05", "end": "2024-03-06T10:00:00"},
            "start and end must both be dates or both date-times",
            id="mixed",
        ),
        pytest.param(
            {"title": "X", "start": "2024-03-05", "duration_minutes": 0},
            "duration_minutes must be more than 0",
            id="no-duration",
        ),
        pytest.param({"title": "  ", "start": "2024-03-05"}, "the title is empty", id="blank"),
        pytest.param({"start": "2024-03-05"}, "missing parameter 'title'", id="no-title"),
    ],
)
async def test_create_event_refuses_bad_parameters(
    calendar: CalendarAgent, workspace: Path, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParameters, match=message):
        await call(calendar, "create_event", **parameters)
    assert not (workspace / "calendar.ics").exists()


async def test_list_refuses_an_empty_range(calendar: CalendarAgent) -> None:
    with pytest.raises(InvalidParameters, match="the end must be after the start"):
        await call(calendar, "list_events", start="2024-03-05", end="2024-03-01")


def test_create_is_not_idempotent() -> None:
    assert {s.action: s.idempotent for s in CalendarAgent.tool_specs()} == {
        "list_events": True,
        "create_event": False,
    }
