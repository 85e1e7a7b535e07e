"""Verification acts (issue 16, item 1): a step whose verdict fails is run once more
when its tool is idempotent (its dependents with it); otherwise the run replans once
(`ReplanRequested`); with `verify_before_dependents`, dependents wait for the verdict
and never build on a result that failed it. Run with the offline model, whose verifier
fails empty results; the lab's probe counts each tool's real calls.
"""

from __future__ import annotations

import json

import trio

from agents.offline._model import _answer_document as offline_answer_document
from agents.runs._outcomes import StepOutcome
from agents.runs._plan import Plan
from agents.runs._repair import renamed, reusable
from agents.runs._verifier import Verdict
from agents.tools._registry import AgentRegistry
from events import EventStore, StepCompleted, StepStarted, VerificationCompleted

from .conftest import (
    TIMEOUT_S,
    QuoteEndpoint,
    make_orchestrator,
    price_of,
    run_events,
    step_events,
    submit_plan,
)
from .lab import Probe, step


async def test_a_failed_verdict_of_an_idempotent_step_runs_it_and_its_dependents_again(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    plan = [step("s1", "flaky", label="f1"), step("s2", "touch", ["s1"], label="t2")]
    run_id = await submit_plan(store, plan)
    with trio.fail_after(TIMEOUT_S):
        result = await make_orchestrator(store, registry).execute(run_id)
    assert result.status == "completed", result
    records = await run_events(store, run_id)
    steps = step_events(records)
    assert steps["s1"] == ["StepStarted", "StepCompleted", "StepStarted", "StepCompleted"]
    assert steps["s2"] == ["StepStarted", "StepCompleted", "StepStarted", "StepCompleted"]
    verdicts = [r.data for r in records if r.type == "VerificationCompleted"]
    s1 = [v["passed"] for v in verdicts if v["step_id"] == "s1"]
    assert s1 == [False, True]
    attempts = [r.data["attempt"] for r in records if r.type == "StepStarted"]
    assert sorted(attempts) == [1, 1, 2, 2]
    assert "ReplanRequested" not in {r.type for r in records}
    assert probe.effect_count("f1") == 2 and probe.effect_count("t2") == 2
    assert "did not pass" not in (result.answer or "")
    assert "ready after 2 calls" in (result.answer or "")


async def test_a_failed_verdict_of_a_non_idempotent_step_replans_once_and_says_so(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    goal = "zq xv wk"  # nothing the offline planner can plan: the replan fails
    run_id = await submit_plan(store, [step("s1", "hollow", label="h1")], goal=goal)
    with trio.fail_after(TIMEOUT_S):
        result = await make_orchestrator(store, registry).execute(run_id)
    records = await run_events(store, run_id)
    replans = [r for r in records if r.type == "ReplanRequested"]
    assert len(replans) == 1
    assert "s1 (lab.hollow)" in replans[0].data["reason"]
    assert probe.effect_count("h1") == 1  # never run twice: it is not idempotent
    # No second plan: the answer says which part was not done, and why.
    assert [r.type for r in records].count("PlanCreated") == 1
    assert result.status == "completed", result
    assert "did not pass verification" in (result.answer or "")


async def test_a_replan_gets_fresh_step_ids_and_runs_once(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    """The offline planner turns "run the lab plan" into a lab step: the new plan's ids
    are prefixed, so the run's fold never takes them for the first plan's."""
    run_id = await submit_plan(store, [step("s1", "hollow", label="h1")])
    with trio.fail_after(TIMEOUT_S):
        await make_orchestrator(store, registry).execute(run_id)
    records = await run_events(store, run_id)
    plans = [r.data["steps"] for r in records if r.type == "PlanCreated"]
    assert len(plans) == 2
    assert all(s["id"].startswith("r1-") for s in plans[1])
    assert [r.type for r in records].count("ReplanRequested") == 1
    assert records[-1].type == "RunCompleted"


async def test_dependents_wait_for_the_verdict_and_never_build_on_a_bad_result(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    plan = [
        step("s1", "flaky", label="f1"),  # empty, then a value: passes on its second run
        step("s2", "touch", ["s1"], label="t2"),
        step("s3", "flaky", label="f3", empty_calls=5),  # empty twice: it counts as failed
        step("s4", "touch", ["s3"], label="t4"),
    ]
    run_id = await submit_plan(store, plan)
    orchestrator = make_orchestrator(store, registry, verify_before_dependents=True)
    with trio.fail_after(TIMEOUT_S):
        await orchestrator.execute(run_id)
    records = await run_events(store, run_id)
    steps = step_events(records)
    positions = {(r.type, r.data.get("step_id"), r.data.get("passed")): r.position for r in records}
    # s2 started only after s1's second, passing verdict.
    assert positions[("StepStarted", "s2", None)] > positions[("VerificationCompleted", "s1", True)]
    assert steps["s3"][-1] == "StepFailed"
    failed = next(r for r in records if r.type == "StepFailed" and r.data["step_id"] == "s3")
    assert failed.data["error_type"] == "VerificationFailed"
    assert steps["s4"] == ["StepSkipped"]
    assert probe.effect_count("t4") == 0 and probe.effect_count("t2") == 1


async def test_a_part_of_the_goal_without_a_result_is_planned_once_more(
    store: EventStore, entry_registry: AgentRegistry, quote_endpoint: QuoteEndpoint
) -> None:
    """Coverage: the plan dropped AAPL (as a model did with "Tokyo and New York"); the
    answer call finds no result for it, the run plans once more for that part alone,
    and the answer covers both."""
    plan = [
        {
            "id": "s1",
            "agent": "quotes",
            "action": "get_stock_price",
            "parameters": {"symbol": "NVDA"},
            "dependencies": [],
            "reasoning": "the price of NVDA",
        }
    ]
    run_id = await submit_plan(store, plan, goal="what are the prices of NVDA and AAPL")
    with trio.fail_after(TIMEOUT_S):
        result = await make_orchestrator(store, entry_registry).execute(run_id)
    assert result.status == "completed", result
    records = await run_events(store, run_id)
    (replan,) = [r for r in records if r.type == "ReplanRequested"]
    assert replan.data["reason"] == "parts of the goal not done: the price of AAPL"
    plans = [r.data["steps"] for r in records if r.type == "PlanCreated"]
    assert len(plans) == 2 and plans[1][0]["id"] == "s1"
    added = plans[1][1:]
    assert added and all(s["id"].startswith("c1-") for s in added)
    assert "AAPL" in json.dumps([s["parameters"] for s in added])
    answer = result.answer or ""
    assert str(price_of("NVDA")) in answer and str(price_of("AAPL")) in answer
    assert "Not done" not in answer
    assert step_events(records)["s1"] == ["StepStarted", "StepCompleted"]  # not run again


def test_the_offline_answer_says_which_part_was_not_done() -> None:
    reply = offline_answer_document(
        {
            "task": "answer",
            "goal": "what time is it in Tokyo and in New York",
            "results": [{"id": "s1", "result": {"zone": "Asia/Tokyo", "time": "09:00"}}],
        }
    )
    assert reply["missing"] == [{"part": "the time in New York", "why": "no step looked it up"}]
    assert reply["answer"].endswith("Not done: the time in New York (no step looked it up).")


def test_renamed_ids_stay_unique_and_within_the_limit() -> None:
    long_id = "x" * 99
    plan = Plan.from_data(
        [
            {"id": long_id, "agent": "lab", "action": "touch", "parameters": {"label": "a"}},
            {
                "id": "1",
                "agent": "lab",
                "action": "touch",
                "parameters": {"label": "${" + long_id + "}"},
                "dependencies": [long_id],
            },
        ]
    )
    new = renamed(plan)
    ids = [s.id for s in new.steps]
    assert len(set(ids)) == 2 and all(len(i) <= 100 for i in ids)
    assert new.steps[1].dependencies == (ids[0],)
    assert new.steps[1].parameters["label"] == "${" + ids[0] + "}"


def test_a_step_built_on_new_inputs_is_not_reused() -> None:
    old = Plan.from_data(
        [
            {"id": "s1", "agent": "lab", "action": "hollow", "parameters": {"label": "a"}},
            {
                "id": "s2",
                "agent": "lab",
                "action": "echo",
                "parameters": {"value": "${s1}"},
                "dependencies": ["s1"],
            },
        ]
    )
    outcomes = {
        "s1": StepOutcome("completed", result=""),
        "s2": StepOutcome("completed", result="x"),
    }
    fresh = renamed(old)
    original = {n.id: o.parameters for o, n in zip(old.steps, fresh.steps, strict=True)}
    found = reusable(fresh, old, outcomes, {"s1": Verdict(False, 0.9, "empty")}, original)
    assert found == {}  # s1 failed its verdict; s2 was built on it


async def test_a_resumed_run_acts_on_a_failed_verdict_recorded_before_the_crash(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    run_id = await submit_plan(store, [step("s1", "flaky", label="r1")])
    await store.append(
        f"run-{run_id}",
        [
            StepStarted(run_id, "s1"),
            StepCompleted(run_id, "s1", "", 0.01),
            VerificationCompleted(
                run_id, "s1", False, 0.95, "lab.flaky: the step returned an empty result."
            ),
        ],
    )
    probe.effect("r1")  # the first, empty call happened before the crash
    with trio.fail_after(TIMEOUT_S):
        result = await make_orchestrator(store, registry).execute(run_id, resume=True)
    assert result.status == "completed", result
    steps = step_events(await run_events(store, run_id))
    assert steps["s1"] == ["StepStarted", "StepCompleted", "StepStarted", "StepCompleted"]
    assert "ready after 2 calls" in (result.answer or "")
