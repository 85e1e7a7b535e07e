"""A realistic mix of session and run events, for tests and benchmarks.

Each session: start, then per turn a user message, a run (request, intent, plan of
3 steps, starts, completions, verifications, LLM calls, completion) and an answer.
Timestamps come from the writer; durations are drawn from a seeded generator.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from events import (
    AssistantMessageSent,
    ContextUpdated,
    Event,
    EventLog,
    IntentAnalyzed,
    LLMCallCompleted,
    PlanCreated,
    RunCompleted,
    RunFailed,
    RunRequested,
    SessionStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
    UserMessageReceived,
    VerificationCompleted,
)
from events._log import AppendRequest
from events._store import prepare_append

Append = tuple[str, list[Event]]


def run_events(run_id: str, session_id: str, rng: random.Random) -> list[Event]:
    steps = [
        {
            "id": s,
            "agent": "quotes",
            "action": "get_stock_price",
            "parameters": {"symbol": sym},
            "dependencies": [],
            "reasoning": "price needed",
        }
        for s, sym in (("s1", "NVDA"), ("s2", "AAPL"))
    ] + [
        {
            "id": "s3",
            "agent": "writer",
            "action": "create_report",
            "parameters": {},
            "dependencies": ["s1", "s2"],
            "reasoning": "combine",
        }
    ]
    events: list[Event] = [
        RunRequested(
            run_id=run_id, session_id=session_id, goal="get NVDA and AAPL and write a report"
        ),
        IntentAnalyzed(run_id=run_id, intent="report", entities={"symbols": ["NVDA", "AAPL"]}),
        LLMCallCompleted(
            run_id=run_id,
            purpose="plan",
            model="offline",
            prompt_tokens=400,
            completion_tokens=120,
            latency_s=rng.uniform(0.5, 2.0),
        ),
        PlanCreated(run_id=run_id, steps=steps),
    ]
    failed = rng.random() < 0.05
    for step in ("s1", "s2", "s3"):
        events.append(StepStarted(run_id=run_id, step_id=step, attempt=1))
        if failed and step == "s3":
            events.append(
                StepFailed(
                    run_id=run_id,
                    step_id=step,
                    error_type="ToolError",
                    message="writer unavailable",
                    retryable=False,
                )
            )
            continue
        events.append(
            StepCompleted(
                run_id=run_id,
                step_id=step,
                result={"value": rng.random() * 100},
                duration_s=rng.uniform(0.05, 0.3),
            )
        )
        events.append(
            VerificationCompleted(run_id=run_id, step_id=step, passed=True, confidence=0.9)
        )
    if failed:
        events.append(RunFailed(run_id=run_id, reason="step s3 failed"))
    else:
        events.append(RunCompleted(run_id=run_id, answer="NVDA and AAPL prices are in the report"))
    return events


def session_appends(sessions: int, turns: int, seed: int = 7) -> Iterator[Append]:
    """Appends (stream, events) interleaving sessions the way concurrent users would."""
    rng = random.Random(seed)
    for sid in range(sessions):
        yield f"session-{sid}", [SessionStarted(session_id=str(sid), user=f"user{sid % 50}")]
    for turn in range(turns):
        for sid in range(sessions):
            session_id, run_id = str(sid), f"{sid}-{turn}"
            yield (
                f"session-{session_id}",
                [
                    UserMessageReceived(
                        session_id=session_id, message_id=run_id, text=f"turn {turn}"
                    ),
                ],
            )
            yield f"run-{run_id}", run_events(run_id, session_id, rng)
            reply: list[Event] = [
                AssistantMessageSent(session_id=session_id, text="done", run_id=run_id)
            ]
            if turn % 10 == 0:
                reply.append(ContextUpdated(session_id=session_id, values={"last_turn": turn}))
            yield f"session-{session_id}", reply


def write_workload(log: EventLog, target_events: int, sessions: int = 200, seed: int = 7) -> int:
    """Fill `log` directly (big commits, no Trio) until it holds >= target_events."""
    written = 0
    pending: list[AppendRequest] = []
    from events import ANY

    for stream, events in session_appends(sessions, turns=10**9, seed=seed):
        pending.append(prepare_append(stream, events, ANY, 1 << 22))
        written += len(events)
        if len(pending) >= 500 or written >= target_events:
            log.commit(pending, time.time_ns())
            pending = []
        if written >= target_events:
            break
    return written
