"""Orchestrator benchmark: goals end to end against the simulator, and executor-only DAGs.

From the project root:

    .venv/bin/python -m tests.performance.bench_orchestrator [--quick] [--out PATH]
        [--time-scale X] [--reps N] [--work-dir DIR] [--markdown] [--profile]

Every store is LMDB with `sync=True` (each acknowledged append is on disk) in a
temporary directory under `--work-dir` (default: the system temp dir; it must be a real
disk, fsync on tmpfs costs nothing). What durability costs is measured at the start and
at the end (a raw py-lmdb synced transaction of one put, one durable `store.append`),
because every durable append pays it and other load on the machine changes it.

1. Goals end to end. The simulator runs in this process, in the benchmark's Trio
   nursery, with the `realistic` latency profile (plan ~1.5 s, LLM-backed step ~2 s,
   verification and answer ~0.8 s, log-normal) times `--time-scale`; the provider is
   "openai" through the real SDK. The orchestrator gets each goal as text
   (`run_goal`): the simulator's offline model plans it over the benchmark's tools, so
   planning, validation, streaming and execution are the product's own code, nothing
   is bypassed. The benchmark's tools are defined here: I/O tools (search, stock price
   with a batch form, arithmetic, clock) sleep 50-300 ms x the time scale (derived from
   a hash of their parameters, so both modes wait the same), and LLM-backed tools
   (summarise, report, draft, translate) make one chat call with purpose "step". The
   goals are chosen so the plans are chains, fans, fan-ins and diamonds. Modes, run
   interleaved goal by goal: `baseline` (every feature off: the sequential Planner ->
   Executor -> Verifier), `optimized` (every feature on) and `optimized_no_streaming`
   (for the time to first step with streaming plans on vs off).

   Critical-path bound of a run, from the latencies that run actually had: the plan
   call's latency (its `LLMCallCompleted.latency_s`) + the longest dependency chain of
   the steps' `StepCompleted.duration_s` + the latency of the last verification call.
   The final answer call is not part of the issue's bound; `bound + answer` is shown too.
   LLM calls per request: the `LLMCallCompleted` events of the run's stream (plan,
   verifications, answer); the LLM-backed steps' own calls carry no run id (a tool is not
   told its run), so they are counted by the tools and shown separately.

   Orchestration overhead: the same goals once more against a second simulator with
   time scale 0 and tools that do not sleep, so the wall time is everything but simulated
   waiting (durable appends, HTTP and SDK, the in-process simulator's own CPU, the
   orchestrator), divided by the steps; the time inside `store.append` and inside the
   simulator's handler are shown beside it. The full run repeats this pass with sync
   off as a diagnostic, and `--profile` adds a cProfile'd pass (top 25 in the JSON).
2. Executor only, steps as tools that sleep, durable events on: the three DAGs of the
   issue's LangGraph comparison (diamond 3 x 0.2 s -> 0.4 s -> 0.15 s, fan of 10 x 0.1 s,
   chain of 10 x 0.1 s): wall / bound, the time steps spend in `store.append` per step,
   and the store's growth per step over 20 runs of a 50-step chain in one store. First at
   the shipped `performance.max_parallel_steps` (16: the default rows and the targets,
   and the concurrency the peer runs with), then at 8 at once as a diagnostic (the
   default before round 7: a fan of 10 in two waves).

Peer, in the same run right after part 2 (`--peers`, the default; `--no-peers`; off with
`--quick`): LangGraph 1.2 with `langgraph-checkpoint-sqlite`'s SqliteSaver (WAL,
synchronous=FULL), durability "sync", in its own venv under the temp dir (`_peers.py`),
running `peer_langgraph.py` on the same three DAGs, step times, scale and repetitions
(nodes that sleep, `max_concurrency` 16, compared with our rows at 16), and
the same growth runs. Its measured ratios replace the ones issue 5 quoted, which stay in the JSON as
history (`peer_quoted_from_issue`) and in the tables when the peer did not run.

Writes JSON (default `tests/performance/results/bench_orchestrator.json`) and prints tables.
"""

from __future__ import annotations

import cProfile
import dataclasses
import hashlib
import io
import json
import math
import pstats
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lmdb
import openai
import trio

from agents.llm import ToolSpec
from agents.llm._prompting import PromptRepository, task_messages
from agents.llm._provider import LLMOptions, LLMProvider
from agents.llm._recorder import CallRecorder
from agents.offline._http import HttpRequest, HttpResponse
from agents.offline._providers import open_provider
from agents.offline._simulator import Simulator, SimulatorOptions
from agents.runs._executor import Executor, ExecutorOptions
from agents.runs._orchestrator import Orchestrator, OrchestratorOptions
from agents.runs._plan import Plan, PlanStep
from agents.tools import AgentContext, AgentSettings
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._math import evaluate
from agents.tools._registry import AgentRegistry
from events import (
    ANY,
    AppendTicket,
    EventStore,
    PlanCreated,
    RecordedEvent,
    RunRequested,
    StepStarted,
    StoreOptions,
    open_event_store,
)
from events._model import AppendResult, Expected, NewEvent
from events._types import Event
from server.cli._gantt import longest_chain
from server.config import FeaturesConfig, PerformanceConfig

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, Table, percentile, shipped_collector, timed
from ._logs import TimedLog, open_timed_log
from ._peers import LANGGRAPH, add_peers_flag, peers_wanted, run_peer

DEFAULT_OUT = RESULTS_DIR / "bench_orchestrator.json"
KEY_ENV = "AUTOAGENT_BENCH_KEY"
KEY = "sk-bench"
MODEL = "autoagent-offline"
SEED = 20261127
IO_LATENCY_S = (0.050, 0.300)

TARGET_REDUCTION = 0.60
TARGET_BOUND_RATIO = 1.10
TARGET_LLM_CALLS = 3.0
TARGET_OVERHEAD_MS = 5.0
TARGET_DAG_RATIO = 1.02
# The executor's default rows run what `make run` ships (16 at once since round 7).
SHIPPED_MAX_PARALLEL = PerformanceConfig().max_parallel_steps
# The diagnostic rows: the default before round 7, where a fan of 10 runs in two waves.
DIAGNOSTIC_MAX_PARALLEL = 8
PEER_MAX_CONCURRENCY = 16  # LangGraph's max_concurrency in the peer run (peer_langgraph.py)
TARGET_APPEND_MS = 0.5
PEER_TIMEOUT_S = 900.0

# Every `[features]` flag the orchestrator takes: all off is the sequential baseline.
ORCHESTRATOR_FLAGS = tuple(
    f.name
    for f in dataclasses.fields(FeaturesConfig)
    if f.name in {o.name for o in dataclasses.fields(OrchestratorOptions)}
)
MODES: Mapping[str, OrchestratorOptions] = {
    "baseline": OrchestratorOptions(**dict.fromkeys(ORCHESTRATOR_FLAGS, False)),
    "optimized": OrchestratorOptions(),
    "optimized_no_streaming": OrchestratorOptions(streaming_plan=False),
}

# History: quoted from issue 5 (LangGraph 1.2 + SQLite checkpointer, durability "sync"), from
# before the peer was measured here (`--peers`); shown only when it did not run.
PEER: Mapping[str, Any] = {
    "name": "LangGraph 1.2 + SQLite checkpointer (durability sync), quoted from issue 5",
    "dag_ratio": {"diamond": 1.026, "fan10": 1.225, "chain10": 1.047},
    "ms_per_persisted_step": "1.4-2.6",
    "bytes_per_step": "~11 KB per step, growing (159 MiB after 20 runs of a 50-step chain)",
}


@dataclass(frozen=True, slots=True)
class Sizes:
    time_scale: float
    goals: int | None  # None: all of GOALS
    reps: int
    dag_scale: float
    dag_reps: int
    growth_runs: int
    growth_steps: int
    calibration_txns: int
    nosync_diagnostic: bool
    overhead_goals: int | None  # goals of the zero-latency pass; None: the same as above


FULL = Sizes(
    time_scale=0.1,
    goals=None,
    reps=2,
    dag_scale=1.0,
    dag_reps=5,
    growth_runs=20,
    growth_steps=50,
    calibration_txns=100,
    nosync_diagnostic=True,
    overhead_goals=None,
)
QUICK = Sizes(
    time_scale=0.02,
    goals=3,
    reps=1,
    dag_scale=0.1,
    dag_reps=1,
    growth_runs=2,
    growth_steps=10,
    calibration_txns=5,
    nosync_diagnostic=False,
    overhead_goals=2,
)


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    text: str


