"""One port for both: WebSocket upgrades go to the agent protocol, plain HTTP GETs to
/healthz and /metrics.

The request head is read here, with h11, so whatever bytes arrive end as a checked
head or as `BadHttpRequest` carrying the status to answer (400 for garbage, 408 for a
head that never completes, 431 for one too large): nothing is dropped without a word.
For an upgrade, the bytes already read are replayed to trio-websocket through
`PrefixedStream`, so the handshake sees the whole request. The server's refusals of a
well-formed request (401 without a token, 403 for a foreign Origin) go out through
`answer_refusal`, also before any WebSocket frame is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio

from server.errors import BadHttpRequest

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
    """The request line and headers; None when the peer sent nothing at all.

    Raises `BadHttpRequest` for anything else that is not a request head in time.
    """
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    data = b""
    with trio.move_on_after(HEAD_TIMEOUT_S):
        while True:
            chunk = bytes(await stream.receive_some(4096))
            data += chunk
            parser.receive_data(chunk)  # b"": the peer closed its side
            event = _next_event(parser)
            if isinstance(event, h11.Request):
                if _head_size(data) > MAX_HEAD_BYTES:
                    raise BadHttpRequest(431, f"the request head is over {MAX_HEAD_BYTES} bytes")
                return _head(event, data)
            if event is not h11.NEED_DATA:  # closed before a whole head
                if not data:
                    return None
                raise BadHttpRequest(400, "the request head is incomplete")
    if not data:
        return None
    raise BadHttpRequest(408, f"no complete request head within {HEAD_TIMEOUT_S:g} s")


def _next_event(parser: h11.Connection) -> object:
    try:
        return parser.next_event()
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint if exc.error_status_hint in REASONS else 400
        raise BadHttpRequest(status, f"not an HTTP/1.1 request: {exc}") from None


def _head_size(data: bytes) -> int:
    """Bytes up to the blank line (all of `data` when h11 found a bare-LF one)."""
    end = data.find(b"\r\n\r\n")
    return end if end >= 0 else len(data)


def _head(request: h11.Request, data: bytes) -> RequestHead:
    """Header names in lower case; a header sent twice is joined with ", " (RFC 9110), so a
    second `Origin` cannot hide behind the first."""
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return RequestHead(
        request.method.decode("latin-1"), request.target.decode("latin-1"), headers, data
    )


HttpHandler = Callable[[RequestHead], Awaitable[tuple[int, str, bytes]]]


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


async def answer_http(stream: trio.abc.Stream, head: RequestHead, handler: HttpHandler) -> None:
    status, content_type, body = await handler(head)
    await _respond(stream, status, content_type, body)


async def answer_bad_request(stream: trio.abc.Stream, error: BadHttpRequest) -> None:
    """The status a `BadHttpRequest` carries, with its reason as a one-line text body."""
    await _respond(stream, error.status, "text/plain; charset=utf-8", f"{error}\n".encode())


async def answer_refusal(
    stream: trio.abc.Stream, status: int, reason: str, headers: tuple[str, ...] = ()
) -> None:
    """A refusal (401, 403) with its reason as a one-line text body; `headers` are extra
    `Name: value` lines such as `WWW-Authenticate`."""
    body = f"{reason}\n".encode()
    await _respond(stream, status, "text/plain; charset=utf-8", body, headers)


async def _respond(
    stream: trio.abc.Stream,
    status: int,
    content_type: str,
    body: bytes,
    headers: tuple[str, ...] = (),
) -> None:
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *headers,
        "Connection: close",
        "",
        "",
    ]
    await stream.send_all("\r\n".join(lines).encode() + body)
