"""The per-connection request rate, tried as an attacker would: every frame counts before
it is parsed (binary, oversize and malformed ones too), so junk cannot be sent for free,
and the frame after the allowance is refused with `rate_limited` without being served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from server.ws import ServerLimits
from tests.server.ws_helpers import GOAL, TIMEOUT_S, Client, serving

from .server_attacks import TOKEN

RATE = 3  # per second, and the burst allowed at once
LIMITS = ServerLimits(requests_per_second=RATE, max_frame_bytes=512)

JUNK = [
    pytest.param(b"\x00\x01binary", "bad_request", id="binary"),
    pytest.param("{not json", "bad_request", id="malformed"),
    pytest.param('{"type": "explode"}', "bad_request", id="unknown-type"),
    pytest.param("x" * 1000, "too_large", id="oversize"),
]


async def spend_allowance(client: Client, junk: str | bytes, code: str) -> None:
    """RATE junk frames, each answered with its own error (so each one was counted)."""
    for _ in range(RATE):
        await client.send(junk)
    errors = [await client.receive() for _ in range(RATE)]
    assert [(e["type"], e["code"]) for e in errors] == [("error", code)] * RATE


@pytest.mark.parametrize(("junk", "code"), JUNK)
async def test_junk_frames_use_up_the_allowance_and_the_next_request_is_refused(
    tmp_path: Path, junk: str | bytes, code: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS) as app, app.client() as client:
            head = app.store.head_position
            await spend_allowance(client, junk, code)
            await client.send({"type": "message", "id": "goal", "text": GOAL})
            refused = await client.receive()
            assert (refused["type"], refused["code"], refused["id"]) == (
                "error",
                "rate_limited",
                "goal",
            )
            await trio.sleep(1.0 / RATE + 0.1)  # one request's worth comes back
            await client.ping()
    assert app.store.head_position == head  # the refused goal was not served


async def test_junk_before_hello_is_counted_and_the_hello_is_refused_not_welcomed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS, tokens=(TOKEN,)) as app, app.client() as client:
            await spend_allowance(client, "{not json", "bad_request")
            await client.send({"type": "hello", "id": "h", "token": TOKEN})
            refused = await client.receive()
            assert (refused["code"], refused["id"]) == ("rate_limited", "h")
            assert not client.ws.closed  # a refusal, not a close: the client may retry
            await trio.sleep(1.0 / RATE + 0.1)
            welcome = await client.request({"type": "hello", "id": "h2", "token": TOKEN})
            assert welcome["type"] == "welcome"


async def test_a_flood_of_mixed_junk_is_mostly_refused_unparsed(tmp_path: Path) -> None:
    flood: list[Any] = [b"\xff" * 10, "{", "x" * 1000, {"type": "ping", "id": 1}] * 25
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS) as app, app.client() as client:
            for frame in flood:
                await client.send(frame)
            replies = [await client.receive() for _ in flood]
            await trio.sleep(1.0 / RATE + 0.1)
            await client.ping("after")
            assert len(app.app.connections) == 1
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    # the burst (plus what refills while the flood is read) is served, the rest refused
    assert len(limited) >= len(flood) - 2 * RATE
