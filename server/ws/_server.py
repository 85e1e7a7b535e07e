"""The agent server's network side: the WebSocket API and /healthz, /metrics on one port.

`AgentServer` owns the run nursery (runs outlive the connection that started them),
the connection bookkeeping for limits, and the listener. Stopping it closes every
connection with 1001 (going away); unfinished runs stay in the log for resume.

Failure boundaries: a bug while serving one TCP connection ends that connection (see
`Connection.serve`), a bug in one run fails that run (`RunFailed` in its stream); both
are logged with their tracebacks and neither reaches the listener. Only the event
store's writer failing stops the server, through the store's own nursery.

Access: a WebSocket handshake whose `Origin` is neither the server's own nor in
`allowed_origins` is refused with 403 before the upgrade (clients that send no Origin,
such as the CLI, are not browsers and pass); with tokens configured, /healthz and
/metrics want `Authorization: Bearer <token>` (401 otherwise) unless `metrics_public`.

Principals: each token stands for a principal (`server._access.Principal`). A session
belongs to the principal that started it (`SessionStarted.user`), a run to the one that
asked for it (`RunRequested.principal`), `memory-<name>` to `name`; the owner is read
from the log (the stream's first record), never from a connection's memory, so it
holds across reconnects, restarts and processes. A `user` principal acting on anything
else gets `forbidden`, for streams that do not exist as well (so a refusal says nothing
about what exists); an `admin` may act on everything. Documents are shared: any
principal may `index_documents`, as any principal's runs may call `documents.index`
(the workspace confines the paths, not the principal).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, wrap_server_stream

from agents.errors import (
    AgentError,
    PromptUnreadable,
    RunNotRetryable,
    UnknownAgent,
    UnknownPrompt,
)
from agents.llm import RateLimiter
from agents.runs import ApprovalNotPending, Orchestrator, Submitted, load_run
from agents.tools import DocumentsAgent, DocumentsService
from events import (
    TERMINAL_RUN_TYPES,
    EventStore,
    EventStoreError,
    MemoryKeyDestroyed,
    RecordedEvent,
    RunCancelRequested,
    RunFailed,
    SessionForgotten,
    WrongExpectedVersion,
)
from projections import MetricsProjection, ProjectionRunner
from server._access import (
    ADMIN,
    MIN_TOKEN_CHARS,
    Principal,
    bearer_token,
    match_token,
    origin_allowed,
)
from server.errors import BadHttpRequest, LeaseStoreError, UnsafeBind, WeakToken
from server.leases import LeaseKeeper, MemoryRunLeases, NodePresence, RunLeases
from server.ws._connection import CLOSE_GOING_AWAY, CLOSE_POLICY, Connection
from server.ws._health import ServerSnapshot, render_health, render_metrics
from server.ws._http_front import (
    PrefixedStream,
    RequestHead,
    answer_bad_request,
    answer_http,
    answer_refusal,
    read_head,
)
from server.ws._limits import ServerLimits
from server.ws._protocol import BadFrame

log = logging.getLogger(__name__)
# A peer that went away mid-answer: its own business, not a bug of ours.
PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed)
NEED_BEARER = "this server wants Authorization: Bearer <token> (or server.metrics_public)"
BEARER_CHALLENGE = 'WWW-Authenticate: Bearer realm="autoagent"'
ORIGIN_REFUSED = (
    "origin not allowed: open the page from this server or list it in server.allowed_origins"
)


# The web console: static files in server/console/, served at these paths. The page
# holds no data (it speaks the WebSocket API, which wants the token), so it needs none.
CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
CONSOLE_PATHS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console/console.css": ("console.css", "text/css; charset=utf-8"),
}


def console_files() -> dict[str, tuple[str, bytes]]:
    """URL path -> (content type, body) of the console's files, read once at start-up."""
    return {
        path: (content_type, (CONSOLE_DIR / name).read_bytes())
        for path, (name, content_type) in CONSOLE_PATHS.items()
    }


def check_bind(host: str, tokens: Iterable[str]) -> None:
    """Refuse to expose an unauthenticated server beyond loopback."""
    if any(tokens):
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise UnsafeBind(
            f"refusing to listen on {host} without a token: set server.tokens (or "
            "AUTOAGENT_TOKEN), or bind 127.0.0.1"
        )


