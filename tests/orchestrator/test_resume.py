"""Resume after a crash: the log says what was done. Completed steps keep their results
and do not run again; an interrupted idempotent step runs again (attempt + 1); an
interrupted non-idempotent one fails with a clear reason unless configured otherwise.

Interrupted runs are written into an LMDB store in `tmp_path` as a crash leaves them,
the store is closed, and a fresh store, registry and orchestrator take over, as after
a restart. Side effects are counted in a file, so repeats are visible across it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from agents.errors import RunAlreadyFinished, RunNotFound
from agents.runs._orchestrator import Orchestrator, RunResult
from agents.tools import AgentContext, AgentSettings
from agents.tools._math import MathAgent
from agents.tools._registry import AgentRegistry
from events import (
    Event,
    EventStore,
    IntentAnalyzed,
    PlanCreated,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    StepCompleted,
    StepStarted,
    StoreOptions,
    VerificationCompleted,
    open_event_store,
    typed_event,
)

from .conftest import (
    TIMEOUT_S,
    QuoteEndpoint,
    lab_registry,
    make_orchestrator,
    run_events,
    step_events,
    submit_plan,
)
from .lab import LabAgent, Probe, sleep_step, step
from .test_orchestrator import wait_for_step_start

OPTIONS = StoreOptions(sync=False, map_size_mb=16)
RUN = "crashed"
PLAN = [
    step("s1", "touch", label="s1"),  # completed before the crash
    step("s2", "touch", label="s2"),  # idempotent, started, not finished
    step("s3", "append", label="s3"),  # not idempotent, started, not finished
    step("s4", "echo", ["s1"], value="after ${s1.label}"),  # not started
]
STEP_NOT_RETRIED = (
    "interrupted by a restart; lab.append is not idempotent, so it is not run again "
    "(set resume.retry_non_idempotent to allow it)"
)


@asynccontextmanager
async def lmdb_store(path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(path, OPTIONS) as store:
        yield store


async def write(path: Path, streams: dict[str, Sequence[Event]]) -> None:
    """Append each stream's events, then close the store: the state a crash left."""
    with trio.fail_after(TIMEOUT_S):
        async with lmdb_store(path) as store:
            for stream, events in streams.items():
                await store.append(stream, events, correlation=stream.removeprefix("run-"))


def resume_registry(probe: Probe) -> AgentRegistry:
    context = AgentContext(AgentSettings(extras={"probe": probe}))
    return AgentRegistry({"lab": LabAgent, "math": MathAgent}, context)


async def write_interrupted_run(path: Path, probe: Probe, *, verified: bool = False) -> None:
    events: list[Event] = [
        RunRequested(RUN, "sess", "run the lab plan"),
        PlanCreated(RUN, PLAN),
        StepStarted(RUN, "s1", 1),
        StepStarted(RUN, "s2", 1),
        StepStarted(RUN, "s3", 1),
        StepCompleted(RUN, "s1", {"label": "s1", "count": 1}, 0.001),
    ]
    if verified:
        events.append(VerificationCompleted(RUN, "s1", True, 0.9, "fine"))
    await write(path, {f"run-{RUN}": events})
    for label in ("s1", "s2", "s3"):  # what the tools did before the process died
        probe.effect(label)


async def resume(path: Path, probe: Probe, **options: Any) -> tuple[RunResult, list[RecordedEvent]]:
    async with lmdb_store(path) as store:
        orchestrator = make_orchestrator(store, resume_registry(probe), **options)
        with trio.fail_after(TIMEOUT_S):
            result = await orchestrator.execute(RUN, resume=True)
        return result, await run_events(store, RUN)


def after_resume(records: list[RecordedEvent]) -> list[RecordedEvent]:
    index = next(i for i, r in enumerate(records) if r.type == "RunResumed")
    return records[index:]


