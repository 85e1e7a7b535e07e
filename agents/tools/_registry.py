"""The lazy agent registry: agents are classes found through the `autoagent.agents`
entry-point group; the tool catalog comes from their cheap `tool_specs()` (cached by
content hash); an agent is constructed on first use, once, even when several steps ask
for it at the same moment. `warmup(names)` builds several in parallel.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import trio

from agents.errors import AgentError, UnknownAgent
from agents.llm import ToolCatalog, ToolCatalogCache, ToolSpec
from agents.tools._base import Agent, Tool
from agents.tools._context import AgentContext

ENTRY_POINT_GROUP = "autoagent.agents"


@dataclass(frozen=True, slots=True)
class RegistryStatistics:
    registered: int
    built: int
    builds: int


def discover_agents(enabled: Iterable[str] | None = None) -> dict[str, type[Agent]]:
    """Agent classes registered under the entry-point group, filtered by `enabled`."""
    wanted = None if enabled is None else set(enabled)
    found: dict[str, type[Agent]] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if wanted is None or entry.name in wanted:
            found[entry.name] = entry.load()
    return found


class AgentRegistry:
    """Agent classes by name, built lazily with one shared context."""

    def __init__(
        self,
        classes: Mapping[str, type[Agent]],
        context: AgentContext | None = None,
        catalog_cache: ToolCatalogCache | None = None,
    ) -> None:
        self._classes = dict(classes)
        self._context = context or AgentContext()
        self._catalog_cache = catalog_cache or ToolCatalogCache()
        self._agents: dict[str, Agent] = {}
        self._building: dict[str, trio.Event] = {}
        self._failed: dict[str, BaseException] = {}
        self._builds = 0
        self._catalog: ToolCatalog | None = None
        self._last_built: tuple[tuple[ToolSpec, ...], ToolCatalog] | None = None

    @classmethod
    def from_entry_points(
        cls, context: AgentContext | None = None, enabled: Iterable[str] | None = None
    ) -> AgentRegistry:
        return cls(discover_agents(enabled), context)

    @property
    def names(self) -> list[str]:
        return sorted(self._classes)

    def catalog(self) -> ToolCatalog:
        """Every tool's spec, without building any agent (cached by content hash)."""
        specs = self._specs()
        catalog = self._catalog_cache.get(specs)
        # One assignment: a `cached_catalog` on the event loop, while two of these run in
        # worker threads, sees a catalog with the very specs it was built from.
        self._last_built = (specs, catalog)
        self._catalog = catalog
        return catalog

    def cached_catalog(self) -> ToolCatalog | None:
        """The catalog `catalog` built last, when every agent still gives the very same
        spec objects; None when none was built or a spec is another object. No hashing:
        cheap enough for the event loop, where `catalog` belongs in a worker thread.

        Specs are frozen dataclasses and the agents' are module constants; a spec whose
        parameters dict were edited in place would not be seen here (`catalog`, which
        hashes the content, would see it).
        """
        if self._last_built is None:
            return None
        last, catalog = self._last_built
        specs = self._specs()
        if len(specs) != len(last) or any(a is not b for a, b in zip(specs, last, strict=True)):
            return None
        return catalog

    def _specs(self) -> tuple[ToolSpec, ...]:
        return tuple(spec for agent in self._classes.values() for spec in agent.tool_specs())

    def spec(self, agent: str, action: str) -> ToolSpec | None:
        """One tool's spec; the per-step hot path, so it reuses the last catalog built."""
        catalog = self._catalog or self.catalog()
        return catalog.get(f"{agent}.{action}")

    async def agent(self, name: str) -> Agent:
        """The agent `name`, built on first use; concurrent first calls share one build."""
        if name in self._agents:
            return self._agents[name]
        if name not in self._classes:
            raise UnknownAgent(name, self.names)
        if name in self._building:
            await self._building[name].wait()
            if name not in self._agents and name not in self._failed:
                # The build was cancelled (its caller shut down) before it ended: this
                # caller builds it instead of reporting a failure that did not happen.
                return await self.agent(name)
            return self._built(name)
        self._building[name] = done = trio.Event()
        self._failed.pop(name, None)  # a failure of an earlier build is not this one's
        try:
            self._builds += 1
            self._agents[name] = await trio.to_thread.run_sync(self._classes[name], self._context)
        except Exception as exc:
            self._failed[name] = exc
            raise AgentError(f"building agent {name!r} failed: {exc!r}") from exc
        finally:
            done.set()
            del self._building[name]
        return self._agents[name]

    def _built(self, name: str) -> Agent:
        if name in self._agents:
            return self._agents[name]
        raise AgentError(f"building agent {name!r} failed: {self._failed.get(name)!r}")

    async def tool(self, agent: str, action: str) -> Tool:
        tools = (await self.agent(agent)).tools()
        if action not in tools:
            raise UnknownAgent(f"{agent}.{action}", [f"{agent}.{a}" for a in tools])
        return tools[action]

    async def warmup(self, names: Sequence[str] | None = None) -> None:
        """Build several agents in parallel (all of them by default)."""
        async with trio.open_nursery() as nursery:
            for name in names if names is not None else self.names:
                nursery.start_soon(self.agent, name)

    async def aclose(self) -> None:
        for agent in self._agents.values():
            await agent.aclose()
        self._agents.clear()

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(len(self._classes), len(self._agents), self._builds)
