"""Bad input and limits over real sockets: each bad frame gets exactly one `error` with the
right code, the connection (unless the limit is on the connection itself) and the server
stay up, another client is unaffected, and nothing is appended that should not be."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from events import RunRequested
from server.ws._limits import ServerLimits

from .ws_helpers import (
    GOAL,
    OTHER_TOKEN,
    TIMEOUT_S,
    TOKEN,
    Client,
    Harness,
    serving,
    simulator,
)

LIMITS = ServerLimits(max_frame_bytes=8192, requests_per_second=1000, max_runs_per_session=100)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, LIMITS, lmdb=True) as harness:
        await harness.store.append(
            "run-theirs", [RunRequested(run_id="theirs", session_id="their-session", goal=GOAL)]
        )
        yield harness


async def expect_one_error(
    client: Client, other: Client, code: str, request_id: object = None
) -> dict[str, Any]:
    """The next frame is the error; then the connection still answers, as does `other`."""
    error = await client.receive()
    assert error["type"] == "error", error
    assert error["code"] == code, error
    assert error.get("id") == request_id, error
    assert isinstance(error["message"], str) and error["message"]
    await client.ping("after")  # exactly one error frame came before the pong
    await other.ping("other")
    return error


BAD_FRAMES = [
    ("not-json", "{this is not json", "bad_request", None),
    ("empty-text", "", "bad_request", None),
    ("json-array", "[1, 2, 3]", "bad_request", None),
    ("json-number", "42", "bad_request", None),
    ("json-null", "null", "bad_request", None),
    ("json-string", '"ping"', "bad_request", None),
    ("no-type", {"id": 1}, "bad_request", 1),
    ("unknown-type", {"type": "explode", "id": "x"}, "bad_request", "x"),
    ("type-not-a-string", {"type": 5, "id": 1}, "bad_request", 1),
    ("ping-without-id", {"type": "ping"}, "bad_request", None),
    ("id-is-bool", {"type": "ping", "id": True}, "bad_request", None),
    ("id-is-float", {"type": "ping", "id": 1.5}, "bad_request", None),
    ("id-is-list", {"type": "ping", "id": [1]}, "bad_request", None),
    ("message-without-text", {"type": "message", "id": 2}, "bad_request", 2),
    ("text-is-number", {"type": "message", "id": 2, "text": 17}, "bad_request", 2),
    ("text-is-blank", {"type": "message", "id": 2, "text": "   "}, "bad_request", 2),
    ("text-over-goal-limit", {"type": "message", "id": 2, "text": "x" * 4001}, "bad_request", 2),
    (
        "session-id-is-number",
        {"type": "message", "id": 2, "text": GOAL, "session_id": 5},
        "bad_request",
        2,
    ),
    ("subscribe-without-stream", {"type": "subscribe", "id": 3}, "bad_request", 3),
    (
        "after-is-string",
        {"type": "subscribe", "id": 3, "stream": "$all", "after": "5"},
        "bad_request",
        3,
    ),
    (
        "after-is-negative",
        {"type": "subscribe", "id": 3, "stream": "$all", "after": -1},
        "bad_request",
        3,
    ),
    ("stream-is-number", {"type": "subscribe", "id": 3, "stream": 7}, "bad_request", 3),
    ("stream-of-no-kind", {"type": "subscribe", "id": 3, "stream": "users"}, "bad_request", 3),
    ("stream-missing", {"type": "subscribe", "id": 3, "stream": "run-nope"}, "not_found", 3),
    (
        "session-missing",
        {"type": "subscribe", "id": 3, "stream": "session-nope"},
        "not_found",
        3,
    ),
    ("cancel-without-run", {"type": "cancel", "id": 4}, "bad_request", 4),
    ("cancel-run-id-number", {"type": "cancel", "id": 4, "run_id": 12}, "bad_request", 4),
    ("cancel-unknown-run", {"type": "cancel", "id": 4, "run_id": "nope"}, "not_found", 4),
    ("resume-unknown-run", {"type": "resume", "id": 5, "run_id": "nope"}, "not_found", 5),
    ("hello-without-token", {"type": "hello", "id": 6}, "bad_request", 6),
]


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [pytest.param(f, c, i, id=name) for name, f, c, i in BAD_FRAMES],
)
async def test_bad_frame_gets_one_error_and_nothing_else_changes(
    app: Harness, frame: object, code: str, request_id: object
) -> None:
    head = app.store.head_position
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client, app.client() as other:
            await client.send(frame)
            await expect_one_error(client, other, code, request_id)
    assert app.store.head_position == head
    assert len(app.app.connections) <= 2


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message", "id": 1, "text": "what is \ud800 + 1"},
        {"type": "message", "id": 1, "text": GOAL, "session_id": "a\x00b"},
        {"type": "message", "id": 1, "text": GOAL, "session_id": "s" * 300},
    ],
    ids=["lone-surrogate-in-text", "nul-in-session-id", "session-id-too-long"],
)
async def test_message_the_store_cannot_take_is_a_bad_request_not_a_crash(
    app: Harness, frame: dict[str, Any]
) -> None:
    """The store refuses such an append (EventEncodingError, InvalidStreamName): the
    client gets bad_request and the server, and everyone else on it, stays up."""
    head = app.store.head_position
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client, app.client() as other:
            await client.send(json.dumps(frame))
            await expect_one_error(client, other, "bad_request", 1)
    assert app.store.head_position == head


async def test_binary_frame_gets_bad_request(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client, app.client() as other:
            await client.send(json.dumps({"type": "ping", "id": 1}).encode())
            await expect_one_error(client, other, "bad_request")


async def test_frame_over_size_limit_gets_too_large_and_connection_stays(app: Harness) -> None:
    frame = json.dumps({"type": "message", "id": 1, "text": "x" * LIMITS.max_frame_bytes})
    head = app.store.head_position
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client, app.client() as other:
            await client.send(frame)
            await expect_one_error(client, other, "too_large")
    assert app.store.head_position == head


async def test_frame_over_hard_limit_closes_the_connection_with_1009(app: Harness) -> None:
    head = app.store.head_position
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client, app.client() as other:
            await client.send("x" * (LIMITS.hard_frame_bytes + 1))
            assert await client.closed_code() == 1009
            assert client.seen == []
            await other.ping()
    assert app.store.head_position == head


async def test_flood_gets_rate_limited_then_normal_service_after_a_second(
    tmp_path: Path,
) -> None:
    rate = 5
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, ServerLimits(requests_per_second=rate)) as app:
            async with app.client() as client, app.client() as other:
                for i in range(40):
                    await client.send({"type": "ping", "id": i})
                replies = [await client.receive() for _ in range(40)]
                await other.ping()
                await trio.sleep(1.1)
                for i in range(rate):
                    await client.ping(f"again-{i}")
    pongs = [r for r in replies if r["type"] == "pong"]
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    assert len(pongs) + len(limited) == 40
    assert rate <= len(pongs) <= rate + 2  # the burst, plus what refilled meanwhile
    assert [p["id"] for p in pongs] == list(range(len(pongs)))


async def test_rate_limited_error_echoes_the_request_id(tmp_path: Path) -> None:
    """Every request carries an id echoed in its reply, an error included (issue 7), so a
    client that pipelines requests can tell which of them were refused."""
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, ServerLimits(requests_per_second=1)) as app:
            async with app.client() as client:
                await client.send({"type": "ping", "id": "first"})
                await client.send({"type": "ping", "id": "second"})
                assert await client.receive() == {"type": "pong", "id": "first"}
                refused = await client.receive()
    assert (refused["code"], refused.get("id")) == ("rate_limited", "second")


async def test_cancel_of_a_finished_run_is_a_conflict(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client, app.client() as other:
            accepted = await client.request({"type": "message", "id": 1, "text": GOAL})
            await client.events_until()
            await app.wait_runs_done()
            head = app.store.head_position
            await client.send({"type": "cancel", "id": 2, "run_id": accepted["run_id"]})
            await expect_one_error(client, other, "conflict", 2)
    assert app.store.head_position == head


# Who may act on whose run (principals, roles, `forbidden`) is tried in
# tests/security/test_principals.py; without tokens every connection is the local admin.


async def test_too_many_runs_in_one_session_is_rate_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOAGENT_WS_TEST_SIM_KEY", "sk-test")
    limits = ServerLimits(max_runs_per_session=2, requests_per_second=1000)
    with trio.fail_after(TIMEOUT_S):
        async with simulator(time_scale=1.0) as url, serving(tmp_path, limits, llm_url=url) as app:
            async with app.client() as client, app.client() as other:
                first = await client.request({"type": "message", "id": 1, "text": GOAL})
                session = first["session_id"]
                message = {"type": "message", "text": GOAL, "session_id": session}
                second = await client.request({**message, "id": 2})
                assert second["type"] == "accepted"
                head = app.store.head_position
                await client.send({**message, "id": 3})
                error = await client.receive()
                while error["type"] == "event":
                    error = await client.receive()
                assert (error["type"], error["code"], error["id"]) == ("error", "rate_limited", 3)
                await other.ping()
                assert not [
                    r
                    for r in await app.records(head)
                    if r.type in ("UserMessageReceived", "RunRequested")
                ]


async def test_connections_per_token_over_the_limit_get_an_error_and_close(
    tmp_path: Path,
) -> None:
    limits = ServerLimits(max_connections_per_token=2)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits, tokens=(TOKEN, OTHER_TOKEN)) as app:
            async with app.client() as a, app.client() as b, app.client() as c, app.client() as d:
                for client in (a, b):
                    assert (await client.request({"type": "hello", "token": TOKEN}))[
                        "type"
                    ] == "welcome"
                await c.send({"type": "hello", "id": "h", "token": TOKEN})
                assert await c.closed_code() == 1008
                assert [(f["type"], f["code"], f.get("id")) for f in c.seen] == [
                    ("error", "rate_limited", "h")
                ]
                # another token has its own allowance; the first two are unaffected
                reply = await d.request({"type": "hello", "token": OTHER_TOKEN})
                assert reply["type"] == "welcome"
                await a.ping()
                await b.ping()


async def test_token_slot_is_given_back_when_a_connection_leaves(tmp_path: Path) -> None:
    limits = ServerLimits(max_connections_per_token=1)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits, tokens=(TOKEN,)) as app:
            for _ in range(3):
                async with app.client() as client:
                    reply = await client.request({"type": "hello", "token": TOKEN})
                    assert reply["type"] == "welcome"
                await app.wait_disconnected()


async def test_repeated_hello_does_not_use_up_the_tokens_connection_slots(
    tmp_path: Path,
) -> None:
    """A client saying hello twice holds one connection: once it leaves, the token's
    allowance must be whole again, or anyone can lock a token out by repeating hello."""
    limits = ServerLimits(max_connections_per_token=2)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits, tokens=(TOKEN,)) as app:
            async with app.client() as chatty:
                for _ in range(2):
                    assert (await chatty.request({"type": "hello", "token": TOKEN}))[
                        "type"
                    ] == "welcome"
            await app.wait_disconnected()
            async with app.client() as a, app.client() as b:
                for client in (a, b):
                    reply = await client.request({"type": "hello", "token": TOKEN})
                    assert reply["type"] == "welcome", reply


async def test_connections_over_max_connections_are_closed_with_1008(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, ServerLimits(max_connections=2)) as app:
            async with app.client() as a, app.client() as b:
                await a.ping()
                await b.ping()
                async with app.client() as c:
                    assert await c.closed_code() == 1008
                await a.ping()
                await b.ping()
            await app.wait_disconnected()
            async with app.client() as d:
                await d.ping()
    assert app.app.stats["rejected_connections"] == 1


async def test_client_that_disconnects_abruptly_leaves_the_server_serving(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            await client.ping()
            await client.ws._stream.aclose()  # TCP gone, no close handshake
        await app.wait_disconnected()
        async with app.client() as again:
            await again.ping()
    with pytest.raises(ConnectionClosed):
        await client.ws.send_message("{}")
