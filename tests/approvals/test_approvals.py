"""Human approval of risky steps: requested in the log, decided, durable across restarts."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from agents.llm import ToolSpec
from agents.llm._provider import LLMOptions
from agents.offline._providers import open_provider
from agents.runs._approvals import ApprovalBook, ApprovalNotPending
from agents.runs._orchestrator import Orchestrator, OrchestratorOptions
from agents.runs._outcomes import Decision
from agents.runs._plan import Plan, PlanStep
from agents.tools._base import Agent, Tool
from agents.tools._registry import AgentRegistry
from events import (
    EventStore,
    MemoryEventLog,
    PlanCreated,
    RunRequested,
    StoreOptions,
    open_event_store,
)

TIMEOUT_S = 10
CALLS: list[str] = []

RISKY = ToolSpec(
    "ops",
    "delete",
    "Delete something (risky).",
    {"type": "object", "properties": {"what": {"type": "string"}}, "required": ["what"]},
    idempotent=False,
    requires_approval=True,
)
SAFE = ToolSpec(
    "ops",
    "echo",
    "Echo a value.",
    {"type": "object", "properties": {"what": {"type": "string"}}, "required": ["what"]},
)


class _Call(Tool):
    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        CALLS.append(f"{self.spec.action}:{parameters['what']}")
        await trio.lowlevel.checkpoint()
        return {"done": parameters["what"]}


class OpsAgent(Agent):
    name = "ops"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (RISKY, SAFE)

    def __init__(self, context: object = None) -> None:
        self._tools = {"delete": _Call(RISKY), "echo": _Call(SAFE)}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


PLAN = Plan(
    (
        PlanStep("d1", "ops", "delete", {"what": "a"}),
        PlanStep("d2", "ops", "delete", {"what": "b"}),
        PlanStep("after", "ops", "echo", {"what": "${d1.done}"}, ("d1",)),
        PlanStep("free", "ops", "echo", {"what": "free"}),
    )
)


async def start_run(store: EventStore, run_id: str) -> None:
    await store.append(
        f"run-{run_id}",
        [RunRequested(run_id, "s1", "clean up"), PlanCreated(run_id, PLAN.to_data())],
    )


def orchestrator(store: EventStore, provider: Any) -> Orchestrator:
    registry = AgentRegistry({"ops": OpsAgent})
    return Orchestrator(
        store, provider, registry, options=OrchestratorOptions(streaming_plan=False)
    )


async def types_of(store: EventStore, run_id: str) -> list[tuple[str, str | None]]:
    return [(r.type, r.data.get("step_id")) for r in await store.read_stream(f"run-{run_id}")]


async def wait_for(store: EventStore, run_id: str, wanted: list[tuple[str, str | None]]) -> None:
    """Follow the run's stream until every wanted (type, step) has been appended."""
    missing = list(wanted)
    async for record in store.subscribe(after=0, stream=f"run-{run_id}"):
        key = (record.type, record.data.get("step_id"))
        if key in missing:
            missing.remove(key)
        if not missing:
            return


async def wait_for_requests(store: EventStore, run_id: str, count: int) -> None:
    wanted: list[tuple[str, str | None]] = [("ApprovalRequested", s) for s in ("d1", "d2")[:count]]
    await wait_for(store, run_id, wanted)


async def test_steps_wait_for_approval_while_other_branches_run() -> None:
    async with (
        open_event_store(log=MemoryEventLog()) as store,
        open_provider(LLMOptions()) as provider,
    ):
        orch = orchestrator(store, provider)
        await start_run(store, "r1")
        results: list[Any] = []
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _collect(results, orch.execute("r1")))
                await wait_for_requests(store, "r1", 2)
                await wait_for(store, "r1", [("StepCompleted", "free")])
                assert "echo:free" in CALLS and not any(c.startswith("delete") for c in CALLS)
                await orch.decide("r1", "d2", granted=False, note="keep b")
                await orch.decide("r1", "d1", granted=True, by="ops-team")
        assert results[0].status == "completed"
        assert CALLS.count("delete:a") == 1 and "delete:b" not in CALLS and "echo:a" in CALLS
        events = await types_of(store, "r1")
        assert ("ApprovalGranted", "d1") in events and ("ApprovalDenied", "d2") in events
        assert ("StepSkipped", "d2") in events and ("StepCompleted", "after") in events


async def _collect(results: list[Any], awaitable: Any) -> None:
    results.append(await awaitable)


async def test_denied_step_skips_its_dependents() -> None:
    async with (
        open_event_store(log=MemoryEventLog()) as store,
        open_provider(LLMOptions()) as provider,
    ):
        orch = orchestrator(store, provider)
        await start_run(store, "r2")
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(orch.execute, "r2")
                await wait_for_requests(store, "r2", 2)
                await orch.decide("r2", "d1", granted=False)
                await orch.decide("r2", "d2", granted=False)
        events = await types_of(store, "r2")
        assert ("StepSkipped", "after") in events
        assert not any(c.startswith("delete") for c in CALLS)


async def test_second_decision_and_unknown_step_are_refused() -> None:
    async with (
        open_event_store(log=MemoryEventLog()) as store,
        open_provider(LLMOptions()) as provider,
    ):
        orch = orchestrator(store, provider)
        await start_run(store, "r3")
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(orch.execute, "r3")
                await wait_for_requests(store, "r3", 2)
                with pytest.raises(ApprovalNotPending, match="no approval was requested"):
                    await orch.decide("r3", "free", granted=True)
                await orch.decide("r3", "d1", granted=True)
                with pytest.raises(ApprovalNotPending, match="already decided"):
                    await orch.decide("r3", "d1", granted=False)
                await orch.decide("r3", "d2", granted=True)
        with pytest.raises(ApprovalNotPending, match="completed"):
            await orch.decide("r3", "d2", granted=True)


async def test_pending_approval_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store"
    options = StoreOptions(sync=False, map_size_mb=16)
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_event_store(path, options) as store,
            open_provider(LLMOptions()) as provider,
        ):
            orch = orchestrator(store, provider)
            await start_run(store, "r4")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(orch.execute, "r4")
                await wait_for_requests(store, "r4", 2)
                nursery.cancel_scope.cancel()  # the server stops while both wait
        async with (
            open_event_store(path, options) as store,
            open_provider(LLMOptions()) as provider,
        ):
            orch = orchestrator(store, provider)
            assert await orch.unfinished_runs() == ["r4"]
            await orch.decide("r4", "d1", granted=True)  # decided while the run is not running
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(orch.execute, "r4", resume=True))
                await wait_for(store, "r4", [("RunResumed", None)])
                await orch.decide("r4", "d2", granted=True)
            events = await types_of(store, "r4")
    assert sum(t == "ApprovalRequested" for t, _ in events) == 2  # not requested again
    assert events[-1][0] == "RunCompleted"
    assert CALLS.count("delete:a") == 1 and CALLS.count("delete:b") == 1


async def test_a_decision_recorded_before_the_wait_is_found_by_the_recheck() -> None:
    """Another node's client decided before this node's step began to wait: the
    recheck reads it from the log, the step does not wait forever."""
    book = ApprovalBook()
    decision = Decision(True, "ok", "ana")

    async def recheck() -> Decision | None:
        return decision

    with trio.fail_after(5):
        assert await book.wait("r1", "s1", recheck) == decision
    assert book.pending() == []
    assert not book.resolve_if_waiting("r1", "s1", decision)  # read again: nothing kept
    with trio.move_on_after(0.05):
        await book.wait("r1", "s1")  # no stale decision was left behind to return
        raise AssertionError("a decision was left in the book")