async def test_resume_does_not_rerun_completed_steps_and_reruns_idempotent_ones(
    tmp_path: Path, probe: Probe
) -> None:
    await write_interrupted_run(tmp_path / "data", probe)
    result, records = await resume(tmp_path / "data", probe)
    assert result.status == "completed", result.reason
    new = after_resume(records)
    assert new[0].type == "RunResumed" and records.index(new[0]) == 6
    assert step_events(new) == {
        "s2": ["StepStarted", "StepCompleted"],
        "s3": ["StepFailed"],
        "s4": ["StepStarted", "StepCompleted"],
    }
    started = {r.data["step_id"]: r.data["attempt"] for r in new if r.type == "StepStarted"}
    assert started == {"s2": 2, "s4": 1}
    failed = next(r.data for r in new if r.type == "StepFailed")
    assert (failed["step_id"], failed["error_type"], failed["message"]) == (
        "s3",
        "NotRetried",
        STEP_NOT_RETRIED,
    )
    completed = {r.data["step_id"]: r.data["result"] for r in new if r.type == "StepCompleted"}
    assert completed["s4"] == {"value": "after s1"}  # the result from before the crash
    assert [probe.effect_count(s) for s in ("s1", "s2", "s3")] == [1, 2, 1]
    assert records[-1].type == "RunCompleted"


async def test_resume_with_retry_non_idempotent_runs_the_interrupted_step_again(
    tmp_path: Path, probe: Probe
) -> None:
    await write_interrupted_run(tmp_path / "data", probe)
    result, records = await resume(tmp_path / "data", probe, retry_non_idempotent=True)
    assert result.status == "completed"
    new = after_resume(records)
    assert step_events(new)["s3"] == ["StepStarted", "StepCompleted"]
    assert (
        next(
            r.data["attempt"] for r in new if r.type == "StepStarted" and r.data["step_id"] == "s3"
        )
        == 2
    )
    assert [probe.effect_count(s) for s in ("s1", "s2", "s3")] == [1, 2, 2]


@pytest.mark.parametrize("verified", [False, True], ids=["unverified", "verified"])
async def test_resume_verifies_completed_steps_only_if_not_verified_before(
    verified: bool, tmp_path: Path, probe: Probe
) -> None:
    await write_interrupted_run(tmp_path / "data", probe, verified=verified)
    _, records = await resume(tmp_path / "data", probe)
    checked = sorted(
        r.data["step_id"] for r in after_resume(records) if r.type == "VerificationCompleted"
    )
    assert checked == (["s2", "s4"] if verified else ["s1", "s2", "s4"])


async def test_resume_of_a_run_interrupted_before_planning_plans_and_completes(
    tmp_path: Path, probe: Probe
) -> None:
    await write(tmp_path / "data", {f"run-{RUN}": [RunRequested(RUN, "sess", "what is 2 + 3")]})
    result, records = await resume(tmp_path / "data", probe)
    assert (result.status, result.answer) == ("completed", "2 + 3 = 5")
    assert [r.type for r in records[:3]] == ["RunRequested", "RunResumed", "IntentAnalyzed"]


