"""Total validation of the WebSocket protocol ("no input can take the server down").

- The frame of the issue, before hello on a guarded server and on an open one.
- Every field of every message type (from the schema itself) given every wrong kind of
  JSON value: a `BadFrame` naming the field, never another exception.
- Property (hypothesis): the parser turns any text into a `Request` whose fields have
  their declared kinds, or into a `BadFrame`.
- Property (hypothesis, live server on 127.0.0.1:0): every frame is answered by exactly
  one reply (events aside) that echoes a valid id and is never `internal`; the
  connection stays open; a second client is unaffected; ping still works; and nothing
  is appended unless a request was accepted.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.ws._limits import ServerLimits
from server.ws._protocol import (
    REQUESTS,
    BadFrame,
    Request,
    is_unicode,
    parse_request,
    protocol_reference,
)

from .frames import expected_id, frame_texts, loaded
from .ws_helpers import GOAL, TIMEOUT_S, TOKEN, Client, Harness, serving

ISSUE_FRAME = {"type": "ping", "id": "x", "session_id": True}
LIMITS = ServerLimits(requests_per_second=10_000, max_runs_per_session=1000)
# What a request may answer with besides an error (each appends at most through a run).
APPENDING_REPLIES = {"accepted", "cancelled", "resumed", "approved", "documents_indexed"}
ROOT = Path(__file__).resolve().parents[2]


# --- the frame of the issue --------------------------------------------------------------------


def test_issue_frame_parses_as_a_ping_whose_unknown_field_is_ignored() -> None:
    request = parse_request(json.dumps(ISSUE_FRAME))
    assert request == Request("ping", "x", {"id": "x"})


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, LIMITS, tokens=(TOKEN,)) as harness:
        yield harness


async def test_issue_frame_before_hello_is_refused_and_the_server_serves_everyone_else(
    guarded: Harness,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with guarded.client() as other:
            assert (await other.request({"type": "hello", "token": TOKEN}))["type"] == "welcome"
            async with guarded.client() as client:
                await client.send(ISSUE_FRAME)
                assert await client.closed_code() == 1008  # what the protocol says
            assert [(f["type"], f["code"], f.get("id")) for f in client.seen] == [
                ("error", "unauthorized", "x")
            ]
            await other.ping()
            async with guarded.client() as newcomer:
                assert (await newcomer.request({"type": "hello", "token": TOKEN}))[
                    "type"
                ] == "welcome"
                await newcomer.ping()


async def test_issue_frame_on_an_open_server_gets_pong(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS) as app, app.client() as client:
            assert await client.request(ISSUE_FRAME) == {"type": "pong", "id": "x"}


# --- every field, every wrong kind -------------------------------------------------------------

WRONG_VALUES = [
    pytest.param(True, id="true"),
    pytest.param(1.5, id="float"),
    pytest.param([], id="array"),
    pytest.param({"nested": [1, {"a": None}]}, id="object"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param("y" * 5000, id="long-string"),
    pytest.param(2**64, id="huge-int"),
    pytest.param(-1, id="negative-int"),
]
FIELDS = [
    pytest.param(message.name, spec.name, id=f"{message.name}.{spec.name}")
    for message in REQUESTS.values()
    for spec in message.fields
]


def valid_frame(kind: str) -> dict[str, Any]:
    values = {
        "id": 1,
        "token": "t",
        "client": "c",
        "text": GOAL,
        "session_id": "s1",
        "stream": "$all",
        "after": 0,
        "run_id": "r1",
        "step_id": "s1",
        "decision": "approve",
        "scope": "me",
        "user": "ana",
        "note": "ok",
        "path": "docs",
        "collection": "default",
    }
    return {"type": kind} | {f.name: values[f.name] for f in REQUESTS[kind].fields}


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_a_valid_frame_of_each_type_parses(kind: str) -> None:
    request = parse_request(json.dumps(valid_frame(kind)))
    assert (request.type, request.id) == (kind, valid_frame(kind).get("id"))


@pytest.mark.parametrize("value", WRONG_VALUES)
@pytest.mark.parametrize(("kind", "field"), FIELDS)
def test_a_wrong_value_in_any_field_is_a_bad_frame_naming_the_field(
    kind: str, field: str, value: object
) -> None:
    frame = valid_frame(kind) | {field: value}
    try:
        request = parse_request(json.dumps(frame))
    except BadFrame as exc:
        assert exc.code == "bad_request"
        assert str(exc).startswith(f"{kind}: field {field!r} must be "), str(exc)
        assert exc.request_id == (None if field == "id" else 1)
    else:  # only values that fit the field's kind get through
        assert request.fields[field] == value
        assert not isinstance(value, bool | float | list | dict)


@pytest.mark.parametrize(("kind", "field"), FIELDS)
def test_a_missing_required_field_is_named(kind: str, field: str) -> None:
    spec = next(f for f in REQUESTS[kind].fields if f.name == field)
    frame = {k: v for k, v in valid_frame(kind).items() if k != field}
    if not spec.required:
        assert parse_request(json.dumps(frame)).fields[field] is None
        return
    with pytest.raises(BadFrame, match=f"^{kind}: missing field '{field}'$"):
        parse_request(json.dumps(frame))


def test_protocol_reference_in_the_readme_is_the_schema() -> None:
    """The README's table of requests is rendered from `REQUESTS`: they cannot drift."""
    assert protocol_reference() in (ROOT / "README.md").read_text()


# --- property: the parser is total -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(frame_texts)
def test_parser_turns_any_text_into_a_request_or_a_bad_frame(text: str) -> None:
    try:
        request = parse_request(text)
    except BadFrame as exc:
        assert exc.code == "bad_request"
        assert exc.request_id == expected_id(text)
        frame = loaded(text)
        kind = frame.get("type") if frame is not None else None
        if isinstance(kind, str) and kind in REQUESTS:
            assert str(exc).startswith(f"{kind}: "), str(exc)
            assert "field '" in str(exc)
        return
    message = REQUESTS[request.type]
    assert request.id == expected_id(text)
    assert set(request.fields) == {spec.name for spec in message.fields}
    for spec in message.fields:
        value = request.fields[spec.name]
        if value is None:
            assert not spec.required
        else:
            assert spec.kind.check(value) == value
            assert not isinstance(value, str) or is_unicode(value)


# --- property: a live server answers every frame and stays up ----------------------------------


async def next_reply(client: Client) -> dict[str, Any]:
    """The next frame that is not an event (runs and subscriptions stream those)."""
    while True:
        frame = await client.receive()
        if frame["type"] != "event":
            return frame


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(frame_texts, min_size=1, max_size=6))
async def test_live_server_answers_every_frame_never_internal_and_stays_up(
    texts: list[str],
) -> None:
    with tempfile.TemporaryDirectory() as tmp, trio.fail_after(TIMEOUT_S):
        async with serving(Path(tmp), LIMITS) as app:
            async with app.client() as client, app.client() as other:
                head = app.store.head_position
                appending = False
                for text in texts:
                    await client.send(text)
                    reply = await next_reply(client)
                    assert reply.get("code") != "internal", reply
                    assert reply.get("id") == expected_id(text), (text, reply)
                    appending |= reply["type"] in APPENDING_REPLIES
                await client.ping("after")
                await other.ping("other")
                if not appending:
                    assert app.store.head_position == head
            assert not app.app.connections or len(app.app.connections) <= 2
