"""A run's first plan call also reads the goal's intent and entities (`intent_in_plan`,
on by default): no intent call of its own. And the plan request shows the session's
earlier messages as "<role>: <text>" strings (`compact_history`, on by default), and
asks for the steps in their compact form (`compact_plan_steps`, on by default).

Requests go through the real openai SDK to the real simulator. Handlers in front of it
stand for a model that reads a goal differently from the offline reading (the plan
request's goal is given one more ticker), that leaves the intent out (the request's
"also" is taken away), and that refuses every plan.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import trio

from agents.llm import PromptRepository, compact_turns, intent_of
from agents.offline._http import HttpRequest, HttpResponse
from agents.runs._plan import PlanStep
from agents.runs._plan_stream import stream_plan
from agents.tools import AgentContext
from agents.tools._registry import AgentRegistry, discover_agents
from events import EventStore

from .conftest import (
    TIMEOUT_S,
    QuoteEndpoint,
    make_orchestrator,
    run_events,
    sim_provider,
    start_simulator,
)
from .lab import CalcAgent
from .test_planner import RecordingSimulator, task_document

STREAMING = pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole"])
GOAL = "what is the price of NVDA"


class PlanRewritingSimulator(RecordingSimulator):
    """Rewrites each plan request's task document with `rewrite` before the simulator
    (the offline model) reads it."""

    def __init__(self, rewrite: Any) -> None:
        super().__init__()
        self.rewrite = rewrite

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/v1/chat/completions":
            body = json.loads(request.body)
            document = task_document(body)
            if document.get("task") == "plan":
                self.rewrite(document)
                body["messages"][-1]["content"] = json.dumps(document)
                request = HttpRequest(
                    request.method, request.target, request.headers, json.dumps(body).encode()
                )
        return await super().handle(request)


def one_more_ticker(document: dict[str, Any]) -> None:
    document["goal"] += " and AAPL"


def without_also(document: dict[str, Any]) -> None:
    document.pop("also", None)


def unplannable(document: dict[str, Any]) -> None:
    document["goal"] = "sing me a song about the sea"


def plan_bodies(recording: RecordingSimulator) -> list[dict[str, Any]]:
    return [body for body in recording.chats if task_document(body)["task"] == "plan"]


def plan_documents(recording: RecordingSimulator) -> list[dict[str, Any]]:
    return [task_document(body) for body in plan_bodies(recording)]


async def run_once(
    nursery: trio.Nursery,
    store: EventStore,
    registry: AgentRegistry,
    recording: RecordingSimulator,
    goal: str = GOAL,
    session_id: str | None = None,
    **options: Any,
) -> tuple[Any, list[Any]]:
    provider = sim_provider(await recording.start(nursery), store)
    orchestrator = make_orchestrator(store, registry, provider, **options)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal(goal, session_id)
    await provider.aclose()
    return result, await run_events(store, result.run_id)


def purposes(records: list[Any]) -> list[str]:
    return [r.data["purpose"] for r in records if r.type == "LLMCallCompleted"]


@STREAMING
async def test_the_first_plan_call_reads_the_intent_and_no_intent_call_is_made(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
    streaming: bool,
) -> None:
    recording = PlanRewritingSimulator(one_more_ticker)
    result, records = await run_once(
        nursery, store, entry_registry, recording, streaming_plan=streaming
    )
    assert result.status == "completed", result.reason
    assert "intent" not in purposes(records)
    assert purposes(records).count("plan") == 1
    [document] = plan_documents(recording)
    assert document["also"] == ["intent", "entities"]
    system = plan_bodies(recording)[0]["messages"][0]["content"]
    assert '"also"' in system and "entities" in system
    [intent] = [r for r in records if r.type == "IntentAnalyzed"]
    # From the plan's reply (the goal the model read names AAPL too), not the offline
    # reading of the run's own goal, which names NVDA alone.
    assert intent.data["intent"] == "quote"
    assert intent.data["entities"]["tickers"] == ["NVDA", "AAPL"]
    types = [r.type for r in records]
    # A whole plan's call has ended before its plan is recorded; a streamed plan's intent
    # is read after its steps (in the background), and the run's end waits for it.
    before = "RunCompleted" if streaming else "PlanCreated"
    assert types.index("IntentAnalyzed") < types.index(before)
    session = await store.read_stream(f"session-{result.session_id}", 0, 100)
    [context] = [r.data["values"] for r in session if r.type == "ContextUpdated"]
    assert context["intent"] == "quote" and context["tickers"] == ["NVDA", "AAPL"]


@STREAMING
async def test_a_plan_reply_without_intent_falls_back_to_the_offline_reading(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
    streaming: bool,
) -> None:
    recording = PlanRewritingSimulator(without_also)
    result, records = await run_once(
        nursery, store, entry_registry, recording, streaming_plan=streaming
    )
    assert result.status == "completed", result.reason
    assert "intent" not in purposes(records)
    [intent] = [r for r in records if r.type == "IntentAnalyzed"]
    assert intent.data["intent"] == "quote"
    assert intent.data["entities"]["tickers"] == ["NVDA"]


@STREAMING
async def test_a_refused_plan_still_records_the_intent_and_the_run_ends(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
    streaming: bool,
) -> None:
    recording = PlanRewritingSimulator(unplannable)
    result, records = await run_once(
        nursery, store, entry_registry, recording, streaming_plan=streaming
    )
    assert result.status == "failed"
    assert "no usable plan" in (result.reason or "")
    assert "intent" not in purposes(records)
    [intent] = [r for r in records if r.type == "IntentAnalyzed"]
    # The refusal's reply reads the goal the model was given: nothing to plan there.
    assert intent.data["intent"] == "unknown"
    types = [r.type for r in records]
    assert types.index("IntentAnalyzed") < types.index("RunFailed")


async def test_with_the_option_off_the_intent_is_a_call_of_its_own(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    recording = PlanRewritingSimulator(one_more_ticker)
    result, records = await run_once(
        nursery, store, entry_registry, recording, intent_in_plan=False
    )
    assert result.status == "completed", result.reason
    assert purposes(records).count("intent") == 1
    [document] = plan_documents(recording)
    assert "also" not in document
    assert '"also"' not in plan_bodies(recording)[0]["messages"][0]["content"]
    [intent] = [r for r in records if r.type == "IntentAnalyzed"]
    assert intent.data["entities"]["tickers"] == ["NVDA"]  # the intent call read the goal


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "objects"])
async def test_the_plan_request_shows_earlier_messages_as_strings(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
    compact: bool,
) -> None:
    recording = RecordingSimulator()
    provider = sim_provider(await recording.start(nursery), store)
    orchestrator = make_orchestrator(store, entry_registry, provider, compact_history=compact)
    with trio.fail_after(TIMEOUT_S):
        first = await orchestrator.run_goal(GOAL)
        second = await orchestrator.run_goal("and what about AAPL?", first.session_id)
    await provider.aclose()
    assert second.status == "completed", second.reason
    assert "AAPL" in (second.answer or "")
    history = plan_documents(recording)[-1]["history"]
    context, asked, answered = history
    assert context["role"] == "context" and context["context"]["tickers"] == ["NVDA"]
    if compact:
        assert asked == f"user: {GOAL}"
        assert answered == f"assistant: {first.answer}"
    else:
        assert asked == {"role": "user", "text": GOAL}
        assert answered == {"role": "assistant", "text": first.answer}


def test_compact_turns_keeps_what_is_not_a_plain_message() -> None:
    history = [
        {"role": "context", "context": {"tools": ["clock.now"]}},
        {"role": "user", "text": "hi"},
        {"role": "user", "text": "hi", "position": 3},
        {"role": "user", "text": 5},
        "earlier goal",
    ]
    assert compact_turns(history) == [history[0], "user: hi", *history[2:]]


def test_intent_of_reads_only_a_named_intent() -> None:
    assert intent_of({"steps": [], "intent": " quote ", "entities": {"tickers": ["A"]}}) == {
        "intent": "quote",
        "entities": {"tickers": ["A"]},
    }
    assert intent_of({"steps": [], "intent": "time", "entities": "x"}) == {
        "intent": "time",
        "entities": {},
    }
    assert intent_of({"steps": []}) is None
    assert intent_of({"steps": [], "intent": ""}) is None
    assert intent_of({"steps": [], "intent": ["quote"]}) is None


@STREAMING
async def test_the_steps_come_in_their_compact_form_and_plan_the_same(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
    streaming: bool,
) -> None:
    """ "then" makes s2 wait for s1 without a reference: that dependency stays written."""
    goal = "what is 17 * 23 + 4 then what time is it in Tokyo"
    created, completion = {}, {}
    for compact in (True, False):
        recording = RecordingSimulator()
        result, records = await run_once(
            nursery,
            store,
            entry_registry,
            recording,
            goal,
            streaming_plan=streaming,
            compact_plan_steps=compact,
        )
        assert result.status == "completed", result.reason
        assert "17 * 23 + 4 = 395" in (result.answer or "")
        [document] = plan_documents(recording)
        assert document.get("step_form") == ("compact" if compact else None)
        [plan] = [r.data["steps"] for r in records if r.type == "PlanCreated"]
        created[compact] = [(s["agent"], s["action"], s["dependencies"]) for s in plan]
        [call] = [
            r for r in records if r.type == "LLMCallCompleted" and r.data["purpose"] == "plan"
        ]
        completion[compact] = call.data["completion_tokens"]
    assert (
        created[True]
        == created[False]
        == [
            ("math", "calculate", []),
            ("clock", "now", ["s1"]),
        ]
    )
    assert completion[True] < completion[False]


@pytest.mark.parametrize("in_the_background", [True, False], ids=["tail", "inline"])
async def test_a_streamed_plan_is_returned_at_its_last_step_and_its_intent_read_after(
    nursery: trio.Nursery, store: EventStore, entry_registry: AgentRegistry, in_the_background: bool
) -> None:
    """The simulator paces the reply (realistic profile): after the chunk that closes the
    steps' array, the intent's chunks are still to come. With a `tail` nursery the plan
    is returned before them; without one, after."""
    _, url = await start_simulator(nursery, latency_profile="realistic", time_scale=0.2)
    provider = sim_provider(url, store)
    seen: list[tuple[str, Any]] = []

    async def on_step(step: PlanStep) -> None:
        seen.append(("step", step.tool))

    async def on_intent(found: dict[str, Any] | None) -> None:
        seen.append(("intent", found))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as tail:
            plan = await stream_plan(
                provider,
                PromptRepository(),
                "what is the price of NVDA and AAPL",
                entry_registry.catalog(),
                [],
                "r1",
                on_step,
                on_intent=on_intent,
                tail=tail if in_the_background else None,
            )
            seen.append(("returned", len(plan.steps)))
    await provider.aclose()
    steps = [("step", "quotes.get_stock_price")] * 2
    intent = ("intent", {"intent": "quote", "entities": {"tickers": ["NVDA", "AAPL"]}})
    if in_the_background:
        assert seen == [*steps, ("returned", 2), intent]
    else:
        assert seen == [*steps, intent, ("returned", 2)]


def invalid_then_repaired(document: dict[str, Any]) -> None:
    """The first plan request is shown `calc.evaluate` and not `math.calculate`, so the
    offline model plans a step without the `precision` calc requires (invalid); the
    repair request is shown `math.calculate` and not calc, and plans validly. Its goal
    names one more number, so its intent's expression tells it from the offline
    reading of the run's own goal."""
    hide = "calc.evaluate" if "problems" in document else "math.calculate"
    document["tools"] = [t for t in document["tools"] if t.get("tool") != hide]
    if "problems" in document:
        document["goal"] += " + 1"


