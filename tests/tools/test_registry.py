"""Every agent registered under `autoagent.agents`: valid specs, and it builds.

A conformance check over whatever is installed, so a new agent gets it for free: names,
JSON-schema parameter objects, required names among the properties, batch forms that
exist, and a tool for every spec once the agent is built.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from agents.errors import InvalidParameters
from agents.llm import ToolSpec
from agents.llm._provider import LLMProvider
from agents.tools import AgentContext, AgentSettings, Tool
from agents.tools._base import Agent
from agents.tools._registry import AgentRegistry, discover_agents

from .conftest import TIMEOUT_S

AGENTS = discover_agents()
JSON_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
NAME = r"^[a-z][a-z0-9_]*$"
MINE = {"files", "writer", "calendar", "email", "clock", "math", "quotes"}
NOT_IDEMPOTENT = {
    "files.write",
    "writer.create_report",
    "calendar.create_event",
    "email.draft",
    "email.send",
}


def test_the_issue_agents_are_registered() -> None:
    assert set(AGENTS) >= MINE


def _specs(name: str) -> tuple[ToolSpec, ...]:
    return AGENTS[name].tool_specs()


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_tool_specs_are_valid(name: str) -> None:
    specs = _specs(name)
    assert specs, f"{name} declares no tools"
    actions = [spec.action for spec in specs]
    assert len(set(actions)) == len(actions)
    for spec in specs:
        assert spec.agent == name == AGENTS[name].name
        assert re.match(NAME, spec.action), spec.name
        assert spec.description.strip(), spec.name
        _check_schema(spec)
        if spec.batch_action is not None:
            assert spec.batchable and spec.batch_action in actions, spec.name
        assert ToolSpec.from_dict(spec.to_dict()) == spec


def _check_schema(spec: ToolSpec) -> None:
    schema = spec.parameters
    assert schema.get("type") == "object", spec.name
    properties = schema.get("properties", {})
    assert isinstance(properties, dict), spec.name
    for prop, definition in properties.items():
        assert isinstance(definition, dict), f"{spec.name}.{prop}"
        kinds = definition.get("type", [])  # no type: any value (a step's result, say)
        kinds = [kinds] if isinstance(kinds, str) else kinds
        assert set(kinds) <= JSON_TYPES, f"{spec.name}.{prop} has an unknown type"
        if "enum" in definition:
            assert definition.get("default", definition["enum"][0]) in definition["enum"]
    required = list(schema.get("required", []))
    assert set(required) <= set(properties), f"{spec.name}: required not among properties"
    assert len(set(required)) == len(required)


@pytest.mark.parametrize("name", sorted(NOT_IDEMPOTENT))
def test_tools_with_side_effects_say_they_are_not_idempotent(name: str) -> None:
    agent, action = name.split(".")
    [spec] = [s for s in _specs(agent) if s.action == action]
    assert spec.idempotent is False


@pytest.fixture
async def registry(tmp_path: Path, offline_llm: LLMProvider) -> AsyncIterator[AgentRegistry]:
    async with httpx.AsyncClient() as http:
        context = AgentContext(
            AgentSettings(quote_endpoint="http://127.0.0.1:9/"), (tmp_path,), http, offline_llm
        )
        registry = AgentRegistry.from_entry_points(context)
        try:
            yield registry
        finally:
            await registry.aclose()


async def test_every_agent_builds_with_a_tool_per_spec(registry: AgentRegistry) -> None:
    with trio.fail_after(TIMEOUT_S):
        await registry.warmup()
        for name in registry.names:
            agent = await registry.agent(name)
            tools = agent.tools()
            assert sorted(tools) == sorted(s.action for s in _specs(name))
            for action, tool in tools.items():
                assert tool.spec.name == f"{name}.{action}"
    assert registry.statistics().built == len(AGENTS)


@pytest.mark.parametrize("name", sorted(MINE))
async def test_unknown_parameters_are_refused_before_any_work(
    registry: AgentRegistry, name: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        for tool in (await registry.agent(name)).tools().values():
            with pytest.raises(InvalidParameters, match="unknown parameter 'bogus'"):
                await tool.call({"bogus": 1})


def test_the_catalog_names_every_tool() -> None:
    catalog = AgentRegistry.from_entry_points().catalog()
    expected = {f"{name}.{s.action}" for name in AGENTS for s in _specs(name)}
    assert set(catalog.by_name) == expected


class _ChangingAgent(Agent):
    """An agent whose spec objects a test swaps, as a plugin reloading its tools would."""

    name = "changing"
    specs: tuple[ToolSpec, ...] = (ToolSpec(agent="changing", action="one", description="One."),)

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return cls.specs

    def tools(self) -> Mapping[str, Tool]:  # pragma: no cover - never built here
        return {}


def test_the_cached_catalog_is_the_last_one_built_while_the_specs_are_the_same_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = AgentRegistry({"changing": _ChangingAgent, **discover_agents(["math"])})
    assert registry.cached_catalog() is None  # none built yet
    built = registry.catalog()
    assert registry.cached_catalog() is built
    # Equal content in new objects: not taken on trust, built (or found by hash) again.
    same = tuple(dataclasses.replace(s) for s in _ChangingAgent.specs)
    monkeypatch.setattr(_ChangingAgent, "specs", same)
    assert registry.cached_catalog() is None
    assert registry.catalog() is built  # the content hash finds it
    assert registry.cached_catalog() is built
    changed = (ToolSpec(agent="changing", action="two", description="Two."),)
    monkeypatch.setattr(_ChangingAgent, "specs", changed)
    assert registry.cached_catalog() is None
    assert "changing.two" in registry.catalog().by_name
    assert registry.cached_catalog() is not built


async def test_a_caller_waiting_on_a_build_that_was_cancelled_builds_the_agent_itself() -> None:
    """A build cancelled while it waited for a worker thread (all of them busy) ends with
    no agent and no failure: the caller that waited on it builds the agent, instead of
    being told that building it failed (it would raise AgentError out of the nursery)."""
    registry = AgentRegistry(discover_agents(["math"]))
    limiter = trio.to_thread.current_default_thread_limiter()
    tokens, limiter.total_tokens = limiter.total_tokens, 1
    release = threading.Event()
    first = trio.CancelScope()
    built: list[Agent] = []

    async def build_first() -> None:
        with first:
            await registry.agent("math")

    async def wait_for_it() -> None:
        built.append(await registry.agent("math"))

    try:
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                occupy = functools.partial(
                    trio.to_thread.run_sync, release.wait, abandon_on_cancel=True
                )
                nursery.start_soon(occupy)  # the only thread
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(build_first)
                await trio.testing.wait_all_tasks_blocked()  # it waits for the thread
                nursery.start_soon(wait_for_it)
                await trio.testing.wait_all_tasks_blocked()  # it waits on the first build
                first.cancel()
                await trio.testing.wait_all_tasks_blocked()
                release.set()
    finally:
        release.set()
        limiter.total_tokens = tokens
    assert len(built) == 1
    assert registry.statistics().built == 1
    assert registry.statistics().builds == 2
