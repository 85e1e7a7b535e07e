"""Verification runs in the background without holding up later steps; with batching,
completed steps are held (for at most `hold_s`) and verified by the answer call
itself, and every verification comes before the run's terminal event.

The model is the simulator behind the real openai SDK, with its realistic latency
profile scaled down (a model call takes tens of milliseconds); event positions show
the order of what happened.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from agents.llm._prompting import PromptRepository
from agents.offline._model import _answer_document as offline_answer_document
from agents.offline._simulator import Simulator
from agents.runs._plan import PlanStep
from agents.runs._verifier import (
    FAILED_WITHOUT_NOTES,
    PASSED_WITH_ANSWER,
    Verdict,
    Verifier,
    folded_verdicts,
)
from agents.tools._registry import AgentRegistry
from events import EventStore, RecordedEvent

from .conftest import (
    TIMEOUT_S,
    first,
    kinds,
    make_orchestrator,
    run_events,
    sim_provider,
    start_simulator,
    submit_plan,
)
from .lab import sleep_step, step

TIME_SCALE = 0.1  # verification ~80 ms, the answer ~80 ms

CHAIN = [sleep_step("s1", 0), sleep_step("s2", 0, ["s1"]), sleep_step("s3", 0, ["s2"])]


async def run_plan(
    nursery: trio.Nursery,
    store: EventStore,
    registry: AgentRegistry,
    steps: list[dict[str, Any]],
    **options: Any,
) -> tuple[list[RecordedEvent], Simulator]:
    simulator, url = await start_simulator(
        nursery, latency_profile="realistic", time_scale=TIME_SCALE, seed=7
    )
    provider = sim_provider(url, store)
    orchestrator = make_orchestrator(store, registry, provider, **options)
    run_id = await submit_plan(store, steps)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.execute(run_id)
    await provider.aclose()
    assert result.status == "completed", result.reason
    return await run_events(store, run_id), simulator


def verified_steps(records: list[RecordedEvent]) -> list[str]:
    return [r.data["step_id"] for r in records if r.type == "VerificationCompleted"]


async def test_dependents_never_wait_for_a_verification(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    records, _ = await run_plan(nursery, store, registry, CHAIN)
    assert first(records, "StepStarted", "s2") < first(records, "VerificationCompleted", "s1")
    assert first(records, "StepStarted", "s3") < first(records, "VerificationCompleted", "s2")


async def test_every_verification_comes_before_the_terminal_event(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    steps = [*CHAIN, step("broken", "fail", message="no")]
    records, _ = await run_plan(nursery, store, registry, steps)
    assert sorted(verified_steps(records)) == ["s1", "s2", "s3"]  # not the failed step
    last_verification = max(r.position for r in records if r.type == "VerificationCompleted")
    answer = next(r for r in records if kinds([r]) == ["LLMCallCompleted(answer)"])
    assert answer.position < last_verification < first(records, "RunCompleted")
    assert "LLMCallCompleted(verify)" not in kinds(records)  # the answer call verified them
    assert records[-1].type == "RunCompleted"
    verdicts = [r.data for r in records if r.type == "VerificationCompleted"]
    assert all(v["passed"] and v["confidence"] > 0 for v in verdicts)
    # Passed by the answer, which names only the steps that fail: no sentence per step.
    assert {v["notes"] for v in verdicts} == {PASSED_WITH_ANSWER}


def test_the_answer_names_only_the_failed_steps_and_the_others_pass() -> None:
    failed = {"id": "s2", "confidence": 0.95, "notes": "the step returned nothing"}
    reply = {"answer": "...", "verified": {"confidence": 0.8, "failed": [failed]}}
    verdicts = folded_verdicts(reply, ["s1", "s2", "s3"])
    assert verdicts is not None
    assert [v.passed for v in verdicts] == [True, False, True]
    assert verdicts[1] == Verdict(False, 0.95, "the step returned nothing")
    assert verdicts[0] == verdicts[2] == Verdict(True, 0.8, PASSED_WITH_ANSWER)
    assert folded_verdicts({"verified": {"confidence": 0.9, "failed": []}}, ["s1"]) == [
        Verdict(True, 0.9, PASSED_WITH_ANSWER)
    ]
    no_reason = {"verified": {"confidence": 0.9, "failed": [{"id": "s1"}]}}
    assert folded_verdicts(no_reason, ["s1"]) == [Verdict(False, 0.0, FAILED_WITHOUT_NOTES)]


@pytest.mark.parametrize(
    "reply",
    [
        {"answer": "no judgement"},
        {"verified": {"confidence": 0.9}},
        {"verified": {"failed": []}},
        {"verified": {"confidence": "high", "failed": []}},
        {"verified": {"confidence": float("nan"), "failed": []}},
        {"verified": {"confidence": 0.9, "failed": [{"id": "s9", "notes": "not asked"}]}},
        {"verified": {"confidence": 0.9, "failed": ["s1"]}},
        {"verdicts": [{"passed": True}]},
    ],
    ids=[
        "no-judgement",
        "no-failed-list",
        "no-confidence",
        "confidence-not-a-number",
        "confidence-nan",
        "a-step-not-asked-about",
        "an-entry-without-an-id",
        "the-batch-format",
    ],
)
def test_an_answer_without_a_usable_judgement_is_no_verdict(
    reply: dict[str, Any],
) -> None:
    assert folded_verdicts(reply, ["s1"]) is None


def test_the_offline_answer_lists_only_the_steps_that_fail() -> None:
    results = [
        {"id": "s1", "agent": "quotes", "action": "get_stock_price", "result": {"price": 1}},
        {"id": "s2", "agent": "quotes", "action": "get_stock_price", "result": {}},
        {"id": "s3", "agent": "calc", "action": "evaluate", "result": "fine"},
    ]
    verify = [{"id": "s1"}, {"id": "s2"}, {"id": "s3"}]
    reply = offline_answer_document({"goal": "g", "results": results, "verify": verify})
    assert "verdicts" not in reply
    assert reply["verified"]["failed"] == [
        {
            "id": "s2",
            "confidence": 0.95,
            "notes": "quotes.get_stock_price: the step returned an empty result.",
        }
    ]
    assert 0.0 < reply["verified"]["confidence"] <= 1.0
    everyone_passed = offline_answer_document(
        {"goal": "g", "results": results[:1], "verify": verify[:1]}
    )
    assert everyone_passed["verified"]["failed"] == []
    assert "verified" not in offline_answer_document({"goal": "g", "results": results})
    # Asked oddly (not a list, or ids that are no text): no judgement rather than a pass.
    odd = offline_answer_document({"goal": "g", "results": results, "verify": {"id": "s2"}})
    assert "verified" not in odd
    unhashable = [{"id": ["s2"]}, "s2", {"id": "s2"}]
    judged = offline_answer_document({"goal": "g", "results": results, "verify": unhashable})
    assert [f["id"] for f in judged["verified"]["failed"]] == ["s2"]


async def test_verify_before_dependents_makes_dependents_wait(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    records, _ = await run_plan(nursery, store, registry, CHAIN, verify_before_dependents=True)
    assert first(records, "VerificationCompleted", "s1") < first(records, "StepStarted", "s2")
    assert first(records, "VerificationCompleted", "s2") < first(records, "StepStarted", "s3")
    assert verified_steps(records) == ["s1", "s2", "s3"]


FAN = [sleep_step(f"f{i}", 0.01 * i) for i in range(4)]


@pytest.mark.parametrize(
    ("batching", "fewest", "most"), [(True, 0, 0), (False, 4, 4)], ids=["batched", "one-by-one"]
)
async def test_verification_calls_folded_into_the_answer_or_one_per_step(
    batching: bool,
    fewest: int,
    most: int,
    nursery: trio.Nursery,
    store: EventStore,
    registry: AgentRegistry,
) -> None:
    records, simulator = await run_plan(nursery, store, registry, FAN, step_batching=batching)
    verify_calls = kinds(records).count("LLMCallCompleted(verify)")
    assert sorted(verified_steps(records)) == ["f0", "f1", "f2", "f3"]
    assert fewest <= verify_calls <= most
    assert simulator.statistics().by_purpose.get("verify", 0) == verify_calls


async def test_a_chain_is_verified_by_the_answer_call_after_its_last_step(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    records, simulator = await run_plan(nursery, store, registry, CHAIN)
    assert kinds(records).count("LLMCallCompleted(verify)") == 0
    assert simulator.statistics().by_purpose.get("verify", 0) == 0
    assert sorted(verified_steps(records)) == ["s1", "s2", "s3"]
    assert first(records, "StepCompleted", "s3") < first(records, "VerificationCompleted", "s1")


async def test_a_step_held_past_hold_s_is_verified_in_the_background(
    nursery: trio.Nursery, store: EventStore
) -> None:
    simulator, url = await start_simulator(nursery, latency_profile="none")
    provider = sim_provider(url, store)
    verifier = Verifier(store, provider, PromptRepository(), "r-hold", "a goal", hold_s=0.05)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as inner:
            await inner.start(verifier.run)
            events = store.subscribe(stream="run-r-hold")
            await verifier.submit(PlanStep("one", "lab", "sleep"), {"slept": 0})
            async for verified in events:  # not drained: only the hold can end
                if verified.type == "VerificationCompleted":
                    break
            await verifier.drain()
    await provider.aclose()
    assert verified.type == "VerificationCompleted" and verified.data["step_id"] == "one"
    assert verifier.unverified == [] and simulator.statistics().by_purpose["verify"] == 1


async def test_steps_still_held_when_drained_are_left_for_the_answer(
    nursery: trio.Nursery, store: EventStore
) -> None:
    simulator, url = await start_simulator(nursery, latency_profile="none")
    provider = sim_provider(url, store)
    verifier = Verifier(store, provider, PromptRepository(), "r-fold", "a goal")
    step_one = PlanStep("one", "lab", "sleep")
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as inner:
            await inner.start(verifier.run)
            await verifier.submit(step_one, {"slept": 0})
            await verifier.drain()
        held = verifier.unverified
        await verifier.record_folded(held, {"answer": "no verdicts here"})
    await provider.aclose()
    assert held == [(step_one, {"slept": 0})] and verifier.unverified == []
    # The reply had no verdicts, so the step was verified in a call of its own.
    assert "one" in verifier.verdicts and simulator.statistics().by_purpose["verify"] == 1


async def test_held_steps_are_verified_when_the_answer_call_fails(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    simulator, url = await start_simulator(
        nursery, fault_rate=1.0, faults=("500",), fault_purposes=("answer",)
    )
    provider = sim_provider(url, store, max_retries=1)
    orchestrator = make_orchestrator(store, registry, provider)
    run_id = await submit_plan(store, CHAIN)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.execute(run_id)
    await provider.aclose()
    assert result.status == "failed" and "could not compose the answer" in str(result.reason)
    records = await run_events(store, run_id)
    assert sorted(verified_steps(records)) == ["s1", "s2", "s3"]
    assert max(first(records, "VerificationCompleted", s) for s in ("s1", "s2", "s3")) < first(
        records, "RunFailed"
    )
    purposes = simulator.statistics().by_purpose
    assert purposes["verify"] == 1 and simulator.statistics().faults == {"500": purposes["answer"]}
