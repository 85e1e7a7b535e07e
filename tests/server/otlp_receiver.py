"""An OTLP/HTTP trace receiver for the tests: a small Trio HTTP/1.1 server (h11) on
127.0.0.1 port 0 that decodes each `POST /v1/traces` body with opentelemetry-proto.

`answers` scripts the status codes of the first requests (e.g. `[503]`: the first
request is refused, later ones taken), so retries can be tested; the default is 200.
Every wait is on an event, never on the clock; tests bound it with `fail_after`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h11
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class Received:
    """One request as it arrived: its path, content type, answer and decoded body."""

    path: str
    content_type: str
    status: int
    body: bytes

    @property
    def request(self) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(self.body)


@dataclass
class Receiver:
    port: int = 0
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    _arrived: trio.Event = field(default_factory=trio.Event)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted(self) -> list[ExportTraceServiceRequest]:
        return [r.request for r in self.received if r.status == 200]

    def spans(self) -> Iterator[Span]:
        for request in self.accepted():
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    yield from scope.spans

    def traces(self) -> dict[bytes, list[Span]]:
        """Trace id -> its spans, over every accepted request."""
        found: dict[bytes, list[Span]] = {}
        for span in self.spans():
            found.setdefault(span.trace_id, []).append(span)
        return found

    async def wait_for_traces(self, count: int) -> dict[bytes, list[Span]]:
        while len(self.traces()) < count:
            await self._arrived.wait()
        return self.traces()

    async def handle(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request = await _next_request(connection, stream)
                if request is None:
                    return
                target, content_type, body = request
                status = self.answers.pop(0) if self.answers else 200
                self.received.append(Received(target, content_type, status, body))
                reply = ExportTraceServiceResponse().SerializeToString() if status == 200 else b""
                headers = [
                    ("Content-Type", "application/x-protobuf"),
                    ("Content-Length", str(len(reply))),
                ]
                for event in (h11.Response(status_code=status, headers=headers), h11.Data(reply)):
                    await stream.send_all(connection.send(event) or b"")
                await stream.send_all(connection.send(h11.EndOfMessage()) or b"")
                self._arrived.set()
                self._arrived = trio.Event()
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()


async def _next_request(
    connection: h11.Connection, stream: trio.SocketStream
) -> tuple[str, str, bytes] | None:
    """(path, content type, body) of the next request, None once the client is gone."""
    target, content_type, body = "", "", bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            target = event.target.decode()
            content_type = dict(event.headers).get(b"content-type", b"").decode()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return target, content_type, bytes(body)
        else:  # ConnectionClosed, or PAUSED after a protocol error
            return None


@asynccontextmanager
async def open_receiver(answers: list[int] | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(answers=list(answers or []))
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, receiver.handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        receiver.port = listeners[0].socket.getsockname()[1]
        yield receiver
        nursery.cancel_scope.cancel()


async def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed): a collector that is down."""
    sock = trio.socket.socket()
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