async def test_a_streamed_plan_repaired_asks_the_repair_for_the_intent(
    nursery: trio.Nursery, store: EventStore
) -> None:
    """The streamed reply is cut at its bad step, before its intent: the repair call,
    which has to be made anyway, asks for it."""
    recording = PlanRewritingSimulator(invalid_then_repaired)
    registry = AgentRegistry({**discover_agents(), "calc": CalcAgent}, AgentContext())
    result, records = await run_once(
        nursery,
        store,
        registry,
        recording,
        "calculate 6 * 7",
        streaming_plan=True,
        tool_selection=False,
    )
    assert result.status == "completed", result.reason
    first, repair = plan_documents(recording)
    assert "problems" in repair
    assert first["also"] == repair["also"] == ["intent", "entities"]
    assert "intent" not in purposes(records)
    [intent] = [r for r in records if r.type == "IntentAnalyzed"]
    assert intent.data["intent"] == "calculation"
    assert intent.data["entities"]["expression"] == "6 * 7 + 1"  # the repair's reading
    types = [r.type for r in records]
    assert types.index("IntentAnalyzed") < types.index("RunCompleted")


async def test_a_streamed_runs_steps_do_not_wait_for_the_intent_after_them(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    """Paced replies (realistic profile): the two quotes (one batch, which waits for the
    plan's steps to end) start, and the plan is recorded, before the reply's intent has
    come; the run's end still comes after it."""
    _, url = await start_simulator(nursery, latency_profile="realistic", time_scale=0.2)
    provider = sim_provider(url, store)
    orchestrator = make_orchestrator(store, entry_registry, provider, streaming_plan=True)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal("what is the price of NVDA and AAPL")
    await provider.aclose()
    assert result.status == "completed", result.reason
    types = [r.type for r in await run_events(store, result.run_id)]
    assert types.index("PlanCreated") < types.index("IntentAnalyzed")
    assert types.index("StepStarted") < types.index("IntentAnalyzed")
    assert types.index("IntentAnalyzed") < types.index("RunCompleted")


class HugeEntitySimulator(RecordingSimulator):
    """A model whose plan reply names an entity the event log cannot hold (an integer
    past 64 bits): the reply's JSON is edited on its way back."""

    async def handle(self, request: HttpRequest) -> HttpResponse:
        response = await super().handle(request)
        if request.path != "/v1/chat/completions" or response.chunks is not None:
            return response
        if task_document(self.chats[-1]).get("task") != "plan":
            return response
        body = json.loads(response.body)
        reply = json.loads(body["choices"][0]["message"]["content"])
        reply["entities"] = {**reply.get("entities", {}), "n": 10**30}
        body["choices"][0]["message"]["content"] = json.dumps(reply)
        return HttpResponse(response.status, response.headers, json.dumps(body).encode())


async def test_an_intent_the_log_cannot_hold_gives_way_to_the_offline_reading(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    recording = HugeEntitySimulator()
    result, records = await run_once(
        nursery, store, entry_registry, recording, streaming_plan=False
    )
    assert result.status == "completed", result.reason
    [intent] = [r for r in records if r.type == "IntentAnalyzed"]
    assert intent.data == {
        "run_id": result.run_id,
        "intent": "quote",
        "entities": {"tickers": ["NVDA"]},
    }


class SlowTailSimulator(RecordingSimulator):
    """A streamed plan reply whose last chunk (after its steps and its intent) comes
    `delay` seconds late: the reply is still being read once the run has its answer."""

    delay = 1.0

    async def handle(self, request: HttpRequest) -> HttpResponse:
        response = await super().handle(request)
        if request.path != "/v1/chat/completions" or response.chunks is None:
            return response
        if task_document(self.chats[-1]).get("task") != "plan":
            return response
        *chunks, (_, last) = response.chunks
        return dataclasses.replace(response, chunks=(*chunks, (self.delay, last)))


async def test_a_run_cancelled_while_its_plans_intent_is_read_leaves_nothing_behind(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    """Cancelled while the end of its plan's reply is still being read in the background
    (its answer written, its end waiting for the intent): the run ends cancelled, and
    what the orchestrator kept about it (`_intents`, `_intent_done`) is dropped after
    its background work has ended, not before (a late record would stay for good)."""
    recording = SlowTailSimulator()
    provider = sim_provider(await recording.start(nursery), store)
    orchestrator = make_orchestrator(store, entry_registry, provider, streaming_plan=True)
    submitted = await orchestrator.submit("what is the price of NVDA and AAPL")
    results: list[Any] = []
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as running:

            async def execute() -> None:
                results.append(await orchestrator.execute(submitted.run_id))

            running.start_soon(execute)
            async for record in store.subscribe(stream=f"run-{submitted.run_id}"):
                if record.type == "LLMCallCompleted" and record.data["purpose"] == "answer":
                    break
            assert orchestrator.cancel(submitted.run_id) is True
    await provider.aclose()
    assert results[0].status == "cancelled"
    types = [r.type for r in await run_events(store, submitted.run_id)]
    assert types[-1] == "RunCancelled" and "RunCompleted" not in types
    assert submitted.run_id not in orchestrator._intents
    assert submitted.run_id not in orchestrator._intent_done


class DroppedTailSimulator(RecordingSimulator):
    """A streamed plan reply whose connection drops after its steps, in its intent."""

    async def handle(self, request: HttpRequest) -> HttpResponse:
        response = await super().handle(request)
        if request.path != "/v1/chat/completions" or response.chunks is None:
            return response
        if task_document(self.chats[-1]).get("task") != "plan":
            return response
        # The last chunks: the intent's last content pieces, the finish reason, the
        # usage and [DONE]; the steps' array closed before them.
        return dataclasses.replace(response, drop_after=len(response.chunks) - 5)


async def test_a_plan_whose_reply_breaks_after_its_steps_still_runs(
    nursery: trio.Nursery,
    store: EventStore,
    entry_registry: AgentRegistry,
    quote_endpoint: QuoteEndpoint,
) -> None:
    recording = DroppedTailSimulator()
    result, records = await run_once(
        nursery,
        store,
        entry_registry,
        recording,
        "what is the price of NVDA and AAPL",
        streaming_plan=True,
    )
    assert result.status == "completed", result.reason
    assert "NVDA" in (result.answer or "") and "AAPL" in (result.answer or "")
    [plan_call] = [
        r for r in records if r.type == "LLMCallCompleted" and r.data["purpose"] == "plan"
    ]
    assert plan_call.data["outcome"] != "ok"  # the call did break
    [intent] = [r for r in records if r.type == "IntentAnalyzed"]
    assert intent.data["entities"] == {"tickers": ["NVDA", "AAPL"]}  # the offline reading
