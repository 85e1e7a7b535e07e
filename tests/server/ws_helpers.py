"""Shared pieces of the WebSocket server tests: an in-process server and a small client.

- `serving(tmp_path, ...)`: the whole app in this process, as `autoagent serve` wires it
  (event store with its writer, a `ProjectionRunner` over a `MemoryStateStore`, the
  orchestrator from `open_orchestrator`, `AgentServer` on 127.0.0.1 port 0), yielding a
  `Harness`. The offline provider by default; `llm_url` points the real OpenAI client at
  a simulator instead (so runs can be made slow with its latency profile). Fault
  injection: `server_class` (an `AgentServer` subclass), `projections` (added to the
  shipped ones), `agents` (the registry's agent classes instead of the shipped ones).
- `Client`: a trio-websocket client that sends one JSON object per frame and reads frames
  back with a deadline, keeping every frame it saw.
- `http_get`: one raw HTTP request to the same port, for /healthz and /metrics.

Every helper that waits is bounded; tests still wrap themselves in `trio.fail_after`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from agents.offline._simulator import SimulatorOptions, serve_simulator
from agents.runs._orchestrator import Orchestrator
from agents.tools import Agent, AgentContext, AgentRegistry
from events import EventStore, MemoryEventLog, RecordedEvent, StoreOptions, open_event_store
from projections import MemoryStateStore, Projection, ProjectionRunner, build_projections
from server.app import open_orchestrator
from server.config import load_config
from server.ws._limits import ServerLimits
from server.ws._server import AgentServer

# Upper bound in seconds on one test's network I/O.
TIMEOUT_S = 20
# How long a `Client.receive` waits for one frame before failing the test.
FRAME_WAIT_S = 10
GOAL = "what is 17 * 23 + 4"
TERMINAL = ("RunCompleted", "RunFailed", "RunCancelled")
SIM_KEY_ENV = "AUTOAGENT_WS_TEST_SIM_KEY"
DEFAULT_LIMITS = ServerLimits()
# Tokens long enough for the server (at least 32 characters).
TOKEN = "test-token-0123456789abcdef0123456789"
OTHER_TOKEN = "other-token-0123456789abcdef01234567"


@dataclass
class Harness:
    store: EventStore
    runner: ProjectionRunner
    orchestrator: Orchestrator
    app: AgentServer
    port: int
    server_scope: trio.CancelScope
    server_stopped: trio.Event

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def client(self, **kwargs: Any) -> AbstractAsyncContextManager[Client]:
        return open_client(self.url, **kwargs)

    async def records(self, after: int = 0) -> list[RecordedEvent]:
        return [record async for record in self.store.iterate(after)]

    async def wait_runs_done(self, wait: float = 10.0) -> None:
        """Until no run executes (a run appends its session's reply after RunCompleted)."""
        for _ in range(int(wait / 0.01)):
            if not self.orchestrator.running():
                return
            await trio.sleep(0.01)
        raise AssertionError(f"runs still executing: {self.orchestrator.running()}")

    async def wait_disconnected(self, wait: float = 5.0) -> None:
        """Until the server has forgotten every connection (polling, bounded)."""
        for _ in range(int(wait / 0.01)):
            if not self.app.connections:
                return
            await trio.sleep(0.01)
        raise AssertionError(f"{len(self.app.connections)} connection(s) still open")

    async def stop(self) -> None:
        """Stop the server alone (as on SIGINT); the store and orchestrator stay open."""
        self.server_scope.cancel()
        await self.server_stopped.wait()


async def _run_server(
    app: AgentServer, *, task_status: trio.TaskStatus[tuple[int, trio.CancelScope, trio.Event]]
) -> None:
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(app.serve, "127.0.0.1", 0)
                task_status.started((port, scope, stopped))
    finally:
        stopped.set()


@asynccontextmanager
async def serving(
    tmp_path: Path,
    limits: ServerLimits = DEFAULT_LIMITS,
    tokens: tuple[str, ...] = (),
    *,
    lmdb: bool = False,
    llm_url: str | None = None,
    env: Mapping[str, str] | None = None,
    server_class: type[AgentServer] = AgentServer,
    projections: Sequence[Projection] = (),
    agents: Mapping[str, type[Agent]] | None = None,
    allowed_origins: tuple[str, ...] = (),
    metrics_public: bool = False,
) -> AsyncIterator[Harness]:
    """The app on 127.0.0.1:0; cancelled (connections closed with 1001) on exit."""
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    settings = {"AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)])}
    if llm_url is not None:
        settings |= {
            "AUTOAGENT_LLM__PROVIDER": "openai",
            "AUTOAGENT_LLM__BASE_URL": llm_url,
            "AUTOAGENT_LLM__API_KEY_ENV": SIM_KEY_ENV,
            "AUTOAGENT_LLM__MAX_RETRIES": "0",
        }
    config = load_config(env={**settings, **(env or {})})
    if lmdb:
        opened = open_event_store(tmp_path / "data", StoreOptions(sync=False))
    else:
        opened = open_event_store(log=MemoryEventLog())
    async with opened as store, trio.open_nursery() as nursery:
        shipped = build_projections(None, 20)
        runner = ProjectionRunner(store.log, MemoryStateStore(), [*shipped, *projections])
        await nursery.start(runner.run, store)
        try:
            async with open_orchestrator(config, store) as orchestrator:
                if agents is not None:
                    orchestrator.registry = AgentRegistry(agents, AgentContext())
                app = server_class(
                    store,
                    orchestrator,
                    runner,
                    limits,
                    tokens,
                    allowed_origins=allowed_origins,
                    metrics_public=metrics_public,
                )
                port, scope, stopped = await nursery.start(_run_server, app)
                yield Harness(store, runner, orchestrator, app, port, scope, stopped)
        finally:
            # Only now: cancelling while the contexts above still close would turn the
            # test's own failure into a Cancelled that this nursery then swallows.
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def simulator(latency: str = "realistic", time_scale: float = 1.0) -> AsyncIterator[str]:
    """An OpenAI-compatible simulator on 127.0.0.1:0; yields its base URL."""
    async with trio.open_nursery() as nursery:
        options = SimulatorOptions(latency_profile=latency, time_scale=time_scale, seed=7)
        port = await nursery.start(serve_simulator, options)
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_client(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A connected `Client`; its TCP socket is closed on exit whoever closed first.

    trio-websocket's client leaves its socket to the garbage collector when the server
    closes the connection (a ResourceWarning, an error under filterwarnings=error).
    """
    ws: WebSocketConnection | None = None
    try:
        async with open_websocket_url(url, **kwargs) as ws:
            yield Client(ws)
    finally:
        if ws is not None:
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()


@dataclass
class Client:
    ws: WebSocketConnection
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, frame: object) -> None:
        await self.ws.send_message(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def receive(self, wait: float = FRAME_WAIT_S) -> dict[str, Any]:
        with trio.fail_after(wait):
            frame = json.loads(await self.ws.get_message())
        assert isinstance(frame, dict), frame
        self.seen.append(frame)
        return frame

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send, then the next frame that is not an event (the reply)."""
        await self.send(frame)
        while True:
            reply = await self.receive()
            if reply["type"] != "event":
                return reply

    async def ping(self, request_id: object = "p") -> float:
        """Round trip of a ping in seconds (asserts the pong echoes the id)."""
        started = trio.current_time()
        reply = await self.request({"type": "ping", "id": request_id})
        assert reply == {"type": "pong", "id": request_id}
        return trio.current_time() - started

    async def events_until(
        self, done: tuple[str, ...] = TERMINAL, wait: float = FRAME_WAIT_S
    ) -> list[dict[str, Any]]:
        """Event frames up to and including the first whose type is in `done`."""
        events = []
        while True:
            frame = await self.receive(wait)
            assert frame["type"] == "event", frame
            events.append(frame)
            if frame["event_type"] in done:
                return events

    async def events(self, count: int, wait: float = FRAME_WAIT_S) -> list[dict[str, Any]]:
        events = []
        while len(events) < count:
            frame = await self.receive(wait)
            assert frame["type"] == "event", frame
            events.append(frame)
        return events

    async def nothing_more(self, wait: float = 0.3) -> None:
        """Assert no frame arrives within `wait` seconds."""
        with trio.move_on_after(wait):
            frame = await self.ws.get_message()
            raise AssertionError(f"unexpected frame {frame!r}")

    async def closed_code(self, wait: float = FRAME_WAIT_S) -> int | None:
        """Read (and keep) frames until the server closes; the close code."""
        with trio.fail_after(wait):
            try:
                while True:
                    self.seen.append(json.loads(await self.ws.get_message()))
            except ConnectionClosed as closed:
                return closed.reason.code


async def http_request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on the server's port; status, headers (lower-case), body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
        await stream.send_all(head.encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def positions(events: list[dict[str, Any]]) -> list[int]:
    return [e["position"] for e in events]
