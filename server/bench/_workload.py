"""What `autoagent bench` sends to a server: the request mix, and the documents to index.

`drive` runs `concurrency` WebSocket clients; request i goes to client i mod C, each
client sends its requests one after another in one session, so a server sees the same
sessions with the same requests in the same order whichever server it is. Each request
is timed on the client's clock (`_client.run_goal`).

`write_documents` puts a fixed corpus of text documents (60-120 words each, fixed by
the seed) in a workspace folder, and `index_documents` asks the server, as a client
would, to index that folder; the run's event frames are kept to time its
documents.index step.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from server.bench._client import GoalRun, run_goal
from server.errors import BenchAborted, GoalRejected

REQUEST_TIMEOUT_S = 600.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DOCUMENTS_FOLDER = "bench-docs"
INDEX_GOAL = "index the documents in {folder}"
_WORDS = (
    "battery solar grid storage inverter panel turbine wind hydro pump market price demand "
    "supply contract tariff forecast capacity load peak reserve outage maintenance cable "
    "transformer substation voltage frequency licence permit site survey budget schedule "
    "supplier warranty inspection report audit risk safety training crew shift region"
).split()


@dataclass
class WorkloadResult:
    """Every request's outcome as the clients saw it, in request order."""

    runs: list[GoalRun | None]
    rejected: list[str] = field(default_factory=list)

    @property
    def finished(self) -> list[GoalRun]:
        return [r for r in self.runs if r is not None and r.outcome is not None]


async def drive(
    url: str, goals: Sequence[str], concurrency: int, on_done: Callable[[int], None]
) -> WorkloadResult:
    """Send every goal through `concurrency` clients; `on_done(count)` after each one."""
    result = WorkloadResult([None] * len(goals))
    done = 0

    def finished_one() -> None:
        nonlocal done
        done += 1
        on_done(done)

    async with trio.open_nursery() as nursery:
        for client in range(min(concurrency, len(goals))):
            mine = range(client, len(goals), concurrency)
            nursery.start_soon(_client, url, goals, mine, result, finished_one)
    return result


async def _client(
    url: str,
    goals: Sequence[str],
    mine: range,
    result: WorkloadResult,
    finished_one: Callable[[], None],
) -> None:
    session: str | None = None
    async with _connection(url) as ws:
        for index in mine:
            try:
                run = await _timed(run_goal(ws, goals[index], index + 1, session))
            except GoalRejected as exc:
                result.rejected.append(f"request {index + 1}: {exc}")
            else:
                session = run.session_id or session
                result.runs[index] = run
            finished_one()


@asynccontextmanager
async def _connection(url: str) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket connection whose failures become BenchAborted."""
    try:
        async with open_websocket_url(url, max_message_size=MAX_MESSAGE_BYTES) as ws:
            yield ws
    except (HandshakeError, OSError) as exc:
        raise BenchAborted(f"cannot connect to {url}: {exc!r}") from exc
    except ConnectionClosed as exc:
        raise BenchAborted(f"the server closed the connection: {exc.reason}") from exc


async def _timed(call: Awaitable[GoalRun]) -> GoalRun:
    with trio.move_on_after(REQUEST_TIMEOUT_S):
        return await call
    raise BenchAborted(f"a request got no terminal event within {REQUEST_TIMEOUT_S:g} s")


def document_text(rng: random.Random, number: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(60, 120))]
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
    return f"# Site note {number}\n\n" + " ".join(sentences) + "\n"


def write_documents(workspace: Path, count: int, seed: int) -> Path:
    """`count` markdown notes in `<workspace>/bench-docs`, the same for the same seed."""
    folder = workspace / DOCUMENTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for number in range(1, count + 1):
        (folder / f"note-{number:03d}.md").write_text(document_text(rng, number))
    return folder


async def index_documents(url: str) -> GoalRun:
    """Ask the server to index the bench's folder; the run with its event frames."""
    async with _connection(url) as ws:
        goal = INDEX_GOAL.format(folder=DOCUMENTS_FOLDER)
        return await _timed(run_goal(ws, goal, "index", keep_events=True))


def step_of(run: GoalRun, agent: str, action: str) -> str | None:
    """The id of the run's first step calling `agent.action`, from its PlanCreated frame."""
    for _, frame in run.events:
        if frame.get("event_type") == "PlanCreated":
            for step in frame["data"].get("steps", []):
                if (step.get("agent"), step.get("action")) == (agent, action):
                    return str(step["id"])
    return None


def step_client_seconds(run: GoalRun, step_id: str) -> float | None:
    """Arrival of the step's StepStarted frame to its StepCompleted frame, client clock."""
    arrivals: dict[str, float] = {}
    for arrived, frame in run.events:
        kind = frame.get("event_type")
        if kind in ("StepStarted", "StepCompleted") and frame["data"].get("step_id") == step_id:
            arrivals.setdefault(str(kind), arrived)
    if "StepStarted" not in arrivals or "StepCompleted" not in arrivals:
        return None
    return arrivals["StepCompleted"] - arrivals["StepStarted"]
