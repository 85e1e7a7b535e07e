"""One WebSocket client: authentication, requests, and the events it subscribed to.

Outgoing frames go through one bounded channel to one sender task. Subscriptions pull
records from the store and block when that channel is full, so a slow client is
served from the log at its own pace and never makes the server buffer without bound;
a client that cannot take a frame within `slow_client_timeout_s` is closed with a
clear reason. Runs started here live in the server's run nursery, not this
connection's: a client that disconnects does not stop its runs. An `index_documents`
pass is this connection's work (`_indexing.py`), in its nursery beside the
subscriptions, so the connection goes on serving requests meanwhile; at most
`max_index_jobs` at once, and a client that leaves stops it, as Ctrl-C stops an
in-process `documents index` (what was appended stays; the next pass skips it).

Every frame counts against the request rate before it is looked at (binary, oversize
and malformed ones too). With auth on, a connection that has not sent a valid hello
`hello_timeout_s` after the handshake is closed with 1008; one that sends nothing for
`idle_timeout_s` while following no stream or run and indexing nothing is closed with
1001.

`serve` is the failure boundary of one connection: a bug anywhere in it (a request
handler, a subscription, the sender) is logged with its traceback, answered with an
`internal` error frame when the socket still takes one, and closes this connection with
1011. It never reaches the listener, other connections or runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set
from typing import Any, Protocol

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from agents.errors import InvalidGoal, SessionNotYours
from agents.runs import Orchestrator, Submitted
from agents.tools import DEFAULT_COLLECTION, DocumentsService
from events import TERMINAL_RUN_TYPES, AutoagentError, EventStore, RecordedEvent
from server._access import LOCAL, Principal, match_token
from server.ws._batched_send import send_messages
from server.ws._indexing import index_for_client
from server.ws._limits import RequestBucket, ServerLimits
from server.ws._protocol import (
    BadFrame,
    Request,
    error_frame,
    event_frame,
    parse_request,
    reply_frame,
)

CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_AGAIN = 1001, 1008, 1011, 1013
GOODBYE_TIMEOUT_S = 2.0
# Characters of queued frames the sender writes in one go at most (a batch's bytes
# are held in memory until written).
SEND_BATCH_CHARS = 64 * 1024

log = logging.getLogger(__name__)


def _cut_at_terminal(records: list[RecordedEvent]) -> bool:
    """Drop what follows a run's terminal record from `records`; whether there was one."""
    for index, record in enumerate(records):
        if record.type in TERMINAL_RUN_TYPES:
            del records[index + 1 :]
            return True
    return False


class ClientGone(Exception):
    """The client closed, or was closed for being too slow; the connection ends."""


class ConnectionHost(Protocol):
    """What a connection needs from the server that accepted it."""

    store: EventStore
    orchestrator: Orchestrator
    limits: ServerLimits
    stats: dict[str, int]

    @property
    def tokens(self) -> Set[str]: ...

    @property
    def principals(self) -> Mapping[str, Principal]: ...

    def release(self, connection: Connection) -> None: ...

    def admit_token(self, connection: Connection, token: str) -> bool: ...

    def session_has_room(self, session_id: str) -> bool: ...

    def start_run(
        self, run_id: str, session_id: str, principal: str, *, resume: bool = False
    ) -> bool: ...

    async def check_stream(self, connection: Connection, stream: str, request_id: Any) -> None: ...

    async def check_session(
        self, connection: Connection, session_id: str, request_id: Any
    ) -> None: ...

    async def stream_owner(self, stream: str) -> str | None: ...

    async def retry_run(
        self, connection: Connection, run_id: str, request_id: Any
    ) -> Submitted: ...

    async def forget_content(
        self,
        connection: Connection,
        scope: str,
        session_id: str | None,
        user: str | None,
        request_id: Any,
    ) -> tuple[str | None, str | None]: ...

    async def cancel_run(self, connection: Connection, run_id: str, request_id: Any) -> None: ...

    async def decide(
        self,
        connection: Connection,
        run_id: str,
        step_id: str,
        granted: bool,
        note: str,
        request_id: Any,
    ) -> None: ...

    async def resume_run(self, connection: Connection, run_id: str, request_id: Any) -> int: ...

    async def documents_service(self, request_id: Any) -> DocumentsService: ...


