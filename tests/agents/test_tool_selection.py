"""Which tools the planner is shown for a goal (`features.tool_selection`).

Over the shipped catalog (every agent the project installs): the part shown for each
goal of the benchmarks' workloads must let the offline planner make exactly the plan it
makes over the whole catalog, and it must be a part (not the whole) for most of them,
so the test cannot pass by showing everything. Goals it cannot judge get the whole.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from agents.llm import ToolCatalog, ToolSelector, ToolSelectorCache, ToolSpec, estimate_tokens
from agents.llm._tool_selection import (
    MAX_GOAL_CHARS,
    MIN_CATALOG,
    clauses,
    only_names,
    stem,
)
from agents.offline._planning import plan
from agents.tools._registry import discover_agents
from server.bench._scenarios import SCENARIOS
from tests.agents.test_goldens import GOLDENS
from tests.performance import bench_default_path, bench_orchestrator, load_ws

SHIPPED = ToolCatalog.build(
    spec for agent in discover_agents().values() for spec in agent.tool_specs()
)
NOW = "2026-12-07T12:00:00+00:00"


def shown(goal: str, catalog: ToolCatalog = SHIPPED) -> set[str]:
    return {spec.name for spec in ToolSelector(catalog).select(goal).catalog.specs}


# Goals a review found parts of dropped by an earlier rule (a clause's best tool hid the
# tool of its other verb): each must plan as over the whole catalog.
TWO_THINGS_IN_ONE_CLAUSE = (
    "save the result of 17 * 23 to result.txt",
    "remember that 17 * 23 is what I owe Bob",
    "remember the price of NVDA",
    "save the price of NVDA to prices.txt",
    "what is 17 * 23 plus the time in Tokyo",
    "what is the date 3 weeks from now",
    "what did alice say in her last email",
)


def workload_goals() -> list[str]:
    goals = {
        template.format(world="http://127.0.0.1:9/world", n=7)
        for scenario in SCENARIOS.values()
        for template in scenario.templates
    }
    goals.update(goal.text for goal in bench_orchestrator.GOALS)
    goals.update(bench_default_path.GOALS)
    goals.update(bench_default_path.MEMORY_GOALS)
    goals.update(load_ws.GOALS)
    return sorted(goals)


REVIEW_GOALS = Path(__file__).with_name("selection_goals.txt")


def review_goals() -> list[str]:
    lines = REVIEW_GOALS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def every_goal() -> list[str]:
    """The workloads', the golden suite's (follow-ups read alone) and the reviews'."""
    goals = set(workload_goals()) | set(TWO_THINGS_IN_ONE_CLAUSE) | set(review_goals())
    goals.update(goal for case in GOLDENS for goal in case.goals)
    return sorted(goals)


def offline_plan(goal: str, catalog: ToolCatalog) -> tuple[object, bool]:
    """The offline planner's steps, and whether it refused (a refusal over a part is
    asked again over the whole, so its wording does not matter)."""
    made = plan(goal, catalog.specs, now=datetime.fromisoformat(NOW))
    return made["steps"], bool(made.get("error"))


def test_the_shipped_catalog_is_large_enough_to_be_cut() -> None:
    assert len(SHIPPED.specs) > MIN_CATALOG


# Goals whose plan over the whole catalog is the offline planner's own slip, which it
# does not make over the part: over the whole, a tool shown for another of the goal's
# words ("time": math.calculate, for "times") takes the clause, and the step the goal
# asks for is left out. Over the part, the plan has every step of the whole's and this
# one more.
PART_PLANS_WHAT_THE_WHOLE_LEAVES_OUT = {
    "remember the time in Tokyo": ("memory", "remember"),
    "summarize the time in Tokyo and London": ("writer", "create_report"),
}
# Refused over the part: web.fetch alone is shown, and the offline planner reads no URL
# without its scheme. The orchestrator asks again over the whole catalog (one plan call
# more), which then plans files.read of "www.example.com", as it always did.
REFUSED_OVER_THE_PART = {"read www.example.com/blog": {"web.fetch"}}


def step_keys(steps: object) -> list[tuple[str, str, str]]:
    assert isinstance(steps, list)
    return [(s["agent"], s["action"], json.dumps(s["parameters"], sort_keys=True)) for s in steps]


