"""Offline answers you can trust: every place asked about gets a clock reading, titles
do not cut a goal in two, an unknown place is refused rather than guessed, a refusal is
short, and results read as plain language instead of JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agents.offline import _model as model
from agents.offline._planning import split_clauses
from agents.tools._registry import AgentRegistry

CATALOG = AgentRegistry.from_entry_points().catalog().specs
NOW = datetime(2026, 11, 27, 15, 40, tzinfo=UTC)


def steps_of(goal: str) -> list[tuple[str, dict[str, Any]]]:
    plan = model.plan(goal, CATALOG, now=NOW)
    assert "error" not in plan, plan.get("error")
    return [(f"{s['agent']}.{s['action']}", s["parameters"]) for s in plan["steps"]]


def clock_reading(zone: str) -> dict[str, Any]:
    return {"timezone": zone, "time": "12:00:00", "weekday": "Friday"}


@pytest.mark.parametrize(
    ("goal", "zones"),
    [
        ("what time is it in Tokyo and in New York", ["Asia/Tokyo", "America/New_York"]),
        (
            "what time is it in Tokyo, London and New York",
            ["Asia/Tokyo", "Europe/London", "America/New_York"],
        ),
        ("what time is it in Tokyo", ["Asia/Tokyo"]),
    ],
    ids=["two-cities", "three-cities", "one-city"],
)
def test_time_in_several_places_reads_the_clock_once_per_place(goal: str, zones: list[str]) -> None:
    assert steps_of(goal) == [("clock.now", {"timezone": zone}) for zone in zones]


def test_answer_for_several_places_names_each_place() -> None:
    goal = "what time is it in Tokyo, London and New York"
    zones = ["Asia/Tokyo", "Europe/London", "America/New_York"]
    results = [
        {"id": f"s{n}", "agent": "clock", "action": "now", "result": clock_reading(zone)}
        for n, zone in enumerate(zones, 1)
    ]
    text = model.answer(goal, results)["answer"]
    for place, zone in (("Tokyo", zones[0]), ("London", zones[1]), ("New York", zones[2])):
        assert f"The time in {place} ({zone}) is 12:00:00" in text


@pytest.mark.parametrize(
    "goal",
    [
        "remember that my dentist is Dr. Lee and then what is 12*12",
        "remember that Mr. Smith and Mrs. Smith live on St. James St. Then what is 12*12",
        "remember that I prefer tea, e.g. green tea, i.e. no coffee. Then what is 12*12",
        "remember that the U.S. team meets at 9. Then what is 3.5 * 2",
    ],
    ids=["dr", "mr-mrs-st", "eg-ie", "us-decimal"],
)
def test_abbreviations_and_titles_do_not_split_a_clause(goal: str) -> None:
    clauses = split_clauses(goal)
    assert len(clauses) == 2 and clauses[1].joined_by == "then"
    assert [name for name, _ in steps_of(goal)] == ["memory.remember", "math.calculate"]


def test_a_sentence_end_still_splits_clauses() -> None:
    assert [c.text for c in split_clauses("index docs. Then search for trio")] == [
        "index docs",
        "search for trio",
    ]


@pytest.mark.parametrize(
    ("goal", "kept"),
    [
        ("remember that my dentist is Dr. Lee", "my dentist is Dr. Lee"),
        ("remember my dentist is Dr. Lee", "my dentist is Dr. Lee"),
        ("remember: the door code is 4711", "the door code is 4711"),
    ],
    ids=["that", "no-that", "colon"],
)
def test_remember_keeps_the_statement_with_its_subject(goal: str, kept: str) -> None:
    [(name, parameters)] = steps_of(goal)
    assert name == "memory.remember" and parameters["text"] == kept


def test_unknown_place_is_refused_not_read_as_utc() -> None:
    plan = model.plan("what time is it in Atlantis", CATALOG, now=NOW)
    assert plan["steps"] == []
    assert "I don't know a time zone for Atlantis" in plan["error"]


def test_unknown_place_beside_a_known_one_is_refused() -> None:
    plan = model.plan("what time is it in Tokyo and in Atlantis", CATALOG, now=NOW)
    assert plan["steps"] == [] and "Atlantis" in plan["error"]


def test_time_without_a_place_still_reads_utc() -> None:
    assert steps_of("what time is it") == [("clock.now", {})]


def test_unplannable_goal_gets_a_short_refusal_with_the_detail_kept() -> None:
    plan = model.plan("book me a flight to Paris", CATALOG, now=NOW)
    error = plan["error"]
    # what the user reads: "I could not complete this: no usable plan: invalid plan: ..."
    assert len(f"I could not complete this: no usable plan: invalid plan: {error}") <= 300
    assert "cannot plan" in error and "calendar" in error and "memory" in error
    assert "calendar.create_event (" in plan["detail"]  # every tool, described


def test_remembered_renders_what_was_remembered() -> None:
    goal = "remember that my dentist is Dr. Lee and then what is 12*12"
    results = [
        {
            "id": "s1",
            "agent": "memory",
            "action": "remember",
            "result": {"user": "anonymous", "memory_id": "ab" * 16, "position": 3},
        },
        {
            "id": "s2",
            "agent": "math",
            "action": "calculate",
            "result": {"expression": "12*12", "value": 144},
        },
    ]
    assert model.answer(goal, results)["answer"] == (
        "Results:\n- Remembered: my dentist is Dr. Lee.\n- 12*12 = 144"
    )


@pytest.mark.parametrize(
    ("tool", "result", "expected"),
    [
        (
            "memory.recall",
            {"user": "u", "query": "dentist", "memories": [{"content": "my dentist is Dr. Lee"}]},
            "I remember: my dentist is Dr. Lee",
        ),
        ("memory.recall", {"user": "u", "query": "cat", "memories": []}, "I have no memory"),
        (
            "memory.forget_all",
            {"user": "bob", "key_destroyed": True, "forgotten": 2},
            "Forgot all 2 memories of bob.",
        ),
        (
            "clock.add",
            {"start": "2026-01-01", "result": "2026-01-04", "weekday": "Sunday"},
            "The result is 2026-01-04 (Sunday), counted from 2026-01-01.",
        ),
        (
            "calendar.create_event",
            {"uid": "x", "title": "Sync", "start": "2026-12-07T09:00:00+00:00", "end": "E"},
            "Added 'Sync' from 2026-12-07T09:00:00+00:00 to E.",
        ),
        (
            "files.list",
            {"folder": ".", "entries": [{"path": "a.txt"}], "count": 1, "truncated": False},
            "1 entries in .: a.txt",
        ),
        (
            "files.search",
            {"results": [], "count": 0, "scanned": 4, "truncated": False},
            "No file matches (searched 4 files).",
        ),
    ],
    ids=["recall", "recall-none", "forget-all", "clock-add", "event", "files-list", "search"],
)
def test_tool_results_render_in_plain_language(tool: str, result: Any, expected: str) -> None:
    agent, action = tool.split(".")
    text = model.answer("goal", [{"id": "s1", "agent": agent, "action": action, "result": result}])
    assert expected in text["answer"] and "{" not in text["answer"]
