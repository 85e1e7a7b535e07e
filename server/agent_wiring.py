"""Build the orchestrator from the configuration: provider, agents, options.

One place maps `[llm]`, `[agents]`, `[performance]`, `[features]` and `[resume]` onto
the agents layer, so `serve`, `run` and `runs resume` behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from agents.orchestrator import History, Orchestrator, OrchestratorOptions
from agents.prompting import PromptRepository
from agents.providers import open_provider
from agents.recorder import CallRecorder
from agents.registry import AgentRegistry
from agents.tools.base import AgentContext
from events import EventStore

from .config import Config
from .llm_wiring import llm_options

HTTP_TIMEOUT_S = 30.0


def orchestrator_options(config: Config) -> OrchestratorOptions:
    features, performance = config.features, config.performance
    return OrchestratorOptions(
        max_parallel_steps=performance.max_parallel_steps,
        parallel_execution=features.parallel_execution,
        async_planner=features.async_planner,
        background_verification=features.background_verification,
        step_batching=features.step_batching,
        verify_before_dependents=config.agents.verify_before_dependents,
        streaming_plan=features.streaming_plan,
        retry_non_idempotent=config.resume.retry_non_idempotent,
        step_timeout_s=performance.step_timeout_s,
        max_goal_chars=config.agents.max_goal_chars,
        session_window=performance.session_window,
    )


def agent_context(
    config: Config, store: EventStore, http: httpx.AsyncClient, llm: object
) -> AgentContext:
    settings = {"quote_endpoint": config.agents.quote_endpoint}
    return AgentContext(settings, config.agents.workspace_paths, http, llm, store)


@asynccontextmanager
async def open_orchestrator(
    config: Config, store: EventStore, history: History | None = None
) -> AsyncIterator[Orchestrator]:
    """The orchestrator with its provider, shared HTTP client and agents; closed on exit."""
    limits = httpx.Limits(max_connections=config.performance.max_parallel_steps * 2)
    async with httpx.AsyncClient(limits=limits, timeout=HTTP_TIMEOUT_S) as http:
        async with open_provider(llm_options(config.llm), CallRecorder(store)) as provider:
            context = agent_context(config, store, http, provider)
            registry = AgentRegistry.from_entry_points(context, config.agents.enabled)
            try:
                yield Orchestrator(
                    store,
                    provider,
                    registry,
                    prompts=PromptRepository(config.performance.prompt_cache_size),
                    options=orchestrator_options(config),
                    history=history,
                )
            finally:
                await registry.aclose()
