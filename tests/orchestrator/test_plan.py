"""Plan validation (a DAG over known tools with typed parameters) and step references."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.errors import InvalidPlan, ToolError
from agents.llm import ToolCatalog
from agents.runs._plan import Plan, PlanStep, _acyclic, parse_plan, resolve, validate_plan
from tests.python_process import python_lines

from .lab import LAB_SPECS, sleep_step, step

CATALOG = ToolCatalog.build(LAB_SPECS)


def problems_of(*steps: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidPlan) as caught:
        validate_plan(Plan.from_data(steps), CATALOG)
    return caught.value.problems


def test_valid_plan_passes_unchanged() -> None:
    plan = Plan.from_data([sleep_step("a", 1), sleep_step("b", 1, ["a"])])
    assert validate_plan(plan, CATALOG) == plan


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        (
            [sleep_step("a", 1, ["b"]), sleep_step("b", 1, ["c"]), sleep_step("c", 1, ["a"])],
            "dependency cycle: a -> b -> c -> a (each step depends on the next)",
        ),
        ([sleep_step("a", 1, ["a"])], "step a depends on itself"),
        (
            [{"id": "a", "agent": "lab", "action": "dance", "parameters": {}}],
            "step a: unknown tool 'lab.dance'",
        ),
        (
            [{"id": "a", "agent": "nobody", "action": "sleep", "parameters": {}}],
            "step a: unknown tool 'nobody.sleep'",
        ),
        ([step("a", "sleep", label="a")], "step a: missing parameter 'seconds'"),
        (
            [step("a", "sleep", label="a", seconds="ten")],
            "step a: parameter 'seconds' should be number, got str",
        ),
        (
            [step("a", "sleep", label="a", seconds=True)],
            "step a: parameter 'seconds' should be number, got boolean",
        ),
        (
            [step("a", "sleep", label="a", seconds=1, colour="red")],
            "step a: unknown parameter 'colour'",
        ),
        (
            [step("a", "odd", kind="weird")],
            "step a: parameter 'kind' must be one of object, int_keys, huge",
        ),
        ([sleep_step("a", 1), sleep_step("a", 2)], "step ids are not unique"),
        (
            [sleep_step("a", 1, ["ghost"])],
            "step a: dependency 'ghost' is not a step of the plan",
        ),
        (
            [step("a", "echo", value="${ghost.price}")],
            "step a: dependency 'ghost' is not a step of the plan",
        ),
    ],
    ids=[
        "cycle",
        "self-dependency",
        "unknown-action",
        "unknown-agent",
        "missing-parameter",
        "wrong-type",
        "boolean-for-number",
        "unknown-parameter",
        "not-in-enum",
        "duplicate-ids",
        "missing-dependency",
        "reference-to-missing-step",
    ],
)
def test_invalid_plan_names_the_problem(steps: list[dict[str, Any]], problem: str) -> None:
    assert problem in problems_of(*steps)


def test_a_cycle_of_three_is_named_step_by_step_in_order() -> None:
    """The cycle is reported as the steps walk it, starting where the plan first enters
    it, not as an unordered set: a reader can follow it and see which edge to cut."""
    problems = problems_of(
        sleep_step("start", 1),
        sleep_step("fetch", 1, ["start", "report"]),
        sleep_step("sum", 1, ["fetch"]),
        sleep_step("report", 1, ["sum"]),
    )
    assert problems == [
        "dependency cycle: fetch -> report -> sum -> fetch (each step depends on the next)"
    ]


def test_every_cycle_of_a_plan_is_named() -> None:
    problems = problems_of(
        sleep_step("a", 1, ["b"]),
        sleep_step("b", 1, ["a"]),
        sleep_step("c", 1, ["d"]),
        sleep_step("d", 1, ["c"]),
    )
    assert problems == [
        "dependency cycle: a -> b -> a (each step depends on the next)",
        "dependency cycle: c -> d -> c (each step depends on the next)",
    ]


def test_every_problem_is_listed_not_just_the_first() -> None:
    problems = problems_of(
        step("a", "sleep", label="a"),
        {"id": "b", "agent": "lab", "action": "dance"},
    )
    assert problems == ["step a: missing parameter 'seconds'", "step b: unknown tool 'lab.dance'"]


def test_reference_adds_the_implied_dependency() -> None:
    plan = Plan.from_data(
        [
            sleep_step("s1", 1),
            sleep_step("s2", 1),
            step("s3", "echo", ["s2"], value={"first": "${s1.slept}", "text": "after ${s2}"}),
        ]
    )
    checked = validate_plan(plan, CATALOG)
    assert checked.step("s3").dependencies == ("s2", "s1")
    assert checked.step("s1").dependencies == ()


def test_reference_is_accepted_where_a_typed_value_is_expected() -> None:
    plan = Plan.from_data([sleep_step("s1", 1), step("s2", "sleep", label="x", seconds="${s1}")])
    assert validate_plan(plan, CATALOG).step("s2").dependencies == ("s1",)


def test_a_compact_step_names_its_tool_and_leaves_implied_dependencies_out() -> None:
    """The compact form of a plan reply (`features.compact_plan_steps`)."""
    plan = parse_plan(
        {
            "steps": [
                {"id": "s1", "tool": "lab.sleep", "parameters": {"label": "a", "seconds": 1}},
                {"id": "s2", "tool": "lab.echo", "parameters": {"value": "${s1.slept}"}},
                {"tool": "lab.echo", "parameters": {"value": 1}, "dependencies": ["s1"]},
            ]
        }
    )
    checked = validate_plan(plan, CATALOG)
    assert [(s.id, s.agent, s.action) for s in checked.steps] == [
        ("s1", "lab", "sleep"),
        ("s2", "lab", "echo"),
        ("s3", "lab", "echo"),
    ]
    assert [s.dependencies for s in checked.steps] == [(), ("s1",), ("s1",)]
    assert checked.to_data()[1]["agent"] == "lab" and "tool" not in checked.to_data()[1]


@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        ("sleep", 'step 1: tool must be "<agent>.<action>"'),
        ("lab.", 'step 1: tool must be "<agent>.<action>"'),
        (".sleep", 'step 1: tool must be "<agent>.<action>"'),
        (5, "step 1: tool must be a string, got number"),
    ],
)
def test_a_compact_step_with_a_malformed_tool_is_invalid(tool: object, problem: str) -> None:
    with pytest.raises(InvalidPlan) as caught:
        parse_plan({"steps": [{"id": "s1", "tool": tool, "parameters": {}}]})
    assert caught.value.problems[0].startswith(problem), caught.value.problems


@pytest.mark.parametrize(
    "step",
    [
        {"agent": "lab", "action": "sleep", "tool": "lab.sleep"},  # both, agreeing
        {"agent": None, "action": None, "tool": "lab.sleep"},  # null ones are not given
        {"agent": "", "tool": "lab.sleep"},
        {"agent": "lab", "action": "sleep", "tool": None},
    ],
)
def test_a_tool_and_agent_action_that_agree_or_are_missing_name_one_tool(
    step: dict[str, Any],
) -> None:
    plan = parse_plan({"steps": [{"id": "s1", **step}]})
    assert (plan.steps[0].agent, plan.steps[0].action) == ("lab", "sleep")


def test_a_tool_that_disagrees_with_agent_and_action_is_invalid() -> None:
    with pytest.raises(InvalidPlan) as caught:
        parse_plan({"steps": [{"id": "s1", "agent": "lab", "action": "sleep", "tool": "lab.echo"}]})
    assert caught.value.problems == ["step 1: tool 'lab.echo' is not agent 'lab', action 'sleep'"]


def test_parse_plan_of_empty_steps_carries_the_model_reason() -> None:
    with pytest.raises(InvalidPlan, match="I cannot do that"):
        parse_plan({"steps": [], "error": "I cannot do that"})


@pytest.mark.parametrize(
    "document",
    [{"plan": []}, {"steps": "s1"}, {"steps": ["not an object"]}],
    ids=["no-steps-key", "steps-not-a-list", "step-not-an-object"],
)
def test_parse_plan_of_malformed_document_raises_invalid_plan(document: dict[str, Any]) -> None:
    with pytest.raises(InvalidPlan):
        parse_plan(document)


RESULTS = {
    "s1": {"symbol": "NVDA", "price": 123.5, "history": [1, 2, 3], "meta": {"cur": "USD"}},
    "s2": "plain text",
    "s3": 7,
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${s1}", RESULTS["s1"]),
        ("${s1.price}", 123.5),
        ("${s1.meta.cur}", "USD"),
        ("${s1.history.2}", 3),
        ("${s3}", 7),
        ("NVDA is at ${s1.price} ${s1.meta.cur}", "NVDA is at 123.5 USD"),
        ("${s2} and ${s3}", "plain text and 7"),
        ({"nested": ["${s1.symbol}", {"deep": "${s3}"}]}, {"nested": ["NVDA", {"deep": 7}]}),
        ("no reference here", "no reference here"),
        (42, 42),
    ],
    ids=[
        "whole-result",
        "field",
        "nested-field",
        "list-index",
        "number",
        "inside-text",
        "two-inside-text",
        "inside-structures",
        "plain-text",
        "not-a-string",
    ],
)
def test_references_resolve_to_earlier_results(value: Any, expected: Any) -> None:
    assert resolve(value, RESULTS) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${s9}", "reference to step 's9', which has no result"),
        ("${s1.volume}", "step 's1' result has no field 'volume'"),
        ("${s1.history.9}", "step 's1' result has no field 'history.9'"),
    ],
    ids=["unknown-step", "unknown-field", "index-out-of-range"],
)
def test_unresolvable_reference_raises_tool_error(value: str, message: str) -> None:
    with pytest.raises(ToolError) as caught:
        resolve(value, RESULTS)
    assert str(caught.value) == message


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.lists(st.integers(0, 9), max_size=4)),
        min_size=1,
        max_size=8,
        unique_by=lambda pair: pair[0],
    )
)
def test_the_cycle_check_agrees_with_networkx(pairs: list[tuple[int, list[int]]]) -> None:
    """The pure-Python pre-check against networkx on random graphs: self-dependencies,
    dependencies on steps not in the plan (8 and 9 never are) and several cycles."""
    import networkx as nx

    steps = [PlanStep(f"s{n}", "lab", "x", {}, tuple(f"s{d}" for d in deps)) for n, deps in pairs]
    graph: nx.DiGraph[str] = nx.DiGraph()
    ids = {s.id for s in steps}
    graph.add_nodes_from(ids)
    graph.add_edges_from((s.id, d) for s in steps for d in s.dependencies if d in ids)
    assert _acyclic(steps) == nx.is_directed_acyclic_graph(graph)


_VALIDATE_WITHOUT_NETWORKX = """
import sys
from agents.runs._plan import PlanStep, _cycle_problems
chain = [PlanStep("a", "lab", "x", {}, ()), PlanStep("b", "lab", "x", {}, ("a",))]
print(_cycle_problems(chain), "networkx" in sys.modules)
loop = [PlanStep("a", "lab", "x", {}, ("b",)), PlanStep("b", "lab", "x", {}, ("a",))]
print(_cycle_problems(loop), "networkx" in sys.modules)
"""


def test_a_plan_without_a_cycle_is_checked_without_importing_networkx() -> None:
    assert python_lines(_VALIDATE_WITHOUT_NETWORKX) == [
        "[] False",
        "['dependency cycle: a -> b -> a (each step depends on the next)'] True",
    ]