@pytest.mark.parametrize("goal", every_goal())
def test_the_part_shown_plans_what_the_whole_catalog_plans(goal: str) -> None:
    selection = ToolSelector(SHIPPED).select(goal)
    names = sorted(s.name for s in selection.catalog.specs)
    part, whole = offline_plan(goal, selection.catalog), offline_plan(goal, SHIPPED)
    if goal in PART_PLANS_WHAT_THE_WHOLE_LEAVES_OUT:
        assert not part[1] and not whole[1]
        extra = list(step_keys(part[0]))
        for key in step_keys(whole[0]):
            extra.remove(key)  # ValueError: a step of the whole's plan is missing
        assert [key[:2] for key in extra] == [PART_PLANS_WHAT_THE_WHOLE_LEAVES_OUT[goal]]
    elif goal in REFUSED_OVER_THE_PART:
        assert set(names) == REFUSED_OVER_THE_PART[goal]
        assert part == ([], True) and not whole[1]
    else:
        assert part == whole, (goal, names)


def test_the_listed_differences_are_goals_of_the_corpus() -> None:
    listed = {*PART_PLANS_WHAT_THE_WHOLE_LEAVES_OUT, *REFUSED_OVER_THE_PART}
    assert listed <= set(every_goal())


def test_most_workload_goals_are_shown_a_small_part() -> None:
    goals = workload_goals()
    selections = [ToolSelector(SHIPPED).select(goal) for goal in goals]
    parts = [s for s in selections if not s.whole]
    assert len(parts) >= 0.9 * len(goals), [
        (g, s.reason) for g, s in zip(goals, selections, strict=True) if s.whole
    ]

    def tokens(catalog: ToolCatalog) -> int:
        return sum(estimate_tokens(json.dumps(entry)) for entry in catalog.compact_json)

    whole = tokens(SHIPPED)
    mean = sum(tokens(s.catalog) for s in parts) / len(parts)
    assert mean < whole / 4, (mean, whole)


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        ("what is 17 * 23 + 4 and what time is it in Tokyo", {"math.calculate", "clock.now"}),
        ("get the stock prices of NVDA and AAPL and write a report", {"quotes.get_stock_prices"}),
        ("remember that my sister lives in lisbon", {"memory.remember"}),
        ("fetch https://example.com/news and summarise it", {"web.fetch"}),
        ("draft an email to bob@example.com saying hello", {"email.draft"}),
        ("read notes.md", {"files.read"}),
        # A list of names after the clause that names the tool.
        ("what time is it in Tokyo, London and New York", {"clock.now"}),
    ],
)
def test_a_goal_is_shown_its_tools_and_few_others(goal: str, expected: set[str]) -> None:
    names = shown(goal)
    assert expected <= names
    assert len(names) <= 8, names


@pytest.mark.parametrize(
    "goal", ["write a report", "get the stock price of NVDA then write a report"]
)
def test_a_word_the_clauses_best_tool_leads_brings_no_other_agents_tool(goal: str) -> None:
    """ "write" is the report writer's here, as "report" is: not also the e-mail draft's
    and the file writer's, which "write" points at as much."""
    names = shown(goal)
    assert "writer.create_report" in names
    assert not names & {"email.draft", "files.write"}, names


@pytest.mark.parametrize(
    "goal",
    ["save the result of 17 * 23 to result.txt", "write the result of 17 * 23 to result.txt"],
)
def test_a_word_the_clauses_best_tool_does_not_lead_keeps_its_tools(goal: str) -> None:
    assert {"math.calculate", "files.write"} <= shown(goal)


@pytest.mark.parametrize(
    ("goal", "needed"),
    [
        # A review's goals: the clause's best tool (reading, sending) leads "email", and
        # the other e-mail tools the goal needs stay, being of the same agent.
        ("forward my unread emails to bob@example.com", {"email.read", "email.send"}),
        ("email bob@example.com my unread emails", {"email.read", "email.send"}),
        ("email alice the list of my unread emails", {"email.read", "email.send"}),
        ("email bob a summary of my inbox", {"email.read", "email.send"}),
        ("email me a list of my files", {"files.list", "email.send"}),
        ("send bob the email from alice about the budget", {"email.search", "email.send"}),
        ("draft a reply to alice's last email", {"email.read", "email.draft"}),
        ("write alice's last email to alice.txt", {"email.read", "files.write"}),
    ],
)
def test_a_led_word_keeps_the_other_tools_of_its_leaders_agent(goal: str, needed: set[str]) -> None:
    assert needed <= shown(goal)


