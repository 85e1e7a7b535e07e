"""A run's plan request shows the tools matching its goal (`tool_selection`, on by
default), and a plan refused over that part is asked for again over the whole catalog.

Requests are observed on the wire in front of the real simulator. The refusal is the
offline model's own: a handler in front of it stands for a model that will not plan
unless it sees a clock tool, by swapping the goal of a plan request without one for a
goal nothing can plan.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from agents.offline._http import HttpRequest, HttpResponse
from agents.tools import AgentContext
from agents.tools._registry import AgentRegistry, discover_agents
from events import EventStore

from .conftest import TIMEOUT_S, make_orchestrator, run_events, sim_provider
from .lab import CalcAgent
from .test_planner import RecordingSimulator, task_document

STREAMING = pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole"])
GOAL = "what is 17 * 23 + 4"


def shipped_registry() -> AgentRegistry:
    return AgentRegistry.from_entry_points(AgentContext())


class ClockDemandingSimulator(RecordingSimulator):
    """Refuses (through the offline model) every plan request that shows no clock."""

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/v1/chat/completions":
            body = json.loads(request.body)
            document = task_document(body)
            shown = {tool.get("tool") for tool in document.get("tools", ())}
            if document.get("task") == "plan" and "clock.now" not in shown:
                document["goal"] = "sing me a song about the sea"
                body["messages"][-1]["content"] = json.dumps(document)
                request = HttpRequest(
                    request.method, request.target, request.headers, json.dumps(body).encode()
                )
        return await super().handle(request)


def plan_requests(recording: RecordingSimulator) -> list[dict[str, Any]]:
    return [doc for doc in map(task_document, recording.chats) if doc["task"] == "plan"]


def tools_of(document: dict[str, Any]) -> set[str]:
    return {tool["tool"] for tool in document["tools"]}


@STREAMING
@pytest.mark.parametrize("selection", [True, False], ids=["selected", "all"])
async def test_the_plan_request_shows_the_goals_tools(
    nursery: trio.Nursery, store: EventStore, streaming: bool, selection: bool
) -> None:
    recording = RecordingSimulator()
    provider = sim_provider(await recording.start(nursery), store)
    registry = shipped_registry()
    orchestrator = make_orchestrator(
        store, registry, provider, streaming_plan=streaming, tool_selection=selection
    )
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal(GOAL + " and what time is it in Tokyo")
    await provider.aclose()
    assert result.status == "completed", result.reason
    assert "17 * 23 + 4 = 395" in (result.answer or "")
    [request] = plan_requests(recording)
    everything = {spec.name for spec in registry.catalog().specs}
    assert tools_of(request) == ({"math.calculate", "clock.now"} if selection else everything)
    records = await run_events(store, result.run_id)
    purposes = [r.data["purpose"] for r in records if r.type == "LLMCallCompleted"]
    assert purposes.count("plan") == 1


@STREAMING
async def test_a_plan_refused_over_a_part_is_asked_again_over_the_whole_catalog(
    nursery: trio.Nursery, store: EventStore, streaming: bool
) -> None:
    recording = ClockDemandingSimulator()
    provider = sim_provider(await recording.start(nursery), store)
    registry = shipped_registry()
    orchestrator = make_orchestrator(store, registry, provider, streaming_plan=streaming)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal(GOAL)
    await provider.aclose()
    assert result.status == "completed", result.reason
    assert "17 * 23 + 4 = 395" in (result.answer or "")
    first, second = plan_requests(recording)
    assert tools_of(first) == {"math.calculate"}
    assert tools_of(second) == {spec.name for spec in registry.catalog().specs}
    records = await run_events(store, result.run_id)
    purposes = [r.data["purpose"] for r in records if r.type == "LLMCallCompleted"]
    assert purposes.count("plan") == 2
    assert result.llm_calls == 3  # the run's own calls: two plans and the answer
    [created] = [r.data["steps"] for r in records if r.type == "PlanCreated"]
    assert [(s["agent"], s["action"]) for s in created] == [("math", "calculate")]


@STREAMING
async def test_a_plan_refused_over_the_whole_catalog_fails_the_run_after_one_call(
    nursery: trio.Nursery, store: EventStore, streaming: bool
) -> None:
    recording = ClockDemandingSimulator()
    provider = sim_provider(await recording.start(nursery), store)
    registry = AgentRegistry.from_entry_points(AgentContext(), ["math"])  # too few to cut
    orchestrator = make_orchestrator(store, registry, provider, streaming_plan=streaming)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal(GOAL)
    await provider.aclose()
    assert result.status == "failed"
    assert "no usable plan" in (result.reason or "")
    assert len(plan_requests(recording)) == 1


class RefuseThenInvalidSimulator(RecordingSimulator):
    """The first plan request (a part of the catalog) is refused; the next one, over the
    whole, is shown `calc.evaluate` but not `math.calculate`, so the offline model plans
    a step without the `precision` calc requires (invalid); the repair request is shown
    `math.calculate` and not calc, and plans validly."""

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/v1/chat/completions":
            body = json.loads(request.body)
            document = task_document(body)
            if document.get("task") == "plan":
                shown = {tool.get("tool") for tool in document.get("tools", ())}
                if "clock.now" not in shown:
                    document["goal"] = "sing me a song about the sea"
                else:
                    hide = "calc.evaluate" if "problems" in document else "math.calculate"
                    document["tools"] = [t for t in document["tools"] if t.get("tool") != hide]
                body["messages"][-1]["content"] = json.dumps(document)
                request = HttpRequest(
                    request.method, request.target, request.headers, json.dumps(body).encode()
                )
        return await super().handle(request)


async def test_a_streamed_plan_refused_then_invalid_counts_every_plan_call(
    nursery: trio.Nursery, store: EventStore
) -> None:
    recording = RefuseThenInvalidSimulator()
    provider = sim_provider(await recording.start(nursery), store)
    agents = {**discover_agents(), "calc": CalcAgent}
    registry = AgentRegistry(agents, AgentContext())
    orchestrator = make_orchestrator(store, registry, provider, streaming_plan=True)
    with trio.fail_after(TIMEOUT_S):
        result = await orchestrator.run_goal("calculate 6 * 7")
    await provider.aclose()
    assert result.status == "completed", result.reason
    assert "42" in (result.answer or "")
    part, whole, repair = plan_requests(recording)
    assert len(part["tools"]) < len(whole["tools"]) - 1  # whole minus math.calculate
    assert "problems" in repair and "problems" not in whole
    records = await run_events(store, result.run_id)
    purposes = [r.data["purpose"] for r in records if r.type == "LLMCallCompleted"]
    assert purposes.count("plan") == 3
    assert result.llm_calls == 4  # three plan calls and the answer
