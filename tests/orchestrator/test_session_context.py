"""Session context (issue 16, item 5) and intent analysis (item 6).

A completed run appends `ContextUpdated` to its session (the tools that answered, the
entities its goal named); the next plan of the session gets it first in its history,
so a follow-up is understood even when no earlier message is in the prompt window - by
the offline planner too. With a real model (the simulator, through the openai SDK),
intent analysis is a model call (`purpose="intent"`) when `intent_in_plan` is off: in
the background with `async_planner`, before the plan without it.
"""

from __future__ import annotations

import pytest
import trio

from agents.errors import SessionNotYours
from agents.llm import CallRecorder
from agents.offline import OfflineProvider
from agents.offline._planning import plan as offline_plan
from agents.runs._orchestrator import Orchestrator, OrchestratorOptions
from agents.tools._quotes import QuotesAgent
from agents.tools._registry import AgentRegistry
from events import EventStore

from .conftest import (
    TIMEOUT_S,
    QuoteEndpoint,
    run_events,
    sim_provider,
    start_simulator,
)


async def session_records(store: EventStore, session_id: str) -> list[str]:
    return [r.type for r in await store.read_stream(f"session-{session_id}", 0, 1000)]


async def test_a_completed_run_records_the_sessions_context(
    store: EventStore, entry_registry: AgentRegistry, quote_endpoint: QuoteEndpoint
) -> None:
    provider = OfflineProvider(recorder=CallRecorder(store))
    orchestrator = Orchestrator(store, provider, entry_registry)
    with trio.fail_after(TIMEOUT_S):
        first = await orchestrator.run_goal("what is the price of NVDA")
    assert first.status == "completed", first
    records = await store.read_stream(f"session-{first.session_id}", 0, 1000)
    assert [r.type for r in records][-2:] == ["AssistantMessageSent", "ContextUpdated"]
    context = records[-1].data["values"]
    assert context["tools"] == ["quotes.get_stock_price"] and context["tickers"] == ["NVDA"]
    assert context["intent"] == "quote"


async def test_a_follow_up_is_understood_from_the_context_alone(
    store: EventStore, entry_registry: AgentRegistry, quote_endpoint: QuoteEndpoint
) -> None:
    """No earlier message in the prompt (a window of 0): only the context says that
    the session was about prices."""
    provider = OfflineProvider(recorder=CallRecorder(store))
    orchestrator = Orchestrator(
        store, provider, entry_registry, options=OrchestratorOptions(session_window=0)
    )
    with trio.fail_after(TIMEOUT_S):
        first = await orchestrator.run_goal("what is the price of NVDA")
        follow = await orchestrator.run_goal("and what about AAPL?", first.session_id)
    assert follow.status == "completed", follow
    records = await run_events(store, follow.run_id)
    plan = next(r for r in records if r.type == "PlanCreated").data["steps"]
    assert [s["agent"] for s in plan] == ["quotes"]
    assert "AAPL" in (follow.answer or "")


def test_the_offline_planner_reads_the_context_item() -> None:
    tools = list(QuotesAgent.tool_specs())
    context = [
        {"role": "context", "context": {"tools": ["quotes.get_stock_price"], "intent": "quote"}}
    ]
    steps = offline_plan("and what about AAPL?", tools, context)["steps"]
    assert [s["agent"] for s in steps] == ["quotes"]
    assert "AAPL" in str(steps[0]["parameters"])
    refused = offline_plan("and what about AAPL?", tools, [])
    assert refused["steps"] == [] or refused["steps"][0]["agent"] != "quotes"


async def test_intent_is_a_model_call_in_the_background_with_a_real_model(
    store: EventStore, entry_registry: AgentRegistry, quote_endpoint: QuoteEndpoint
) -> None:
    """With `intent_in_plan` off (on, the plan call reads it: `test_intent_in_plan.py`)."""
    async with trio.open_nursery() as nursery:
        _, url = await start_simulator(nursery)
        for async_planner in (True, False):
            provider = sim_provider(url, store)
            orchestrator = Orchestrator(
                store,
                provider,
                entry_registry,
                options=OrchestratorOptions(async_planner=async_planner, intent_in_plan=False),
            )
            with trio.fail_after(TIMEOUT_S):
                result = await orchestrator.run_goal("what is the price of NVDA")
            await provider.aclose()
            assert result.status == "completed", result
            records = await run_events(store, result.run_id)
            calls = [r.data["purpose"] for r in records if r.type == "LLMCallCompleted"]
            assert "intent" in calls
            intent = next(r for r in records if r.type == "IntentAnalyzed")
            assert intent.data["intent"] == "quote"
            types = [r.type for r in records]
            if not async_planner:  # the plan waited for the intent
                assert types.index("IntentAnalyzed") < types.index("PlanCreated")
        nursery.cancel_scope.cancel()


async def test_a_user_cannot_post_into_a_session_another_principal_started(
    store: EventStore, entry_registry: AgentRegistry
) -> None:
    """Also when the other principal created it between the server's check and the
    submit: `only_own_session` reads the owner from the log, and nothing is appended."""
    provider = OfflineProvider(recorder=CallRecorder(store))
    orchestrator = Orchestrator(store, provider, entry_registry)
    await orchestrator.submit("what is 1 + 1", "shared", principal="ana", only_own_session=True)
    head = store.head_position
    with pytest.raises(SessionNotYours):
        await orchestrator.submit("what is 2 + 2", "shared", principal="bob", only_own_session=True)
    assert store.head_position == head
    first = await store.read_stream("session-shared", 0, 1)
    assert first[0].data["user"] == "ana"
