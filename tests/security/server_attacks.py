"""Raw-socket tools of the server's hostile-client tests: a WebSocket upgrade and an HTTP
GET written by hand, so each test controls every header (Origin, Host, Authorization)
and sees the server's exact answer.

Every helper is bounded by its own `fail_after`; the tests wrap themselves too.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Sequence

import trio

from tests.server.ws_helpers import TIMEOUT_S

# Long enough for the server (at least 32 characters).
TOKEN = "security-token-0123456789abcdef0123"
SECOND_TOKEN = "second-token-abcdef0123456789abcdef01"
IO_WAIT_S = 5


def masked_text_frame(text: str) -> bytes:
    """One client-to-server WebSocket text frame (FIN, opcode 1, masked, < 126 bytes)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body


async def upgrade(
    port: int,
    headers: list[tuple[str, str]],
    *,
    host: str | None = None,
    then: bytes = b"",
) -> tuple[int, bytes]:
    """Send a WebSocket upgrade (plus `then`, bytes right after it, such as a frame);
    the answer's status and everything the server sent until it closed or went quiet."""
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + then
    with trio.fail_after(IO_WAIT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            data = await _read_answer(stream)
    return int(data.split(b" ", 2)[1]), data


async def _read_answer(stream: trio.SocketStream) -> bytes:
    """Until the peer closes, or (an accepted upgrade stays open) the head is complete
    and nothing more arrives for a moment."""
    data = b""
    while True:
        with trio.move_on_after(0.5 if b"\r\n\r\n" in data else TIMEOUT_S):
            chunk = await stream.receive_some(65536)
            if not chunk:
                return data
            data += chunk
            continue
        return data


async def http_get(
    port: int, path: str, headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, dict[str, str], bytes]:
    """One GET with the given headers; status, headers (lower-case names), body."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    with trio.fail_after(IO_WAIT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = await _read_answer(stream)
    raw_head, _, body = data.partition(b"\r\n\r\n")
    head_lines = raw_head.decode("latin-1").split("\r\n")
    found = {}
    for line in head_lines[1:]:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(head_lines[0].split(" ")[1]), found, body
