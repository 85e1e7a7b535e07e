"""The WebSocket protocol over real sockets: ping, message, subscribe, reconnect, cancel,
resume and token auth, against the whole app built in-process on 127.0.0.1 port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

import agents.runs._orchestrator as orchestrator_module
from events import RunRequested, StepStarted
from server.ws._limits import ServerLimits

from .ws_helpers import (
    GOAL,
    OTHER_TOKEN,
    TERMINAL,
    TIMEOUT_S,
    TOKEN,
    Harness,
    positions,
    serving,
    simulator,
)

OPEN_LIMITS = ServerLimits(requests_per_second=1000, max_runs_per_session=100)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, OPEN_LIMITS) as harness:
        yield harness


async def stream_positions(app: Harness, stream: str | None, after: int) -> list[int]:
    return [r.position for r in await app.records(after) if stream is None or r.stream == stream]


async def append_steps(app: Harness, count: int, streams: tuple[str, ...]) -> None:
    """`count` one-event appends, round-robin over `streams`, yielding between them."""
    for i in range(count):
        stream = streams[i % len(streams)]
        await app.store.append(stream, [StepStarted(run_id=stream, step_id=f"s{i}")])
        if i % 7 == 0:
            await trio.lowlevel.checkpoint()


# --- ping and message ----------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc", 7, 0], ids=["str", "int", "zero"])
async def test_ping_gets_pong_echoing_the_id(app: Harness, request_id: object) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            await client.send({"type": "ping", "id": request_id})
            assert await client.receive() == {"type": "pong", "id": request_id}


async def test_message_is_accepted_then_its_run_events_arrive_live_in_order(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            await client.send({"type": "message", "id": "m1", "text": GOAL})
            accepted = await client.receive()
            assert accepted.keys() == {"type", "id", "session_id", "run_id"}
            assert (accepted["type"], accepted["id"]) == ("accepted", "m1")
            run_id = accepted["run_id"]
            events = await client.events_until()
            await client.nothing_more()
    stream = f"run-{run_id}"
    assert events[0]["event_type"] == "RunRequested"
    assert events[-1]["event_type"] == "RunCompleted"
    assert all(e["stream"] == stream for e in events)
    assert positions(events) == await stream_positions(app, stream, 0)
    completed = events[-1]
    assert completed.keys() == {
        "type",
        "position",
        "stream",
        "event_type",
        "data",
        "ts",
        "version",
        "id",
        "correlation",
        "causation",
        "prev_hash",
        "hash",
    }
    (record,) = await app.store.read(completed["position"] - 1, 1)
    assert completed["hash"] == record.hash.hex() and completed["id"] == str(record.id)
    assert completed["prev_hash"] == record.prev_hash.hex()
    assert completed["version"] == record.version and completed["correlation"] == run_id
    assert completed["data"]["run_id"] == run_id and "395" in completed["data"]["answer"]
    assert isinstance(completed["ts"], int) and completed["ts"] > 0


async def test_a_runs_follower_ends_with_the_run(tmp_path: Path) -> None:
    """Finished runs hold no subscription: a client that sent more goals than the
    subscription limit can still subscribe once they are done."""
    limits = ServerLimits(requests_per_second=1000, max_runs_per_session=100, max_subscriptions=2)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits) as app, app.client() as client:
            for n in range(3):
                await client.request({"type": "message", "id": n, "text": GOAL})
                await client.events_until()
            subscribed = await client.request({"type": "subscribe", "id": "s", "stream": "$all"})
    assert subscribed["type"] == "subscribed"


async def test_second_message_in_a_session_keeps_the_session(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            first = await client.request({"type": "message", "id": 1, "text": GOAL})
            await client.events_until()
            second = await client.request(
                {"type": "message", "id": 2, "text": "and 2 + 2", "session_id": first["session_id"]}
            )
            await client.events_until()
    assert second["session_id"] == first["session_id"]
    assert second["run_id"] != first["run_id"]


# --- subscribe: catch-up then live -------------------------------------------------


@pytest.mark.parametrize(
    "stream", ["$all", "run-a", "session-b"], ids=["all", "run-stream", "session-stream"]
)
async def test_subscribe_while_appending_catches_up_then_goes_live_without_gap_or_duplicate(
    app: Harness, stream: str
) -> None:
    streams = ("run-a", "session-b", "run-c")
    await append_steps(app, 60, streams)
    after = 25
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client, trio.open_nursery() as nursery:
            nursery.start_soon(append_steps, app, 600, streams)
            await trio.sleep(0.01)  # subscribe while the appender runs
            reply = await client.request(
                {"type": "subscribe", "id": "s", "stream": stream, "after": after}
            )
            assert reply == {"type": "subscribed", "id": "s", "stream": stream, "after": after}
            selected = None if stream == "$all" else stream
            # Position p went to streams[(p - 1) % 3]: nothing else appends here.
            expected = [
                p for p in range(after + 1, 661) if selected in (None, streams[(p - 1) % 3])
            ]
            events = await client.events(len(expected))
            await client.nothing_more()
    assert positions(events) == expected
    assert expected == await stream_positions(app, selected, after)
    assert all(e["stream"] == (selected or e["stream"]) for e in events)


async def test_subscribe_without_after_starts_at_the_beginning(app: Harness) -> None:
    await append_steps(app, 5, ("run-a",))
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            await client.request({"type": "subscribe", "id": 1, "stream": "run-a"})
            events = await client.events(5)
            await app.store.append("run-a", [StepStarted(run_id="a", step_id="live")])
            live = await client.events(1)
    assert positions(events + live) == [1, 2, 3, 4, 5, 6]
    assert live[0]["data"]["step_id"] == "live"


async def test_reconnect_with_last_position_seen_gets_exactly_the_missed_events(
    app: Harness,
) -> None:
    await append_steps(app, 20, ("run-a", "run-b"))
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            async with app.client() as client:
                await client.request({"type": "subscribe", "id": 1, "stream": "$all"})
                await client.events(15)
                nursery.start_soon(append_steps, app, 300, ("run-a", "run-b"))
                seen = await client.events(30)  # then drop mid-stream
            last = seen[-1]["position"]
            await trio.sleep(0.05)  # more is appended while we are away
            async with app.client() as client:
                await client.request(
                    {"type": "subscribe", "id": 2, "stream": "$all", "after": last}
                )
                missed = await client.events(320 - last)
                await client.nothing_more()
    assert positions(missed) == list(range(last + 1, 321))
    assert app.store.head_position == 320


# --- cancel and resume ---------------------------------------------------------------


async def test_cancel_of_own_running_run_replies_cancelled_and_logs_run_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOAGENT_WS_TEST_SIM_KEY", "sk-test")
    with trio.fail_after(TIMEOUT_S):
        async with simulator(time_scale=1.0) as url, serving(tmp_path, llm_url=url) as app:
            async with app.client() as client:
                accepted = await client.request({"type": "message", "id": "m", "text": GOAL})
                run_id = accepted["run_id"]
                await client.events_until(("IntentAnalyzed",))  # running: planning (~1.5 s)
                reply = await client.request({"type": "cancel", "id": "c", "run_id": run_id})
                assert reply == {"type": "cancelled", "id": "c", "run_id": run_id}
                tail = await client.events_until()
                await client.nothing_more(0.5)
            stream = [r.type for r in await app.store.read_stream(f"run-{run_id}")]
    assert tail[-1]["event_type"] == "RunCancelled"
    assert stream[-1] == "RunCancelled"
    assert [t for t in stream if t in TERMINAL] == ["RunCancelled"]


async def test_cancel_just_after_accepted_stops_the_run_for_good(
    app: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose start is slow (busy worker threads, a slow disk) is cancelled before
    the orchestrator registered it: the server logs RunCancelled, so the run must not
    go on to complete after that terminal event."""
    load_run = orchestrator_module.load_run

    async def slow_load_run(store: Any, run_id: str) -> Any:
        state = await load_run(store, run_id)
        await trio.sleep(0.3)  # the state read arrives late
        return state

    monkeypatch.setattr(orchestrator_module, "load_run", slow_load_run)
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            accepted = await client.request({"type": "message", "id": "m", "text": GOAL})
            run_id = accepted["run_id"]
            reply = await client.request({"type": "cancel", "id": "c", "run_id": run_id})
            assert reply == {"type": "cancelled", "id": "c", "run_id": run_id}
            await trio.sleep(1.5)  # the offline run would be long finished by now
    stream = [r.type for r in await app.store.read_stream(f"run-{run_id}")]
    assert [t for t in stream if t in TERMINAL] == ["RunCancelled"], stream
    assert stream[-1] == "RunCancelled", stream


