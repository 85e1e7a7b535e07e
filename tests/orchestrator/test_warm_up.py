"""`Orchestrator.warm_up`: what a run would do the first time is done before it.

Real parts: the shipped `math` and `clock` agents from their entry points, the real
openai SDK against the project's simulator (so the run asks for intent, plan and answer,
each from its template), an `EventStore` over `MemoryEventLog`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio

from agents.errors import AgentError
from agents.llm import ToolCatalogCache, ToolSpec
from agents.runs._orchestrator import Orchestrator
from agents.tools import AgentContext, Tool
from agents.tools._base import Agent
from agents.tools._registry import AgentRegistry, discover_agents
from events import EventStore

from .conftest import TIMEOUT_S, make_orchestrator, sim_provider, start_simulator

GOAL = "what is 17 * 23 + 4"
BROKEN = ToolSpec(agent="broken", action="use", description="A tool whose agent cannot be built.")


class BrokenAgent(Agent):
    """An agent whose construction fails, as one with a bad setting would."""

    name = "broken"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (BROKEN,)

    def __init__(self, context: AgentContext) -> None:
        raise ValueError("no such device")

    def tools(self) -> Mapping[str, Tool]:  # pragma: no cover - never built
        return {}


class SpecsFailAgent(Agent):
    """An agent whose tool_specs() raises: plugin code the catalog runs."""

    name = "specs_fail"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        raise RuntimeError("the plugin's specs are broken")

    def __init__(self, context: AgentContext) -> None:
        self.context = context

    def tools(self) -> Mapping[str, Tool]:
        return {}


def shipped_registry(cache: ToolCatalogCache | None = None) -> AgentRegistry:
    classes = discover_agents(["math", "clock"])
    return AgentRegistry(classes, AgentContext(), catalog_cache=cache)


async def orchestrator_on_the_simulator(
    nursery: trio.Nursery, store: EventStore, cache: ToolCatalogCache | None = None
) -> Orchestrator:
    _, url = await start_simulator(nursery)
    return make_orchestrator(store, shipped_registry(cache), sim_provider(url, store))


async def test_after_warm_up_a_run_reads_no_template_and_builds_no_agent(
    nursery: trio.Nursery, store: EventStore
) -> None:
    cache = ToolCatalogCache()
    warmed = await orchestrator_on_the_simulator(nursery, store, cache)
    with trio.fail_after(TIMEOUT_S):
        failed = await warmed.warm_up()
        misses, builds = warmed.prompts.statistics().misses, warmed.registry.statistics().builds
        catalogs = cache.statistics()
        selector_indexes = warmed.selector_builds
        result = await warmed.run_goal(GOAL)
    await warmed.provider.aclose()
    assert failed == {}
    assert result.status == "completed", result.reason
    assert builds == len(warmed.registry.names)  # every agent, before any goal
    assert warmed.registry.statistics().builds == builds
    assert warmed.prompts.statistics().misses == misses  # the run read no template file
    assert cache.statistics() == catalogs  # nor built the catalog: it took the one it had
    assert selector_indexes == 1 and warmed.selector_builds == 1  # nor the tools' index


async def test_without_warm_up_the_first_run_reads_templates_and_builds_its_agent(
    nursery: trio.Nursery, store: EventStore
) -> None:
    """The counterpart of the test above: what the warm-up spares a first run."""
    cold = await orchestrator_on_the_simulator(nursery, store)
    with trio.fail_after(TIMEOUT_S):
        result = await cold.run_goal(GOAL)
    await cold.provider.aclose()
    assert result.status == "completed", result.reason
    assert cold.prompts.statistics().misses > 0
    assert cold.registry.statistics().builds == 1  # math only: agents are built on use


async def test_an_agent_that_cannot_be_built_is_reported_and_the_others_are_built(
    store: EventStore,
) -> None:
    math = discover_agents(["math"])["math"]
    registry = AgentRegistry({"math": math, "broken": BrokenAgent}, AgentContext())
    orchestrator = make_orchestrator(store, registry)
    with trio.fail_after(TIMEOUT_S):
        failed = await orchestrator.warm_up()
        assert list(failed) == ["broken"]
        assert "no such device" in failed["broken"]
        assert registry.statistics().built == 1  # math
        # A goal that needs it later builds it again, and reports the error then.
        with pytest.raises(AgentError, match="no such device"):
            await registry.agent("broken")
    assert registry.statistics().builds == 3


async def test_a_catalog_that_cannot_be_built_is_reported_and_the_agents_are_built(
    store: EventStore,
) -> None:
    math = discover_agents(["math"])["math"]
    registry = AgentRegistry({"math": math, "specs_fail": SpecsFailAgent}, AgentContext())
    orchestrator = make_orchestrator(store, registry)
    with trio.fail_after(TIMEOUT_S):
        failed = await orchestrator.warm_up()
    assert list(failed) == ["catalog"]
    assert "the plugin's specs are broken" in failed["catalog"]
    assert registry.statistics().built == 2  # both agents: the catalog's failure stops no build