@pytest.mark.parametrize(
    ("goal", "why"),
    [
        ("how is Apple doing on the market", "no tool matches"),  # no word of any tool
        ("get the price of NVDA and sing me a song about the sea", "no tool matches"),
        ("please", "no words to match"),
        ("?", "no words to match"),
    ],
)
def test_a_goal_it_cannot_judge_is_shown_the_whole_catalog(goal: str, why: str) -> None:
    selection = ToolSelector(SHIPPED).select(goal)
    assert selection.whole and selection.catalog is SHIPPED
    assert selection.reason.startswith(why), selection.reason


def test_a_long_goal_is_shown_the_whole_catalog() -> None:
    """Pasted text: its commas and full stops are not where its tasks part."""
    article = "Revenue grew, costs fell. The board met in Paris, then Rome. " * 10
    selection = ToolSelector(SHIPPED).select("remember this: " + article)
    assert len("remember this: " + article) > MAX_GOAL_CHARS
    assert selection.whole and selection.reason == "a long goal"


def test_a_small_catalog_is_shown_whole() -> None:
    small = ToolCatalog.build(SHIPPED.specs[:MIN_CATALOG])
    selection = ToolSelector(small).select("what is 17 * 23 + 4")
    assert selection.whole and selection.reason == "few tools"


def test_a_subset_is_the_whole_catalogs_views_of_those_tools() -> None:
    part = SHIPPED.subset(["clock.now", "math.calculate", "no.such_tool"])
    assert [s.name for s in part.specs] == ["clock.now", "math.calculate"]
    for spec, compact, schema in zip(part.specs, part.compact_json, part.prompt_json, strict=True):
        index = SHIPPED.specs.index(spec)
        assert compact is SHIPPED.compact_json[index]
        assert schema is SHIPPED.prompt_json[index]
    assert part.by_name.keys() == {"clock.now", "math.calculate"}
    assert part.hash != SHIPPED.hash
    assert part.hash != SHIPPED.subset(["clock.now"]).hash


def test_the_cache_makes_a_new_index_when_a_tool_changes() -> None:
    cache = ToolSelectorCache()
    assert "clock.now" in cache.select(SHIPPED, "what time is it in Tokyo").catalog.by_name
    renamed = [
        ToolSpec("clock", "now", "The hour of day somewhere.", spec.parameters, keywords=("hour",))
        if spec.name == "clock.now"
        else spec
        for spec in SHIPPED.specs
    ]
    changed = ToolCatalog.build(renamed)
    selection = cache.select(changed, "what hour is it in Tokyo")
    assert not selection.whole and "clock.now" in selection.catalog.by_name
    assert selection.catalog.get("clock.now") is changed.get("clock.now")


@pytest.mark.parametrize(
    ("word", "other"),
    [
        ("prices", "price"),
        ("memories", "memory"),
        ("searches", "search"),
        ("indexed", "index"),
        ("indexing", "index"),
        ("meetings", "meeting"),
        ("divided", "divide"),
        ("multiplied", "multiply"),
        ("summarize", "summarise"),
        ("summarized", "summarise"),
    ],
)
def test_stemming_meets_a_words_forms(word: str, other: str) -> None:
    assert stem(word) == stem(other)


def test_stemming_leaves_words_ending_in_ss_or_us() -> None:
    assert stem("address") == "address" and stem("status") == "status"


@pytest.mark.parametrize(
    "goal",
    [
        "save 144 divided by 12 to result.txt",
        "remember that 12 squared is 144",
        "write 2 to the power of 10 to power.txt",
        "what is 100 minus 37",
    ],
)
def test_arithmetic_in_words_shows_the_calculator(goal: str) -> None:
    assert "math.calculate" in shown(goal)


@pytest.mark.parametrize("goal", ["remember what BRK.B is worth", "what is F trading at"])
def test_dotted_and_one_letter_tickers_show_the_quotes(goal: str) -> None:
    assert "quotes.get_stock_price" in shown(goal)


def test_the_words_i_and_a_are_not_tickers() -> None:
    assert not {"quotes.get_stock_price", "quotes.get_stock_prices"} & shown("I want a report")


def test_a_goal_is_cut_into_clauses_at_its_joints() -> None:
    assert [c.strip() for c in clauses("get NVDA, AAPL and MSFT then write a report; done")] == [
        "get NVDA",
        "AAPL",
        "MSFT",
        "write a report",
        "done",
    ]
    assert only_names(" New York") and only_names("AMD") and not only_names("sing a song")
