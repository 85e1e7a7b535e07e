"""The sessions projection: counts, bounded window, merged context, closing, run ids."""

from __future__ import annotations

import trio

from events import (
    AssistantMessageSent,
    ContextUpdated,
    LmdbEventLog,
    RunRequested,
    SessionClosed,
    SessionStarted,
    UserMessageReceived,
)
from projections import SessionsProjection, StateStore, get_session, list_sessions, rebuild

from .helpers import SECOND, T0, TIMEOUT_S, EventWriter, in_thread


async def project(log: LmdbEventLog, window: int = 20) -> StateStore:
    return await in_thread(rebuild, log, SessionsProjection(window), log.head()[0])


async def test_session_started_records_user_client_and_time(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("session-a", SessionStarted(session_id="a", user="ann", client="web"), at=5)
        session = get_session(await project(log), "a")
        assert session is not None
        assert {k: session[k] for k in ("user", "client", "messages", "closed")} == {
            "user": "ann",
            "client": "web",
            "messages": 0,
            "closed": False,
        }
        assert session["started_ts"] == session["last_ts"] == T0 + 5 * SECOND
        assert get_session(await project(log), "nope") is None


async def test_window_keeps_the_last_n_messages_and_counts_all(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("session-a", SessionStarted(session_id="a"))
        for i in range(12):
            writer.add(
                "session-a", UserMessageReceived(session_id="a", message_id=str(i), text=f"q{i}")
            )
            writer.add("session-a", AssistantMessageSent(session_id="a", text=f"a{i}"), at=100 + i)
        session = get_session(await project(log, window=5), "a")
        assert session is not None
        assert session["messages"] == 24
        assert [(m["role"], m["text"]) for m in session["window"]] == [
            ("assistant", "a9"),
            ("user", "q10"),
            ("assistant", "a10"),
            ("user", "q11"),
            ("assistant", "a11"),
        ]
        last = session["window"][-1]
        assert (last["position"], last["ts"]) == (log.head()[0], T0 + 111 * SECOND)
        assert session["last_ts"] == T0 + 111 * SECOND


async def test_context_updates_merge_key_by_key(log: LmdbEventLog, writer: EventWriter) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("session-a", SessionStarted(session_id="a"))
        writer.add("session-a", ContextUpdated(session_id="a", values={"city": "Oslo", "n": 1}))
        writer.add("session-a", ContextUpdated(session_id="a", values={"n": 2, "tz": "CET"}))
        session = get_session(await project(log), "a")
        assert session is not None
        assert session["context"] == {"city": "Oslo", "n": 2, "tz": "CET"}


async def test_closed_session_keeps_its_reason(log: LmdbEventLog, writer: EventWriter) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("session-a", SessionStarted(session_id="a"))
        writer.add("session-b", SessionStarted(session_id="b"))
        writer.add("session-a", SessionClosed(session_id="a", reason="idle"))
        state = await project(log)
        sessions = {s["session_id"]: s for s in list_sessions(state)}
        assert (sessions["a"]["closed"], sessions["a"]["closed_reason"]) == (True, "idle")
        assert (sessions["b"]["closed"], sessions["b"]["closed_reason"]) == (False, None)


async def test_runs_requested_in_a_session_are_listed_in_order(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("session-a", SessionStarted(session_id="a"))
        for run in ("r1", "r2", "r3"):
            writer.add(f"run-{run}", RunRequested(run_id=run, session_id="a", goal="g"))
        writer.add("run-x", RunRequested(run_id="x", session_id="other", goal="g"))
        state = await project(log)
        session = get_session(state, "a")
        assert session is not None and session["runs"] == ["r1", "r2", "r3"]
        assert [s["session_id"] for s in list_sessions(state)] == ["a", "other"]


async def test_sessions_are_independent(log: LmdbEventLog, writer: EventWriter) -> None:
    with trio.fail_after(TIMEOUT_S):
        for sid in ("a", "b"):
            writer.add(f"session-{sid}", SessionStarted(session_id=sid, user=sid))
        writer.add("session-a", UserMessageReceived(session_id="a", message_id="1", text="x"))
        writer.add("session-b", ContextUpdated(session_id="b", values={"k": 1}))
        state = await project(log)
        a, b = get_session(state, "a"), get_session(state, "b")
        assert a is not None and b is not None
        assert (a["messages"], a["context"]) == (1, {})
        assert (b["messages"], b["context"], b["window"]) == (0, {"k": 1}, [])
