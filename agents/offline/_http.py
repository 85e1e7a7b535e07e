"""A small HTTP/1.1 server on Trio and h11, just enough for the simulator.

Why not a framework: the simulator must misbehave on purpose (cut a body short, drop a
stream half way, answer too late) and count TCP connections exactly; with h11 every byte
and every connection is in our hands. Keep-alive and chunked streaming are h11's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

import h11
import trio

MAX_BODY_BYTES = 64 * 1024 * 1024
RECEIVE_BYTES = 65536


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What to send back. `chunks` (delay, bytes) streams the body chunked instead of `body`;
    `drop_after` sends only that many body bytes (or chunks) and then drops the connection.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunks: tuple[tuple[float, bytes], ...] | None = None
    drop_after: int | None = None


@dataclass(slots=True)
class ConnectionCounts:
    """TCP connections accepted in all, and open now."""

    opened: int = 0
    open: int = 0


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    counts: ConnectionCounts,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` on `host:port` until cancelled; reports the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(partial(_serve_connection, handler, counts), listeners)


async def _serve_connection(
    handler: Handler, counts: ConnectionCounts, stream: trio.SocketStream
) -> None:
    counts.opened += 1
    counts.open += 1
    try:
        async with stream:
            await _serve_requests(handler, stream, h11.Connection(h11.SERVER))
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass  # the client went away or spoke nonsense: nothing to answer
    finally:
        counts.open -= 1


async def _serve_requests(
    handler: Handler, stream: trio.SocketStream, conn: h11.Connection
) -> None:
    while True:
        request = await _read_request(stream, conn)
        if request is None:
            return
        response = await handler(request)
        if not await _send_response(stream, conn, response):
            return
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(RECEIVE_BYTES))


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> HttpRequest | None:
    """The next request with its whole body, or None when the client closed the connection."""
    event = await _next_event(stream, conn)
    if not isinstance(event, h11.Request):
        return None
    body = bytearray()
    while not isinstance(part := await _next_event(stream, conn), h11.EndOfMessage):
        if isinstance(part, h11.Data):
            body += part.data
        if len(body) > MAX_BODY_BYTES or isinstance(part, h11.ConnectionClosed):
            return None
    headers = {name.decode().lower(): value.decode("latin-1") for name, value in event.headers}
    return HttpRequest(event.method.decode(), event.target.decode(), headers, bytes(body))


async def _send_response(
    stream: trio.SocketStream, conn: h11.Connection, response: HttpResponse
) -> bool:
    """Send `response`; False when the connection must be dropped afterwards."""
    headers = list(response.headers)
    if response.chunks is None:
        headers.append(("content-length", str(len(response.body))))
    await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
    if response.chunks is not None:
        return await _send_chunks(stream, conn, response.chunks, response.drop_after)
    if response.drop_after is not None:
        await stream.send_all(conn.send(h11.Data(data=response.body[: response.drop_after])))
        return False
    await stream.send_all(conn.send(h11.Data(data=response.body)) + conn.send(h11.EndOfMessage()))
    return True


async def _send_chunks(
    stream: trio.SocketStream,
    conn: h11.Connection,
    chunks: tuple[tuple[float, bytes], ...],
    drop_after: int | None,
) -> bool:
    """Each chunk after its delay; chunks due at the same moment (no delay between them)
    go out in one write, as a server writing into its socket buffer sends them.

    The delays are counted from the start, as a model decodes at its own pace whatever
    the socket does: a sleep per chunk added each wake-up's lateness (the event loop's
    timers are in milliseconds) and each write's time to the reply.
    """
    pending = bytearray()
    due = trio.current_time()
    for index, (delay, data) in enumerate(chunks):
        if drop_after is not None and index >= drop_after:
            await stream.send_all(bytes(pending))
            return False
        if delay > 0 and pending:
            await stream.send_all(bytes(pending))
            pending.clear()
        due += max(delay, 0.0)
        if delay > 0 or index == 0:
            await trio.sleep_until(due)
        pending += conn.send(h11.Data(data=data)) or b""
    await stream.send_all(bytes(pending) + (conn.send(h11.EndOfMessage()) or b""))
    return True
