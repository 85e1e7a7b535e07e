"""Every tool of the shipped agents has a plain phrasing the offline model plans, so every
tool can be used with no API key; and goals joining several tools with "and" work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agents.offline import _model as model
from agents.tools._registry import AgentRegistry

CATALOG = AgentRegistry.from_entry_points().catalog().specs
NOW = datetime(2026, 11, 27, 15, 40, tzinfo=UTC)

PHRASINGS = {
    "files.list": "list the files in the workspace",
    "files.read": "read the file notes.txt",
    "files.write": "write hello world to notes.txt",
    "files.search": "search the files for budget",
    "documents.index": "index the documents in docs",
    "documents.search": "search the documents for quarterly revenue",
    "documents.list": "list the indexed documents",
    "memory.remember": "remember that the wifi password is hunter2",
    "memory.recall": "recall what I said about the wifi password",
    "memory.forget": "forget the memory 5aecbf2bd89645929f1549eb4f123dc2",
    "memory.forget_all": "forget everything about user bob",
    "email.read": "list the emails from the last 7 days",
    "email.search": "search the emails for invoice",
    "email.draft": "draft an email to bob@example.com saying hello",
    "email.send": "send an email to bob@example.com saying hello",
    "calendar.list_events": "list my calendar events for next week",
    "calendar.create_event": "add a calendar event called standup tomorrow at 9am",
    "web.fetch": "fetch https://example.com/page",
    "quotes.get_stock_price": "get the stock price of NVDA",
    "quotes.get_stock_prices": "get the stock prices of NVDA and AAPL",
    "writer.create_report": "get the stock price of NVDA then write a report",
    "math.calculate": "calculate 17 * 23 + 4",
    "clock.now": "what time is it in Tokyo",
    "clock.add": "what is the date 10 days after 2026-12-01",
    "clock.difference": "how many days between 2026-01-01 and 2026-03-01",
}


def steps_of(goal: str) -> list[dict[str, Any]]:
    plan = model.plan(goal, CATALOG, now=NOW)
    assert plan["steps"], plan.get("error")
    return list(plan["steps"])


def test_every_shipped_tool_has_a_phrasing() -> None:
    assert {tool.name for tool in CATALOG} == set(PHRASINGS)


@pytest.mark.parametrize(("tool", "goal"), sorted(PHRASINGS.items()), ids=sorted(PHRASINGS))
def test_the_phrasing_plans_the_tool_with_its_required_parameters(tool: str, goal: str) -> None:
    spec = next(t for t in CATALOG if t.name == tool)
    planned = [s for s in steps_of(goal) if f"{s['agent']}.{s['action']}" == tool]
    assert len(planned) == 1
    assert set(spec.required) <= set(planned[0]["parameters"])


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        (
            "write hello world to notes.txt",
            {"path": "notes.txt", "content": "hello world"},
        ),
        ("forget everything about user bob", {"user": "bob"}),
        ("Write hello world to Notes.txt", {"path": "Notes.txt", "content": "hello world"}),
        ("get the stock prices of NVDA and AAPL", {"symbols": ["NVDA", "AAPL"]}),
        (
            "forget the memory 5aecbf2bd89645929f1549eb4f123dc2",
            {"memory_id": "5aecbf2bd89645929f1549eb4f123dc2"},
        ),
    ],
    ids=["file-content", "user", "capitalised", "batch-symbols", "memory-id"],
)
def test_values_read_from_the_phrasing(goal: str, expected: dict[str, Any]) -> None:
    (step,) = steps_of(goal)
    assert {k: step["parameters"].get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        (
            "calculate 17*23 and remember the result",
            [("math.calculate", []), ("memory.remember", ["s1"])],
        ),
        (
            "list the files in the workspace and summarise them",
            [("files.list", []), ("writer.create_report", ["s1"])],
        ),
        (
            "index the documents in docs and search the documents for revenue",
            [("documents.index", []), ("documents.search", ["s1"])],
        ),
    ],
    ids=["calculate-remember", "list-summarise", "index-search"],
)
def test_goals_joined_with_and(goal: str, expected: list[tuple[str, list[str]]]) -> None:
    steps = steps_of(goal)
    assert [(f"{s['agent']}.{s['action']}", s["dependencies"]) for s in steps] == expected