def check_tokens(tokens: Iterable[str]) -> None:
    """Refuse tokens too short to guard the server."""
    for token in tokens:
        if len(token) < MIN_TOKEN_CHARS:
            raise WeakToken(len(token), MIN_TOKEN_CHARS)


class AgentServer:
    def __init__(
        self,
        store: EventStore,
        orchestrator: Orchestrator,
        runner: ProjectionRunner | None,
        limits: ServerLimits,
        tokens: Iterable[str] = (),
        warming: Callable[[], list[str]] | None = None,
        *,
        allowed_origins: Iterable[str] = (),
        metrics_public: bool = False,
        principals: Mapping[str, Principal] | None = None,
        console: bool = False,
        leases: RunLeases | None = None,
    ) -> None:
        """`warming` says which parts are still loading in the background (/healthz);
        `allowed_origins` the browser origins besides the server's own that may connect;
        `metrics_public` serves /healthz and /metrics without a token; `principals`
        maps further tokens to the principals they stand for (`tokens` are admin's);
        `console` serves the web console's static files at / (`server.console`);
        `leases` the run leases this node takes (several nodes on one log; default:
        this process alone)."""
        self.console = console_files() if console else {}
        self.store = store
        self._warming = warming
        self.orchestrator = orchestrator
        self.runner = runner
        self.limits = limits
        self.principals: dict[str, Principal] = {t: ADMIN for t in tokens if t}
        self.principals.update(principals or {})
        self.tokens = frozenset(self.principals)
        self.allowed_origins = tuple(allowed_origins)
        self.metrics_public = metrics_public
        self.connections: set[Connection] = set()
        self._per_token: dict[str, int] = {}
        self._active_runs: dict[str, str] = {}  # run id -> session id
        self._run_principal: dict[str, str] = {}  # active run id -> who asked for it
        self._run_ended: dict[str, trio.Event] = {}  # active run id -> set when it ends
        self._session_owners: dict[str, str] = {}  # owners never change: cached
        self._runs: trio.Nursery | None = None
        self.keeper = LeaseKeeper(leases or MemoryRunLeases(LOCAL_NODE, LOCAL_TTL_S))
        self.stats = {
            "connections_total": 0,
            "rejected_connections": 0,
            "runs_started": 0,
            "runs_taken_over": 0,
            "frames_sent": 0,  # WebSocket frames the connections' senders wrote
            "frame_writes": 0,  # socket writes they took (a batch of frames is one)
        }

    # --- serving ------------------------------------------------------------------------------

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; reports the bound port. Runs live in this nursery."""
        check_bind(host, self.tokens)
        check_tokens(self.tokens)
        # One running node per node id (see NodePresence), claimed before the port: a
        # refused node never listens.
        presence = NodePresence(self.keeper.leases) if self.keeper.shared else None
        if presence is not None:
            await presence.claim()
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
            try:
                await self._serve_listeners(listeners, presence, task_status)
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:  # closed already, unless start-up failed
                        await listener.aclose()
        finally:
            if presence is not None:
                await presence.give_back()

    async def _serve_listeners(
        self,
        listeners: list[trio.SocketListener],
        presence: NodePresence | None,
        task_status: trio.TaskStatus[int],
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._runs = nursery
            if presence is not None:
                await nursery.start(presence.keep)
            await nursery.start(self.keeper.keep)
            if self.keeper.shared:
                nursery.start_soon(self._take_over_runs)
                nursery.start_soon(self._follow_requests)
            task_status.started(listeners[0].socket.getsockname()[1])
            try:
                await trio.serve_listeners(self._handle_stream, listeners)
            finally:
                with trio.CancelScope(shield=True):
                    await self._close_all()

    async def _close_all(self) -> None:
        with trio.move_on_after(3):
            async with trio.open_nursery() as nursery:
                for connection in list(self.connections):
                    nursery.start_soon(connection.close, CLOSE_GOING_AWAY, "server shutting down")

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        """One TCP connection, and its failure boundary: nothing raised while serving
        it reaches `serve_listeners` (which would end the listener)."""
        try:
            await self._serve_stream(stream)
        except* PEER_GONE:
            pass
        except* Exception as failure:
            log.error("serving a TCP connection failed; it is closed", exc_info=failure)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        try:
            head = await read_head(stream)
        except BadHttpRequest as exc:
            await answer_bad_request(stream, exc)
            return
        if head is None:
            return
        if not head.is_websocket:
            if not self._http_allowed(head):
                await answer_refusal(stream, 401, NEED_BEARER, (BEARER_CHALLENGE,))
                return
            await answer_http(stream, head, self._http)
            return
        if not self._origin_allowed(head):
            self.stats["rejected_connections"] += 1
            await answer_refusal(stream, 403, ORIGIN_REFUSED)
            return
        await self._websocket(PrefixedStream(stream, head.raw))

    def _origin_allowed(self, head: RequestHead) -> bool:
        """No Origin: not a browser (CLI, SDK), which the token guards instead."""
        origin = head.headers.get("origin")
        if origin is None:
            return True
        host = head.headers.get("host", "")
        return origin_allowed(origin, host, self.allowed_origins, any_host=bool(self.tokens))

    def _http_allowed(self, head: RequestHead) -> bool:
        if not self.tokens or self.metrics_public or head.path not in ("/healthz", "/metrics"):
            return True
        return match_token(self.tokens, bearer_token(head.headers)) is not None

    async def _websocket(self, stream: PrefixedStream) -> None:
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(
                nursery, stream, message_queue_size=4, max_message_size=self.limits.hard_frame_bytes
            )
            if len(self.connections) >= self.limits.max_connections:
                self.stats["rejected_connections"] += 1
                ws = await request.accept()
                await ws.aclose(CLOSE_POLICY, "server at its connection limit")
                return
            connection = Connection(self, await request.accept())
            self.connections.add(connection)
            self.stats["connections_total"] += 1
            await connection.serve()
            nursery.cancel_scope.cancel()

    async def _http(self, head: RequestHead) -> tuple[int, str, bytes]:
        if head.method != "GET":
            return 405, "text/plain", b"only GET\n"
        if head.path == "/healthz":
            status, body = render_health(self.snapshot())
            return status, "application/json", body
        if head.path == "/metrics":
            return 200, "text/plain; version=0.0.4", render_metrics(self.snapshot())
        page = self.console.get(head.path.partition("?")[0])
        if page is not None:
            return 200, *page
        return 404, "text/plain", b"not found: try /healthz or /metrics, or a WebSocket upgrade\n"

    def snapshot(self) -> ServerSnapshot:
        """The figures /healthz and /metrics report, as plain values."""
        head = self.store.head_position
        runner = self.runner
        metrics = runner.projections.get("metrics") if runner else None
        store_stats = self.store.statistics()
        statuses = runner.statuses() if runner else []
        limiter = getattr(self.orchestrator.provider, "limiter", None)
        budget = limiter.statistics() if isinstance(limiter, RateLimiter) else None
        return ServerSnapshot(
            head_position=head,
            projections={s.name: s.position for s in statuses},
            projection_lag=head - (runner.position if runner else head),
            connections=len(self.connections),
            connections_total=self.stats["connections_total"],
            frames_sent=self.stats["frames_sent"],
            frame_writes=self.stats["frame_writes"],
            appends=store_stats.appends,
            commits=store_stats.commits,
            metrics=metrics if isinstance(metrics, MetricsProjection) else None,
            stopped_projections={s.name: s.error for s in statuses if s.error is not None},
            warming=self._warming() if self._warming else [],
            node_id=self.keeper.leases.node_id,
            runs_leased=len(self.keeper.held()),
            runs_taken_over=self.stats["runs_taken_over"],
            leases_lost=self.keeper.lost,
            llm_budget_wait_s=budget.waited_s if budget else 0.0,
            llm_rate_limited=budget.rate_limited if budget else 0,
        )

    # --- bookkeeping for connections ------------------------------------------------------------

    def release(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if connection.token is not None:
            self._per_token[connection.token] -= 1

    def admit_token(self, connection: Connection, token: str) -> bool:
        if self._per_token.get(token, 0) >= self.limits.max_connections_per_token:
            return False
        self._per_token[token] = self._per_token.get(token, 0) + 1
        connection.token = token
        return True

    def session_has_room(self, session_id: str) -> bool:
        active = sum(1 for s in self._active_runs.values() if s == session_id)
        return active < self.limits.max_runs_per_session

    # --- runs -------------------------------------------------------------------------------------

    def start_run(
        self, run_id: str, session_id: str, principal: str, *, resume: bool = False
    ) -> bool:
        """Drive the run here; False (nothing started) when it is already driven here,
        whoever asked first (a resume, a takeover, a cancel racing each other)."""
        assert self._runs is not None
        if run_id in self._active_runs:
            return False
        self._active_runs[run_id] = session_id
        self._run_principal[run_id] = principal
        ended = self._run_ended[run_id] = trio.Event()
        self.stats["runs_started"] += 1
        self._runs.start_soon(functools.partial(self._drive, run_id, resume, ended))
        return True

    async def _drive(self, run_id: str, resume: bool, done: trio.Event) -> None:
        """One run, and its failure boundary: whatever it raises stays here.

        The run executes only under this node's lease on it; losing the lease stops it
        (unfinished, for the new holder). When it ends the lease is given back; when it
        stops unfinished (shutdown, lost lease) the lease is marked expired, so another
        node takes it over at once.
        """
        scope, ended = trio.CancelScope(), False
        try:
            try:
                if not await self.keeper.hold(run_id, scope):
                    return  # another node executes it, or this one already does
            except LeaseStoreError as exc:  # unfinished: a node that can reach it resumes it
                log.warning("run %s not started: %s", run_id, exc)
                return
            with scope:
                try:
                    await self.orchestrator.execute(run_id, resume=resume)
                except* (UnknownPrompt, PromptUnreadable) as broken:  # a broken install
                    log.error("run %s: a prompt template is unusable", run_id, exc_info=broken)
                    await self._record_crash(run_id, broken)
                except* AgentError:
                    pass  # refused or failed on purpose: the reason is in the log
                except* Exception as failure:
                    log.error("run %s failed with an internal error", run_id, exc_info=failure)
                    await self._record_crash(run_id, failure)
                ended = True
            await self.keeper.let_go(run_id, scope, ended=ended)
        finally:
            if not ended:
                await self.keeper.let_go(run_id, scope, ended=False)
            if self._run_ended.get(run_id) is done:  # this drive's entries, no other's
                del self._run_ended[run_id]
                self._active_runs.pop(run_id, None)
                self._run_principal.pop(run_id, None)
            done.set()

    async def _record_crash(self, run_id: str, failure: BaseExceptionGroup[Exception]) -> None:
        """`RunFailed` for a run a bug ended, so it does not look in progress forever.

        Best effort: when even that fails (a store that cannot write), it is logged; the
        store's writer failing stops the server by itself.
        """
        reasons = ", ".join(sorted({type(exc).__name__ for exc in _leaves(failure)}))
        try:
            state = await load_run(self.store, run_id)
            if state.status != "missing" and not state.finished:
                event = RunFailed(run_id, f"internal error ({reasons}); see the server log")
                await self.store.append(f"run-{run_id}", [event], correlation=run_id)
        except Exception:
            log.error("could not record the failure of run %s", run_id, exc_info=True)

    # --- several nodes -------------------------------------------------------------------------

    async def _take_over_runs(self) -> None:
        """Every half TTL, start the runs whose lease expired (their node died or lost
        touch), and the runs recorded at least a TTL ago that no node ever leased (a
        node that died between recording a goal and taking its lease). The second
        looks only at runs recorded since its last look: the runs already there when
        this node started were resumed by its start."""
        leases = self.keeper.leases
        scanned = self.store.head_position
        while True:
            await trio.sleep(leases.ttl_s / 2)
            try:
                candidates = await trio.to_thread.run_sync(leases.expired)
                orphans, scanned = await self._recorded_since(scanned, leases.ttl_s)
                if orphans:
                    live = {lease.run_id for lease in await trio.to_thread.run_sync(leases.leases)}
                    for run_id in orphans:
                        if run_id not in live and await self._unfinished(run_id):
                            candidates.append(run_id)
                for run_id in dict.fromkeys(candidates):
                    if run_id not in self._active_runs:
                        await self._take_over(run_id)
            except (LeaseStoreError, EventStoreError) as exc:
                log.warning("looking for runs to take over failed: %s", exc)
            except Exception:  # a bug here must not end the server: the next round retries
                log.error("looking for runs to take over failed", exc_info=True)

    async def _recorded_since(self, after: int, age_s: float) -> tuple[list[str], int]:
        """Ids of the runs requested after position `after` at least `age_s` ago (their
        node had time to lease them), and the position the next look starts after."""
        before_ns = time.time_ns() - int(age_s * 1e9)
        found: list[str] = []
        while True:
            batch = await self.store.read_type("RunRequested", after, TAKEOVER_READ)
            for record in batch:
                if record.ts > before_ns:
                    return found, after
                found.append(record.stream.removeprefix("run-"))
                after = record.position
            if len(batch) < TAKEOVER_READ:
                return found, after

    async def _unfinished(self, run_id: str) -> bool:
        stream = f"run-{run_id}"
        version = await self.store.stream_version(stream)
        last = await self.store.read_stream(stream, version - 1, 1) if version else []
        return bool(last) and last[0].type not in TERMINAL_RUN_TYPES | {"RunRetried"}

    async def _take_over(self, run_id: str) -> None:
        state = await load_run(self.store, run_id)
        if state.status == "missing" or state.finished:
            # Its node ended it but died before giving the lease back: drop the row.
            if await trio.to_thread.run_sync(self.keeper.leases.acquire, run_id):
                await trio.to_thread.run_sync(self.keeper.leases.release, run_id)
            return
        log.info("taking over run %s (its lease expired)", run_id)
        self.stats["runs_taken_over"] += 1
        self.start_run(run_id, state.session_id, state.principal, resume=True)

    async def _follow_requests(self) -> None:
        """Act on what clients connected to other nodes asked of the runs this node
        executes: a decided approval wakes its step, a cancel request cancels, a
        forgotten key or session cancels the runs sealing with it."""
        after, failures = self.store.head_position, 0
        while True:
            try:
                async for record in self.store.subscribe(after=after):
                    if record.type in REQUEST_TYPES:
                        await self._apply_request_safely(record)
                    after, failures = record.position, 0  # only once it was acted on
            except EventStoreError as exc:  # a dropped connection: again from where it was
                failures += 1
                if failures >= REQUEST_ATTEMPTS:  # a record no retry reads (a newer node's
                    log.error("skipping position %d: %s", after + 1, exc)  # event type)
                    after, failures = after + 1, 0
                else:
                    log.warning("following requests from other nodes: %s; again in 1 s", exc)
                await trio.sleep(REQUEST_RETRY_S)

    async def _apply_request_safely(self, record: RecordedEvent) -> None:
        """Apply one request; a store error is retried by the caller (applying twice
        changes nothing), any other failure is logged and the request skipped."""
        try:
            await self._apply_request(record.type, record.data)
        except EventStoreError:
            raise
        except Exception:
            log.error("acting on %s at %d failed", record.type, record.position, exc_info=True)

    async def _apply_request(self, event_type: str, data: Mapping[str, Any]) -> None:
        if event_type in ("ApprovalGranted", "ApprovalDenied"):
            run_id, step_id = str(data.get("run_id")), str(data.get("step_id"))
            if (run_id, step_id) in self.orchestrator.approvals.pending():
                state = await load_run(self.store, run_id)
                decision = state.decisions.get(step_id)
                if decision is not None:
                    self.orchestrator.approvals.resolve_if_waiting(run_id, step_id, decision)
        elif event_type == "RunCancelRequested":
            self.orchestrator.cancel(str(data.get("run_id")))
        elif event_type == "SessionForgotten":
            session_id = data.get("session_id")
            for run_id in [r for r, s in self._active_runs.items() if s == session_id]:
                self.orchestrator.cancel(run_id)
        elif event_type == "MemoryKeyDestroyed":
            for run_id in await self._runs_of(str(data.get("user")), self._active_runs):
                self.orchestrator.cancel(run_id)

    async def _runs_of(self, name: str, runs: Mapping[str, str]) -> set[str]:
        """The runs among `runs` (run id -> session id) that `name` asked for or whose
        session is `name`'s."""
        theirs = set()
        for run_id, session in list(runs.items()):
            asked_by = self._run_principal.get(run_id) or await self.run_owner(run_id)
            if asked_by == name or await self.session_owner(session) == name:
                theirs.add(run_id)
        return theirs

    async def _runs_elsewhere(self) -> dict[str, str]:
        """Run id -> session id of the unfinished runs other nodes hold leases on, live
        or expired (one being taken over must hear of a forget too)."""
        leases = await trio.to_thread.run_sync(self.keeper.leases.leases)
        node = self.keeper.leases.node_id
        elsewhere = {}
        for lease in leases:
            if lease.node_id != node:
                state = await load_run(self.store, lease.run_id)
                if state.status != "missing" and not state.finished:
                    elsewhere[lease.run_id] = state.session_id
        return elsewhere

    async def _request_cancel(self, run_id: str, by: str) -> bool:
        """Append `RunCancelRequested` to an unfinished run (never after its terminal
        event: at the version read, read again when the run moved meanwhile); False
        when the run ended first."""
        for _ in range(CANCEL_ATTEMPTS):
            state = await load_run(self.store, run_id)
            if state.status == "missing" or state.finished:
                return False
            event = RunCancelRequested(run_id, by)
            try:
                await self.store.append(f"run-{run_id}", [event], state.version, correlation=run_id)
            except WrongExpectedVersion:
                continue
            return True
        raise EventStoreError(f"run {run_id} kept changing; the cancel was not recorded")

    # --- ownership ---------------------------------------------------------------------------

    async def session_owner(self, session_id: str) -> str | None:
        """The principal a session belongs to; None when there is no such session."""
        owner = self._session_owners.get(session_id)
        if owner is None:
            first = await self.store.read_stream(f"session-{session_id}", 0, 1)
            if not first or first[0].type != "SessionStarted":
                return None
            owner = str(first[0].data.get("user") or "")
            if len(self._session_owners) >= OWNER_CACHE:
                self._session_owners.clear()
            self._session_owners[session_id] = owner
        return owner

    async def run_owner(self, run_id: str) -> str | None:
        """The principal that asked for a run (its session's, in logs written before
        principals; "" when neither is known); None when there is no such run."""
        first = await self.store.read_stream(f"run-{run_id}", 0, 1)
        if not first or first[0].type != "RunRequested":
            return None
        principal = first[0].data.get("principal")
        if principal:
            return str(principal)
        # A run from before principals: its session's owner, else nobody's ("", which
        # only an admin owns) - it exists all the same.
        return await self.session_owner(str(first[0].data.get("session_id"))) or ""

    async def stream_owner(self, stream: str) -> str | None:
        kind, _, name = stream.partition("-")
        if kind == "session":
            return await self.session_owner(name)
        if kind == "run":
            return await self.run_owner(name)
        if kind == "memory":
            return name
        return None  # `$all`, `docs-*`: shared, an admin's to follow

    async def check_stream(self, connection: Connection, stream: str, request_id: Any) -> None:
        """`forbidden` unless the connection's principal may follow `stream`."""
        principal = connection.principal
        assert principal is not None
        if not principal.is_admin and not principal.owns(await self.stream_owner(stream)):
            raise BadFrame(f"stream {stream!r} is not yours to follow", "forbidden", request_id)

    async def check_session(self, connection: Connection, session_id: str, request_id: Any) -> None:
        """`forbidden` unless the principal may post into (or forget) an existing session."""
        principal = connection.principal
        assert principal is not None
        owner = await self.session_owner(session_id)
        if owner is not None and not principal.owns(owner):
            raise BadFrame(f"session {session_id!r} is not yours", "forbidden", request_id)

    async def _check_run(self, connection: Connection, run_id: str, request_id: Any) -> None:
        """`forbidden` for a run that is not the principal's (also one that does not
        exist: a user learns nothing of others' run ids); `not_found` for an admin."""
        principal = connection.principal
        assert principal is not None
        owner = await self.run_owner(run_id)
        if not principal.owns(owner) or (owner is None and not principal.is_admin):
            raise BadFrame(f"run {run_id!r} is not yours", "forbidden", request_id)
        if owner is None:
            raise BadFrame(f"no run {run_id!r}", "not_found", request_id)

    async def _owned(self, connection: Connection, run_id: str, request_id: Any) -> Any:
        await self._check_run(connection, run_id, request_id)
        state = await load_run(self.store, run_id)
        if state.status == "missing":
            raise BadFrame(f"no run {run_id!r}", "not_found", request_id)
        if state.finished:
            raise BadFrame(f"run {run_id!r} is already {state.status}", "conflict", request_id)
        return state

    async def cancel_run(self, connection: Connection, run_id: str, request_id: Any) -> None:
        """Cancel a run. Executing here: at once. Otherwise a `RunCancelRequested` goes
        into its stream: the node executing it acts on it as it reads the log, and any
        node that resumes it (this one, now, when nobody holds it) cancels it first
        thing, under its lease, so two nodes never both act on one run."""
        state = await self._owned(connection, run_id, request_id)
        if run_id in self._active_runs:
            if not self.orchestrator.cancel(run_id):
                raise BadFrame(f"run {run_id!r} is finishing", "conflict", request_id)
            return
        principal = connection.principal
        by = principal.name if principal is not None else ""
        try:
            if not await self._request_cancel(run_id, by):
                raise BadFrame(f"run {run_id!r} ended meanwhile", "conflict", request_id)
        except EventStoreError as exc:
            raise BadFrame(f"{exc}; try again", "conflict", request_id) from None
        if run_id in self._active_runs:  # started here meanwhile: it may have read the
            self.orchestrator.cancel(run_id)  # stream before the request, cancel it directly
            return
        try:
            holder = await trio.to_thread.run_sync(self.keeper.leases.holder, run_id)
        except LeaseStoreError as exc:  # the request is in the log: whoever resumes it cancels
            log.warning("cancel of run %s: %s", run_id, exc)
            return
        if holder is None and not self.start_run(
            run_id, state.session_id, state.principal, resume=True
        ):
            self.orchestrator.cancel(run_id)

    async def decide(
        self,
        connection: Connection,
        run_id: str,
        step_id: str,
        granted: bool,
        note: str,
        request_id: Any,
    ) -> None:
        state = await self._owned(connection, run_id, request_id)
        if step_id not in state.approvals_requested:
            raise BadFrame(f"no approval requested for step {step_id!r}", "not_found", request_id)
        try:
            principal = connection.principal
            by = principal.name if principal is not None else ""
            await self.orchestrator.decide(run_id, step_id, granted, note, by=by)
        except ApprovalNotPending as exc:
            raise BadFrame(str(exc), "conflict", request_id) from None

    async def resume_run(self, connection: Connection, run_id: str, request_id: Any) -> int:
        """Start an unfinished run again; returns the position to follow it from."""
        state = await self._owned(connection, run_id, request_id)
        if run_id in self._active_runs:
            raise BadFrame(f"run {run_id!r} is running", "conflict", request_id)
        connection.sessions.add(state.session_id)
        position = self.store.head_position
        owner = await self.run_owner(run_id)
        if not self.start_run(run_id, state.session_id, owner or "", resume=True):
            raise BadFrame(f"run {run_id!r} is running", "conflict", request_id)
        return position

    async def retry_run(self, connection: Connection, run_id: str, request_id: Any) -> Submitted:
        """A failed or cancelled run of the connection's principal, asked for again."""
        principal = connection.principal
        assert principal is not None
        await self._check_run(connection, run_id, request_id)
        state = await load_run(self.store, run_id)
        if not self.session_has_room(state.session_id):
            raise BadFrame("the run's session has its runs in progress", "rate_limited", request_id)
        try:
            submitted = await self.orchestrator.retry(run_id, by=principal.name)
        except RunNotRetryable as exc:
            raise BadFrame(str(exc), "conflict", request_id) from None
        self.start_run(submitted.run_id, submitted.session_id, await self.run_owner(run_id) or "")
        return submitted

    # --- documents -------------------------------------------------------------------------

    async def documents_service(self, request_id: Any) -> DocumentsService:
        """The documents agent's service, the one this server's runs use (one index, one
        embedder, one workspace); `not_found` when the agent is not enabled here."""
        try:
            agent = await self.orchestrator.registry.agent("documents")
        except UnknownAgent:
            agent = None
        if not isinstance(agent, DocumentsAgent):
            raise BadFrame(
                "the documents agent is not enabled on this server (agents.enabled)",
                "not_found",
                request_id,
            )
        return agent.service

    # --- forgetting ------------------------------------------------------------------------

    async def forget_content(
        self,
        connection: Connection,
        scope: str,
        session_id: str | None,
        user: str | None,
        request_id: Any,
    ) -> tuple[str | None, str | None]:
        """Destroy the key of a principal (`me`: the connection's own, or with `user` an
        admin names one) or of one session; returns (the principal forgotten, the
        destroyed key's id), the id None when there was no key.

        Runs still going under that key are cancelled first, so nothing they write
        afterwards lands under a new key as if the forget had not happened. The key
        goes before the event that records it: if the append then fails, the content is
        gone all the same.
        """
        principal = connection.principal
        sealer = self.store.sealer
        assert principal is not None
        if sealer is None:
            raise BadFrame("this server seals nothing: no key to forget", "conflict", request_id)
        if scope == "session":
            if not session_id:
                raise BadFrame("scope 'session' needs session_id", "bad_request", request_id)
            if await self.session_owner(session_id) is None:
                if not principal.is_admin:
                    raise BadFrame(f"session {session_id!r} is not yours", "forbidden", request_id)
                raise BadFrame(f"no session {session_id!r}", "not_found", request_id)
            await self.check_session(connection, session_id, request_id)
            await self._end_runs({r for r, s in self._active_runs.items() if s == session_id})
            if self.keeper.shared:
                elsewhere = await self._runs_elsewhere()
                await self._end_runs_elsewhere({r for r, s in elsewhere.items() if s == session_id})
            key_id = await trio.to_thread.run_sync(sealer.forget_session, session_id)
            if key_id is not None:
                event = SessionForgotten(session_id, key_id, principal.name)
                await self.store.append(f"session-{session_id}", [event])
            return None, key_id
        name = user or principal.name
        if not principal.owns(name):
            raise BadFrame("only an admin may forget another principal", "forbidden", request_id)
        await self._end_runs(await self._runs_of(name, self._active_runs))
        if self.keeper.shared:
            await self._end_runs_elsewhere(await self._runs_of(name, await self._runs_elsewhere()))
        key_id = await trio.to_thread.run_sync(sealer.forget_principal, name)
        if key_id is not None:
            await self.store.append(f"memory-{name}", [MemoryKeyDestroyed(name, key_id)])
        return name, key_id

    async def _end_runs(self, run_ids: set[str]) -> None:
        """Cancel these runs and wait (bounded) until they have ended: a run finishing
        as the cancel arrives writes its last events under the key about to be
        destroyed, not under a new one made after it."""
        waiting = [self._run_ended[r] for r in run_ids if r in self._run_ended]
        for run_id in run_ids:
            self.orchestrator.cancel(run_id)
        with trio.move_on_after(FORGET_WAIT_S):
            for ended in waiting:
                await ended.wait()

    async def _end_runs_elsewhere(self, run_ids: set[str]) -> None:
        """`_end_runs` for runs other nodes execute: ask each node to cancel, and wait
        (bounded) until their streams say they ended."""
        for run_id in run_ids:
            try:
                await self._request_cancel(run_id, "forget")
            except EventStoreError as exc:  # its node still acts on the destroyed key
                log.warning("forget: cancel of run %s not recorded: %s", run_id, exc)
        with trio.move_on_after(FORGET_WAIT_S):
            for run_id in run_ids:
                async for record in self.store.subscribe(stream=f"run-{run_id}"):
                    if record.type in TERMINAL_RUN_TYPES:
                        break


OWNER_CACHE = 100_000
CANCEL_ATTEMPTS = 20  # reads of a run moving under a cancel request before giving up
REQUEST_RETRY_S = 1.0  # pause before following other nodes' requests again after an error
REQUEST_ATTEMPTS = 5  # failed reads at one position before a follower skips that record
TAKEOVER_READ = 1000  # run requests read per batch when looking for runs nobody leased
LOCAL_NODE = "local"  # the node id of a server alone on its log (LMDB)
LOCAL_TTL_S = 30.0
# Events a node acts on when another node's client appended them (`_follow_requests`).
REQUEST_TYPES = frozenset(
    {
        "ApprovalGranted",
        "ApprovalDenied",
        "RunCancelRequested",
        "SessionForgotten",
        "MemoryKeyDestroyed",
    }
)
FORGET_WAIT_S = 30.0  # how long a forget waits for the runs it cancels to end


def _leaves(group: BaseExceptionGroup[Exception]) -> list[BaseException]:
    """The exceptions inside a (possibly nested) exception group."""
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves
