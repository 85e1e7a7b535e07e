"""The runs projection: a run's status and each step's status, attempts, timings,
result, error and verification, through the whole lifecycle."""

from __future__ import annotations

from typing import Any

import trio

from events import (
    IntentAnalyzed,
    LmdbEventLog,
    PlanCreated,
    ReplanRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunResumed,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    VerificationCompleted,
)
from projections import RunsProjection, get_run, list_runs, rebuild

from .helpers import SECOND, T0, TIMEOUT_S, EventWriter, in_thread

STEPS = [
    {"id": s, "agent": "quotes", "action": "get", "parameters": {}, "dependencies": d}
    for s, d in (("a", []), ("b", []), ("c", ["a", "b"]))
]


async def run_state(log: LmdbEventLog, run_id: str = "r") -> dict[str, Any]:
    state = await in_thread(rebuild, log, RunsProjection(), log.head()[0])
    run = get_run(state, run_id)
    assert run is not None
    return run


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {sid: step["status"] for sid, step in run["steps"].items()}


async def test_run_lifecycle_with_failed_retried_and_skipped_steps(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        w = writer
        w.add("run-r", RunRequested(run_id="r", session_id="s", goal="prices"), at=0)
        assert (await run_state(log))["status"] == "requested"
        w.add("run-r", IntentAnalyzed(run_id="r", intent="quote", entities={"s": ["X"]}), at=1)
        w.add("run-r", PlanCreated(run_id="r", steps=STEPS), at=2)
        run = await run_state(log)
        assert (run["status"], run["plan"], run["intent"]) == (
            "running",
            STEPS,
            {"intent": "quote", "entities": {"s": ["X"]}},
        )
        assert statuses(run) == {"a": "pending", "b": "pending", "c": "pending"}

        w.add("run-r", StepStarted(run_id="r", step_id="a"), at=3)
        w.add("run-r", StepStarted(run_id="r", step_id="b"), at=3.5)
        w.add(
            "run-r",
            StepFailed(
                run_id="r", step_id="a", error_type="Timeout", message="slow", retryable=True
            ),
            at=4,
        )
        run = await run_state(log)
        assert statuses(run) == {"a": "failed", "b": "running", "c": "pending"}
        assert run["steps"]["a"]["error"] == {
            "error_type": "Timeout",
            "message": "slow",
            "retryable": True,
        }
        assert run["steps"]["a"]["ended_ts"] == T0 + 4 * SECOND

        w.add("run-r", StepStarted(run_id="r", step_id="a", attempt=2), at=5)
        step = (await run_state(log))["steps"]["a"]
        assert (step["status"], step["attempts"], step["started_ts"], step["ended_ts"]) == (
            "running",
            2,
            T0 + 5 * SECOND,
            None,
        )
        w.add(
            "run-r", StepCompleted(run_id="r", step_id="a", result={"p": 1}, duration_s=1.5), at=6.5
        )
        w.add(
            "run-r",
            StepFailed(run_id="r", step_id="b", error_type="E", message="no", retryable=False),
            at=7,
        )
        w.add("run-r", StepSkipped(run_id="r", step_id="c", reason="dependency b failed"), at=7)
        w.add(
            "run-r",
            VerificationCompleted(
                run_id="r", step_id="a", passed=True, confidence=0.75, notes="fine"
            ),
            at=8,
        )
        w.add("run-r", RunFailed(run_id="r", reason="b failed"), at=9)
        run = await run_state(log)
        assert run["status"] == "failed"
        assert (run["reason"], run["ended_ts"]) == ("b failed", T0 + 9 * SECOND)
        assert statuses(run) == {"a": "completed", "b": "failed", "c": "skipped"}
        a, c = run["steps"]["a"], run["steps"]["c"]
        assert (a["attempts"], a["result"], a["duration_s"], a["error"]) == (2, {"p": 1}, 1.5, None)
        assert (a["started_ts"], a["ended_ts"]) == (T0 + 5 * SECOND, T0 + int(6.5 * SECOND))
        assert a["verification"] == {
            "passed": True,
            "confidence": 0.75,
            "notes": "fine",
            "ts": T0 + 8 * SECOND,
        }
        assert c["error"] == {"reason": "dependency b failed"}
        assert (run["requested_ts"], run["last_ts"]) == (T0, T0 + 9 * SECOND)
        assert run["last_position"] == log.head()[0]


async def test_resumed_run_is_running_again(log: LmdbEventLog, writer: EventWriter) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("run-r", RunRequested(run_id="r", session_id="s", goal="g"))
        writer.add("run-r", RunResumed(run_id="r", reason="restart"))
        run = await run_state(log)
        assert (run["status"], run["resumes"]) == ("requested", 1)  # no plan yet
        writer.add("run-r", PlanCreated(run_id="r", steps=STEPS))
        writer.add("run-r", StepStarted(run_id="r", step_id="a"))
        writer.add("run-r", RunResumed(run_id="r", reason="restart"))
        run = await run_state(log)
        assert (run["status"], run["resumes"]) == ("running", 2)
        assert statuses(run)["a"] == "running"


async def test_resumed_failed_run_is_no_longer_ended(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("run-r", RunRequested(run_id="r", session_id="s", goal="g"), at=0)
        writer.add("run-r", PlanCreated(run_id="r", steps=STEPS), at=1)
        writer.add("run-r", RunFailed(run_id="r", reason="crash"), at=2)
        writer.add("run-r", RunResumed(run_id="r", reason="operator"), at=30)
        run = await run_state(log)
        assert run["status"] == "running"
        assert run["ended_ts"] is None  # `runs list` must not show it as ended at 2 s


async def test_replans_are_counted_and_a_late_plan_keeps_a_terminal_status(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("run-r", RunRequested(run_id="r", session_id="s", goal="g"))
        writer.add("run-r", PlanCreated(run_id="r", steps=STEPS[:1]))
        writer.add("run-r", ReplanRequested(run_id="r", reason="verify failed"))
        writer.add("run-r", RunCompleted(run_id="r", answer="42"))
        writer.add("run-r", PlanCreated(run_id="r", steps=STEPS))
        run = await run_state(log)
        assert (run["status"], run["answer"], run["replans"]) == ("completed", "42", 1)
        assert set(run["steps"]) == {"a", "b", "c"}


async def test_cancelled_run_and_list_by_status(log: LmdbEventLog, writer: EventWriter) -> None:
    with trio.fail_after(TIMEOUT_S):
        for run_id in ("done", "stop", "new", "busy"):
            writer.add(f"run-{run_id}", RunRequested(run_id=run_id, session_id="s", goal=run_id))
        writer.add("run-done", RunCompleted(run_id="done", answer="ok"))
        writer.add("run-stop", RunCancelled(run_id="stop", reason="user"), at=60)
        writer.add("run-busy", PlanCreated(run_id="busy", steps=STEPS))
        state = await in_thread(rebuild, log, RunsProjection(), log.head()[0])
        stop = get_run(state, "stop")
        assert stop is not None
        assert (stop["status"], stop["reason"], stop["ended_ts"]) == (
            "cancelled",
            "user",
            T0 + 60 * SECOND,
        )
        by_status = {r["run_id"]: r["status"] for r in list_runs(state)}
        assert by_status == {
            "done": "completed",
            "stop": "cancelled",
            "new": "requested",
            "busy": "running",
        }
        assert [r["run_id"] for r in list_runs(state, "cancelled")] == ["stop"]
        assert list_runs(state, "failed") == []
