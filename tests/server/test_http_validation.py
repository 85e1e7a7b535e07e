"""Bytes on the server's port that are not a request it can serve get an HTTP error
status with a one-line reason (400, 408, 431), never a silent close and never anything
that reaches the listener; the WebSocket side and /healthz go on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import server.ws._http_front as http_front
from server.errors import BadHttpRequest
from server.ws._http_front import RequestHead, read_head

from .ws_helpers import TIMEOUT_S, Harness, http_request, serving


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path) as harness:
        yield harness


async def exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send `data` on a fresh connection, then everything the server answers."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if half_close:
            await stream.send_eof()
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


GARBAGE = [
    pytest.param(b"\x16\x03\x01\x02\x00 tls hello\r\n\r\n", 400, id="tls-client-hello"),
    pytest.param(b"\x00\xff\xfe\r\n\r\n", 400, id="binary"),
    pytest.param(b"GET /healthz\r\n\r\n", 400, id="no-http-version"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400, id="header-without-colon"),
    pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", 400, id="http11-without-host"),
    pytest.param(b"GET /he althz HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="space-in-target"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        431,
        id="head-over-the-limit",
    ),
]


@pytest.mark.parametrize(("data", "status"), GARBAGE)
async def test_garbage_gets_an_error_status_and_the_server_goes_on(
    app: Harness, data: bytes, status: int
) -> None:
    with trio.fail_after(TIMEOUT_S):
        answer = await exchange(app.port, data)
        health, _, _ = await http_request(app.port, "GET", "/healthz")
        async with app.client() as client:
            await client.ping()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"Connection: close" in head
    assert body.endswith(b"\n") and len(body.splitlines()) == 1
    assert health == 200


async def test_a_head_cut_short_by_the_peer_gets_400(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        answer = await exchange(app.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", half_close=True)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"closed" in answer


async def test_a_head_that_never_completes_gets_408(
    app: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_front, "HEAD_TIMEOUT_S", 0.2)
    with trio.fail_after(TIMEOUT_S):
        answer = await exchange(app.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    app: Harness,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        answer = await exchange(app.port, b"", half_close=True)
    assert answer == b""


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.sampled_from(
        [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /healthz HTTP/1.0\r\n\r\n", b"\r\n\r\n"]
    )
    | st.tuples(st.binary(max_size=40), st.binary(max_size=40)).map(
        lambda p: b"GET /" + p[0] + b" HTTP/1.1\r\nHost: a\r\n" + p[1] + b"\r\n\r\n"
    )
)
async def test_read_head_turns_any_bytes_into_a_head_nothing_or_a_bad_request(
    data: bytes,
) -> None:
    """Property: whatever the bytes, `read_head` gives a `RequestHead`, None (nothing
    sent) or `BadHttpRequest` with a status the front answers; nothing else."""
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT_S):
        await client.send_all(data)
        await client.send_eof()
        try:
            head = await read_head(server)
        except BadHttpRequest as exc:
            assert exc.status in http_front.REASONS and exc.status >= 400
            assert str(exc) and "\n" not in str(exc)
            return
    if head is None:
        assert data == b""
    else:
        assert isinstance(head, RequestHead)
        assert head.raw == data and head.method and head.path


async def test_a_broken_websocket_upgrade_gets_400_and_logs_no_failure(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    with trio.fail_after(TIMEOUT_S):
        answer = await exchange(app.port, upgrade)
        async with app.client() as client:
            await client.ping()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
