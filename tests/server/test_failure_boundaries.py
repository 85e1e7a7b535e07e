"""Failure boundaries of the running server, each shown by injecting a fault:

- a request handler that raises inside one connection's task: that connection gets an
  `internal` error frame and a 1011 close, the traceback is logged, and the listener,
  the other connections (one subscribed to the live log) and a run in flight go on;
- a run whose execution raises something unexpected: that run ends with `RunFailed`,
  the traceback is logged, and the server, its connections and another run go on;
- a projection whose apply raises: it stops alone, /healthz and /metrics say so, and
  the other projections keep following the log.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from agents.llm import PromptRepository, ToolSpec
from agents.tools import Agent, AgentContext, Tool
from events import PlanCreated, RecordedEvent, RunRequested
from projections import Projection
from server.ws._limits import ServerLimits
from server.ws._server import AgentServer

from .ws_helpers import GOAL, TERMINAL, TIMEOUT_S, Harness, http_request, serving

LIMITS = ServerLimits(requests_per_second=1000, max_runs_per_session=100)
INJECTED = "injected fault"


class FaultyServer(AgentServer):
    """The real server, except that resuming run "boom" hits a bug in the handler."""

    async def resume_run(self, connection: Any, run_id: str, request_id: Any) -> int:
        if run_id == "boom":
            raise RuntimeError(f"{INJECTED} in a request handler")
        return await super().resume_run(connection, run_id, request_id)


WAIT = ToolSpec(
    "slow",
    "wait",
    "Wait some seconds, then return.",
    {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]},
)


class _Wait(Tool):
    spec = WAIT

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        await trio.sleep(parameters["seconds"])
        return {"waited": parameters["seconds"]}


class SlowAgent(Agent):
    """One tool that takes its time: keeps a run in flight while faults happen."""

    name = "slow"

    def __init__(self, context: AgentContext) -> None:
        self._tools = {"wait": _Wait()}

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (WAIT,)

    def tools(self) -> Mapping[str, Tool]:
        return self._tools


class FaultAgent(Agent):
    """An agent whose metadata raises while `armed`: planning a run then hits a bug
    outside any step, where only the run's own boundary can catch it."""

    name = "fault"
    armed: ClassVar[bool] = False

    def __init__(self, context: AgentContext) -> None:
        pass

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        if cls.armed:
            raise RuntimeError(f"{INJECTED} while building the tool catalog")
        return ()

    def tools(self) -> Mapping[str, Tool]:
        return {}


AGENTS: dict[str, type[Agent]] = {"slow": SlowAgent, "fault": FaultAgent}


@pytest.fixture(autouse=True)
def disarmed() -> Any:
    FaultAgent.armed = False
    yield
    FaultAgent.armed = False


async def plant_slow_run(app: Harness, run_id: str, seconds: float) -> None:
    """An unfinished run whose plan is one slow step, ready to be resumed."""
    app.orchestrator.registry.catalog()  # built now: runs in flight reuse it
    step = {"id": "w", "agent": "slow", "action": "wait", "parameters": {"seconds": seconds}}
    await app.store.append(
        f"run-{run_id}",
        [RunRequested(run_id, f"session-of-{run_id}", "wait a while"), PlanCreated(run_id, [step])],
        correlation=run_id,
    )


async def terminal_of(app: Harness, run_id: str, wait: float = 10.0) -> RecordedEvent:
    """The run's terminal record, once it is in the log (polling, bounded)."""
    with trio.fail_after(wait):
        while True:
            for record in await app.store.read_stream(f"run-{run_id}"):
                if record.type in TERMINAL:
                    return record
            await trio.sleep(0.02)


