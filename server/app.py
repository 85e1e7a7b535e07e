"""Build the orchestrator from the configuration: provider, agents, options.

One place maps `[llm]`, `[agents]`, `[performance]`, `[features]` and `[resume]` onto
the agents layer, so `serve`, `run` and `runs resume` behave the same.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx

from agents.embeddings import Embedder, OpenAIEmbedderOptions, open_embedder
from agents.llm import CallRecorder, PromptRepository
from agents.offline import open_provider
from agents.runs import History, Orchestrator, OrchestratorOptions
from agents.tools import AgentContext, AgentRegistry, DocumentsAccess, IndexerOptions, MemoryAccess
from events import EventStore
from projections import DocumentsProjection, MemoryProjection
from server._llm_wiring import llm_options
from server._views import memory_keys
from server.config import Config

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
        approval_tools=config.agents.require_approval,
        retry_non_idempotent=config.resume.retry_non_idempotent,
        step_timeout_s=performance.step_timeout_s,
        max_goal_chars=config.agents.max_goal_chars,
        session_window=performance.session_window,
    )


def agent_context(
    config: Config,
    store: EventStore,
    http: httpx.AsyncClient,
    llm: object,
    memory: MemoryAccess | None = None,
    documents: DocumentsAccess | None = None,
) -> AgentContext:
    agents = config.agents
    settings = {
        "quote_endpoint": agents.quote_endpoint,
        "max_file_bytes": agents.max_file_bytes,
        "calendar_path": agents.calendar_path,
        "mailbox_path": agents.mailbox_path,
        "outbox_path": agents.outbox_path,
        "email_from": agents.email_from,
        "smtp_host": agents.smtp_host,
        "smtp_port": agents.smtp_port,
        "web_allow": agents.web_allow,
    }
    return AgentContext(
        settings, agents.workspace_paths, http, llm, store, memory=memory, documents=documents
    )


def indexer_options(config: Config) -> IndexerOptions:
    """The documents indexer's `[agents]` documents_* settings."""
    return IndexerOptions(
        chunk_chars=config.agents.documents_chunk_chars,
        max_file_bytes=config.agents.documents_max_file_bytes,
    )


def open_configured_embedder(config: Config) -> AbstractAsyncContextManager[Embedder]:
    """The `[embeddings]` embedder, loaded on first use (start-up stays fast)."""
    embeddings = config.embeddings
    openai = None
    if embeddings.provider == "openai":
        api_key = os.environ.get(config.llm.api_key_env)
        openai = OpenAIEmbedderOptions(base_url=config.llm.base_url, api_key=api_key)
    return open_embedder(
        embeddings.provider,
        model=embeddings.model,
        batch_size=embeddings.batch_size,
        batch_embeddings=config.features.batch_embeddings,
        openai=openai,
        warm_up=False,
    )


@asynccontextmanager
async def open_orchestrator(
    config: Config,
    store: EventStore,
    history: History | None = None,
    *,
    memory_index: MemoryProjection | None = None,
    documents_index: DocumentsProjection | None = None,
    wait_for: Callable[[int], Awaitable[None]] | None = None,
) -> AsyncIterator[Orchestrator]:
    """The orchestrator with its provider, shared HTTP client and agents; closed on exit.

    `memory_index` / `documents_index` / `wait_for`: the running memory and documents
    projections and their runner's wait (read-your-writes), for recall and document
    search; the key store is the memory projection's own (one per process).
    """
    limits = httpx.Limits(max_connections=config.performance.max_parallel_steps * 2)
    keys = memory_index.keys if memory_index is not None else memory_keys(config)
    async with (
        httpx.AsyncClient(limits=limits, timeout=HTTP_TIMEOUT_S) as http,
        open_configured_embedder(config) as embedder,
    ):
        async with open_provider(llm_options(config.llm), CallRecorder(store)) as provider:
            memory = MemoryAccess(keys, embedder, memory_index, wait_for)
            documents = DocumentsAccess(
                embedder, documents_index, wait_for, indexer_options(config)
            )
            context = agent_context(config, store, http, provider, memory, documents)
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
