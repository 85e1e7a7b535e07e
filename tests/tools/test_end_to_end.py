"""Goals through the real orchestrator, offline model and shipped agents, into real files.

"get the price of NVDA and AAPL and write a report" plans two quote steps and a
dependent `writer.create_report`; the quotes come from a loopback endpoint
(`agents._http.serve_http`), and the report lands as markdown in the workspace.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from agents.llm._provider import LLMOptions
from agents.llm._recorder import UNATTACHED_STREAM, CallRecorder
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http
from agents.offline._providers import open_provider
from agents.runs._orchestrator import Orchestrator
from agents.tools import AgentContext, AgentSettings
from agents.tools._registry import AgentRegistry
from events import EventStore, MemoryEventLog, open_event_store

from .conftest import TIMEOUT_S, names

PRICES = {"NVDA": 912.5, "AAPL": 201.25}


async def quotes(request: HttpRequest) -> HttpResponse:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.target).query)
    symbols = query.get("symbols", [""])[0].split(",")
    found = [{"symbol": s, "price": PRICES[s], "currency": "USD"} for s in symbols if s in PRICES]
    body = json.dumps({"quotes": found}).encode()
    return HttpResponse(200, (("content-type", "application/json"),), body)


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    async with open_event_store(log=MemoryEventLog()) as opened:
        yield opened


@pytest.fixture
async def orchestrator(
    store: EventStore, workspace: Path, nursery: trio.Nursery
) -> AsyncIterator[Orchestrator]:
    port = await nursery.start(serve_http, quotes, "127.0.0.1", 0, ConnectionCounts())
    settings = AgentSettings(quote_endpoint=f"http://127.0.0.1:{port}/quotes")
    async with (
        httpx.AsyncClient(timeout=5) as http,
        open_provider(LLMOptions(), CallRecorder(store)) as provider,
    ):
        context = AgentContext(settings, (workspace,), http, provider, store)
        registry = AgentRegistry.from_entry_points(context)
        try:
            yield Orchestrator(store, provider, registry)
        finally:
            await registry.aclose()


async def test_prices_and_a_report_end_in_a_markdown_file(
    orchestrator: Orchestrator, store: EventStore, workspace: Path
) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal("get the price of NVDA and AAPL and write a report")
        records = await store.read_stream(f"run-{result.run_id}", 0, 1000)
    assert result.status == "completed", result.reason
    [plan] = [r.data["steps"] for r in records if r.type == "PlanCreated"]
    assert [(s["agent"], s["action"], s["dependencies"]) for s in plan] == [
        ("quotes", "get_stock_price", []),
        ("quotes", "get_stock_price", []),
        ("writer", "create_report", ["s1", "s2"]),
    ]
    assert names(workspace) == ["report-nvda-aapl.md"]
    assert (workspace / "report-nvda-aapl.md").read_text() == (
        "# Report: NVDA, AAPL\n\n- NVDA: 912.5 USD\n- AAPL: 201.25 USD\n"
    )
    assert result.answer is not None
    assert "Written to: report-nvda-aapl.md" in result.answer
    # Tools do not know their run, so the writer's model call is recorded unattached.
    unattached = await store.read_stream(UNATTACHED_STREAM, 0, 1000)
    assert [r.data["purpose"] for r in unattached] == ["report"]


async def test_a_calculation_and_a_report(orchestrator: Orchestrator, workspace: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal("what is 2 + 3 and write a report")
    assert result.status == "completed", result.reason
    assert (workspace / "write-a-report.md").read_text() == "# Write a report\n\n- 2 + 3 = 5\n"


async def test_a_written_file_can_be_read_back(orchestrator: Orchestrator, workspace: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        first = await orchestrator.run_goal("calculate 17*23 and save the result to result.txt")
        second = await orchestrator.run_goal("read result.txt")
    assert (first.status, second.status) == ("completed", "completed")
    assert json.loads((workspace / "result.txt").read_text()) == {
        "expression": "17*23",
        "value": 391,
    }
    assert second.answer is not None
    assert '"value": 391' in second.answer
