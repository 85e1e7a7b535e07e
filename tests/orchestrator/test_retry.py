"""`runs retry`: a failed or cancelled run is asked for again as a new run linked to
it (`RunRequested.retry_of`, `RunRetried` on the old stream); the new run takes the old
plan, reuses the results of completed steps whose tools are idempotent (`StepReused`)
and runs the others again. Side effects are counted by the lab's probe, so a step that
ran twice is visible.
"""

from __future__ import annotations

import pytest
import trio

from agents.errors import RunNotFound, RunNotRetryable
from agents.tools._registry import AgentRegistry
from events import (
    EventStore,
    RunCancelled,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepStarted,
    VerificationCompleted,
)

from .conftest import TIMEOUT_S, make_orchestrator, run_events, step_events, submit_plan
from .lab import Probe, step

PLAN = [
    step("s1", "touch", label="s1"),  # idempotent, completed in the first run: reused
    step("s2", "append", label="s2"),  # not idempotent, completed: runs again
    step("s3", "touch", label="s3", dependencies=["s1", "s2"]),  # failed: runs again
]


async def failed_run(store: EventStore) -> str:
    """A run as a first attempt left it: s1 and s2 done, s3 failed, the run failed."""
    run_id = await submit_plan(store, PLAN, goal="touch, append, touch")
    await store.append(
        f"run-{run_id}",
        [
            StepStarted(run_id, "s1"),
            StepCompleted(run_id, "s1", {"touched": "s1", "first": True}, 0.01),
            StepStarted(run_id, "s2"),
            StepCompleted(run_id, "s2", {"appended": "s2"}, 0.01),
            StepStarted(run_id, "s3"),
            StepFailed(run_id, "s3", "ToolError", "the disk was full", True),
            RunFailed(run_id, "s3 failed"),
        ],
    )
    return run_id


async def test_a_retry_reuses_idempotent_results_and_runs_the_rest(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    orchestrator = make_orchestrator(store, registry)
    old = await failed_run(store)
    with trio.fail_after(TIMEOUT_S):
        submitted = await orchestrator.retry(old)
        result = await orchestrator.execute(submitted.run_id)
    assert result.status == "completed", result
    new_events = await run_events(store, submitted.run_id)
    assert new_events[0].data["retry_of"] == old
    steps = step_events(new_events)
    assert steps["s1"] == ["StepReused"]
    assert steps["s2"][-1] == "StepCompleted" and "StepStarted" in steps["s2"]
    assert steps["s3"][-1] == "StepCompleted"
    reused = next(r for r in new_events if r.type == "StepReused")
    assert reused.data["result"] == {"touched": "s1", "first": True}
    assert reused.data["from_run_id"] == old
    # s1 did not run again; s2 and s3 did, once each.
    assert probe.effect_count("s1") == 0
    assert probe.effect_count("s2") == 1 and probe.effect_count("s3") == 1
    old_events = await run_events(store, old)
    assert old_events[-1].type == "RunRetried"
    assert old_events[-1].data["new_run_id"] == submitted.run_id
    # The old run is not taken for unfinished, and not retried twice.
    assert old not in await orchestrator.unfinished_runs()
    with pytest.raises(RunNotRetryable, match="retried already"):
        await orchestrator.retry(old)


async def test_only_failed_or_cancelled_runs_are_retried(
    store: EventStore, registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, registry)
    with pytest.raises(RunNotFound):
        await orchestrator.retry("nope")
    running = await submit_plan(store, PLAN)
    with pytest.raises(RunNotRetryable, match="only failed or cancelled"):
        await orchestrator.retry(running)
    cancelled = await submit_plan(store, [step("s1", "touch", label="c1")])
    await store.append(f"run-{cancelled}", [RunCancelled(cancelled, "by request")])
    with trio.fail_after(TIMEOUT_S):
        submitted = await orchestrator.retry(cancelled)
        result = await orchestrator.execute(submitted.run_id)
    assert result.status == "completed"
    completed = await orchestrator.execute(submitted.run_id)
    assert completed.status == "completed"
    with pytest.raises(RunNotRetryable, match="it is completed"):
        await orchestrator.retry(submitted.run_id)


async def test_a_retry_runs_again_a_step_whose_verdict_failed(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    """A completed idempotent step judged bad in the first run is not reused."""
    run_id = await submit_plan(store, [step("s1", "touch", label="v1")], goal="touch")
    await store.append(
        f"run-{run_id}",
        [
            StepStarted(run_id, "s1"),
            StepCompleted(run_id, "s1", {"touched": "wrong"}, 0.01),
            VerificationCompleted(run_id, "s1", False, 0.9, "it touched the wrong thing"),
            RunCancelled(run_id, "by request"),
        ],
    )
    orchestrator = make_orchestrator(store, registry)
    with trio.fail_after(TIMEOUT_S):
        submitted = await orchestrator.retry(run_id)
        result = await orchestrator.execute(submitted.run_id)
    assert result.status == "completed", result
    steps = step_events(await run_events(store, submitted.run_id))
    assert steps["s1"][0] == "StepStarted"  # run again, not StepReused
    assert probe.effect_count("v1") == 1


async def test_two_retries_of_one_run_record_one(
    store: EventStore, registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, registry)
    old = await failed_run(store)
    outcomes: list[object] = []

    async def retry() -> None:
        try:
            outcomes.append(await orchestrator.retry(old))
        except RunNotRetryable as exc:
            outcomes.append(exc)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(retry)
            nursery.start_soon(retry)
    assert sorted(type(o).__name__ for o in outcomes) == ["RunNotRetryable", "Submitted"]
    streams = await trio.to_thread.run_sync(store.log.streams, "run-")
    assert len(streams) == 2  # the old run and one new one: no orphan
