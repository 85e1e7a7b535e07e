"""The offline planner's readers of dates, times, ranges and durations in plain English."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from agents.offline._dates import (
    date_range,
    duration_minutes,
    iso_moments,
    moment,
    offset,
    time_of_day,
)

# A Friday afternoon.
NOW = datetime(2026, 11, 27, 15, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("standup tomorrow at 9am", "2026-11-28T09:00+00:00"),
        ("lunch today at 12:30 pm", "2026-11-27T12:30+00:00"),
        ("review on monday at 14:00", "2026-11-30T14:00+00:00"),
        ("call next friday", "2026-12-04"),
        ("call this friday", "2026-11-27"),
        ("dentist on 2026-12-03 at 8:15am", "2026-12-03T08:15+00:00"),
        ("holiday on 2026-12-24", "2026-12-24"),
        ("launch at 2026-12-03T08:15:00+01:00", "2026-12-03T08:15:00+01:00"),
        ("reminder in 2 hours", "2026-11-27T17:40+00:00"),
        ("retro in three days", "2026-11-30T15:40+00:00"),
        ("party the day after tomorrow at noon", "2026-11-29T12:00+00:00"),
        ("meeting at 10pm", "2026-11-27T22:00+00:00"),
        ("nothing about when", None),
        ("on 2026-13-45", None),
        ("on 2026-02-30 at 9am", None),
        ("17 * 23 + 4", None),
    ],
)
def test_moment_reads_dates_and_times_relative_to_now(text: str, expected: str | None) -> None:
    assert moment(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("at 9am", time(9, 0)),
        ("12am", time(0, 0)),
        ("12 p.m.", time(12, 0)),
        ("at 7:05 PM", time(19, 5)),
        ("midnight", time(0, 0)),
        ("13pm", None),
        ("3 apples", None),
        ("2026-12-03T08:15", None),  # part of an ISO date-time, not a time of its own
    ],
)
def test_time_of_day(text: str, expected: time | None) -> None:
    assert time_of_day(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("emails from the last 7 days", ("2026-11-20T15:40:00+00:00", "2026-11-27T15:40:00+00:00")),
        ("the past 2 hours", ("2026-11-27T13:40:00+00:00", "2026-11-27T15:40:00+00:00")),
        ("the next 3 days", ("2026-11-27T15:40:00+00:00", "2026-11-30T15:40:00+00:00")),
        ("events next week", ("2026-11-30T00:00:00+00:00", "2026-12-07T00:00:00+00:00")),
        ("this week", ("2026-11-23T00:00:00+00:00", "2026-11-30T00:00:00+00:00")),
        ("last week", ("2026-11-16T00:00:00+00:00", "2026-11-23T00:00:00+00:00")),
        ("next month", ("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")),
        ("last month", ("2026-10-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00")),
        ("tomorrow", ("2026-11-28T00:00:00+00:00", "2026-11-29T00:00:00+00:00")),
        ("on monday", ("2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00")),
        ("whenever", None),
    ],
)
def test_date_range_names_a_half_open_period(text: str, expected: tuple[str, str] | None) -> None:
    assert date_range(text, NOW) == expected


def test_month_ranges_cross_the_year() -> None:
    december = datetime(2026, 12, 15, tzinfo=UTC)
    assert date_range("next month", december) == (
        "2027-01-01T00:00:00+00:00",
        "2027-02-01T00:00:00+00:00",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10 days after 2026-12-01", {"days": 10.0}),
        ("3 weeks before 2026-12-01", {"weeks": -3.0}),
        ("2 hours ago", {"hours": -2.0}),
        ("plus 1 week and 2 days", {"weeks": 1.0, "days": 2.0}),
        ("minus 90 minutes", {"minutes": -90.0}),
        ("what time is it", {}),
        ("pizza day and extra hours", {}),
    ],
)
def test_offset_is_signed_per_unit(text: str, expected: dict[str, float]) -> None:
    assert offset(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("for 30 minutes", 30.0),
        ("for 2 hours", 120.0),
        ("for 1.5 hours", 90.0),
        ("for an hour", 60.0),
        ("for half an hour", 30.0),
        ("at 9am", None),
    ],
)
def test_duration_minutes(text: str, expected: float | None) -> None:
    assert duration_minutes(text) == expected


def test_iso_moments_in_order() -> None:
    text = "days between 2026-01-01 and 2026-03-01 10:30"
    assert iso_moments(text) == ["2026-01-01", "2026-03-01T10:30"]