class Connection:
    def __init__(self, app: ConnectionHost, ws: WebSocketConnection) -> None:
        self.app = app
        self.ws = ws
        self.token: str | None = None
        self.authenticated = not app.tokens
        # Who this connection acts for: the local admin without tokens, else set by hello.
        self.principal: Principal | None = None if app.tokens else LOCAL
        self.sessions: set[str] = set()
        self.subscriptions = 0
        self.indexing = 0  # index_documents passes in progress
        self._bucket = RequestBucket(app.limits.requests_per_second)
        self._out_send, self._out_receive = trio.open_memory_channel[str](
            app.limits.send_queue_frames
        )
        self._nursery: trio.Nursery | None = None
        # The id of the request being served when a handler failed, for the error frame.
        self._failed_request: str | int | None = None

    async def serve(self) -> None:
        """Serve until the client leaves; the failure boundary of this connection."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sender)
                await self._receive_loop()
                nursery.cancel_scope.cancel()
        except* (ConnectionClosed, ClientGone):
            pass
        except* Exception as failure:
            log.error(
                "WebSocket connection failed; closing it with 1011 (other connections and "
                "runs go on)",
                exc_info=failure,
            )
            with trio.CancelScope(shield=True):
                await self._say_internal_error()
        finally:
            self.app.release(self)
            if self.ws.closed is None:  # shutdown: say goodbye properly
                with trio.CancelScope(shield=True):
                    await self.close(CLOSE_GOING_AWAY, "server shutting down")

    async def _say_internal_error(self) -> None:
        """An `internal` error frame, then close 1011; best effort, bounded, never raises.

        The sender task is gone by now, so writing to the socket here races nothing.
        """
        frame = error_frame(
            "internal", "internal server error; this connection is closed", self._failed_request
        )
        with trio.move_on_after(GOODBYE_TIMEOUT_S):
            try:
                await self.ws.send_message(frame)
                await self.ws.aclose(CLOSE_INTERNAL, "internal server error")
            except Exception:  # the socket is gone or broken: nothing more to say
                log.debug("could not deliver the internal error frame", exc_info=True)

    # --- outgoing -----------------------------------------------------------------------

    async def send(self, frame: str) -> None:
        """Queue a frame; blocks (backpressure) while the client is behind.

        The time limit is here, on the producer, so a frame is never cut half-written:
        a client whose queue stays full that long is closed as too slow.
        """
        try:
            with trio.move_on_after(self.app.limits.slow_client_timeout_s) as scope:
                await self._out_send.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ClientGone() from None
        if scope.cancelled_caught:
            await self.close(CLOSE_TRY_AGAIN, "client too slow to receive events")
            raise ClientGone()

    async def send_batch(self, frames: Sequence[str]) -> None:
        """Queue several frames without yielding between them while the queue has room,
        so that the sender finds them together and writes them at once (a system call
        per batch instead of per frame: a loopback send cost ~100 us of CPU here)."""
        for index, frame in enumerate(frames):
            try:
                self._out_send.send_nowait(frame)
            except trio.WouldBlock:  # the client is behind: wait for room, as `send` does
                for rest in frames[index:]:
                    await self.send(rest)
                return
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ClientGone() from None
        await trio.lowlevel.checkpoint()

    async def _sender(self) -> None:
        try:
            async for frame in self._out_receive:
                frames = [frame]
                size = len(frame)
                while size < SEND_BATCH_CHARS:
                    try:
                        frames.append(self._out_receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                    size += len(frames[-1])
                await self._write(frames)
        except ConnectionClosed:
            return

    async def _write(self, frames: list[str]) -> None:
        """The frames as WebSocket messages; several in one write of the socket."""
        self.app.stats["frames_sent"] += len(frames)
        self.app.stats["frame_writes"] += 1
        await send_messages(self.ws, frames)

    async def close(self, code: int, reason: str) -> None:
        with trio.move_on_after(2):
            await self.ws.aclose(code, reason)

    # --- incoming -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        hello_by = trio.current_time() + self.app.limits.hello_timeout_s
        while True:
            message = await self._next_frame(hello_by)
            if message is None or not await self._handle(message):
                return

    async def _next_frame(self, hello_by: float) -> str | bytes | None:
        """The next frame; None once the connection is closed for missing a deadline.

        The hello deadline is fixed at the handshake, so a guest cannot stay by sending
        frames that are never a valid hello (malformed ones only get an error frame).
        """
        limits = self.app.limits
        while True:
            deadline = trio.current_time() + limits.idle_timeout_s
            if not self.authenticated:
                deadline = min(deadline, hello_by)
            with trio.move_on_at(deadline):
                return await self.ws.get_message()
            if not self.authenticated and trio.current_time() >= hello_by:
                await self.close(CLOSE_POLICY, f"no hello within {limits.hello_timeout_s:g} s")
                return None
            if self.subscriptions == 0 and self.indexing == 0:
                await self.close(CLOSE_GOING_AWAY, f"idle for {limits.idle_timeout_s:g} s")
                return None

    async def _handle(self, message: str | bytes) -> bool:
        """Serve one frame; False when the connection must close.

        Refusals (`BadFrame`, and errors the project raises on purpose) become one
        `error` frame and the connection stays. Anything else is a bug: it propagates
        to `serve`, which closes this connection with 1011.
        """
        request_id: str | int | None = None
        try:
            if not self._bucket.take():
                raise BadFrame("too many requests per second", "rate_limited", self._id_of(message))
            request = self._parse(message)
            request_id = request.id
            return await self._dispatch(request)
        except BadFrame as exc:
            await self.send(error_frame(exc.code, str(exc), exc.request_id))
            if exc.code == "unauthorized":
                await self._flush_and_close(CLOSE_POLICY, "unauthorized")
                return False
            return True
        except (ConnectionClosed, ClientGone):
            raise
        except AutoagentError as exc:
            await self.send(error_frame("bad_request", str(exc), request_id))
            return True
        except Exception:
            self._failed_request = request_id
            raise

    def _parse(self, message: str | bytes) -> Request:
        if isinstance(message, bytes):
            raise BadFrame("binary frames are not accepted; send JSON text")
        limit = self.app.limits.max_frame_bytes
        if len(message.encode("utf-8", "surrogatepass")) > limit:
            raise BadFrame(f"frame over {limit} bytes", "too_large")
        return parse_request(message)

    def _id_of(self, message: str | bytes) -> str | int | None:
        """The id of a refused frame, to echo in its error; None when it has none."""
        try:
            return self._parse(message).id
        except BadFrame as exc:
            request_id: str | int | None = exc.request_id
            return request_id

    async def _dispatch(self, request: Request) -> bool:
        if request.type == "hello":
            return await self._hello(request)
        if not self.authenticated:
            raise BadFrame("send hello with a valid token first", "unauthorized", request.id)
        handler = getattr(self, f"_on_{request.type}")
        await handler(request)
        return True

    async def _hello(self, request: Request) -> bool:
        token = match_token(self.app.tokens, request.fields["token"])
        if self.app.tokens and token is None:
            await self.send(error_frame("unauthorized", "unknown token", request.id))
            await self._flush_and_close(CLOSE_POLICY, "unauthorized")
            return False
        if token is not None and self.token is None and not self.app.admit_token(self, token):
            await self.send(
                error_frame("rate_limited", "too many connections for this token", request.id)
            )
            await self._flush_and_close(CLOSE_POLICY, "too many connections for this token")
            return False
        self.authenticated = True
        if token is not None:
            self.principal = self.app.principals[token]
        principal = self.principal
        assert principal is not None
        await self.send(
            reply_frame(
                "welcome",
                request.id,
                server="autoagent",
                principal=principal.name,
                role=principal.role,
            )
        )
        return True

    async def _flush_and_close(self, code: int, reason: str) -> None:
        await trio.sleep(0.05)  # let the sender deliver the error frame first
        await self.close(code, reason)

    async def _on_ping(self, request: Request) -> None:
        await self.send(reply_frame("pong", request.id))

    async def _on_message(self, request: Request) -> None:
        session_id = request.fields.get("session_id")
        principal = self.principal
        assert principal is not None
        if session_id:
            await self.app.check_session(self, session_id, request.id)
        if session_id and not self.app.session_has_room(session_id):
            limit = self.app.limits.max_runs_per_session
            raise BadFrame(
                f"session already has {limit} runs in progress", "rate_limited", request.id
            )
        try:
            submitted = await self.app.orchestrator.submit(
                request.fields["text"],
                session_id,
                client="ws",
                principal=principal.name,
                only_own_session=not principal.is_admin,
            )
        except SessionNotYours as exc:
            raise BadFrame(str(exc), "forbidden", request.id) from None
        except InvalidGoal as exc:
            raise BadFrame(str(exc), "bad_request", request.id) from None
        self.sessions.add(submitted.session_id)
        self.app.start_run(submitted.run_id, submitted.session_id, principal.name)
        reply = reply_frame(
            "accepted", request.id, session_id=submitted.session_id, run_id=submitted.run_id
        )
        await self.send(reply)
        self._follow(f"run-{submitted.run_id}", submitted.position - 1, until_run_ends=True)

    async def _on_subscribe(self, request: Request) -> None:
        stream = request.fields["stream"]  # the schema checked its form
        after = request.fields["after"] or 0
        await self.app.check_stream(self, stream, request.id)
        if stream != "$all" and await self.app.store.stream_version(stream) == 0:
            raise BadFrame(f"no stream {stream!r}", "not_found", request.id)
        if self.subscriptions >= self.app.limits.max_subscriptions:
            raise BadFrame("too many subscriptions on this connection", "rate_limited", request.id)
        await self.send(reply_frame("subscribed", request.id, stream=stream, after=after))
        self._follow(None if stream == "$all" else stream, after)

    async def _on_cancel(self, request: Request) -> None:
        run_id = request.fields["run_id"]
        await self.app.cancel_run(self, run_id, request.id)
        await self.send(reply_frame("cancelled", request.id, run_id=run_id))

    async def _on_approve(self, request: Request) -> None:
        fields = request.fields
        decision = fields["decision"]
        if decision not in ("approve", "deny"):
            raise BadFrame(
                "approve: decision must be 'approve' or 'deny'", "bad_request", request.id
            )
        await self.app.decide(
            self,
            fields["run_id"],
            fields["step_id"],
            decision == "approve",
            fields.get("note") or "",
            request.id,
        )
        reply = reply_frame(
            "approved",
            request.id,
            run_id=fields["run_id"],
            step_id=fields["step_id"],
            decision=decision,
        )
        await self.send(reply)

    async def _on_retry(self, request: Request) -> None:
        run_id = request.fields["run_id"]
        submitted = await self.app.retry_run(self, run_id, request.id)
        self.sessions.add(submitted.session_id)
        reply = reply_frame("retried", request.id, run_id=run_id, new_run_id=submitted.run_id)
        await self.send(reply)
        self._follow(f"run-{submitted.run_id}", submitted.position - 1, until_run_ends=True)

    async def _on_forget(self, request: Request) -> None:
        scope = request.fields["scope"]
        session_id = request.fields.get("session_id")
        user = request.fields.get("user")
        forgotten, key_id = await self.app.forget_content(self, scope, session_id, user, request.id)
        await self.send(
            reply_frame(
                "forgotten",
                request.id,
                scope=scope,
                session_id=session_id,
                user=forgotten,
                key_destroyed=key_id is not None,
            )
        )

    async def _on_resume(self, request: Request) -> None:
        run_id = request.fields["run_id"]
        position = await self.app.resume_run(self, run_id, request.id)
        await self.send(reply_frame("resumed", request.id, run_id=run_id))
        self._follow(f"run-{run_id}", position, until_run_ends=True)

    async def _on_index_documents(self, request: Request) -> None:
        if self.indexing >= self.app.limits.max_index_jobs:
            raise BadFrame(
                "an index_documents request is already in progress on this connection",
                "rate_limited",
                request.id,
            )
        service = await self.app.documents_service(request.id)
        assert self._nursery is not None
        self.indexing += 1
        self._nursery.start_soon(self._index, service, request)

    async def _index(self, service: DocumentsService, request: Request) -> None:
        """One pass; the frames it sends follow on this connection as it works."""
        fields = request.fields
        try:
            collection = fields["collection"] or DEFAULT_COLLECTION
            await index_for_client(service, fields["path"], collection, self.send, request.id)
        except Exception:
            self._failed_request = request.id  # a bug: for the `internal` error frame
            raise
        finally:
            self.indexing -= 1

    # --- subscriptions --------------------------------------------------------------------

    def _follow(self, stream: str | None, after: int, *, until_run_ends: bool = False) -> None:
        assert self._nursery is not None
        self.subscriptions += 1
        self._nursery.start_soon(self._forward, stream, after, until_run_ends)

    async def _forward(self, stream: str | None, after: int, until_run_ends: bool) -> None:
        """Catch-up then live, in order: positions pick every record, so no gap or duplicate.

        The follower of a run a `message` or `resume` started ends with the run's terminal
        event, so finished runs hold no subscription (and no task) on the connection.
        """
        try:
            store = self.app.store
            subscription = store.subscribe(after=after, stream=stream)
            while True:
                # At most a read batch (`store.read_batch`) at once, the subscription's
                # own buffer: held here, opened and as frames, until the queue takes it.
                records = await subscription.next_batch()
                ends = until_run_ends and _cut_at_terminal(records)
                # Personal content is sealed in the log; the client gets it opened (or
                # marked forgotten), never the box.
                opened = await store.open(records)
                await self.send_batch([event_frame(record) for record in opened])
                if ends:
                    return
        finally:
            self.subscriptions -= 1
