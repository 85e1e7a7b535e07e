"""Connections that hold a slot without doing anything, tried as an attacker would: a
guest that never says hello (or only sends junk) is closed with 1008 at the hello
deadline, an idle connection with 1001 at the idle timeout; a busy or subscribed one,
and a guest on a server without tokens, stay. Timeouts are fractions of a second here."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed

from server.ws import ServerLimits
from tests.server.ws_helpers import TIMEOUT_S, Client, serving

from .server_attacks import TOKEN

SHORT = ServerLimits(hello_timeout_s=0.3, idle_timeout_s=0.4, requests_per_second=1000)


async def closed_with(client: Client, wait: float = 3.0) -> tuple[int, str | None, float]:
    """Read until the server closes: its code, reason and how long that took."""
    started = trio.current_time()
    with trio.fail_after(wait):
        try:
            while True:
                client.seen.append(json.loads(await client.ws.get_message()))
        except ConnectionClosed as closed:
            return closed.reason.code, closed.reason.reason, trio.current_time() - started


async def test_silent_guest_is_closed_with_1008_at_the_hello_deadline(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, SHORT, tokens=(TOKEN,)) as app:
            async with app.client() as guest:
                code, reason, waited = await closed_with(guest)
            await app.wait_disconnected()
    assert (code, reason) == (1008, "no hello within 0.3 s")
    assert waited < 2.0


async def test_junk_frames_do_not_push_back_the_hello_deadline(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, SHORT, tokens=(TOKEN,)) as app:
            async with app.client() as guest:
                started = trio.current_time()
                try:
                    while app.app.connections:  # junk every 50 ms, until the server lets go
                        # the hello deadline, plus the close handshake's 2 s grace (this
                        # guest does not read, so it never answers the close)
                        assert trio.current_time() - started < 3.5, "the guest is still held"
                        await guest.send("{not json")
                        await trio.sleep(0.05)
                except ConnectionClosed:
                    pass
                code, reason, _ = await closed_with(guest)
    assert (code, reason) == (1008, "no hello within 0.3 s")
    assert {frame["code"] for frame in guest.seen} <= {"bad_request"}


async def test_idle_authenticated_connection_is_closed_with_1001(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, SHORT, tokens=(TOKEN,)) as app:
            async with app.client() as client:
                reply = await client.request({"type": "hello", "id": "h", "token": TOKEN})
                assert reply["type"] == "welcome"
                code, reason, waited = await closed_with(client)
            await app.wait_disconnected()
    assert (code, reason) == (1001, "idle for 0.4 s")
    assert waited < 2.0


async def test_idle_connection_without_tokens_is_closed_too(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, SHORT) as app, app.client() as client:
            code, reason, _ = await closed_with(client)
    assert (code, reason) == (1001, "idle for 0.4 s")


async def test_connection_that_keeps_sending_stays_past_both_timeouts(tmp_path: Path) -> None:
    # Timeouts 10x the gap between frames, so a loaded machine's hiccup is not idleness.
    limits = ServerLimits(hello_timeout_s=0.5, idle_timeout_s=1.0, requests_per_second=1000)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits, tokens=(TOKEN,)) as app:
            async with app.client() as client:
                await client.request({"type": "hello", "id": "h", "token": TOKEN})
                for _ in range(25):  # 2.5 s, well past both timeouts
                    await client.ping()
                    await trio.sleep(0.1)
                await client.ping()


async def test_subscribed_connection_is_not_idle(tmp_path: Path) -> None:
    """A client that only listens to a stream (the web console's timeline) stays."""
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, SHORT, tokens=(TOKEN,)) as app:
            async with app.client() as client:
                await client.request({"type": "hello", "id": "h", "token": TOKEN})
                reply = await client.request({"type": "subscribe", "id": 1, "stream": "$all"})
                assert reply["type"] == "subscribed"
                await client.nothing_more(1.0)
                await client.ping()


async def test_without_tokens_there_is_no_hello_deadline(tmp_path: Path) -> None:
    limits = ServerLimits(hello_timeout_s=0.2, idle_timeout_s=30)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits) as app, app.client() as client:
            await trio.sleep(0.6)
            await client.ping()
