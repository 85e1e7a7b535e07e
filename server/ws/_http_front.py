"""One port for both: WebSocket upgrades go to the agent protocol, plain HTTP GETs to
/healthz and /metrics.

The request head is read here; for an upgrade, the bytes already read are replayed to
trio-websocket through `PrefixedStream`, so the handshake sees the whole request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def is_websocket(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"


class PrefixedStream(trio.abc.Stream):
    """A stream that first returns `prefix`, then reads from the wrapped stream."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def read_head(stream: trio.abc.Stream) -> RequestHead | None:
    """The request line and headers (None if the peer sent no valid head in time)."""
    data = b""
    with trio.move_on_after(HEAD_TIMEOUT_S):
        while b"\r\n\r\n" not in data and len(data) < MAX_HEAD_BYTES:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return None
            data += chunk
    if b"\r\n\r\n" not in data:
        return None
    return _parse_head(data)


def _parse_head(data: bytes) -> RequestHead | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RequestHead(parts[0], parts[1], headers, data)


HttpHandler = Callable[[RequestHead], Awaitable[tuple[int, str, bytes]]]


async def answer_http(stream: trio.abc.Stream, head: RequestHead, handler: HttpHandler) -> None:
    status, content_type, body = await handler(head)
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    lines = [
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "",
        "",
    ]
    await stream.send_all("\r\n".join(lines).encode() + body)
