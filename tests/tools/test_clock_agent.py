"""Date arithmetic of the clock agent: `add` and `difference`, and their errors."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from agents.errors import InvalidParameters, ToolError
from agents.tools._clock import ClockAgent

from .conftest import call

ISO_HINT = "(use ISO 8601, e.g. 2024-03-01 or 2024-03-01T09:30:00+01:00)"


@pytest.fixture
def clock() -> ClockAgent:
    return ClockAgent()


@pytest.mark.parametrize(
    ("parameters", "result", "weekday"),
    [
        pytest.param({"start": "2024-02-28", "days": 2}, "2024-03-01", "Friday", id="leap-year"),
        pytest.param({"start": "2023-02-28", "days": 1}, "2023-03-01", "Wednesday", id="no-leap"),
        pytest.param({"start": "2024-01-10", "weeks": -2}, "2023-12-27", "Wednesday", id="back"),
        pytest.param(
            {"start": "2024-01-01", "hours": 36}, "2024-01-02T12:00:00", "Tuesday", id="date+hours"
        ),
        pytest.param(
            {"start": "2024-03-30T23:30:00+01:00", "minutes": 45, "days": 1},
            "2024-04-01T00:15:00+01:00",
            "Monday",
            id="offset-kept",
        ),
        pytest.param(
            {"start": "2024-03-01T09:00:00Z", "days": 1.5},
            "2024-03-02T21:00:00+00:00",
            "Saturday",
            id="fraction",
        ),
    ],
)
async def test_add(
    clock: ClockAgent, parameters: dict[str, Any], result: str, weekday: str
) -> None:
    answer = await call(clock, "add", **parameters)
    assert answer == {
        "start": parameters["start"].replace("Z", "+00:00"),
        "result": result,
        "weekday": weekday,
    }


async def test_add_defaults_to_now(clock: ClockAgent) -> None:
    before = dt.datetime.now(dt.UTC)
    answer = await call(clock, "add", days=7)
    moved = dt.datetime.fromisoformat(answer["result"]) - dt.timedelta(days=7)
    assert abs(moved - before) < dt.timedelta(seconds=5)


async def test_add_to_today_gives_a_date(clock: ClockAgent) -> None:
    answer = await call(clock, "add", start="today", days=1)
    assert answer["result"] == (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        pytest.param(
            {"start": "2024-01-01", "end": "2024-03-01"},
            {"days": 60.0, "hours": 1440.0, "seconds": 5184000.0, "text": "60 days"},
            id="dates",
        ),
        pytest.param(
            {"start": "2024-03-01T10:00:00+01:00", "end": "2024-03-01T10:00:00Z"},
            {"days": 0.041667, "hours": 1.0, "seconds": 3600.0, "text": "1 hour"},
            id="offsets",
        ),
        pytest.param(
            {"start": "2024-03-02", "end": "2024-03-01T06:30:15"},
            {
                "days": -0.728993,
                "hours": -17.495833,
                "seconds": -62985.0,
                "text": "-17 hours, 29 minutes, 45 seconds",
            },
            id="negative-mixed",
        ),
        pytest.param(
            {"start": "2024-01-01", "end": "2024-01-01"},
            {"days": 0.0, "hours": 0.0, "seconds": 0.0, "text": "0 seconds"},
            id="same",
        ),
    ],
)
async def test_difference(
    clock: ClockAgent, parameters: dict[str, str], expected: dict[str, Any]
) -> None:
    answer = await call(clock, "difference", **parameters)
    assert {k: answer[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("action", "parameters", "error", "message"),
    [
        pytest.param(
            "add",
            {"start": "next tuesday"},
            InvalidParameters,
            f"start: not a date or time: 'next tuesday' {ISO_HINT}",
            id="words",
        ),
        pytest.param(
            "add",
            {"start": "2024-02-30"},
            InvalidParameters,
            "start: not a date or time: '2024-02-30'",
            id="no-such-day",
        ),
        pytest.param(
            "difference",
            {"start": "2024-01-01", "end": "01/02/2024"},
            InvalidParameters,
            "end: not a date or time: '01/02/2024'",
            id="us-format",
        ),
        pytest.param(
            "difference",
            {"start": "2024-01-01"},
            InvalidParameters,
            "missing parameter 'end'",
            id="missing",
        ),
        pytest.param(
            "add",
            {"start": "2024-01-01", "days": "3"},
            InvalidParameters,
            "parameter 'days' should be number, got str",
            id="text-amount",
        ),
        pytest.param(
            "add",
            {"start": "2024-01-01", "days": float("inf")},
            InvalidParameters,
            "clock.add: days must be a finite number",
            id="infinite",
        ),
        pytest.param(
            "add",
            {"start": "9999-12-31", "days": 1},
            ToolError,
            "the result is outside the supported dates",
            id="past-9999",
        ),
        pytest.param(
            "add",
            {"start": "2024-01-01", "weeks": 1e12},
            ToolError,
            "the offset is too large",
            id="huge-offset",
        ),
    ],
)
async def test_bad_dates_are_clear_errors(
    clock: ClockAgent,
    action: str,
    parameters: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        await call(clock, action, **parameters)


def test_date_arithmetic_is_idempotent() -> None:
    assert {s.action: s.idempotent for s in ClockAgent.tool_specs()} == {
        "now": True,
        "add": True,
        "difference": True,
    }
