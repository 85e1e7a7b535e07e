"""Fixtures of the LLM layer tests: a tool catalog, an event store, simulators, providers.

`provider` is the conformance fixture: an `OpenAIProvider` pointed at a simulator on a
port-0 loopback socket (the real openai SDK end to end) and an `OfflineProvider`
in-process, both recording into one in-memory event store. Servers live in the test's
`nursery` (pytest-trio), which is cancelled when the test ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from agents import (
    CallRecorder,
    LLMError,
    LLMOptions,
    LLMProvider,
    OfflineProvider,
    OpenAIProvider,
    RetriesExhausted,
    Simulator,
    SimulatorOptions,
    ToolSpec,
)
from events import EventStore, LLMCallCompleted, MemoryEventLog, open_event_store

# Upper bound on any single test's I/O; the whole agents suite runs in seconds.
TIMEOUT_S = 15

SIM_KEY_ENV = "AUTOAGENT_TEST_SIM_KEY"
SIM_KEY = "sk-test-0123456789"


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


TOOLS = (
    ToolSpec(
        agent="quotes",
        action="get_stock_price",
        description="Get the latest stock price for a ticker symbol.",
        parameters=_object({"symbol": {"type": "string"}}, ["symbol"]),
        idempotent=True,
        batchable=True,
        batch_action="get_stock_prices",
        keywords=("price", "quote", "stock", "ticker", "share"),
    ),
    ToolSpec(
        agent="writer",
        action="create_report",
        description="Write a report from the results of earlier steps.",
        parameters=_object(
            {"title": {"type": "string"}, "sources": {"type": "array"}}, ["title", "sources"]
        ),
        idempotent=False,
        keywords=("write", "report", "summary", "summarise", "document"),
    ),
    ToolSpec(
        agent="math",
        action="calculate",
        description="Evaluate an arithmetic expression exactly.",
        parameters=_object({"expression": {"type": "string"}}, ["expression"]),
        keywords=("calculate", "compute", "arithmetic", "sum"),
    ),
    ToolSpec(
        agent="clock",
        action="now",
        description="The current date and time in a timezone.",
        parameters=_object({"timezone": {"type": "string"}}, []),
        keywords=("time", "clock", "date"),
    ),
    ToolSpec(
        agent="web",
        action="search",
        description="Search the web for pages about a query.",
        parameters=_object({"query": {"type": "string"}}, ["query"]),
        keywords=("search", "web", "look"),
    ),
)


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    async with open_event_store(log=MemoryEventLog()) as opened:
        yield opened


async def start_simulator(nursery: trio.Nursery, **options: Any) -> tuple[Simulator, str]:
    """A simulator on a free loopback port in `nursery`, and its base URL."""
    simulator = Simulator(SimulatorOptions(**options))
    port = await nursery.start(simulator.serve)
    return simulator, f"http://127.0.0.1:{port}/v1"


def sim_llm_options(base_url: str, **overrides: Any) -> LLMOptions:
    """Options for an OpenAIProvider against a simulator: quick retries, small timeouts."""
    base = LLMOptions(
        provider="openai",
        base_url=base_url,
        api_key_env=SIM_KEY_ENV,
        model="autoagent-offline",
        timeout_s=5.0,
        max_retries=4,
        rpm_limit=60_000,
        tpm_limit=10_000_000,
        max_parallel_calls=8,
        retry_base_delay_s=0.005,
        retry_deadline_s=10.0,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(params=["offline", "openai"], ids=["offline", "openai-sim"])
async def provider(
    request: pytest.FixtureRequest, nursery: trio.Nursery, store: EventStore
) -> AsyncIterator[LLMProvider]:
    recorder = CallRecorder(store)
    if request.param == "offline":
        chosen: LLMProvider = OfflineProvider(recorder=recorder)
    else:
        _, url = await start_simulator(nursery, api_key=SIM_KEY)
        chosen = OpenAIProvider(sim_llm_options(url), SIM_KEY, recorder)
    try:
        yield chosen
    finally:
        await chosen.aclose()


async def llm_events(store: EventStore) -> list[tuple[str, LLMCallCompleted]]:
    """Every LLMCallCompleted in the store, with the stream it was appended to."""
    await store.flush()  # the recorder queues its events without waiting for the disk
    records = await store.read_type("LLMCallCompleted", 0, 100_000)
    return [(r.stream, LLMCallCompleted.from_data(r.data)) for r in records]


def root_cause(error: LLMError) -> LLMError:
    """The error behind a RetriesExhausted, else the error itself."""
    return error.last_error if isinstance(error, RetriesExhausted) else error
