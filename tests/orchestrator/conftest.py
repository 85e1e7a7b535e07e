"""Fixtures of the orchestrator tests: real stores, providers, registries and endpoints.

- `store`: an `EventStore` over `MemoryEventLog` (durability is not under test there;
  the resume and crash tests open LMDB in `tmp_path` themselves).
- `probe` / `registry`: the `lab` and `calc` test agents of `lab.py` in a real
  `AgentRegistry`; `entry_registry` builds the shipped agents (math, clock, quotes)
  from the `autoagent.agents` entry points, pointed at `quote_endpoint`.
- `quote_endpoint`: a loopback HTTP quote service (agents._http) counting requests
  per symbol; `start_simulator` puts the OpenAI-compatible simulator on port 0.
- `jump_clock`: a `MockClock` that jumps once every task has been idle for a short
  real time. Appends are committed in a worker thread; with a threshold of 0 the clock
  would jump while a commit is still in flight and move sleeping steps ahead of it,
  so timings would no longer be exact.

Servers live in the test's `nursery` (pytest-trio), cancelled when the test ends.
"""

from __future__ import annotations

import collections
import json
import random
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio.testing import MockClock

from agents.llm._openai import OpenAIProvider
from agents.llm._provider import LLMOptions, LLMProvider
from agents.llm._recorder import CallRecorder
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http
from agents.offline._provider import OfflineProvider
from agents.offline._simulator import Simulator, SimulatorOptions
from agents.runs._orchestrator import Orchestrator, OrchestratorOptions
from agents.tools import AgentContext, AgentSettings
from agents.tools._registry import AgentRegistry
from events import (
    EventStore,
    MemoryEventLog,
    PlanCreated,
    RecordedEvent,
    RunRequested,
    open_event_store,
)

from .lab import CalcAgent, LabAgent, Probe

# Upper bound on one test's I/O in real seconds (virtual seconds under `jump_clock`).
TIMEOUT_S = 20
AUTOJUMP_S = 0.05
SIM_KEY = "sk-orchestrator-test"


@pytest.fixture
def jump_clock() -> MockClock:
    return MockClock(autojump_threshold=AUTOJUMP_S)


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    async with open_event_store(log=MemoryEventLog()) as opened:
        yield opened


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    return Probe(tmp_path / "effects.log")


def lab_registry(probe: Probe) -> AgentRegistry:
    context = AgentContext(AgentSettings(extras={"probe": probe}))
    return AgentRegistry({"lab": LabAgent, "calc": CalcAgent}, context)


@pytest.fixture
def registry(probe: Probe) -> AgentRegistry:
    return lab_registry(probe)


# --- the quote endpoint ---------------------------------------------------------------


def price_of(symbol: str) -> float:
    """The endpoint's deterministic price of a symbol."""
    return 100 + sum(map(ord, symbol)) % 97 + 0.25


class QuoteEndpoint:
    """`GET /quotes?symbols=A,B` -> `{"quotes": [...]}`; counts requests per symbol."""

    def __init__(self, delay_s: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.batches: list[tuple[str, ...]] = []
        self.answered = 0
        self.port = 0
        self._delay_s = delay_s
        self._rng = random.Random(seed)
        self._arrived = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/quotes"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_http(self.handle, "127.0.0.1", 0, ConnectionCounts(), task_status=task_status)

    async def wait_for_answers(self, answered: int) -> None:
        """Until `answered` requests have been answered in all."""
        while self.answered < answered:
            await self._arrived.wait()

    async def wait_for_request(self, symbols: Iterable[str]) -> None:
        """Until a request for any of `symbols` has arrived."""
        wanted = set(symbols)
        while not wanted & set(self.requests):
            await self._arrived.wait()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.target).query)
        symbols = tuple(s for s in query.get("symbols", [""])[0].split(",") if s)
        self.batches.append(symbols)
        self.requests.update(symbols)
        self._arrived.set()
        self._arrived = trio.Event()
        await trio.sleep(self._rng.uniform(*self._delay_s))
        quotes = [{"symbol": s, "price": price_of(s), "currency": "USD"} for s in symbols]
        body = json.dumps({"quotes": quotes}).encode()
        self.answered += 1
        self._arrived.set()
        self._arrived = trio.Event()
        return HttpResponse(200, (("content-type", "application/json"),), body)