# Worded for the offline planner (clauses joined by "and" run in parallel, "then"
# waits for the clause before, a summary or report consumes everything before it).
# Ordered so that a --quick prefix holds chains, fans and diamonds.
GOALS: tuple[Goal, ...] = tuple(
    Goal(name, text)
    for name, text in (
        (
            "chain-search-summary-report",
            "search the web for lithium supply then summarise the findings then write a report",
        ),
        ("fan-4-prices", "get the stock price of NVDA, AAPL, MSFT and AMZN"),
        (
            "diamond-search-prices-report",
            "search the web for chip fabs then get the stock price of NVDA and AMD then "
            "write a report",
        ),
        (
            "chain-translate-draft",
            "translate the launch announcement then draft a post about it",
        ),
        (
            "fan-3-searches",
            "search the web for solar panels and search the web for heat pumps and search "
            "the web for wind turbines",
        ),
        (
            "fanin-prices-report",
            "get the stock price of NVDA and TSLA then write a report",
        ),
        (
            "chain-search-summary",
            "search the web for fusion startups then summarise the results",
        ),
        ("chain-price-report", "get the stock price of INTC then write a report"),
        (
            "chain-4",
            "search the web for battery recycling then search the web for recycling grants "
            "then summarise the findings then write a report",
        ),
        (
            "chain-calc-draft",
            "calculate 1250 * 12 + 300 then draft a tweet about the budget",
        ),
        (
            "fan-2-drafts",
            "draft a tweet about solar panels and draft a tweet about heat pumps",
        ),
        ("fan-calc-clock", "what is 17 * 23 + 4 and what time is it in Tokyo"),
        (
            "fan-mixed-3",
            "draft a tweet about remote work and search the web for coworking spaces and "
            "draft a blurb about hot desks",
        ),
        (
            "fan-3-clocks",
            "what time is it in London and what time is it in Seoul and what time is it in Sydney",
        ),
        (
            "fanin-calc-clock-report",
            "what is 17 * 23 + 4 and what time is it in Tokyo then write a report",
        ),
        (
            "fanin-searches-summary-report",
            "search the web for GPU shortages and search the web for memory supply then "
            "summarise the findings then write a report",
        ),
        (
            "diamond-wind-drafts-report",
            "search the web for wind farms then draft a tweet about offshore wind and draft"
            " a tweet about onshore wind then write a report",
        ),
        (
            "fanin-3-prices-summary-report",
            "get the stock price of AAPL, MSFT and GOOGL then summarise the findings then "
            "write a report",
        ),
        (
            "diamond-ev",
            "search the web for electric car sales then get the stock price of TSLA, NIO and RIVN "
            "then summarise the findings",
        ),
        (
            "fanin-2-calcs-report",
            "calculate 365 * 24 and calculate 52 * 7 then write a report",
        ),
        (
            "tree-search-translate-draft",
            "search the web for quantum computing then translate the top result and draft a "
            "tweet about qubits",
        ),
        (
            "fanin-draft-search-report",
            "draft a blurb about our product and search the web for competitors then write "
            "a report",
        ),
        (
            "mixed-6",
            "get the stock price of NVDA and AMD and search the web for chip demand then "
            "summarise the findings then write a report then translate it into French",
        ),
        (
            "fanin-5-prices-report",
            "get the stock price of META, NFLX, IBM, ORCL and CRM then write a report",
        ),
    )
)


# --- benchmark tools ------------------------------------------------------------------


@dataclass
class Hooks:
    """Shared by the benchmark's tools: the time scale, and what the tools did."""

    time_scale: float
    prompts: PromptRepository = field(default_factory=PromptRepository)
    tool_calls: int = 0
    step_llm_calls: int = 0
    io_slept_s: float = 0.0
    first_call_at: float | None = None

    def begin_run(self) -> None:
        self.first_call_at = None

    def started(self) -> None:
        self.tool_calls += 1
        if self.first_call_at is None:
            self.first_call_at = trio.current_time()

    async def io_wait(self, seconds: float) -> None:
        self.started()
        self.io_slept_s += seconds
        await trio.sleep(seconds)

    def io_latency(self, name: str, parameters: Mapping[str, Any]) -> float:
        """50-300 ms x time scale, fixed by the tool and its parameters."""
        text = name + json.dumps(parameters, sort_keys=True, default=str)
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        unit = int.from_bytes(digest, "big") / 2**64
        low, high = IO_LATENCY_S
        return (low + (high - low) * unit) * self.time_scale


def _spec(
    agent: str,
    action: str,
    description: str,
    properties: Mapping[str, Any],
    required: Sequence[str] = (),
    keywords: Sequence[str] = (),
    **flags: Any,
) -> ToolSpec:
    schema = {"type": "object", "properties": dict(properties), "required": list(required)}
    return ToolSpec(agent, action, description, schema, keywords=tuple(keywords), **flags)


STRING = {"type": "string"}
ARRAY = {"type": "array"}
SEARCH = _spec(
    "web",
    "search",
    "Search the web for pages about a query.",
    {"query": STRING},
    ["query"],
    ("search", "web", "look", "find", "online"),
)
GET_PRICE = _spec(
    "market",
    "get_price",
    "Latest stock price for one ticker symbol.",
    {"symbol": STRING},
    ["symbol"],
    ("stock", "price", "quote", "ticker", "share"),
    batchable=True,
    batch_action="get_prices",
)
GET_PRICES = _spec(
    "market",
    "get_prices",
    "Latest stock prices for several ticker symbols at once.",
    {"symbols": ARRAY},
    ["symbols"],
    ("prices", "quotes", "tickers"),
)
CALCULATE = _spec(
    "calc",
    "evaluate",
    "Evaluate an arithmetic expression exactly.",
    {"expression": STRING},
    ["expression"],
    ("calculate", "compute", "arithmetic", "math"),
)
NOW = _spec(
    "clock",
    "now",
    "The current time in a time zone.",
    {"timezone": STRING},
    (),
    ("time", "clock", "date"),
)
SUMMARISE = _spec(
    "writer",
    "summarise",
    "Summarise the results of earlier steps (language model).",
    {"sources": ARRAY, "topic": STRING},
    (),
    ("summarise", "summary", "digest", "condense"),
)
REPORT = _spec(
    "writer",
    "report",
    "Write a report from the results of earlier steps (language model).",
    {"inputs": ARRAY, "title": STRING},
    (),
    ("report", "write", "compose"),
)
DRAFT = _spec(
    "writer",
    "draft",
    "Draft a short text about a topic (language model).",
    {"topic": STRING},
    ["topic"],
    ("draft", "tweet", "post", "blurb"),
)
TRANSLATE = _spec(
    "writer",
    "translate",
    "Translate a text into French (language model).",
    {"text": STRING},
    ["text"],
    ("translate", "french", "translation"),
)
SLEEP = _spec(
    "sleeper",
    "wait",
    "Sleep for the given seconds.",
    {"seconds": {"type": "number"}, "label": STRING},
    ["seconds"],
    ("sleep", "wait"),
)


def _io_result(spec: ToolSpec, parameters: Mapping[str, Any]) -> dict[str, Any]:
    if spec is SEARCH:
        query = str(parameters["query"])
        return {"query": query, "hits": [f"{query}: result {i}" for i in range(1, 4)]}
    if spec is GET_PRICE:
        symbol = str(parameters["symbol"])
        price = 50 + int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=2).digest())
        return {"symbol": symbol, "price": price / 10, "currency": "USD"}
    if spec is CALCULATE:
        expression = str(parameters["expression"])
        return {"expression": expression, "result": evaluate(expression)}
    if spec is NOW:
        zone = str(parameters.get("timezone") or "UTC")
        return {"timezone": zone, "time": "12:00:00", "note": "benchmark clock"}
    raise AssertionError(f"no I/O result for {spec.name}")