@pytest.mark.parametrize("streaming", [False, True], ids=["whole-plan", "streamed-plan"])
async def test_resume_of_a_run_killed_while_its_plan_streamed_keeps_completed_steps(
    streaming: bool,
    tmp_path: Path,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    # A streamed plan starts steps before PlanCreated is appended; a crash in between
    # leaves completed steps in a stream that has no plan yet.
    nvda = {"symbol": "NVDA", "price": 1.0, "currency": "USD"}
    await store.append(
        f"run-{RUN}",
        [
            RunRequested(RUN, "sess", "get the price of NVDA and AAPL"),
            IntentAnalyzed(RUN, "quote", {"tickers": ["NVDA", "AAPL"]}),
            StepStarted(RUN, "s1", 1),
            StepStarted(RUN, "s2", 1),
            StepCompleted(RUN, "s1", nvda, 0.05),
        ],
    )
    orchestrator = make_orchestrator(store, entry_registry, streaming_plan=streaming)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.execute(RUN, resume=True)
    assert result.status == "completed", result.reason
    assert quote_endpoint.requests == {"AAPL": 1}  # NVDA's step completed before the crash
    new = after_resume(await run_events(store, RUN))
    started = {r.data["step_id"]: r.data["attempt"] for r in new if r.type == "StepStarted"}
    assert started == {"s2": 2}


async def test_unfinished_runs_lists_only_runs_without_a_terminal_event(
    tmp_path: Path, probe: Probe
) -> None:
    plan = [step("a", "touch", label="a")]
    await write(
        tmp_path / "data",
        {
            "run-done": [RunRequested("done", "s", "g"), RunCompleted("done", "ok")],
            "run-failed": [RunRequested("failed", "s", "g"), RunFailed("failed", "no")],
            "run-cancelled": [RunRequested("cancelled", "s", "g"), RunCancelled("cancelled")],
            "run-mid": [
                RunRequested("mid", "s", "g"),
                PlanCreated("mid", plan),
                StepStarted("mid", "a", 1),
            ],
            "run-new": [RunRequested("new", "s", "what is 6 * 7")],
            "session-s": [RunRequested("not-a-run-stream", "s", "g")],
        },
    )
    async with lmdb_store(tmp_path / "data") as store:
        orchestrator = make_orchestrator(store, resume_registry(probe))
        assert sorted(await orchestrator.unfinished_runs()) == ["mid", "new"]
        with trio.fail_after(TIMEOUT_S):
            results = await orchestrator.resume_unfinished()
        assert sorted((r.run_id, r.status) for r in results) == [
            ("mid", "completed"),
            ("new", "completed"),
        ]
        assert await orchestrator.unfinished_runs() == []
    assert probe.effect_count("a") == 1


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_resuming_a_finished_run_raises_run_already_finished(
    status: str, tmp_path: Path, probe: Probe
) -> None:
    terminal: dict[str, Event] = {
        "completed": RunCompleted("r", "done"),
        "failed": RunFailed("r", "no"),
        "cancelled": RunCancelled("r"),
    }
    await write(tmp_path / "data", {"run-r": [RunRequested("r", "s", "g"), terminal[status]]})
    async with lmdb_store(tmp_path / "data") as store:
        orchestrator: Orchestrator = make_orchestrator(store, resume_registry(probe))
        with pytest.raises(RunAlreadyFinished) as caught:
            await orchestrator.execute("r", resume=True)
        assert str(caught.value) == f"run 'r' is already {status}"
        assert (caught.value.run_id, caught.value.status) == ("r", status)
        assert await store.stream_version("run-r") == 2  # nothing appended


async def test_resuming_an_unknown_run_raises_run_not_found(
    store: EventStore, registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, registry)
    with pytest.raises(RunNotFound) as caught:
        await orchestrator.execute("ghost", resume=True)
    assert str(caught.value) == "no run with id 'ghost'"
    assert store.head_position == 0


async def test_shutdown_leaves_a_running_run_unfinished_and_resume_finishes_it(
    store: EventStore, registry: AgentRegistry, probe: Probe, jump_clock: MockClock
) -> None:
    plan = [step("t", "touch", label="t"), sleep_step("long", 3600, ["t"])]
    run_id = await submit_plan(store, plan)
    with trio.fail_after(3 * 3600):
        async with trio.open_nursery() as server:  # the server's nursery, cancelled on SIGINT
            first = make_orchestrator(store, registry, step_timeout_s=2 * 3600)
            server.start_soon(first.execute, run_id)
            await wait_for_step_start(store, run_id, "long")
            server.cancel_scope.cancel()
        stopped = await run_events(store, run_id)
        assert not {"RunCompleted", "RunFailed", "RunCancelled"} & {r.type for r in stopped}
        restarted = make_orchestrator(store, lab_registry(probe), step_timeout_s=2 * 3600)
        assert await restarted.unfinished_runs() == [run_id]
        result = await restarted.execute(run_id, resume=True)
    assert result.status == "completed"
    new = after_resume((await run_events(store, run_id))[len(stopped) :])
    assert step_events(new) == {"long": ["StepStarted", "StepCompleted"]}
    assert next(r.data["attempt"] for r in new if r.type == "StepStarted") == 2
    assert probe.effect_count("t") == 1


async def test_resume_after_every_step_was_done_only_composes_the_answer(
    tmp_path: Path, probe: Probe
) -> None:
    plan = [step("a", "echo", value=1), step("b", "echo", ["a"], value="${a.value}")]
    await write(
        tmp_path / "data",
        {
            f"run-{RUN}": [
                RunRequested(RUN, "sess", "echo twice"),
                PlanCreated(RUN, plan),
                StepStarted(RUN, "a", 1),
                StepCompleted(RUN, "a", {"value": 1}, 0.001),
                StepStarted(RUN, "b", 1),
                StepCompleted(RUN, "b", {"value": 1}, 0.001),
                VerificationCompleted(RUN, "a", True, 0.9),
                VerificationCompleted(RUN, "b", True, 0.9),
            ]
        },
    )
    result, records = await resume(tmp_path / "data", probe)
    assert result.status == "completed"
    assert [r.type for r in after_resume(records)] == [
        "RunResumed",
        "LLMCallCompleted",
        "RunCompleted",
    ]


# --- pipelined appends: what a crash can lose is harmless -----------------------------

PIPELINE_PLAN = [
    step("p1", "touch", label="p1"),  # idempotent: its events are queued, not awaited
    step("p2", "touch", label="p2"),
    step("p3", "append", ["p1"], label="p3"),  # not idempotent: start and end awaited
    step("p4", "echo", ["p2", "p3"], value="after ${p3.label}"),
]


async def test_every_prefix_a_crash_can_leave_of_a_pipelined_run_resumes(
    tmp_path: Path, probe: Probe
) -> None:
    """The executor awaits the disk only before and after a tool with effects; any
    other transition may be lost by a crash, which leaves a prefix of the run's stream
    (commits are in order). Every such prefix resumes: the run ends, a step completed in
    the prefix never runs again, and the non-idempotent step acts at most once."""
    async with lmdb_store(tmp_path / "full") as store:
        run_id = await submit_plan(store, PIPELINE_PLAN)
        orchestrator = make_orchestrator(store, resume_registry(probe))
        with trio.fail_after(TIMEOUT_S):
            assert (await orchestrator.execute(run_id)).status == "completed"
        full = await run_events(store, run_id)
    planned = next(i for i, r in enumerate(full) if r.type == "PlanCreated")
    finished = next(i for i, r in enumerate(full) if r.type == "RunCompleted")
    assert finished > planned + 8  # four steps started and ended in between
    for cut in range(planned + 1, finished + 1):
        prefix = full[:cut]
        path = tmp_path / f"cut-{cut}"
        await write(path, {f"run-{run_id}": [typed_event(r) for r in prefix]})
        effects = Probe(tmp_path / f"effects-{cut}.log")
        started = {r.data["step_id"] for r in prefix if r.type == "StepStarted"}
        for label in sorted(started & {"p1", "p2", "p3"}):
            effects.effect(label)  # a started tool may have acted before the crash
        async with lmdb_store(path) as store:
            orchestrator = make_orchestrator(store, resume_registry(effects))
            with trio.fail_after(TIMEOUT_S):
                result = await orchestrator.execute(run_id, resume=True)
            records = await run_events(store, run_id)
        assert result.status in ("completed", "failed"), cut
        assert records[-1].type in ("RunCompleted", "RunFailed"), cut
        done_before = {r.data["step_id"] for r in prefix if r.type == "StepCompleted"}
        resumed = records[len(prefix) :]  # what the resuming process wrote
        assert resumed[0].type == "RunResumed", cut
        restarted = {r.data["step_id"] for r in resumed if r.type == "StepStarted"}
        assert not done_before & restarted, cut
        assert effects.effect_count("p3") == 1, cut
        p3_ended = any(r.type == "StepCompleted" and r.data["step_id"] == "p3" for r in prefix)
        if "p3" in started and not p3_ended:
            # A crash while its tool ran (its start was awaited): reported, not repeated.
            (failed,) = [r for r in after_resume(records) if r.type == "StepFailed"]
            assert failed.data["error_type"] == "NotRetried", cut
        else:
            assert result.status == "completed", cut