async def start_quote_endpoint(nursery: trio.Nursery, **options: Any) -> QuoteEndpoint:
    endpoint = QuoteEndpoint(**options)
    endpoint.port = await nursery.start(endpoint.serve)
    return endpoint


@pytest.fixture
async def quote_endpoint(nursery: trio.Nursery) -> QuoteEndpoint:
    return await start_quote_endpoint(nursery)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def entry_registry(quote_endpoint: QuoteEndpoint, http: httpx.AsyncClient) -> AgentRegistry:
    context = AgentContext(AgentSettings(quote_endpoint=quote_endpoint.url), http=http)
    return AgentRegistry.from_entry_points(context, ["math", "clock", "quotes"])


# --- providers and the simulator --------------------------------------------------------


async def start_simulator(nursery: trio.Nursery, **options: Any) -> tuple[Simulator, str]:
    """A simulator on a free loopback port in `nursery`, and its base URL."""
    simulator = Simulator(SimulatorOptions(**options))
    port = await nursery.start(simulator.serve)
    return simulator, f"http://127.0.0.1:{port}/v1"


def sim_provider(base_url: str, store: EventStore, **overrides: Any) -> OpenAIProvider:
    """The real openai SDK against a simulator; calls recorded into `store`."""
    settings: dict[str, Any] = {
        "provider": "openai",
        "base_url": base_url,
        "model": "autoagent-offline",
        "timeout_s": 5.0,
        "max_retries": 2,
        "rpm_limit": 60_000,
        "tpm_limit": 10_000_000,
        "retry_base_delay_s": 0.005,
        "retry_deadline_s": 10.0,
    }
    return OpenAIProvider(LLMOptions(**(settings | overrides)), SIM_KEY, CallRecorder(store))


def offline_provider(store: EventStore) -> OfflineProvider:
    return OfflineProvider(recorder=CallRecorder(store))


def make_orchestrator(
    store: EventStore,
    registry: AgentRegistry,
    provider: LLMProvider | None = None,
    **options: Any,
) -> Orchestrator:
    chosen = provider or offline_provider(store)
    return Orchestrator(store, chosen, registry, options=OrchestratorOptions(**options))


# --- reading what happened ----------------------------------------------------------------


async def run_events(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}", 0, 100_000)


def kinds(records: Iterable[RecordedEvent]) -> list[str]:
    """Event types, with LLM calls named by purpose: `LLMCallCompleted(plan)`."""
    return [
        f"LLMCallCompleted({r.data['purpose']})" if r.type == "LLMCallCompleted" else r.type
        for r in records
    ]


def step_events(records: Iterable[RecordedEvent]) -> dict[str, list[str]]:
    """Per step id, the types of its Step* events in log order."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for record in records:
        if record.type.startswith("Step"):
            found[record.data["step_id"]].append(record.type)
    return dict(found)


def first(records: Iterable[RecordedEvent], kind: str, step_id: str | None = None) -> int:
    """Position of the first `kind` event (of `step_id`, when given)."""
    for record in records:
        if record.type == kind and (step_id is None or record.data.get("step_id") == step_id):
            return record.position
    raise AssertionError(f"no {kind} event" + (f" for step {step_id}" if step_id else ""))


async def submit_plan(
    store: EventStore, steps: list[dict[str, Any]], goal: str = "run the lab plan"
) -> str:
    """A run whose stream already holds its plan, as if the planner had made it."""
    run_id = uuid.uuid4().hex[:12]
    await store.append(
        f"run-{run_id}",
        [RunRequested(run_id, "lab-session", goal), PlanCreated(run_id, steps)],
        correlation=run_id,
    )
    return run_id
