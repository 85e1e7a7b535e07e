"""Streamed completions read a network read at a time (`agents/llm/_sse.py`).

The reader gets the body in whatever pieces the network hands over: an event cut in
the middle, a line end split between two reads, a multi-byte character split, twenty
events in one read. Whatever the cut, the text and usage must be the same, and a
broken stream must still fail typed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from functools import partial
from typing import Any

import pytest
import trio

from agents import OpenAIProvider
from agents.errors import InvalidModelOutput, LLMError, ProviderError
from agents.llm._provider import Usage
from agents.llm._sse import SseReader
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http

from .conftest import SIM_KEY, TIMEOUT_S, root_cause, sim_llm_options

PIECES = ['{"steps": [', "Zürich ", "東京 ", "🙂 and ", 'a "quote"', "]}"]
TEXT = "".join(PIECES)


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def _body(line_end: bytes = b"\n") -> bytes:
    events = [_event({"choices": [{"delta": {"role": "assistant", "content": ""}}]})]
    events += [_event({"choices": [{"delta": {"content": piece}}]}) for piece in PIECES]
    events.append(_event({"choices": [{"delta": {}, "finish_reason": "stop"}]}))
    events.append(_event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 11}}))
    body = b": a comment line\n\n" + b"".join(events) + b"data: [DONE]\n\n"
    return body.replace(b"\n", line_end)


def _read(body: bytes, cuts: list[int]) -> tuple[str, Usage | None, bool]:
    reader = SseReader()
    text, usage, done = "", None, False
    bounds = [0, *cuts, len(body)]
    for start, end in itertools.pairwise(bounds):
        found = reader.feed(body[start:end])
        text, usage, done = text + found.text, found.usage or usage, done or found.done
    last = reader.end()
    return text + last.text, last.usage or usage, done or last.done


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_single_cut_gives_the_same_text_and_usage(line_end: bytes) -> None:
    body = _body(line_end)
    for cut in range(1, len(body)):  # every byte boundary, multi-byte characters included
        assert _read(body, [cut]) == (TEXT, Usage(7, 11), True), cut


def test_byte_by_byte_and_all_at_once_agree() -> None:
    body = _body(b"\r\n")
    assert _read(body, list(range(1, len(body)))) == (TEXT, Usage(7, 11), True)
    assert _read(body, []) == (TEXT, Usage(7, 11), True)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_one_read_of_many_events_is_one_piece_of_text(line_end: bytes) -> None:
    found = SseReader().feed(_body(line_end))  # CR alone ends lines too, within the read
    assert (found.text, found.usage, found.done) == (TEXT, Usage(7, 11), True)


def test_a_last_line_without_its_line_end_is_read_at_the_end() -> None:
    reader = SseReader()
    assert reader.feed(b'data: {"choices": [{"delta": {"content": "hi"}}]}').text == ""
    assert reader.feed(b"\n\ndata: [DONE]").done is False
    assert reader.end().done is True


@pytest.mark.parametrize(
    "event",
    [
        b'{"choices": [{"delta": null}]}',
        b'{"choices": [null]}',
        b'{"choices": ["x"]}',
        b'{"choices": [{"delta": {"content": 5}}]}',
        b'{"choices": []}',
    ],
)
def test_odd_but_harmless_events_carry_no_text(event: bytes) -> None:
    assert SseReader().feed(b"data: " + event + b"\n\n").text == ""


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (b'{"choices": {"a": 1}}', "choices"),
        (b'{"choices": 5}', "choices"),
        (b"[" * 100_000, "not JSON"),
        (b'{"choices": [], "usage": {"prompt_tokens": 1e400}}', "usage"),
        (b'{"choices": [], "usage": {"prompt_tokens": -5}}', "usage"),
        (b'{"choices": [], "usage": {"completion_tokens": 3.5}}', "usage"),
        (b'{"choices": [], "usage": {"completion_tokens": true}}', "usage"),
        (b'{"choices": [], "usage": {"completion_tokens": 100000000000000000000}}', "usage"),
    ],
)
def test_malformed_events_fail_typed(event: bytes, error: str) -> None:
    with pytest.raises(InvalidModelOutput, match=error):
        SseReader().feed(b"data: " + event + b"\n\n")


def test_a_whole_float_count_is_a_count() -> None:
    found = SseReader().feed(b'data: {"usage": {"prompt_tokens": 7.0}}\n\n')
    assert found.usage == Usage(7, 0)


def test_a_broken_event_fails_typed() -> None:
    with pytest.raises(InvalidModelOutput, match="not JSON"):
        SseReader().feed(b'data: {"choices": [\n\n')
    with pytest.raises(InvalidModelOutput, match="not UTF-8"):
        SseReader().feed(b"data: \xff\xfe\n\n")
    with pytest.raises(InvalidModelOutput, match="usage"):
        SseReader().feed(b'data: {"choices": [], "usage": {"prompt_tokens": "many"}}\n\n')
    with pytest.raises(ProviderError, match="overloaded"):
        SseReader().feed(b'data: {"error": {"message": "overloaded"}}\n\n')


async def _serve_in_pieces(body: bytes, size: int, request: HttpRequest) -> HttpResponse:
    """The whole SSE body in `size`-byte pieces, each written after a short pause."""
    pieces = tuple((0.002, body[i : i + size]) for i in range(0, len(body), size))
    headers = (("content-type", "text/event-stream"),)
    return HttpResponse(200, headers, chunks=pieces)


@pytest.mark.parametrize("size", [1, 7, 64])
async def test_the_provider_streams_a_body_cut_anywhere(nursery: trio.Nursery, size: int) -> None:
    """Through the real SDK and HTTP client: pieces that end mid-event and mid-character."""
    with trio.fail_after(TIMEOUT_S):
        handler = partial(_serve_in_pieces, _body(b"\r\n"), size)
        port = await nursery.start(serve_http, handler, "127.0.0.1", 0, ConnectionCounts())
        provider = OpenAIProvider(sim_llm_options(f"http://127.0.0.1:{port}/v1"), SIM_KEY)
        async with contextlib.aclosing(provider):
            async with provider.stream_chat([], purpose="plan") as stream:
                received = [piece async for piece in stream]
    assert "".join(received) == TEXT
    assert stream.usage == Usage(7, 11)
    if size == 1:  # events arriving one by one are handed up one by one, never cut
        assert received == PIECES
    if size == 64:  # events arriving together are handed up together
        assert len(received) < len(PIECES)


async def _serve_body(body: bytes, request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, (("content-type", "application/json"),), body)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'{"choices": []}', "no choices"),
        (b'{"choices": [{"message": {"content": ["a"]}}]}', "not text"),
        (b"{" * 100_000, "not JSON"),
        (b'{"choices": [{"message": {"content": "{}"}}], "usage": {"prompt_tokens": -1}}', "usage"),
    ],
)
async def test_a_malformed_reply_body_fails_typed(
    nursery: trio.Nursery, body: bytes, error: str
) -> None:
    """chat_json reads the body's JSON itself: every malformed body is a typed error."""
    with trio.fail_after(TIMEOUT_S):
        handler = partial(_serve_body, body)
        port = await nursery.start(serve_http, handler, "127.0.0.1", 0, ConnectionCounts())
        options = sim_llm_options(f"http://127.0.0.1:{port}/v1", max_retries=0)
        provider = OpenAIProvider(options, SIM_KEY)
        async with contextlib.aclosing(provider):
            with pytest.raises(LLMError) as raised:
                await provider.chat_json([], purpose="plan")
    assert error in str(root_cause(raised.value))


async def test_a_reply_without_message_content_is_empty_text(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT_S):
        handler = partial(_serve_body, b'{"choices": [{"message": null}]}')
        port = await nursery.start(serve_http, handler, "127.0.0.1", 0, ConnectionCounts())
        options = sim_llm_options(f"http://127.0.0.1:{port}/v1", max_retries=0)
        provider = OpenAIProvider(options, SIM_KEY)
        async with contextlib.aclosing(provider):
            with pytest.raises(LLMError) as raised:  # "" is no JSON object for chat_json
                await provider.chat_json([], purpose="plan")
    cause = root_cause(raised.value)
    assert isinstance(cause, InvalidModelOutput) and "not JSON" in str(cause)


def test_a_bad_count_is_shown_short() -> None:
    with pytest.raises(InvalidModelOutput) as raised:
        SseReader().feed(b'data: {"usage": {"prompt_tokens": "' + b"x" * 100_000 + b'"}}\n\n')
    assert len(str(raised.value)) < 200
