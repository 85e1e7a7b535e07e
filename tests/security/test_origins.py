"""Browser origins, tried as a hostile page would: a WebSocket handshake whose `Origin` is
neither the server's own (http(s)://<Host>) nor in `server.allowed_origins` gets HTTP 403
before any frame is read, and never becomes a connection; clients without an Origin
(CLI, SDKs) and the allowed origins are upgraded as before."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, wrap_client_stream

from tests.server.ws_helpers import TIMEOUT_S, Harness, open_client, serving

from .server_attacks import TOKEN, masked_text_frame, upgrade

ALLOWED = ("https://console.example", "http://localhost:3000")

Headers = Callable[[int], list[tuple[str, str]]]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, allowed_origins=ALLOWED) as harness:
        yield harness


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, tokens=(TOKEN,), allowed_origins=ALLOWED) as harness:
        yield harness


def origin(value: str) -> Headers:
    return lambda port: [("Origin", value.format(port=port))]


REFUSED = [
    pytest.param(origin("https://evil.example"), id="hostile"),
    pytest.param(origin("http://127.0.0.1.evil.example"), id="look-alike-suffix"),
    pytest.param(origin("http://127.0.0.1.evil.example:{port}"), id="look-alike-suffix-port"),
    pytest.param(origin("http://127.0.0.1:{port}.evil.example"), id="look-alike-after-port"),
    pytest.param(origin("http://127.0.0.1:{port}@evil.example"), id="userinfo-trick"),
    pytest.param(origin("http://evil.example/127.0.0.1:{port}"), id="own-in-the-path"),
    pytest.param(origin("http://127.0.0.1:{port}/"), id="own-with-a-path"),
    pytest.param(origin("http://127.0.0.1"), id="own-host-default-port"),
    pytest.param(origin("http://127.0.0.1:1"), id="own-host-other-port"),
    pytest.param(origin("http://localhost:{port}"), id="other-name-same-machine"),
    pytest.param(origin("ws://127.0.0.1:{port}"), id="other-scheme"),
    pytest.param(origin("null"), id="null"),
    pytest.param(origin("NULL"), id="null-upper-case"),
    pytest.param(origin(""), id="empty"),
    pytest.param(origin("https://console.example.evil.example"), id="allowed-look-alike"),
    pytest.param(origin("http://console.example"), id="allowed-host-wrong-scheme"),
    pytest.param(origin("https://console.example:8443"), id="allowed-host-wrong-port"),
    pytest.param(origin("http://localhost:3001"), id="allowed-host-other-port"),
    pytest.param(
        lambda port: [("Origin", f"http://127.0.0.1:{port}"), ("Origin", "https://evil.example")],
        id="own-then-hostile-twice",
    ),
    pytest.param(
        lambda port: [("Origin", "https://evil.example"), ("Origin", f"http://127.0.0.1:{port}")],
        id="hostile-then-own-twice",
    ),
]

ACCEPTED = [
    pytest.param(lambda port: [], id="no-origin"),
    pytest.param(origin("http://127.0.0.1:{port}"), id="own"),
    pytest.param(origin("HTTP://127.0.0.1:{port}"), id="own-upper-case-scheme"),
    pytest.param(origin("https://127.0.0.1:{port}"), id="own-behind-tls"),
    pytest.param(origin("https://console.example"), id="allowed"),
    pytest.param(origin("https://CONSOLE.example:443"), id="allowed-explicit-default-port"),
    pytest.param(origin("http://localhost:3000"), id="allowed-with-port"),
]


@pytest.mark.parametrize("headers", REFUSED)
async def test_handshake_from_a_foreign_origin_is_refused_with_403_before_any_frame(
    app: Harness, headers: Headers
) -> None:
    head = app.store.head_position
    goal = json.dumps({"type": "message", "id": 1, "text": "what is 2 + 2"})
    with trio.fail_after(TIMEOUT_S):
        # The frame rides right behind the upgrade: a refused handshake must not read it.
        status, answer = await upgrade(app.port, headers(app.port), then=masked_text_frame(goal))
    assert status == 403, answer
    assert b"allowed_origins" in answer
    assert app.app.stats["connections_total"] == 0
    assert app.app.stats["rejected_connections"] == 1
    assert app.store.head_position == head


@pytest.mark.parametrize("headers", ACCEPTED)
async def test_handshake_from_own_allowed_or_no_origin_is_upgraded(
    app: Harness, headers: Headers
) -> None:
    with trio.fail_after(TIMEOUT_S):
        status, answer = await upgrade(app.port, headers(app.port))
    assert status == 101, answer


async def test_real_client_from_a_hostile_origin_gets_403_and_an_allowed_one_is_served(
    app: Harness,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        # trio-websocket's own client, on a stream this test closes itself (on a refusal
        # the library leaves the socket it opened to the garbage collector).
        statuses: set[int] = set()
        stream = await trio.open_tcp_stream("127.0.0.1", app.port)
        async with stream:
            try:
                async with trio.open_nursery() as nursery:
                    hostile = [(b"Origin", b"https://evil.example")]
                    await wrap_client_stream(
                        nursery, stream, "127.0.0.1", "/", extra_headers=hostile
                    )
                    raise AssertionError("the hostile origin was upgraded")
            except* ConnectionRejected as refused:
                statuses = {exc.status_code for exc in refused.exceptions}
        assert statuses == {403}
        allowed = [(b"Origin", b"https://console.example")]
        async with open_client(app.url, extra_headers=allowed) as client:
            await client.ping()
        async with open_client(app.url) as cli:  # no Origin: not a browser
            await cli.ping()


async def test_rebound_dns_name_is_not_own_origin_on_a_server_without_tokens(
    app: Harness,
) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 sends Host and Origin
    that agree; without a token that must not pass as the server's own origin."""
    rebound = f"evil.example:{app.port}"
    with trio.fail_after(TIMEOUT_S):
        status, answer = await upgrade(app.port, [("Origin", f"http://{rebound}")], host=rebound)
        assert status == 403, answer
        status, answer = await upgrade(
            app.port, [("Origin", f"http://localhost:{app.port}")], host=f"localhost:{app.port}"
        )
        assert status == 101, answer


async def test_own_origin_is_the_host_header_when_tokens_guard_the_server(
    guarded: Harness,
) -> None:
    """Behind a reverse proxy the Host is the public name; its page is the own origin
    (the token still guards every request); another name is not."""
    public = "agents.example.org"
    with trio.fail_after(TIMEOUT_S):
        status, answer = await upgrade(guarded.port, [("Origin", f"https://{public}")], host=public)
        assert status == 101, answer
        status, answer = await upgrade(
            guarded.port, [("Origin", "https://evil.example")], host=public
        )
        assert status == 403, answer
        status, answer = await upgrade(
            guarded.port, [("Origin", f"http://{public}.evil.example")], host=public
        )
        assert status == 403, answer
