"""The offline model: plans over the tools it is given, verdicts, answers, intents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents import PromptRepository, ToolSpec, plan_messages, verify_messages
from agents.llm import estimate_prompt_tokens
from agents.offline import _model as model
from agents.offline._entities import expression, tickers, timezone

from .conftest import TOOLS


def plan_of(goal: str, tools: tuple[ToolSpec, ...] = TOOLS, history: Any = ()) -> dict[str, Any]:
    plan = model.plan(goal, tools, history)
    if plan["steps"]:
        assert_valid_plan(plan, tools)
    return plan


def assert_valid_plan(plan: dict[str, Any], tools: tuple[ToolSpec, ...]) -> None:
    """Ids unique and in order, dependencies earlier, references declared, tools known."""
    known = {t.name: t for t in tools}
    seen: set[str] = set()
    for step in plan["steps"]:
        tool = known[f"{step['agent']}.{step['action']}"]
        assert set(tool.required) <= set(step["parameters"])
        assert set(step["dependencies"]) <= seen
        refs = {ref for ref in _references(step["parameters"])}
        assert refs <= set(step["dependencies"])
        assert step["reasoning"]
        seen.add(step["id"])
    assert [s["id"] for s in plan["steps"]] == [f"s{i}" for i in range(1, len(seen) + 1)]


def _references(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("${"):
        return [r.strip("${}").split(".")[0] for r in value.split("\n")]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def steps_summary(plan: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[str]]]:
    return [
        (f"{s['agent']}.{s['action']}", s["parameters"], s["dependencies"]) for s in plan["steps"]
    ]


def test_tickers_and_report_plan_two_independent_quotes_and_a_dependent_report() -> None:
    plan = plan_of("get the price of NVDA and AAPL and write a report")
    assert steps_summary(plan) == [
        ("quotes.get_stock_price", {"symbol": "NVDA"}, []),
        ("quotes.get_stock_price", {"symbol": "AAPL"}, []),
        (
            "writer.create_report",
            {"sources": ["${s1}", "${s2}"], "title": "Report: NVDA, AAPL"},
            ["s1", "s2"],
        ),
    ]


def test_arithmetic_plans_one_calculation() -> None:
    assert steps_summary(plan_of("what is 17 * 23 + 4")) == [
        ("math.calculate", {"expression": "17 * 23 + 4"}, [])
    ]


def test_time_in_a_city_plans_the_clock_with_its_zone() -> None:
    assert steps_summary(plan_of("what time is it in Tokyo")) == [
        ("clock.now", {"timezone": "Asia/Tokyo"}, [])
    ]


def test_then_makes_the_next_clause_depend_on_the_previous_one() -> None:
    plan = plan_of("what is 2 plus 3 then what time is it in London")
    assert steps_summary(plan) == [
        ("math.calculate", {"expression": "2 + 3"}, []),
        ("clock.now", {"timezone": "Europe/London"}, ["s1"]),
    ]


def test_and_joins_independent_requests() -> None:
    plan = plan_of("what time is it in Paris and what is 6 times 7")
    assert steps_summary(plan) == [
        ("clock.now", {"timezone": "Europe/Paris"}, []),
        ("math.calculate", {"expression": "6 * 7"}, []),
    ]


def test_summarise_after_a_search_consumes_its_result() -> None:
    plan = plan_of("search the web for trio nurseries and summarise them")
    assert [(name, deps) for name, _, deps in steps_summary(plan)] == [
        ("web.search", []),
        ("writer.create_report", ["s1"]),
    ]
    assert plan["steps"][0]["parameters"] == {"query": "trio nurseries"}


def test_company_names_become_tickers() -> None:
    assert steps_summary(plan_of("What's the price of Apple?")) == [
        ("quotes.get_stock_price", {"symbol": "AAPL"}, [])
    ]


def test_history_lends_tickers_to_a_goal_without_any() -> None:
    plan = plan_of("and what is the price now?", history=[{"goal": "price of TSLA"}])
    assert steps_summary(plan) == [("quotes.get_stock_price", {"symbol": "TSLA"}, [])]


def test_unplannable_goal_says_what_it_cannot_do_and_what_it_can() -> None:
    plan = plan_of("book me a flight to Lisbon")
    assert plan["steps"] == []
    error = plan["error"]
    assert "cannot plan" in error and "'book me a flight to Lisbon'" in error
    assert "quotes" in error and "clock" in error  # the tool areas, not every tool
    assert 'llm.provider = "openai"' in error
    assert len(error) <= 240  # the answer line stays under 300 characters


def test_unplannable_goal_keeps_the_full_detail_beside_the_short_error() -> None:
    plan = plan_of("book me a flight to Lisbon")
    assert "quotes.get_stock_price (" in plan["detail"]
    assert "'book me a flight to Lisbon'" in plan["detail"]


def test_planner_uses_only_the_tools_it_is_given() -> None:
    no_quotes = tuple(t for t in TOOLS if t.agent != "quotes")
    plan = plan_of("get the price of NVDA", no_quotes)
    assert plan["steps"] == [] and "quotes" not in plan["error"]


def test_empty_goal_is_refused() -> None:
    assert model.plan("  ", TOOLS) == {
        "steps": [],
        "error": "the goal is empty; say what you want done",
    }


def test_plans_are_deterministic() -> None:
    goal = "get the price of MSFT then write a report"
    assert json.dumps(model.plan(goal, TOOLS)) == json.dumps(model.plan(goal, TOOLS[::-1]))


@pytest.mark.parametrize(
    ("result", "passed"),
    [
        (None, False),
        ("", False),
        ({}, False),
        ([], False),
        ({"error": "timeout"}, False),
        ({"ok": False}, False),
        ("Error: no such file", False),
        ({"symbol": "NVDA", "price": 120.5}, True),
        ("a long enough text", True),
        (42, True),
    ],
    ids=[
        "none",
        "empty-str",
        "empty-dict",
        "empty-list",
        "error",
        "not-ok",
        "error-text",
        "quote",
        "text",
        "number",
    ],
)
def test_verify_fails_errors_and_empty_results(result: Any, passed: bool) -> None:
    verdict = model.verify({"agent": "quotes", "action": "get_stock_price"}, result)
    assert verdict["passed"] is passed
    assert 0.0 <= verdict["confidence"] <= 1.0
    assert verdict["notes"].startswith("quotes.get_stock_price")


def test_answer_composes_results_and_names_failures() -> None:
    results = [
        {
            "id": "s1",
            "agent": "quotes",
            "action": "get_stock_price",
            "result": {"symbol": "NVDA", "price": 120.5, "currency": "USD"},
        },
        {
            "id": "s2",
            "agent": "math",
            "action": "calculate",
            "result": {"expression": "17 * 23 + 4", "result": 395},
        },
        {"id": "s3", "agent": "clock", "action": "now", "error": "no clock"},
    ]
    answer = model.answer("goal", results)["answer"]
    assert answer.splitlines() == [
        "Results:",
        "- NVDA: 120.5 USD",
        "- 17 * 23 + 4 = 395",
        "- clock.now failed: no clock",
    ]


def test_answer_with_no_results_says_so() -> None:
    assert "Nothing was run" in model.answer("do it", [])["answer"]


@pytest.mark.parametrize(
    ("goal", "intent", "entities"),
    [
        ("price of NVDA", "quote", {"tickers": ["NVDA"]}),
        ("what is 3 * 4", "calculation", {"expression": "3 * 4"}),
        ("what time is it in Sydney", "time", {"timezone": "Australia/Sydney"}),
        ("get NVDA's price and write a report", "report", {"tickers": ["NVDA"]}),
        ("hello there", "greeting", {}),
        ("sing a song", "unknown", {}),
    ],
    ids=["quote", "calculation", "time", "report", "greeting", "unknown"],
)
def test_intent_classifies_and_extracts(goal: str, intent: str, entities: dict[str, Any]) -> None:
    assert model.intent(goal) == {"intent": intent, "entities": entities}


def test_respond_dispatches_on_the_task_document() -> None:
    prompts = PromptRepository()
    plan = model.respond(plan_messages(prompts, "what is 1 + 1", TOOLS))
    verdict = model.respond(verify_messages(prompts, "g", {"agent": "a", "action": "b"}, None))
    assert plan["steps"][0]["parameters"] == {"expression": "1 + 1"}
    assert verdict["passed"] is False


def test_free_text_gets_an_honest_reply() -> None:
    reply = model.complete([{"role": "user", "content": "tell me a joke"}], json_mode=False)
    assert "offline model" in reply


def test_unknown_task_is_named() -> None:
    messages = [{"role": "user", "content": json.dumps({"task": "dance"})}]
    assert "does not know task 'dance'" in model.respond(messages)["error"]
    assert model.task_of(messages) == "dance"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is 17 * 23 + 4", "17 * 23 + 4"),
        ("compute (2 + 3) * 4 please", "(2 + 3) * 4"),
        ("5 divided by 2", "5 / 2"),
        ("meet on 2024-05-01", None),
        ("no numbers here", None),
    ],
    ids=["plain", "parens", "words", "date", "none"],
)
def test_expressions_are_found(text: str, expected: str | None) -> None:
    assert expression(text) == expected


def test_entities_tickers_and_zones() -> None:
    assert tickers("NVDA, $aapl? no: $TSLA and I like PDF") == ["NVDA", "TSLA"]
    assert timezone("time in New York") == "America/New_York"
    assert timezone("time in Europe/Paris") == "Europe/Paris"


def test_token_estimate_is_about_four_characters_each() -> None:
    assert estimate_prompt_tokens([{"role": "user", "content": "x" * 40}]) == 10 + 4