async def test_resume_of_unfinished_run_replies_resumed_then_streams_its_events(
    app: Harness,
) -> None:
    await app.store.append("run-r1", [RunRequested(run_id="r1", session_id="s1", goal=GOAL)])
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            reply = await client.request({"type": "resume", "id": 9, "run_id": "r1"})
            assert reply == {"type": "resumed", "id": 9, "run_id": "r1"}
            events = await client.events_until()
    assert events[0]["event_type"] == "RunResumed"
    assert events[-1]["event_type"] == "RunCompleted"
    assert positions(events) == await stream_positions(app, "run-r1", 1)


async def test_resume_of_finished_run_is_a_conflict(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            accepted = await client.request({"type": "message", "id": 1, "text": GOAL})
            await client.events_until()
            await app.wait_runs_done()
            head = app.store.head_position
            reply = await client.request({"type": "resume", "id": 2, "run_id": accepted["run_id"]})
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "conflict", 2)
    assert app.store.head_position == head


# --- authentication ------------------------------------------------------------------


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, OPEN_LIMITS, tokens=(TOKEN, OTHER_TOKEN)) as harness:
        yield harness


async def test_hello_with_a_configured_token_is_welcomed_and_requests_are_served(
    guarded: Harness,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with guarded.client() as client:
            welcome = await client.request(
                {"type": "hello", "id": "h", "token": TOKEN, "client": "test"}
            )
            assert (welcome["type"], welcome["id"]) == ("welcome", "h")
            await client.ping()
            await client.request({"type": "message", "id": 1, "text": GOAL})
            assert (await client.events_until())[-1]["event_type"] == "RunCompleted"


async def test_hello_with_a_wrong_token_gets_unauthorized_then_close(guarded: Harness) -> None:
    head = guarded.store.head_position
    with trio.fail_after(TIMEOUT_S):
        async with guarded.client() as client:
            await client.send({"type": "hello", "id": "h", "token": "guess"})
            code = await client.closed_code()
    assert [(f["type"], f["code"], f.get("id")) for f in client.seen] == [
        ("error", "unauthorized", "h")
    ]
    assert code == 1008
    assert guarded.store.head_position == head


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ping", "id": 1},
        {"type": "message", "id": 1, "text": GOAL},
        {"type": "subscribe", "id": 1, "stream": "$all"},
    ],
    ids=["ping", "message", "subscribe"],
)
async def test_request_before_hello_gets_unauthorized_then_close(
    guarded: Harness, frame: dict[str, Any]
) -> None:
    head = guarded.store.head_position
    with trio.fail_after(TIMEOUT_S):
        async with guarded.client() as client:
            await client.send(frame)
            code = await client.closed_code()
    assert [(f["type"], f["code"], f.get("id")) for f in client.seen] == [
        ("error", "unauthorized", 1)
    ]
    assert code == 1008
    assert guarded.store.head_position == head


async def test_auth_off_needs_no_hello_but_accepts_one(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            await client.ping()
            welcome = await client.request({"type": "hello", "id": "h", "token": "anything"})
            assert welcome["type"] == "welcome"
            await client.ping()


async def test_closed_server_closes_clients_with_going_away(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path) as app:
            async with app.client() as client:
                await client.ping()
                await app.stop()
                with pytest.raises(ConnectionClosed) as closed:
                    await client.receive()
            assert closed.value.reason.code == 1001
