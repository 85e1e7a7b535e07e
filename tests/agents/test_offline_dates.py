"""The offline planner fills date parameters (calendar, clock, email) from plain English,
read against the request's "now", and orders readers after writers in one goal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agents import PromptRepository, plan_messages
from agents.offline import _model as model
from agents.tools._registry import AgentRegistry

CATALOG = AgentRegistry.from_entry_points().catalog().specs
NOW = datetime(2026, 11, 27, 15, 40, tzinfo=UTC)  # a Friday


def only_step(goal: str) -> tuple[str, dict[str, Any]]:
    plan = model.plan(goal, CATALOG, now=NOW)
    assert len(plan["steps"]) == 1, plan
    step = plan["steps"][0]
    return f"{step['agent']}.{step['action']}", step["parameters"]


@pytest.mark.parametrize(
    ("goal", "tool", "parameters"),
    [
        (
            "add a calendar event called standup tomorrow at 9am for 30 minutes",
            "calendar.create_event",
            {"title": "standup", "start": "2026-11-28T09:00+00:00", "duration_minutes": 30.0},
        ),
        (
            "schedule a meeting named design review on monday at 3pm",
            "calendar.create_event",
            {"title": "design review", "start": "2026-11-30T15:00+00:00"},
        ),
        (
            "list my calendar events for next week",
            "calendar.list_events",
            {"start": "2026-11-30T00:00:00+00:00", "end": "2026-12-07T00:00:00+00:00"},
        ),
        (
            "what is the date 10 days after 2026-12-01",
            "clock.add",
            {"start": "2026-12-01", "days": 10.0},
        ),
        ("what was the time 3 hours ago", "clock.add", {"hours": -3.0}),
        (
            "how many days between 2026-01-01 and 2026-03-01",
            "clock.difference",
            {"start": "2026-01-01", "end": "2026-03-01"},
        ),
        ("how long until 2026-12-25", "clock.difference", {"start": "now", "end": "2026-12-25"}),
        (
            "list the emails from the last 7 days",
            "email.read",
            {"since": "2026-11-20T15:40:00+00:00", "until": "2026-11-27T15:40:00+00:00"},
        ),
    ],
    ids=["event-tomorrow", "event-weekday", "list-week", "add", "ago", "between", "until", "mail"],
)
def test_date_parameters_are_filled(goal: str, tool: str, parameters: dict[str, Any]) -> None:
    planned, filled = only_step(goal)
    assert planned == tool
    assert {k: v for k, v in filled.items() if k in parameters} == parameters
    assert set(filled) & {"start", "end", "since", "until"} <= set(parameters)


def test_what_time_is_it_still_reads_the_clock() -> None:
    assert only_step("what time is it in Tokyo") == ("clock.now", {"timezone": "Asia/Tokyo"})


def test_an_event_without_a_date_is_not_guessed() -> None:
    plan = model.plan("add a calendar event called standup", CATALOG, now=NOW)
    assert plan["steps"] == [] and "'start'" in plan["error"]


def test_recall_waits_for_remember_in_the_same_goal() -> None:
    goal = "remember that the wifi password is hunter2 and recall the wifi password"
    steps = model.plan(goal, CATALOG, now=NOW)["steps"]
    assert [(s["action"], s["dependencies"]) for s in steps] == [
        ("remember", []),
        ("recall", ["s1"]),
    ]


def test_listing_the_calendar_waits_for_an_event_created_in_the_same_goal() -> None:
    goal = "add a meeting named review on friday at 3pm and list my calendar events for this week"
    steps = model.plan(goal, CATALOG, now=NOW)["steps"]
    assert [(s["action"], s["dependencies"]) for s in steps] == [
        ("create_event", []),
        ("list_events", ["s1"]),
    ]
    assert steps[0]["parameters"]["start"] == "2026-11-27T15:00+00:00"


def test_the_plan_request_carries_now_and_the_offline_model_reads_it() -> None:
    messages = plan_messages(
        PromptRepository(), "list my calendar events for tomorrow", CATALOG, now=NOW
    )
    assert json.loads(messages[-1]["content"])["now"] == "2026-11-27T15:40+00:00"
    steps = model.respond(messages)["steps"]
    assert steps[0]["parameters"]["start"] == "2026-11-28T00:00:00+00:00"
