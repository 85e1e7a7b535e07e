"""The planner: an invalid plan is re-asked once with its problems, then the run fails
with the reason; a goal the model cannot plan fails with the model's own explanation.

The invalid plans are real: the `calc.evaluate` tool requires a `precision` the
offline planner never fills, so its plan for an arithmetic goal always fails
validation. Requests are observed on the wire, in front of the real simulator.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio

from agents.errors import InvalidPlan
from agents.llm._prompting import PromptRepository
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http
from agents.offline._simulator import Simulator, SimulatorOptions
from agents.runs._planner import Planner
from agents.tools import AgentContext
from agents.tools._registry import AgentRegistry
from events import EventStore

from .conftest import (
    TIMEOUT_S,
    kinds,
    make_orchestrator,
    run_events,
    sim_provider,
    start_simulator,
)
from .lab import CalcAgent

MISSING_PRECISION = "step s1: missing parameter 'precision'"
UNPLANNABLE = "sing me a song about the sea"


def calc_registry() -> AgentRegistry:
    return AgentRegistry({"calc": CalcAgent}, AgentContext())


class RecordingSimulator:
    """The simulator behind a handler that keeps each chat request's JSON body."""

    def __init__(self, **options: Any) -> None:
        self.simulator = Simulator(SimulatorOptions(**options))
        self.chats: list[dict[str, Any]] = []

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/v1/chat/completions":
            self.chats.append(json.loads(request.body))
        return await self.simulator.handle(request)

    async def start(self, nursery: trio.Nursery) -> str:
        serve = partial(serve_http, self.handle, "127.0.0.1", 0, ConnectionCounts())
        port = await nursery.start(serve)
        return f"http://127.0.0.1:{port}/v1"


def task_document(body: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(body["messages"][-1]["content"])
    return document


async def test_invalid_plan_is_asked_again_once_with_its_problems(
    nursery: trio.Nursery, store: EventStore
) -> None:
    recording = RecordingSimulator()
    provider = sim_provider(await recording.start(nursery), store)
    planner = Planner(provider, PromptRepository())
    with trio.fail_after(TIMEOUT_S), pytest.raises(InvalidPlan) as caught:
        await planner.plan("calculate 6 * 7", calc_registry().catalog(), [], "r1")
    await provider.aclose()
    assert caught.value.problems == [MISSING_PRECISION]
    assert planner.calls == 2
    first, repair = (task_document(body) for body in recording.chats)
    assert "problems" not in first
    assert repair["problems"] == [MISSING_PRECISION]
    assert repair["goal"] == first["goal"] == "calculate 6 * 7"
    assert "invalid" in repair["instruction"]
    rejected = recording.chats[1]["messages"][-2]
    assert rejected["role"] == "assistant" and MISSING_PRECISION in rejected["content"]


@pytest.mark.parametrize("streaming", [False, True], ids=["whole-plan", "streamed-plan"])
async def test_plan_still_invalid_after_the_repair_fails_the_run_with_the_reason(
    streaming: bool, store: EventStore
) -> None:
    orchestrator = make_orchestrator(store, calc_registry(), streaming_plan=streaming)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal("calculate 6 * 7")
    records = await run_events(store, result.run_id)
    assert (result.status, result.answer) == ("failed", None)
    assert result.reason is not None and MISSING_PRECISION in result.reason
    assert kinds(records).count("LLMCallCompleted(plan)") == 2  # the first answer and one repair
    assert records[-1].type == "RunFailed"
    assert records[-1].data["reason"] == result.reason
    assert not [r for r in records if r.type == "PlanCreated" or r.type.startswith("Step")]


@pytest.mark.parametrize("streaming", [False, True], ids=["whole-plan", "streamed-plan"])
async def test_unplannable_goal_fails_with_the_planners_explanation(
    streaming: bool, store: EventStore, entry_registry: AgentRegistry
) -> None:
    orchestrator = make_orchestrator(store, entry_registry, streaming_plan=streaming)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal(UNPLANNABLE)
    records = await run_events(store, result.run_id)
    assert kinds(records) == [
        "RunRequested",
        "IntentAnalyzed",
        "LLMCallCompleted(plan)",
        "RunFailed",
    ]
    reason = records[-1].data["reason"]
    assert f"no available tool matches {UNPLANNABLE!r}" in reason
    assert "math" in reason  # it names what it can do, briefly
    assert len(f"I could not complete this: {reason}") <= 300
    session = await store.read_stream(f"session-{result.session_id}")
    assert session[-1].type == "AssistantMessageSent"
    assert session[-1].data["text"] == f"I could not complete this: {reason}"


@pytest.mark.parametrize("streaming", [False, True], ids=["whole-plan", "streamed-plan"])
async def test_plan_answer_that_is_not_json_fails_the_run_with_the_reason(
    streaming: bool, nursery: trio.Nursery, store: EventStore, entry_registry: AgentRegistry
) -> None:
    _, url = await start_simulator(nursery, fault_rate=1.0, faults=("bad_json",), seed=3)
    provider = sim_provider(url, store)
    orchestrator = make_orchestrator(store, entry_registry, provider, streaming_plan=streaming)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal("what is 17 * 23 + 4")
    await provider.aclose()
    records = await run_events(store, result.run_id)
    assert result.status == "failed"
    assert result.reason is not None and result.reason.startswith("no usable plan: ")
    assert records[-1].type == "RunFailed"
    assert not [r for r in records if r.type == "PlanCreated" or r.type.startswith("Step")]
    calls = [r.data for r in records if r.type == "LLMCallCompleted"]
    plans = [c for c in calls if c["purpose"] == "plan"]
    assert plans and all(c["outcome"] != "ok" for c in plans)
    # Besides the plan calls, a real model is asked for the goal's intent (it failed too).
    assert {c["purpose"] for c in calls} <= {"plan", "intent"}