class IoTool(Tool):
    """Sleeps 50-300 ms x time scale (the tool's I/O), then answers deterministically."""

    def __init__(self, spec: ToolSpec, hooks: Hooks) -> None:
        self.spec = spec
        self._hooks = hooks

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        await self._hooks.io_wait(self._hooks.io_latency(self.spec.name, parameters))
        return _io_result(self.spec, parameters)

    async def call_batch(self, batch: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One request for the whole batch: as long as its slowest member."""
        for parameters in batch:
            require_valid(self.spec, parameters)
        await self._hooks.io_wait(max(self._hooks.io_latency(self.spec.name, p) for p in batch))
        return [_io_result(self.spec, p) for p in batch]


class PricesTool(Tool):
    """The batch form as a tool of its own (planners may call it directly)."""

    spec = GET_PRICES

    def __init__(self, hooks: Hooks) -> None:
        self._hooks = hooks

    async def call(self, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        require_valid(self.spec, parameters)
        symbols = [{"symbol": s} for s in parameters["symbols"]]
        await self._hooks.io_wait(max(self._hooks.io_latency(GET_PRICE.name, s) for s in symbols))
        return [_io_result(GET_PRICE, s) for s in symbols]


class LlmTool(Tool):
    """An LLM-backed step: one chat call with purpose "step" (the simulator's ~2 s)."""

    def __init__(self, spec: ToolSpec, hooks: Hooks, llm: LLMProvider) -> None:
        self.spec = spec
        self._hooks = hooks
        self._llm = llm

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        self._hooks.started()
        self._hooks.step_llm_calls += 1
        payload = {
            "agent": self.spec.agent,
            "action": self.spec.action,
            "parameters": dict(parameters),
        }
        messages = task_messages(self._hooks.prompts, "step", payload)
        reply = await self._llm.chat_json(messages, purpose="step")
        return {"text": str(reply.data.get("text", ""))}


class SleepTool(Tool):
    """Executor-only DAGs: sleep `seconds`, return a small fixed-size result."""

    spec = SLEEP

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        await trio.sleep(float(parameters["seconds"]))
        return {"label": str(parameters.get("label", "")), "slept_s": parameters["seconds"]}


def _hooks_of(context: AgentContext) -> Hooks:
    hooks = context.settings.extras["bench_hooks"]
    assert isinstance(hooks, Hooks)
    return hooks


class WebAgent(Agent):
    name = "web"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (SEARCH,)

    def __init__(self, context: AgentContext) -> None:
        self._tools = {"search": IoTool(SEARCH, _hooks_of(context))}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


class MarketAgent(Agent):
    name = "market"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (GET_PRICE, GET_PRICES)

    def __init__(self, context: AgentContext) -> None:
        hooks = _hooks_of(context)
        self._tools: dict[str, Tool] = {
            "get_price": IoTool(GET_PRICE, hooks),
            "get_prices": PricesTool(hooks),
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


class CalcAgent(Agent):
    name = "calc"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (CALCULATE,)

    def __init__(self, context: AgentContext) -> None:
        self._tools = {"evaluate": IoTool(CALCULATE, _hooks_of(context))}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


class ClockAgent(Agent):
    name = "clock"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (NOW,)

    def __init__(self, context: AgentContext) -> None:
        self._tools = {"now": IoTool(NOW, _hooks_of(context))}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


class WriterAgent(Agent):
    name = "writer"
    SPECS: ClassVar[tuple[ToolSpec, ...]] = (SUMMARISE, REPORT, DRAFT, TRANSLATE)

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return cls.SPECS

    def __init__(self, context: AgentContext) -> None:
        hooks = _hooks_of(context)
        assert context.llm is not None, "the benchmark's agents are built with a provider"
        self._tools = {s.action: LlmTool(s, hooks, context.llm) for s in self.SPECS}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


class SleeperAgent(Agent):
    name = "sleeper"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (SLEEP,)

    def __init__(self, context: AgentContext) -> None:
        self._tools = {"wait": SleepTool()}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


GOAL_AGENTS: Mapping[str, type[Agent]] = {
    a.name: a for a in (WebAgent, MarketAgent, CalcAgent, ClockAgent, WriterAgent)
}
LLM_TOOLS = frozenset(s.name for s in WriterAgent.SPECS)


# --- a timed store -----------------------------------------------------------------------


class TimedStore(EventStore):
    """The event store, adding up how long callers wait in `append` (enqueue to durable)."""

    append_seconds = 0.0
    append_calls = 0

    async def append(
        self,
        stream: str,
        events: Sequence[Event | NewEvent],
        expected_version: Expected = ANY,
        *,
        correlation: str | None = None,
        causation: str | None = None,
    ) -> AppendResult:
        start = time.perf_counter()
        try:
            return await super().append(
                stream, events, expected_version, correlation=correlation, causation=causation
            )
        finally:
            self.append_seconds += time.perf_counter() - start
            self.append_calls += 1

    async def submit(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: Expected = ANY,
        correlation: str | None = None,
        causation: str | None = None,
    ) -> AppendTicket:
        """A pipelined append: the wait to queue it, and later any wait for its ticket."""
        start = time.perf_counter()
        try:
            ticket = await super().submit(
                stream,
                events,
                expected_version=expected_version,
                correlation=correlation,
                causation=causation,
            )
        finally:
            self.append_seconds += time.perf_counter() - start
        return _TimedTicket(ticket, self)


class _TimedTicket(AppendTicket):
    """A ticket whose `durable()` waits count as append wait of its store."""

    __slots__ = ("_inner", "_store")

    def __init__(self, inner: AppendTicket, store: TimedStore) -> None:
        super().__init__(inner.request, None)
        self._inner = inner
        self._store = store

    async def durable(self) -> AppendResult:
        start = time.perf_counter()
        try:
            return await self._inner.durable()
        finally:
            self._store.append_seconds += time.perf_counter() - start
            self._store.append_calls += 1


@asynccontextmanager
async def open_timed_store(path: Path, *, sync: bool = True) -> AsyncIterator[TimedStore]:
    """An LMDB store (sync on unless said) over a timed log, its writer running."""
    options = StoreOptions(sync=sync)
    log = await trio.to_thread.run_sync(open_timed_log, path, options)
    async with open_event_store(options=options, log=log, store_class=TimedStore) as store:
        assert isinstance(store, TimedStore)
        yield store


def _log_of(store: EventStore) -> TimedLog:
    assert isinstance(store.log, TimedLog)
    return store.log


async def read_all(store: EventStore, stream: str) -> list[RecordedEvent]:
    records: list[RecordedEvent] = []
    while batch := await store.read_stream(stream, records[-1].version if records else 0):
        records.extend(batch)
    return records


# --- the simulator, instrumented -------------------------------------------------------


class RecordingSimulator(Simulator):
    """The simulator, adding up the latency it chose and the time spent in its handler."""

    handler_s = 0.0

    async def handle(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        try:
            return await super().handle(request)
        finally:
            self.handler_s += time.perf_counter() - start

    @property
    def waited_s(self) -> float:
        """The latency the simulator imposed so far (its replies' simulated time)."""
        return self.latency_s


@asynccontextmanager
async def simulated_provider(
    nursery: trio.Nursery, store: EventStore, time_scale: float, seed: int
) -> AsyncIterator[tuple[LLMProvider, RecordingSimulator]]:
    simulator = RecordingSimulator(
        SimulatorOptions(latency_profile="realistic", time_scale=time_scale, seed=seed)
    )
    port = await nursery.start(simulator.serve)
    options = LLMOptions(
        provider="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env=KEY_ENV,
        model=MODEL,
        timeout_s=60.0,
        max_retries=2,  # rpm/tpm limits: the shipped defaults, as a user runs them
    )
    async with open_provider(options, CallRecorder(store), env={KEY_ENV: KEY}) as provider:
        yield provider, simulator


# --- 1. goals end to end -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanShape:
    steps: int
    depth: int  # steps on the longest dependency chain
    llm_steps: int
    label: str


def plan_shape(steps: Sequence[Mapping[str, Any]]) -> PlanShape:
    """Size, depth and a label from the plan's transitive reduction (implied edges dropped)."""
    depth: dict[str, int] = {}
    ancestors: dict[str, set[str]] = {}
    direct: dict[str, set[str]] = {}
    for step in steps:  # plans list dependencies before dependents
        deps = set(step["dependencies"])
        depth[step["id"]] = 1 + max((depth[d] for d in deps), default=0)
        implied = set().union(*(ancestors[d] for d in deps)) if deps else set()
        ancestors[step["id"]] = deps | implied
        direct[step["id"]] = deps - implied
    longest = max(depth.values(), default=0)
    dependents: dict[str, int] = {}
    for deps in direct.values():
        for d in deps:
            dependents[d] = dependents.get(d, 0) + 1
    fork = any(n >= 2 for n in dependents.values())
    join = any(len(deps) >= 2 for deps in direct.values())
    if longest == len(steps):
        label = "chain"
    elif longest == 1:
        label = "fan"
    elif fork and join:
        label = "diamond"
    elif join:
        label = "fan-in"
    else:
        label = "tree"
    llm = sum(f"{s['agent']}.{s['action']}" in LLM_TOOLS for s in steps)
    return PlanShape(len(steps), longest, llm, label)


def critical_path(steps: Sequence[Mapping[str, Any]], durations: Mapping[str, float]) -> float:
    """The bound no parallelism beats: the plan's longest chain of measured step
    durations (networkx, the same computation `runs show --gantt` outlines)."""
    return longest_chain({str(s["id"]): list(s["dependencies"]) for s in steps}, durations)[1]


@dataclass
class RunSample:
    goal: str
    mode: str
    rep: int
    status: str
    wall_s: float
    ttfs_s: float | None
    shape: PlanShape | None
    run_calls: dict[str, int]
    step_llm_calls: int
    tool_calls: int
    plan_latency_s: float
    path_s: float
    steps_sum_s: float
    last_verify_s: float
    verify_sum_s: float
    answer_s: float
    appends: int
    append_s: float
    commits: int
    sim_waited_s: float
    sim_handler_s: float
    io_slept_s: float

    @property
    def bound_s(self) -> float:
        return self.plan_latency_s + self.path_s + self.last_verify_s

    @property
    def orchestration_calls(self) -> int:
        return sum(self.run_calls.values())

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["bound_s"] = self.bound_s
        return data


async def run_one(
    orchestrator: Orchestrator,
    store: TimedStore,
    hooks: Hooks,
    simulator: RecordingSimulator,
    goal: Goal,
    mode: str,
    rep: int,
) -> RunSample:
    hooks.begin_run()
    step_calls0, tool_calls0 = hooks.step_llm_calls, hooks.tool_calls
    appends0, append_s0 = store.append_calls, store.append_seconds
    waited0, handler0, slept0 = simulator.waited_s, simulator.handler_s, hooks.io_slept_s
    commits0 = store.statistics().commits
    start = trio.current_time()
    result = await orchestrator.run_goal(goal.text)
    wall = trio.current_time() - start
    sample = RunSample(
        goal=goal.name,
        mode=mode,
        rep=rep,
        status=result.status,
        wall_s=wall,
        ttfs_s=None if hooks.first_call_at is None else hooks.first_call_at - start,
        shape=None,
        run_calls={},
        step_llm_calls=hooks.step_llm_calls - step_calls0,
        tool_calls=hooks.tool_calls - tool_calls0,
        plan_latency_s=0.0,
        path_s=0.0,
        steps_sum_s=0.0,
        last_verify_s=0.0,
        verify_sum_s=0.0,
        answer_s=0.0,
        appends=store.append_calls - appends0,
        append_s=store.append_seconds - append_s0,
        commits=store.statistics().commits - commits0,
        sim_waited_s=simulator.waited_s - waited0,
        sim_handler_s=simulator.handler_s - handler0,
        io_slept_s=hooks.io_slept_s - slept0,
    )
    await _fill_from_log(store, result.run_id, sample)
    return sample


async def _fill_from_log(store: EventStore, run_id: str, sample: RunSample) -> None:
    steps: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    for record in await read_all(store, f"run-{run_id}"):
        data = record.data
        if record.type == "PlanCreated":
            steps = list(data["steps"])
        elif record.type == "StepCompleted":
            durations[data["step_id"]] = float(data["duration_s"])
        elif record.type == "LLMCallCompleted":
            purpose = str(data["purpose"])
            sample.run_calls[purpose] = sample.run_calls.get(purpose, 0) + 1
            latency = float(data["latency_s"])
            if purpose == "plan":
                sample.plan_latency_s += latency
            elif purpose == "verify":
                sample.last_verify_s = latency  # events are in completion order
                sample.verify_sum_s += latency
            elif purpose == "answer":
                sample.answer_s += latency
    if steps:
        sample.shape = plan_shape(steps)
        sample.path_s = critical_path(steps, durations)
        sample.steps_sum_s = sum(durations.values())


async def _goal_runs(
    work: Path,
    goals: Sequence[Goal],
    modes: Sequence[str],
    reps: int,
    time_scale: float,
    seed: int,
    profile: cProfile.Profile | None = None,
    sync: bool = True,
) -> list[RunSample]:
    """Every goal in every mode, `reps` times, interleaved; one store, one simulator."""
    samples: list[RunSample] = []
    async with (
        open_timed_store(work / f"goals-{time_scale:g}-{sync}", sync=sync) as store,
        trio.open_nursery() as nursery,
    ):
        async with simulated_provider(nursery, store, time_scale, seed) as (provider, sim):
            hooks = Hooks(time_scale)
            settings = AgentSettings(extras={"bench_hooks": hooks})
            context = AgentContext(settings, llm=provider, store=store)
            registry = AgentRegistry(GOAL_AGENTS, context)
            await registry.warmup()
            orchestrators = {
                mode: Orchestrator(store, provider, registry, options=MODES[mode]) for mode in modes
            }
            await orchestrators[modes[0]].run_goal(goals[0].text)  # warm up connections
            if profile is not None:
                profile.enable()
            for rep in range(reps):
                for goal in goals:
                    for mode in modes:
                        sample = await run_one(
                            orchestrators[mode], store, hooks, sim, goal, mode, rep
                        )
                        samples.append(sample)
            if profile is not None:
                profile.disable()
            await registry.aclose()
        nursery.cancel_scope.cancel()
    return samples


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": _mean(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values, default=float("nan")),
        "max": max(values, default=float("nan")),
    }


def summarise_mode(samples: Sequence[RunSample]) -> dict[str, Any]:
    done = [s for s in samples if s.status == "completed" and s.shape is not None]
    steps = sum(s.shape.steps for s in done if s.shape)
    purposes: dict[str, int] = {}
    for s in done:
        for purpose, count in s.run_calls.items():
            purposes[purpose] = purposes.get(purpose, 0) + count
    ttfs = [s.ttfs_s for s in done if s.ttfs_s is not None]
    return {
        "runs": len(samples),
        "completed": len(done),
        "steps": steps,
        "latency_s": _stats([s.wall_s for s in done]),
        "bound_s": _stats([s.bound_s for s in done]),
        "bound_plus_answer_s": _stats([s.bound_s + s.answer_s for s in done]),
        "simulated_wait_s": _stats([s.sim_waited_s + s.io_slept_s for s in done]),
        # Every latency of the run one after the other, measured as the bound's are.
        "latencies_sum_s": _stats(
            [s.plan_latency_s + s.steps_sum_s + s.verify_sum_s + s.answer_s for s in done]
        ),
        "ratio_to_bound": _stats([s.wall_s / s.bound_s for s in done]),
        "ratio_of_means_to_bound": _mean([s.wall_s for s in done])
        / _mean([s.bound_s for s in done]),
        "ratio_to_bound_plus_answer": _stats([s.wall_s / (s.bound_s + s.answer_s) for s in done]),
        "llm_calls_per_run": _mean([s.orchestration_calls for s in done]),
        "llm_calls_per_run_with_step_calls": _mean(
            [s.orchestration_calls + s.step_llm_calls for s in done]
        ),
        "llm_calls_by_purpose_per_run": {p: n / len(done) for p, n in sorted(purposes.items())},
        "tool_calls_per_run": _mean([s.tool_calls for s in done]),
        "parts_s": {
            "plan_call": _mean([s.plan_latency_s for s in done]),
            "longest_chain": _mean([s.path_s for s in done]),
            "last_verification": _mean([s.last_verify_s for s in done]),
            "answer_call": _mean([s.answer_s for s in done]),
            "append_wait": _mean([s.append_s for s in done]),
        },
        "ttfs_s": _stats(ttfs),
        "appends_per_run": _mean([s.appends for s in done]),
        "commits_per_run": _mean([s.commits for s in done]),
        "append_wait_ms_per_step": sum(s.append_s for s in done) / steps * 1000,
        # Only meaningful for the sequential baseline, where nothing overlaps.
        "wall_minus_simulated_wait_ms_per_step": sum(
            s.wall_s - s.sim_waited_s - s.io_slept_s for s in done
        )
        / steps
        * 1000,
    }


def bench_goals(work: Path, sizes: Sizes, time_scale: float, profile: bool) -> dict[str, Any]:
    goals = GOALS if sizes.goals is None else GOALS[: sizes.goals]
    modes = tuple(MODES)
    samples = trio.run(_goal_runs, work, goals, modes, sizes.reps, time_scale, SEED)
    by_mode = {m: summarise_mode([s for s in samples if s.mode == m]) for m in modes}
    base, opt = by_mode["baseline"], by_mode["optimized"]
    ratio = opt["latency_s"]["mean"] / base["latency_s"]["mean"]

    # Overhead: the same goals with zero simulated latency (no sleeping anywhere).
    few = goals if sizes.overhead_goals is None else goals[: sizes.overhead_goals]
    zero = trio.run(_goal_runs, work, few, ("baseline", "optimized"), 1, 0.0, SEED + 1)
    overhead = {m: _overhead([s for s in zero if s.mode == m]) for m in ("baseline", "optimized")}
    if sizes.nosync_diagnostic:  # the same with sync off, to separate fsync from the rest
        nosync = trio.run(
            _goal_runs, work, few, ("baseline", "optimized"), 1, 0.0, SEED + 1, None, False
        )
        overhead |= {
            f"{m} (sync off, diagnostic)": _overhead([s for s in nosync if s.mode == m])
            for m in ("baseline", "optimized")
        }
    result: dict[str, Any] = {
        "time_scale": time_scale,
        "goals": [{"name": g.name, "goal": g.text, **_shape_dict(samples, g.name)} for g in goals],
        "reps": sizes.reps,
        "modes": {m: dataclasses.asdict(MODES[m]) for m in modes},
        "summary": by_mode,
        "optimized_vs_baseline_mean": ratio,
        "reduction": 1 - ratio,
        # The ceiling this goal set allows, from the baseline runs' own latencies: their
        # critical path (plan + longest chain + one verification + the answer) over the
        # sum of all their latencies; i.e. free orchestration and no streaming overlap.
        "ideal_ratio_from_latencies": base["bound_plus_answer_s"]["mean"]
        / base["latencies_sum_s"]["mean"],
        "per_goal": _per_goal(samples, goals),
        "overhead_zero_latency": overhead,
        "samples": [s.as_dict() for s in samples],
    }
    if profile:  # a separate pass: the profiler's own cost must not count as overhead
        profiler = cProfile.Profile()
        trio.run(_goal_runs, work, few, ("optimized",), 1, 0.0, SEED + 2, profiler)
        result["profile_zero_latency_optimized_top"] = _profile_top(profiler)
    return result


def _shape_dict(samples: Sequence[RunSample], goal: str) -> dict[str, Any]:
    for sample in samples:
        if sample.goal == goal and sample.shape is not None:
            return dataclasses.asdict(sample.shape)
    return {}


def _per_goal(samples: Sequence[RunSample], goals: Sequence[Goal]) -> list[dict[str, Any]]:
    rows = []
    for goal in goals:
        mine = [s for s in samples if s.goal == goal.name and s.status == "completed"]
        base = [s.wall_s for s in mine if s.mode == "baseline"]
        opt = [s for s in mine if s.mode == "optimized"]
        nostream = [s for s in mine if s.mode == "optimized_no_streaming"]
        rows.append(
            {
                "goal": goal.name,
                **_shape_dict(samples, goal.name),
                "baseline_s": _mean(base),
                "optimized_s": _mean([s.wall_s for s in opt]),
                "optimized_bound_s": _mean([s.bound_s for s in opt]),
                "optimized_to_bound": _mean([s.wall_s / s.bound_s for s in opt]),
                "optimized_llm_calls": _mean([s.orchestration_calls for s in opt]),
                "ttfs_streaming_s": _mean([s.ttfs_s for s in opt if s.ttfs_s is not None]),
                "ttfs_no_streaming_s": _mean([s.ttfs_s for s in nostream if s.ttfs_s is not None]),
            }
        )
    return rows


def _overhead(samples: Sequence[RunSample]) -> dict[str, Any]:
    done = [s for s in samples if s.status == "completed" and s.shape is not None]
    steps = sum(s.shape.steps for s in done if s.shape)
    wall = sum(s.wall_s for s in done)
    return {
        "runs": len(done),
        "steps": steps,
        "ms_per_step": wall / steps * 1000,
        "ms_per_run": wall / len(done) * 1000,
        "append_wait_ms_per_step": sum(s.append_s for s in done) / steps * 1000,
        "appends_per_step": sum(s.appends for s in done) / steps,
        "commits_per_step": sum(s.commits for s in done) / steps,
        "simulator_handler_ms_per_step": sum(s.sim_handler_s for s in done) / steps * 1000,
    }


def _profile_top(profiler: cProfile.Profile, limit: int = 25) -> list[str]:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    return [line for line in out.getvalue().splitlines() if line.strip()][-limit - 1 :]


# --- 2. executor-only DAGs ------------------------------------------------------------------


def _sleep_step(step_id: str, seconds: float, deps: Sequence[str] = ()) -> PlanStep:
    return PlanStep(step_id, "sleeper", "wait", {"seconds": seconds, "label": step_id}, tuple(deps))


def dag_plans(scale: float) -> dict[str, tuple[Plan, float]]:
    """The issue's three DAGs (times x `scale`) and their critical-path bounds."""
    diamond = Plan(
        (
            _sleep_step("a1", 0.2 * scale),
            _sleep_step("a2", 0.2 * scale),
            _sleep_step("a3", 0.2 * scale),
            _sleep_step("b", 0.4 * scale, ("a1", "a2", "a3")),
            _sleep_step("c", 0.15 * scale, ("b",)),
        )
    )
    fan = Plan(tuple(_sleep_step(f"f{i}", 0.1 * scale) for i in range(10)))
    chain = Plan(
        tuple(_sleep_step(f"c{i}", 0.1 * scale, (f"c{i - 1}",) if i else ()) for i in range(10))
    )
    return {
        "diamond": (diamond, 0.75 * scale),
        "fan10": (fan, 0.1 * scale),
        "chain10": (chain, 1.0 * scale),
    }


def chain_plan(steps: int, seconds: float) -> Plan:
    return Plan(
        tuple(_sleep_step(f"c{i}", seconds, (f"c{i - 1}",) if i else ()) for i in range(steps))
    )


@dataclass(frozen=True, slots=True)
class ExecutorRun:
    wall_s: float
    append_s: float
    appends: int
    commits: int
    commit_s: float
    used_bytes: int  # growth of the store's used pages over the whole run
    file_bytes: int  # growth of data.mdb
    run_event_bytes: int  # every record of the run, RunRequested and PlanCreated included
    step_event_bytes: tuple[int, ...]  # each step event's record, in log order


async def execute_plan(
    store: TimedStore, registry: AgentRegistry, plan: Plan, max_parallel: int, data_file: Path
) -> ExecutorRun:
    """RunRequested + PlanCreated (not timed), then the executor alone, timed."""
    run_id = uuid.uuid4().hex[:12]
    stream = f"run-{run_id}"
    log = _log_of(store)
    used0, file0, head0 = (
        (await store.log_statistics()).size_bytes,
        (await trio.Path(data_file).stat()).st_size,
        store.head_position,
    )
    await store.append(stream, [RunRequested(run_id, "bench", "executor-only DAG")])
    await store.append(stream, [PlanCreated(run_id, plan.to_data())])
    head_plan = store.head_position
    options = ExecutorOptions(max_parallel_steps=max_parallel, parallel=True, batching=True)
    executor = Executor(store, registry, run_id, options)
    appends0, append_s0, commits0, commit_s0 = (
        store.append_calls,
        store.append_seconds,
        store.statistics().commits,
        log.commit_seconds,
    )
    start = trio.current_time()
    outcomes = await executor.execute(plan)
    # Pipelined appends: the run is done when its last transition is on disk (counted
    # as append wait), as a LangGraph run with durability "sync" is.
    await executor.durable()
    wall = trio.current_time() - start
    appends, append_s, commits, commit_s = (
        store.append_calls - appends0,
        store.append_seconds - append_s0,
        store.statistics().commits - commits0,
        log.commit_seconds - commit_s0,
    )
    bad = [sid for sid, o in outcomes.items() if o.status != "completed"]
    if bad:
        raise AssertionError(f"executor-only steps did not complete: {bad}")
    used1 = (await store.log_statistics()).size_bytes
    raw = await trio.to_thread.run_sync(log.read_raw, head0, store.head_position - head0)
    return ExecutorRun(
        wall_s=wall,
        append_s=append_s,
        appends=appends,
        commits=commits,
        commit_s=commit_s,
        used_bytes=used1 - used0,
        file_bytes=(await trio.Path(data_file).stat()).st_size - file0,
        run_event_bytes=sum(len(value) for _, value in raw),
        step_event_bytes=tuple(len(value) for position, value in raw if position > head_plan),
    )


async def _dags(work: Path, sizes: Sizes) -> dict[str, Any]:
    """The three DAGs at the shipped `max_parallel_steps` (the default rows and the
    targets), then at `DIAGNOSTIC_MAX_PARALLEL` at once (a diagnostic)."""
    registry = AgentRegistry({"sleeper": SleeperAgent})
    await registry.warmup()
    data_file = work / "dags" / "data.mdb"
    at_limit: dict[int, list[dict[str, Any]]] = {
        SHIPPED_MAX_PARALLEL: [],
        DIAGNOSTIC_MAX_PARALLEL: [],
    }
    async with open_timed_store(work / "dags") as store:
        await execute_plan(store, registry, chain_plan(2, 0.0), 16, data_file)  # warm up
        for name, (plan, bound) in dag_plans(sizes.dag_scale).items():
            for limit, results in at_limit.items():
                runs = [
                    await execute_plan(store, registry, plan, limit, data_file)
                    for _ in range(sizes.dag_reps)
                ]
                results.append(_dag_row(name, len(plan.steps), bound, runs))
    growth = await _growth(work / "growth", registry, sizes)
    return {
        "max_parallel_steps": SHIPPED_MAX_PARALLEL,
        "dags": at_limit[SHIPPED_MAX_PARALLEL],
        "diagnostic_max_parallel_steps": DIAGNOSTIC_MAX_PARALLEL,
        "diagnostic_dags": at_limit[DIAGNOSTIC_MAX_PARALLEL],
        "growth": growth,
    }


def _dag_row(name: str, steps: int, bound: float, runs: list[ExecutorRun]) -> dict[str, Any]:
    walls = [r.wall_s for r in runs]
    per_step = steps * len(runs)
    return {
        "dag": name,
        "steps": steps,
        "bound_s": bound,
        "wall_s": _stats(walls),
        "ratio_to_bound": _mean(walls) / bound,
        "ratio_to_bound_worst": max(walls) / bound,
        "append_wait_ms_per_step": sum(r.append_s for r in runs) / per_step * 1000,
        "commit_ms_per_step": sum(r.commit_s for r in runs) / per_step * 1000,
        "appends_per_step": sum(r.appends for r in runs) / per_step,
        "commits_per_step": sum(r.commits for r in runs) / per_step,
        "overhead_ms_per_step": (_mean(walls) - bound) / steps * 1000,
    }


async def _growth(path: Path, registry: AgentRegistry, sizes: Sizes) -> dict[str, Any]:
    """A chain of N sleeping (0 s) steps run again and again in one store: bytes per step."""
    steps = sizes.growth_steps
    plan = chain_plan(steps, 0.0)
    per_run: list[dict[str, Any]] = []
    async with open_timed_store(path) as store:
        for run in range(1, sizes.growth_runs + 1):
            r = await execute_plan(store, registry, plan, SHIPPED_MAX_PARALLEL, path / "data.mdb")
            per_run.append(
                {
                    "run": run,
                    "store_used_bytes_per_step": r.used_bytes / steps,
                    "data_file_bytes_per_step": r.file_bytes / steps,
                    "run_event_bytes_per_step": r.run_event_bytes / steps,
                    "step_event_bytes_per_step": sum(r.step_event_bytes) / steps,
                    # StepStarted + StepCompleted of the run's first and last step
                    "first_step_bytes": sum(r.step_event_bytes[:2]),
                    "last_step_bytes": sum(r.step_event_bytes[-2:]),
                    "append_wait_ms_per_step": r.append_s / steps * 1000,
                }
            )
        final = await store.log_statistics()
    half = max(1, len(per_run) // 2)
    early, late = per_run[1:half] or per_run[:1], per_run[half:]

    def mean_of(rows: Sequence[dict[str, Any]], key: str) -> float:
        return _mean([row[key] for row in rows])

    used_early = mean_of(early, "store_used_bytes_per_step")
    used_late = mean_of(late, "store_used_bytes_per_step")
    return {
        "runs": sizes.growth_runs,
        "steps_per_run": steps,
        "per_run": per_run,
        "first": per_run[0],
        "last": per_run[-1],
        "store_used_bytes_per_step_early_runs": used_early,
        "store_used_bytes_per_step_late_runs": used_late,
        "store_used_late_over_early": used_late / used_early if used_early else float("nan"),
        "run_event_bytes_last_over_first": per_run[-1]["run_event_bytes_per_step"]
        / per_run[0]["run_event_bytes_per_step"],
        "store_used_bytes_end": final.size_bytes,
        "data_file_bytes_end": (await trio.Path(path / "data.mdb").stat()).st_size,
    }


# --- calibration: what one synced LMDB transaction costs here -------------------------------


def raw_lmdb_txn(path: Path, txns: int) -> list[float]:
    """Milliseconds of synced py-lmdb transactions of one 300-byte put: the disk's floor."""
    env = lmdb.open(str(path), map_size=1 << 26, sync=True, metasync=True)
    latencies: list[float] = []
    try:
        for key in range(txns):
            start = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(key.to_bytes(8, "big"), b"x" * 300)
            latencies.append((time.perf_counter() - start) * 1000)
    finally:
        env.close()
    return latencies


async def store_appends(path: Path, appends: int) -> tuple[list[float], float]:
    """Milliseconds of sequential one-event durable appends, and mean commit ms."""
    latencies: list[float] = []
    async with open_timed_store(path) as store:
        log = _log_of(store)
        for i in range(appends + 5):
            start = time.perf_counter()
            await store.append("run-calibration", [StepStarted("calibration", f"s{i}", 1)])
            if i >= 5:
                latencies.append((time.perf_counter() - start) * 1000)
            if i == 4:
                commit0 = log.commit_seconds
        commit_ms = (log.commit_seconds - commit0) / appends * 1000
    return latencies, commit_ms


def calibrate(work: Path, count: int) -> dict[str, float]:
    """What durability costs here and now (other load on the machine changes it)."""
    raw = raw_lmdb_txn(work / f"raw-{uuid.uuid4().hex[:6]}", count)
    appends, commit_ms = trio.run(store_appends, work / f"append-{uuid.uuid4().hex[:6]}", count)
    return {
        "count": count,
        "raw_lmdb_synced_txn_p50_ms": percentile(raw, 50),
        "raw_lmdb_synced_txn_p95_ms": percentile(raw, 95),
        "store_durable_append_p50_ms": percentile(appends, 50),
        "store_durable_append_p95_ms": percentile(appends, 95),
        "store_commit_mean_ms": commit_ms,
    }


# --- report ---------------------------------------------------------------------------------


def _target(measured: float, goal: str, met: bool) -> dict[str, Any]:
    return {"measured": measured, "goal": goal, "met": met}


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    goals, dags = result["goals"], result["executor"]
    opt = goals["summary"]["optimized"]
    found = {
        "mean latency reduction vs baseline": _target(
            goals["reduction"], f">= {TARGET_REDUCTION:.0%}", goals["reduction"] >= TARGET_REDUCTION
        ),
        "optimized / critical-path bound (mean of runs)": _target(
            opt["ratio_to_bound"]["mean"],
            f"<= {TARGET_BOUND_RATIO}",
            opt["ratio_to_bound"]["mean"] <= TARGET_BOUND_RATIO,
        ),
        "LLM calls per request, optimized (run stream)": _target(
            opt["llm_calls_per_run"],
            f"<= {TARGET_LLM_CALLS:g}",
            opt["llm_calls_per_run"] <= TARGET_LLM_CALLS,
        ),
    }
    for mode in ("baseline", "optimized"):
        ms = goals["overhead_zero_latency"][mode]["ms_per_step"]
        found[f"overhead ms per step, {mode} (zero latency)"] = _target(
            ms, f"< {TARGET_OVERHEAD_MS:g}", ms < TARGET_OVERHEAD_MS
        )
    for key, limit in (
        ("dags", dags["max_parallel_steps"]),
        ("diagnostic_dags", dags["diagnostic_max_parallel_steps"]),
    ):
        label = "shipped" if key == "dags" else "diagnostic"
        for dag in dags[key]:
            found[f"executor {dag['dag']} / bound, max_parallel_steps {limit} ({label})"] = _target(
                dag["ratio_to_bound"],
                f"<= {TARGET_DAG_RATIO}",
                dag["ratio_to_bound"] <= TARGET_DAG_RATIO,
            )
        worst_append = max(d["append_wait_ms_per_step"] for d in dags[key])
        found[
            f"ms per persisted step (append wait, worst DAG), max_parallel_steps {limit} ({label})"
        ] = _target(worst_append, f"< {TARGET_APPEND_MS}", worst_append < TARGET_APPEND_MS)
    growth = dags["growth"]
    late_early = growth["store_used_late_over_early"]
    events = growth["run_event_bytes_last_over_first"]
    found["store growth per step, late runs / early runs"] = _target(
        late_early, "0.8 - 1.25 (flat)", 0.8 <= late_early <= 1.25
    )
    found["event bytes per step, last run / first run"] = _target(
        events, "0.95 - 1.05 (flat)", 0.95 <= events <= 1.05
    )
    return found


def _n(value: float | None, digits: int = 2) -> str:
    """A table cell with `digits` decimals ("-" for nothing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def report_tables(result: dict[str, Any]) -> list[Table]:
    goals, dags = result["goals"], result["executor"]
    summary = goals["summary"]
    base_mean = summary["baseline"]["latency_s"]["mean"]
    overhead = goals["overhead_zero_latency"]
    return [
        Table(
            f"Goals end to end vs the simulator (time scale {goals['time_scale']:g}; "
            f"{len(goals['goals'])} goals x {goals['reps']} reps; seconds)",
            [
                "mode",
                "runs ok",
                "mean s",
                "p95 s",
                "x baseline",
                "bound s",
                "x bound",
                "x bound+answer",
                "LLM calls/run",
                "with step calls",
                "tool calls/run",
                "fsyncs/run",
            ],
            [
                [
                    m,
                    f"{s['completed']}/{s['runs']}",
                    _n(s["latency_s"]["mean"], 3),
                    _n(s["latency_s"]["p95"], 3),
                    _n(s["latency_s"]["mean"] / base_mean),
                    _n(s["bound_s"]["mean"], 3),
                    _n(s["ratio_to_bound"]["mean"]),
                    _n(s["ratio_to_bound_plus_answer"]["mean"]),
                    _n(s["llm_calls_per_run"]),
                    _n(s["llm_calls_per_run_with_step_calls"]),
                    _n(s["tool_calls_per_run"]),
                    _n(s["commits_per_run"], 1),
                ]
                for m, s in summary.items()
            ],
        ),
        Table(
            "Where the time goes (means per run, seconds; the append wait of concurrent "
            f"tasks adds up); ceiling of this goal set: x{goals['ideal_ratio_from_latencies']:.2f}",
            [
                "mode",
                "wall",
                "plan call",
                "longest chain",
                "last verification",
                "answer call",
                "all latencies summed",
                "simulator + tool sleeps",
                "append wait",
            ],
            [
                [
                    m,
                    _n(s["latency_s"]["mean"], 3),
                    *(_n(s["parts_s"][k], 3) for k in ("plan_call", "longest_chain")),
                    *(_n(s["parts_s"][k], 3) for k in ("last_verification", "answer_call")),
                    _n(s["latencies_sum_s"]["mean"], 3),
                    _n(s["simulated_wait_s"]["mean"], 3),
                    _n(s["parts_s"]["append_wait"], 3),
                ]
                for m, s in summary.items()
            ],
        ),
        Table(
            "Time to first step (request start to the first tool call), seconds",
            ["mode", "mean", "p50", "p95", "min", "max"],
            [
                [m, *(_n(s["ttfs_s"][k], 3) for k in ("mean", "p50", "p95", "min", "max"))]
                for m, s in summary.items()
            ],
        ),
        Table(
            "Per goal (mean seconds; bound and x bound of the optimized runs)",
            [
                "goal",
                "shape",
                "steps",
                "depth",
                "LLM steps",
                "baseline",
                "optimized",
                "x baseline",
                "bound",
                "x bound",
                "LLM calls",
                "1st step stream",
                "1st step no-stream",
            ],
            [
                [
                    g["goal"],
                    g.get("label", "?"),
                    g.get("steps", 0),
                    g.get("depth", 0),
                    g.get("llm_steps", 0),
                    _n(g["baseline_s"], 3),
                    _n(g["optimized_s"], 3),
                    _n(g["optimized_s"] / g["baseline_s"]),
                    _n(g["optimized_bound_s"], 3),
                    _n(g["optimized_to_bound"]),
                    _n(g["optimized_llm_calls"], 1),
                    _n(g["ttfs_streaming_s"], 3),
                    _n(g["ttfs_no_streaming_s"], 3),
                ]
                for g in goals["per_goal"]
            ],
        ),
        Table(
            "Orchestration overhead, ms per step",
            [
                "measure",
                "ms/step",
                "ms/run",
                "append wait ms/step",
                "appends/step",
                "fsyncs/step",
                "simulator CPU ms/step",
            ],
            [
                [
                    f"{m}: same goals, zero simulated latency",
                    _n(o["ms_per_step"], 1),
                    _n(o["ms_per_run"], 1),
                    _n(o["append_wait_ms_per_step"], 1),
                    _n(o["appends_per_step"], 1),
                    _n(o["commits_per_step"], 1),
                    _n(o["simulator_handler_ms_per_step"], 1),
                ]
                for m, o in overhead.items()
            ]
            + [
                [
                    "baseline: wall - simulated waits, scaled run",
                    _n(summary["baseline"]["wall_minus_simulated_wait_ms_per_step"], 1),
                    "-",
                    _n(summary["baseline"]["append_wait_ms_per_step"], 1),
                    "-",
                    "-",
                    "-",
                ]
            ],
        ),
        _executor_table(result, "dags", "shipped default"),
        _executor_table(result, "diagnostic_dags", "diagnostic"),
        Table(
            f"Store growth per step: {dags['growth']['runs']} runs of a "
            f"{dags['growth']['steps_per_run']}-step chain in one store",
            [
                "run",
                "store used B/step",
                "data.mdb B/step",
                "event B/step (run)",
                "event B/step (steps)",
                "first step B",
                "last step B",
                "append wait ms/step",
            ],
            [
                [
                    r["run"],
                    _n(r["store_used_bytes_per_step"], 0),
                    _n(r["data_file_bytes_per_step"], 0),
                    _n(r["run_event_bytes_per_step"], 0),
                    _n(r["step_event_bytes_per_step"], 0),
                    r["first_step_bytes"],
                    r["last_step_bytes"],
                    _n(r["append_wait_ms_per_step"]),
                ]
                for r in _growth_rows(dags["growth"]["per_run"])
            ],
        ),
        *peer_tables(result),
        Table(
            "Targets",
            ["target", "measured", "goal", "met"],
            [
                [name, _n(t["measured"], 3), t["goal"], t["met"]]
                for name, t in result["targets"].items()
            ],
        ),
    ]


def _langgraph(result: dict[str, Any]) -> dict[str, Any] | None:
    """The measured LangGraph peer, or None when it did not run or failed."""
    peer = result.get("peers", {}).get("langgraph")
    return None if peer is None or "error" in peer else peer


def _executor_table(result: dict[str, Any], key: str, label: str) -> Table:
    dags = result["executor"]
    limit = dags["max_parallel_steps" if key == "dags" else "diagnostic_max_parallel_steps"]
    return Table(
        f"Executor only, sleeping steps, durable events (LMDB sync), "
        f"max_parallel_steps {limit} ({label})",
        [
            "DAG",
            "steps",
            "bound s",
            "mean s",
            "x bound",
            "worst x bound",
            "overhead ms/step",
            "append wait ms/step",
            "commit ms/step",
            "fsyncs/step",
            _langgraph_column(result),
        ],
        [
            [
                d["dag"],
                d["steps"],
                _n(d["bound_s"], 3),
                _n(d["wall_s"]["mean"], 4),
                _n(d["ratio_to_bound"], 3),
                _n(d["ratio_to_bound_worst"], 3),
                _n(d["overhead_ms_per_step"]),
                _n(d["append_wait_ms_per_step"]),
                _n(d["commit_ms_per_step"]),
                _n(d["commits_per_step"]),
                _n(_langgraph_ratio(result, d["dag"]), 3),
            ]
            for d in dags[key]
        ],
    )


def _langgraph_column(result: dict[str, Any]) -> str:
    return "LangGraph x bound" + (" (measured)" if _langgraph(result) else " (quoted, issue 5)")


def _langgraph_ratio(result: dict[str, Any], dag: str) -> float:
    peer = _langgraph(result)
    if peer is None:
        return float(PEER["dag_ratio"][dag])
    ratios = {d["dag"]: d["ratio_to_bound"] for d in peer["executor"]["dags"]}
    return float(ratios[dag])


def peer_tables(result: dict[str, Any]) -> list[Table]:
    """LangGraph beside the executor's figures, or one line saying why it is missing."""
    peer = result.get("peers", {}).get("langgraph")
    if peer is None:
        return []
    if "error" in peer:
        return [Table("Peer not measured", ["peer", "error"], [["langgraph", peer["error"]]])]
    return [_peer_dags(result, peer), _peer_growth(result, peer)]


def _peer_dags(result: dict[str, Any], peer: dict[str, Any]) -> Table:
    # At LangGraph's max_concurrency: the same concurrency on both sides.
    executor = result["executor"]
    key = "dags" if executor["max_parallel_steps"] == PEER_MAX_CONCURRENCY else "diagnostic_dags"
    ours = {d["dag"]: d for d in executor[key]}
    rows = []
    for theirs in peer["executor"]["dags"]:
        mine = ours[theirs["dag"]]
        rows.append(
            [
                theirs["dag"],
                _n(theirs["bound_s"], 3),
                _n(mine["wall_s"]["mean"], 4),
                _n(theirs["wall_s"]["mean"], 4),
                _n(mine["ratio_to_bound"], 3),
                _n(theirs["ratio_to_bound"], 3),
                _n(theirs["ratio_to_bound_worst"], 3),
                _n(theirs["ratio_to_bound_default_pool"], 3),
                _n(mine["append_wait_ms_per_step"]),
                _n(theirs["checkpointer_ms_per_step"]),
                _n(theirs["puts_per_step"]),
                _n(theirs["put_writes_per_step"]),
                _n(PEER["dag_ratio"][theirs["dag"]], 3),
            ]
        )
    versions = peer["versions"]
    sqlite = peer["executor"]["sqlite"]
    return Table(
        "Side by side, executor-only DAGs: autoagent (LMDB sync) vs LangGraph "
        f"{versions['langgraph']} + SqliteSaver {versions['langgraph-checkpoint-sqlite']} "
        f"(journal {sqlite['journal_mode']}, synchronous={sqlite['synchronous']}, durability "
        f"sync, max_concurrency {peer['executor']['max_concurrency']}; default pool: "
        f"min(32, CPUs + 4) threads); runs per DAG: {peer['reps']}",
        [
            "DAG",
            "bound s",
            "autoagent mean s",
            "LangGraph mean s",
            "autoagent x bound",
            "LangGraph x bound",
            "LangGraph worst x bound",
            "LangGraph x bound (default pool)",
            "autoagent append wait ms/step",
            "LangGraph checkpointer ms/step",
            "LangGraph puts/step",
            "LangGraph put_writes/step",
            "LangGraph x bound (quoted, issue 5)",
        ],
        rows,
    )


def _peer_growth(result: dict[str, Any], peer: dict[str, Any]) -> Table:
    ours = {r["run"]: r for r in result["executor"]["growth"]["per_run"]}
    growth = peer["growth"]
    one_thread = {r["run"]: r for r in peer.get("growth_one_thread", {}).get("per_run", [])}
    rows = []
    for theirs in _growth_rows(growth["per_run"]):
        mine = ours.get(theirs["run"], {})
        same = one_thread.get(theirs["run"], {})
        rows.append(
            [
                theirs["run"],
                _n(mine.get("store_used_bytes_per_step"), 0),
                _n(theirs["database_bytes_per_step"], 0),
                _n(mine.get("run_event_bytes_per_step"), 0),
                _n(theirs["row_bytes_per_step"], 0),
                theirs["first_checkpoint_bytes"],
                theirs["last_checkpoint_bytes"],
                _n(theirs["checkpointer_ms_per_step"]),
                _n(same.get("database_bytes_per_step"), 0),
                same.get("last_checkpoint_bytes", "-"),
            ]
        )
    return Table(
        f"Side by side, growth per step: {growth['runs']} runs of a {growth['steps_per_run']}-step"
        f" chain in one store / one SQLite file (LangGraph: a thread per run, "
        f"{growth['database_bytes_end'] / 2**20:.2f} MiB at the end; and all runs on one "
        f"thread, whose state keeps every run's results)",
        [
            "run",
            "autoagent store used B/step",
            "LangGraph database B/step",
            "autoagent event B/step (run)",
            "LangGraph row B/step",
            "LangGraph first checkpoint B",
            "LangGraph last checkpoint B",
            "LangGraph checkpointer ms/step",
            "LangGraph one thread: database B/step",
            "LangGraph one thread: last checkpoint B",
        ],
        rows,
    )


def bench_peer(work: Path, sizes: Sizes) -> dict[str, Any]:
    """`peer_langgraph.py` in its venv with this run's DAG scale, repetitions and growth."""
    args = [
        f"--scale={sizes.dag_scale}",
        f"--reps={sizes.dag_reps}",
        f"--max-concurrency={PEER_MAX_CONCURRENCY}",
        f"--growth-runs={sizes.growth_runs}",
        f"--growth-steps={sizes.growth_steps}",
    ]
    return run_peer(LANGGRAPH, work / "peer-langgraph", args, timeout=PEER_TIMEOUT_S)


def _growth_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(rows) <= 6:
        return list(rows)
    return [*rows[:3], *rows[-3:]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, work_dir_help="where stores go")
    parser.add_argument("--time-scale", type=float, default=None, help="simulated latencies x this")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of the goal set")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the zero-latency pass (top 25 in JSON)"
    )
    add_peers_flag(parser, LANGGRAPH)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.reps is not None:
        sizes = dataclasses.replace(sizes, reps=args.reps)
    time_scale = sizes.time_scale if args.time_scale is None else args.time_scale
    result = result_header("bench_orchestrator", args.quick, argv, args.work_dir) | {
        "versions": {"trio": trio.__version__, "openai": openai.__version__},
        "collector": shipped_collector(),
        "sizes": dataclasses.asdict(sizes),
        "peer_quoted_from_issue": dict(PEER),
    }
    with timed() as total, scratch_dir(args.work_dir, "bench-orch-") as work:
        result["calibration_start"] = calibrate(work, sizes.calibration_txns)
        result["goals"] = bench_goals(work, sizes, time_scale, args.profile)
        result["executor"] = trio.run(_dags, work, sizes)
        if peers_wanted(args.peers, args.quick):
            result["peers"] = {"langgraph": bench_peer(work, sizes)}
        result["calibration_end"] = calibrate(work, sizes.calibration_txns)
    result["targets"] = targets(result)
    finish(
        result,
        args.out,
        report_tables,
        seconds=total.seconds,
        markdown=args.markdown,
        epilogue=_calibrations(result),
        nan_as_null=True,
    )
    return 0


def _calibrations(result: dict[str, Any]) -> str:
    """What one durable append cost at the start and at the end, one line each."""
    lines = []
    for when in ("start", "end"):
        c = result[f"calibration_{when}"]
        lines.append(
            f"\ncalibration at {when}: raw synced LMDB txn p50 "
            f"{c['raw_lmdb_synced_txn_p50_ms']:.2f} ms, one durable store append p50 "
            f"{c['store_durable_append_p50_ms']:.2f} ms (commit {c['store_commit_mean_ms']:.2f} ms)"
        )
    return "".join(lines)


if __name__ == "__main__":
    sys.exit(main())
