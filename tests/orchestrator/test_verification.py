"""Verification runs in the background without holding up later steps, is batched
when several steps wait (a completed step is held while others of its run are still
unfinished, up to a bound), and the answer waits for all of it.

The model is the simulator behind the real openai SDK, with its realistic latency
profile scaled down: a verification takes tens of milliseconds, long enough for
later steps to start meanwhile, which the event positions show.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from agents.plan import PlanStep
from agents.prompting import PromptRepository
from agents.registry import AgentRegistry
from agents.simulator import Simulator
from agents.verifier import StepActivity, Verifier
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


async def test_dependent_step_starts_before_the_previous_verification_finishes(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    records, _ = await run_plan(nursery, store, registry, CHAIN)
    assert first(records, "StepStarted", "s2") < first(records, "VerificationCompleted", "s1")
    assert first(records, "StepStarted", "s3") < first(records, "VerificationCompleted", "s2")


async def test_answer_waits_for_every_verification(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    steps = [*CHAIN, step("broken", "fail", message="no")]
    records, _ = await run_plan(nursery, store, registry, steps)
    assert sorted(verified_steps(records)) == ["s1", "s2", "s3"]  # not the failed step
    last_verification = max(r.position for r in records if r.type == "VerificationCompleted")
    answer = next(r for r in records if kinds([r]) == ["LLMCallCompleted(answer)"])
    assert last_verification < answer.position < first(records, "RunCompleted")
    assert records[-1].type == "RunCompleted"
    verdicts = [r.data for r in records if r.type == "VerificationCompleted"]
    assert all(v["passed"] and v["confidence"] > 0 for v in verdicts)


async def test_verify_before_dependents_makes_dependents_wait(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    records, _ = await run_plan(nursery, store, registry, CHAIN, verify_before_dependents=True)
    assert first(records, "VerificationCompleted", "s1") < first(records, "StepStarted", "s2")
    assert first(records, "VerificationCompleted", "s2") < first(records, "StepStarted", "s3")
    assert verified_steps(records) == ["s1", "s2", "s3"]


FAN = [sleep_step(f"f{i}", 0.01 * i) for i in range(4)]


@pytest.mark.parametrize(
    ("batching", "fewest", "most"), [(True, 1, 1), (False, 4, 4)], ids=["batched", "one-by-one"]
)
async def test_pending_verifications_are_sent_in_one_call_when_batching(
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
    assert simulator.statistics().by_purpose["verify"] == verify_calls


async def test_a_chain_is_verified_in_one_call_after_its_last_step(
    nursery: trio.Nursery, store: EventStore, registry: AgentRegistry
) -> None:
    records, simulator = await run_plan(nursery, store, registry, CHAIN)
    assert kinds(records).count("LLMCallCompleted(verify)") == 1
    assert simulator.statistics().by_purpose["verify"] == 1
    assert first(records, "StepCompleted", "s3") < first(records, "VerificationCompleted", "s1")


async def test_a_step_is_held_for_at_most_hold_s_while_others_run(
    nursery: trio.Nursery, store: EventStore
) -> None:
    simulator, url = await start_simulator(nursery, latency_profile="none")
    provider = sim_provider(url, store)
    activity = StepActivity()
    verifier = Verifier(
        store, provider, PromptRepository(), "r-hold", "a goal", activity=activity, hold_s=0.05
    )
    activity.begin(2)  # another step keeps the run busy for the whole test
    with trio.fail_after(TIMEOUT_S):  # an unbounded hold would wait here forever
        async with trio.open_nursery() as inner:
            await inner.start(verifier.run)
            await verifier.submit(PlanStep("one", "lab", "sleep"), {"slept": 0})
            await verifier.drain()
    await provider.aclose()
    assert "one" in verifier.verdicts and activity.unfinished == 2
    assert simulator.statistics().by_purpose["verify"] == 1


async def test_step_activity_is_idle_only_when_every_step_is_finished() -> None:
    activity = StepActivity()
    await activity.wait_idle()  # nothing begun: idle at once
    activity.begin(2)
    activity.end()
    with trio.move_on_after(0.01) as waited:
        await activity.wait_idle()
    assert waited.cancelled_caught and activity.unfinished == 1
    activity.end()
    with trio.fail_after(1):
        await activity.wait_idle()
    activity.end()  # never below zero
    assert activity.unfinished == 0
