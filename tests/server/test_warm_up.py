"""Warm-up at start: the embedder loads in the background, /healthz says so meanwhile,
and a goal that needs it waits for that one load instead of starting another.

The embedding model is the only test double: a hashing embedder whose load is held at a
gate, so the test decides when "loading" ends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from agents.embeddings import Embedder
from agents.llm import ToolSpec
from agents.llm._prompting import template_names
from agents.offline import OfflineProvider
from agents.runs import Orchestrator
from agents.tools import AgentContext, Tool
from agents.tools._base import Agent
from agents.tools._registry import AgentRegistry
from events import MemoryEventLog, open_event_store
from projections import MemoryStateStore
from server.app import WarmUp, _warm_agents, agent_server, open_application
from server.config import Config, load_config
from tests.memory.conftest import HashEmbedder

TIMEOUT_S = 30


class GatedEmbedder(HashEmbedder):
    """Loading takes until `gate` is set. Like the local model's process-wide cache, a
    caller that comes while a load is in progress waits for it; counts loads and asks."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.loads = self.asked = 0
        self.loaded = False
        self.second_ask = trio.Event()
        self._loading: trio.Event | None = None

    async def _ensure_ready(self) -> None:
        self.asked += 1
        if self.asked == 2:
            self.second_ask.set()
        if self.loaded:
            await trio.lowlevel.checkpoint()
        elif self._loading is not None:
            await self._loading.wait()
        else:
            self.loads += 1
            self._loading = trio.Event()
            await self.gate.wait()
            self.loaded = True
            self._loading.set()


def config_for(tmp_path: Path, **env: str) -> Config:
    return load_config(
        env={
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(tmp_path / "workspace")]),
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_STORE__MAP_SIZE_MB": "64",
            **env,
        },
        data_dir=tmp_path / "data",
    )


def factory_of(embedder: Embedder) -> Any:
    @asynccontextmanager
    async def factory(config: Config) -> AsyncIterator[Embedder]:
        yield embedder

    return factory


async def health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        body: dict[str, Any] = (await client.get(url + "/healthz")).json()
        return body


async def test_healthz_lists_the_embedder_until_its_background_load_ends(tmp_path: Path) -> None:
    embedder = GatedEmbedder()
    config = config_for(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_application(
                config, state=MemoryStateStore(), embedder_factory=factory_of(embedder)
            ) as app,
            trio.open_nursery() as nursery,
        ):
            port = await nursery.start(agent_server(app).serve, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}"
            await app.warmup.wait("projections")  # they catch up in the background too
            await app.warmup.wait("agents")  # and the agents are built
            while_loading = await health(url)
            embedder.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            after = await health(url)
            nursery.cancel_scope.cancel()
    assert while_loading["warming"] == ["embedder"]
    assert after["warming"] == []
    assert embedder.loads == 1


async def test_a_goal_that_needs_the_embedder_waits_for_the_one_load(tmp_path: Path) -> None:
    embedder = GatedEmbedder()
    config = config_for(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=factory_of(embedder)
        ) as app:
            async with trio.open_nursery() as nursery:
                results = []

                async def remember() -> None:
                    goal = "remember that my sister lives in lisbon"
                    results.append(await app.orchestrator.run_goal(goal))

                nursery.start_soon(remember)
                await embedder.second_ask.wait()  # the goal reached the embedder...
                await trio.testing.wait_all_tasks_blocked()
                assert not results  # ...and is held by the load in progress
                embedder.gate.set()
    assert results[0].status == "completed", results[0].reason
    assert (embedder.loads, embedder.asked) == (1, 2)  # warm-up's load served the goal


async def test_nothing_warms_when_no_enabled_agent_embeds(tmp_path: Path) -> None:
    embedder = GatedEmbedder()
    config = config_for(tmp_path, AUTOAGENT_AGENTS__ENABLED='["math", "clock"]')
    with trio.fail_after(TIMEOUT_S):
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=factory_of(embedder)
        ) as app:
            assert "embedder" not in app.warmup.warming()
            result = await app.orchestrator.run_goal("what is 2 + 2")
    assert result.status == "completed"
    assert embedder.loads == 0


async def test_the_server_builds_every_agent_at_start_in_the_background(tmp_path: Path) -> None:
    embedder = GatedEmbedder()
    config = config_for(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=factory_of(embedder)
        ) as app:
            registry = app.orchestrator.registry
            await app.warmup.wait("agents")  # while the embedder still loads
            built = registry.statistics()
            templates = app.orchestrator.prompts.statistics()
            embedder.gate.set()
    assert "agents" not in app.warmup.warming()
    assert app.warmup.failed == {}
    assert built.built == built.registered == len(config.agents.enabled)
    assert templates.misses == templates.size == len(template_names())  # each read once, kept


class _HeldAgent(Agent):
    """An agent whose construction says it started, then waits for the test (in the
    worker thread building it). The test gives the class its events."""

    name = "held"
    started: threading.Event
    release: threading.Event

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (ToolSpec(agent="held", action="wait", description="Waits."),)

    def __init__(self, context: AgentContext) -> None:
        self.started.set()
        self.release.wait(TIMEOUT_S)

    def tools(self) -> Mapping[str, Tool]:
        return {}


async def test_healthz_lists_the_agents_until_they_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, release = threading.Event(), threading.Event()
    monkeypatch.setattr(_HeldAgent, "started", started, raising=False)
    monkeypatch.setattr(_HeldAgent, "release", release, raising=False)
    async with open_event_store(log=MemoryEventLog()) as store:
        registry = AgentRegistry({"held": _HeldAgent}, AgentContext())
        orchestrator = Orchestrator(store, OfflineProvider(), registry)
        warmup = WarmUp()
        warmup.start("agents")
        try:
            with trio.fail_after(TIMEOUT_S):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_warm_agents, orchestrator, warmup)
                    await trio.to_thread.run_sync(started.wait, TIMEOUT_S)  # it is building
                    while_building = warmup.warming()
                    release.set()
                    await warmup.wait("agents")
        finally:
            release.set()
    assert started.is_set()
    assert while_building == ["agents"]
    assert warmup.warming() == []
    assert warmup.failed == {}
    assert registry.statistics().built == 1