def logged_failures(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """The text (message and traceback) of each ERROR record of `logger`."""
    records = [r for r in caplog.records if r.name == logger and r.levelname == "ERROR"]
    return [caplog.handler.format(r) for r in records]


async def test_bug_in_a_request_handler_closes_only_that_connection_with_1011(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS, server_class=FaultyServer, agents=AGENTS) as app:
            await plant_slow_run(app, "slow1", seconds=1.0)
            async with app.client() as owner, app.client() as watcher, app.client() as victim:
                head = app.store.head_position
                subscribed = await watcher.request(
                    {"type": "subscribe", "id": "w", "stream": "$all", "after": head}
                )
                assert subscribed["type"] == "subscribed"
                resumed = await owner.request({"type": "resume", "id": "r", "run_id": "slow1"})
                assert resumed["type"] == "resumed"
                await victim.send({"type": "resume", "id": "boom-1", "run_id": "boom"})
                assert await victim.closed_code() == 1011
                assert [(f["type"], f["code"], f.get("id")) for f in victim.seen] == [
                    ("error", "internal", "boom-1")
                ]
                await watcher.ping()
                await owner.ping()
                async with app.client() as newcomer:
                    await newcomer.ping()
                finished = await terminal_of(app, "slow1")
                live = await watcher.events_until(("RunCompleted",))
    assert finished.type == "RunCompleted"  # the run in flight went on to the end
    assert live[-1]["position"] == finished.position  # and the subscriber saw it live
    (failure,) = logged_failures(caplog, "server.ws._connection")
    assert "closing it with 1011" in failure
    assert f"RuntimeError: {INJECTED} in a request handler" in failure  # the traceback


async def test_bug_in_one_run_fails_that_run_and_the_server_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS, agents=AGENTS) as app:
            await plant_slow_run(app, "slow2", seconds=1.0)
            async with app.client() as owner, app.client() as client:
                resumed = await owner.request({"type": "resume", "id": "r", "run_id": "slow2"})
                assert resumed["type"] == "resumed"
                FaultAgent.armed = True
                accepted = await client.request({"type": "message", "id": "m", "text": GOAL})
                assert accepted["type"] == "accepted"
                events = await client.events_until()
                FaultAgent.armed = False
                await client.ping()
                await owner.ping()
                async with app.client() as newcomer:
                    await newcomer.ping()
                finished = await terminal_of(app, "slow2")
    failed = events[-1]
    assert failed["event_type"] == "RunFailed"
    assert failed["data"]["reason"] == "internal error (RuntimeError); see the server log"
    assert finished.type == "RunCompleted"
    assert finished.position > failed["position"]  # it was in flight when the other failed
    (failure,) = logged_failures(caplog, "server.ws._server")
    assert f"run {accepted['run_id']} failed with an internal error" in failure
    assert f"RuntimeError: {INJECTED} while building the tool catalog" in failure


class FailingProjection(Projection):
    """Fails on the first completed run it sees."""

    name = "failing"

    def _on_RunCompleted(self, record: RecordedEvent) -> None:
        raise RuntimeError(f"{INJECTED} in a projection")


async def test_failing_projection_stops_alone_and_health_and_metrics_report_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS, projections=[FailingProjection()]) as app:
            async with app.client() as client:
                for request_id in ("first", "second"):  # the second after the failure
                    await client.request({"type": "message", "id": request_id, "text": GOAL})
                    assert (await client.events_until())[-1]["event_type"] == "RunCompleted"
                    await app.wait_runs_done()
                await app.runner.wait_for(app.store.head_position)
                status, _, body = await http_request(app.port, "GET", "/healthz")
                _, _, metrics = await http_request(app.port, "GET", "/metrics")
                await client.ping()
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "degraded"
    assert health["projection_lag"] == 0
    (stopped,) = health["stopped_projections"].items()
    assert stopped[0] == "failing"
    assert stopped[1].startswith(f"RuntimeError: {INJECTED} in a projection (at position ")
    others = {k: v for k, v in health["projections"].items() if k != "failing"}
    assert set(others.values()) == {app.store.head_position}  # everyone else followed on
    assert health["projections"]["failing"] < app.store.head_position
    assert "autoagent_projections_stopped 1" in metrics.decode().splitlines()
    assert any("'failing' stopped at position" in r.getMessage() for r in caplog.records)


async def test_a_run_that_meets_an_unreadable_prompt_template_is_failed_not_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken install (a template that is not UTF-8) raises PromptUnreadable, an
    AgentError; the run boundary would take it for a refusal already in the log and
    leave the run in progress forever. It is recorded as the run's failure."""
    prompts = tmp_path / "broken" / "prompts"
    prompts.mkdir(parents=True)
    for name in ("plan", "intent", "answer", "verify", "verify_batch", "tools_compact"):
        (prompts / f"{name}.txt").write_bytes(b"\xff\xfe not utf-8")
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, LIMITS) as app:
            app.orchestrator.prompts = PromptRepository(maxsize=0)  # reads on every use
            monkeypatch.setattr(importlib.resources, "files", lambda package: prompts.parent)
            async with app.client() as client:
                accepted = await client.request({"type": "message", "id": "m", "text": GOAL})
                assert accepted["type"] == "accepted"
                events = await client.events_until()
            monkeypatch.undo()
    failed = events[-1]
    assert failed["event_type"] == "RunFailed"
    assert failed["data"]["reason"] == "internal error (PromptUnreadable); see the server log"
    (failure,) = logged_failures(caplog, "server.ws._server")
    assert "a prompt template is unusable" in failure
