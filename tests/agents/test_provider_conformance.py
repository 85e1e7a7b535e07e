"""The LLMProvider contract, run over every provider (see `provider` in conftest).

OpenAIProvider goes through the real openai SDK to the simulator on loopback;
OfflineProvider runs the same model in-process. Both must give the same answers, the
same usage and the same events.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from agents import (
    BadRequest,
    InvalidModelOutput,
    LLMError,
    LLMProvider,
    PromptRepository,
    answer_messages,
    plan_messages,
)
from events import EventStore

from .conftest import TIMEOUT_S, TOOLS, llm_events, root_cause

PROMPTS = PromptRepository()
GOAL = "get the price of NVDA and AAPL and write a report"
RESULTS: list[dict[str, Any]] = [
    {
        "id": "s1",
        "agent": "quotes",
        "action": "get_stock_price",
        "result": {"symbol": "NVDA", "price": 120.5},
    },
    {"id": "s2", "agent": "quotes", "action": "get_stock_price", "error": "quote service down"},
]


async def test_chat_json_returns_the_plan_with_usage(provider: LLMProvider) -> None:
    with trio.fail_after(TIMEOUT_S):
        messages = plan_messages(PROMPTS, GOAL, TOOLS, compact_steps=False)
        result = await provider.chat_json(messages, purpose="plan")
    steps = result.data["steps"]
    assert [(s["agent"], s["action"]) for s in steps] == [
        ("quotes", "get_stock_price"),
        ("quotes", "get_stock_price"),
        ("writer", "create_report"),
    ]
    assert steps[2]["dependencies"] == ["s1", "s2"]
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


async def test_chat_json_returns_the_plan_in_its_compact_form(provider: LLMProvider) -> None:
    """The default form: "tool", and no dependencies the parameters already name."""
    with trio.fail_after(TIMEOUT_S):
        result = await provider.chat_json(plan_messages(PROMPTS, GOAL, TOOLS), purpose="plan")
    steps = result.data["steps"]
    assert [s["tool"] for s in steps] == [
        "quotes.get_stock_price",
        "quotes.get_stock_price",
        "writer.create_report",
    ]
    assert not any("agent" in s or "action" in s or "dependencies" in s for s in steps)
    assert steps[2]["parameters"]["sources"] == ["${s1}", "${s2}"]
    assert (result.model, result.retries) == ("autoagent-offline", 0)


async def test_chat_json_records_the_call_in_the_runs_stream(
    provider: LLMProvider, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await provider.chat_json(
            plan_messages(PROMPTS, GOAL, TOOLS), purpose="plan", run_id="r1"
        )
        events = await llm_events(store)
    assert len(events) == 1
    stream, event = events[0]
    assert stream == "run-r1"
    assert (event.run_id, event.purpose, event.model) == ("r1", "plan", "autoagent-offline")
    assert (event.prompt_tokens, event.completion_tokens) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
    )
    assert (event.retries, event.outcome) == (0, "ok")
    assert event.latency_s >= 0


async def test_call_without_run_goes_to_the_llm_calls_stream(
    provider: LLMProvider, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await provider.chat_json(plan_messages(PROMPTS, "what is 2 + 2", TOOLS), purpose="plan")
        events = await llm_events(store)
    assert [stream for stream, _ in events] == ["llm-calls"]


async def test_chat_json_of_the_wrong_shape_raises_and_is_recorded(
    provider: LLMProvider, store: EventStore
) -> None:
    hint = {"type": "object", "required": ["verdict"]}
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(LLMError) as raised:
            await provider.chat_json(
                plan_messages(PROMPTS, GOAL, TOOLS), purpose="plan", schema_hint=hint
            )
        events = await llm_events(store)
    assert isinstance(root_cause(raised.value), InvalidModelOutput)
    assert "missing required key 'verdict'" in str(raised.value)
    assert [e.outcome for _, e in events] == [type(raised.value).__name__]


async def test_stream_chat_yields_the_answer_in_pieces_then_usage(
    provider: LLMProvider, store: EventStore
) -> None:
    messages = answer_messages(PROMPTS, GOAL, RESULTS)
    with trio.fail_after(TIMEOUT_S):
        async with provider.stream_chat(messages, purpose="answer", run_id="r2") as stream:
            deltas = [delta async for delta in stream]
        events = await llm_events(store)
    assert len(deltas) > 1
    assert "".join(deltas) == stream.text
    assert "NVDA: 120.5" in stream.text and "quote service down" in stream.text
    assert stream.usage is not None and stream.usage.completion_tokens > 0
    assert [(s, e.purpose, e.outcome) for s, e in events] == [("run-r2", "answer", "ok")]
    assert events[0][1].completion_tokens == stream.usage.completion_tokens


async def test_stream_closed_early_is_still_recorded(
    provider: LLMProvider, store: EventStore
) -> None:
    messages = answer_messages(PROMPTS, GOAL, RESULTS)
    with trio.fail_after(TIMEOUT_S):
        async with provider.stream_chat(messages, purpose="answer") as stream:
            async for _ in stream:
                break
        events = await llm_events(store)
    assert [(e.purpose, e.outcome) for _, e in events] == [("answer", "ok")]


async def test_stream_in_json_mode_yields_json(provider: LLMProvider) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with provider.stream_chat(
            plan_messages(PROMPTS, "what time is it in Tokyo", TOOLS),
            purpose="plan",
            json_mode=True,
        ) as stream:
            text = "".join([d async for d in stream])
    assert '"timezone": "Asia/Tokyo"' in text


async def test_embed_returns_one_unit_vector_per_text(provider: LLMProvider) -> None:
    texts = ["the price of NVDA", "the price of AAPL", "a recipe for bread"]
    with trio.fail_after(TIMEOUT_S):
        vectors = await provider.embed(texts)
        again = await provider.embed(texts[:1])
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert again[0] == pytest.approx(vectors[0], abs=1e-6)
    close, far = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
    assert close > far


async def test_embed_is_recorded_with_prompt_tokens(
    provider: LLMProvider, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await provider.embed(["one text", "another text"], run_id="r3")
        events = await llm_events(store)
    assert [(s, e.purpose, e.outcome) for s, e in events] == [("run-r3", "embed", "ok")]
    assert events[0][1].prompt_tokens > 0 and events[0][1].completion_tokens == 0


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "embed takes 1 to 2048 inputs, got 0"),
        (["x"] * 2049, "embed takes 1 to 2048 inputs, got 2049"),
        (["fine", ""], "embedding input 1 must be a non-empty string"),
    ],
    ids=["none", "too-many", "empty-string"],
)
async def test_embed_rejects_what_the_api_rejects_before_sending(
    provider: LLMProvider, texts: list[str], message: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(BadRequest, match=message):
            await provider.embed(texts)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
