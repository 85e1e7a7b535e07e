"""The composition root: the one place that builds the running application from a config.

`open_application` opens the event store, the projection state and runner (every
projection for a server; the vector indexes a one-shot command needs), the orchestrator
with its provider, embedder, HTTP client and agents, and hands them out together;
`agent_server` puts the WebSocket server on top. `serve`, `run`, `runs resume`,
`documents` and the wiring tests call these instead of wiring parts by hand, so every
command maps `[store]`, `[llm]`, `[embeddings]`, `[agents]`, `[performance]`,
`[features]`, `[resume]` and `[telemetry]` the same way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import httpx
import trio

import events
from agents.embeddings import Embedder, EmbeddingError, open_embedder
from agents.llm import CallRecorder, LLMOptions, LLMProvider, PromptRepository
from agents.offline import open_provider
from agents.runs import History, Orchestrator, OrchestratorOptions
from agents.tools import (
    AgentContext,
    AgentRegistry,
    AgentSettings,
    DocumentsAccess,
    IndexerOptions,
    MemoryAccess,
)
from events import EventStore, Sealer, StoreOptions, open_event_store
from projections import (
    DocumentsProjection,
    MemoryProjection,
    Projection,
    ProjectionRunner,
    StateStore,
    build_projections,
)
from server import leases as lease_backends
from server._access import ADMIN, Principal, token_problem
from server._render import Progress
from server._views import (
    memory_keys,
    memory_options,
    open_configured_keys,
    open_configured_state,
)
from server.config import Config, LLMConfig
from server.errors import ConfigError
from server.leases import MemoryRunLeases, RunLeases
from server.telemetry import TraceExport, open_trace_export
from server.ws import AgentServer, ServerLimits

HTTP_TIMEOUT_S = 30.0
TOKEN_ENV = "AUTOAGENT_TOKEN"

EmbedderFactory = Callable[[Config], AbstractAsyncContextManager[Embedder]]


def store_options(config: Config) -> StoreOptions:
    """Map the `[store]` section onto the event store's options."""
    return StoreOptions(
        sync=config.store.sync,
        map_size_mb=config.store.map_size_mb,
        compress_over_bytes=config.store.compress_over_bytes,
        max_event_bytes=config.store.max_event_bytes,
        watch_interval_s=config.store.watch_interval_s,
        commit_linger_s=config.store.commit_linger_ms / 1000,
    )


@asynccontextmanager
async def open_configured_store(
    config: Config, sealer: Sealer | None = None
) -> AsyncIterator[EventStore]:
    """The event store of `[store]`: LMDB in the data dir, or the PostgreSQL log at
    `store.url` (`store.backend`), with its writer running; closed on exit."""
    options = store_options(config)
    if config.store.backend == "lmdb":
        async with open_event_store(config.store.data_path, options, sealer=sealer) as store:
            yield store
        return
    url, compress_over = config.store.url, options.compress_over_bytes
    # Named in the worker thread: the first use imports psycopg, not on the event loop.
    log = await trio.to_thread.run_sync(
        lambda: events.PostgresEventLog.open(url, compress_over=compress_over)
    )
    async with open_event_store(options=options, log=log, sealer=sealer) as store:
        yield store


@asynccontextmanager
async def open_run_leases(config: Config, node_id: str | None = None) -> AsyncIterator[RunLeases]:
    """This node's run leases: in this process with LMDB (one server per data dir), in
    the log's PostgreSQL database with `store.backend = "postgres"` (several nodes).
    `node_id` replaces the configured one (a one-shot command is a node of its own)."""
    node = node_id or config.server.node_name(config.store.data_path)
    ttl = config.resume.lease_ttl_s
    if config.store.backend != "postgres":
        yield MemoryRunLeases(node, ttl)
        return
    url = config.store.url
    # Named in the worker thread: the first use imports psycopg, not on the event loop.
    leases = await trio.to_thread.run_sync(
        lambda: lease_backends.PostgresRunLeases.open(url, node, ttl)
    )
    try:
        yield leases
    finally:
        await trio.to_thread.run_sync(leases.close)


def llm_options(config: LLMConfig) -> LLMOptions:
    """The `LLMOptions` the providers take, from the checked `[llm]` config."""
    return LLMOptions(
        provider=config.provider,
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        model=config.model,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
        rpm_limit=config.rpm_limit,
        tpm_limit=config.tpm_limit,
        max_parallel_calls=config.max_parallel_calls,
    )


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
        compact_tool_catalog=features.compact_tool_catalog,
        tool_selection=features.tool_selection,
        compact_history=features.compact_history,
        compact_plan_steps=features.compact_plan_steps,
        intent_in_plan=features.intent_in_plan,
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
    llm: LLMProvider,
    memory: MemoryAccess | None = None,
    documents: DocumentsAccess | None = None,
) -> AgentContext:
    agents = config.agents
    settings = AgentSettings(
        quote_endpoint=agents.quote_endpoint,
        max_file_bytes=agents.max_file_bytes,
        calendar_path=agents.calendar_path,
        mailbox_path=agents.mailbox_path,
        outbox_path=agents.outbox_path,
        email_from=agents.email_from,
        smtp_host=agents.smtp_host,
        smtp_port=agents.smtp_port,
        web_allow=tuple(agents.web_allow),
    )
    return AgentContext(
        settings, agents.workspace_paths, http, llm, store, memory=memory, documents=documents
    )


def indexer_options(config: Config) -> IndexerOptions:
    """The documents indexer's `[agents]` documents_* settings."""
    return IndexerOptions(
        chunk_chars=config.agents.documents_chunk_chars,
        max_file_bytes=config.agents.documents_max_file_bytes,
        min_score=config.agents.documents_min_score,
    )


def open_configured_embedder(config: Config) -> AbstractAsyncContextManager[Embedder]:
    """The `[embeddings]` embedder, loaded on first use (start-up stays fast)."""
    embeddings = config.embeddings
    openai = None
    if embeddings.provider == "openai":
        from agents.embeddings import OpenAIEmbedderOptions  # the SDK for this provider only

        api_key = os.environ.get(config.llm.api_key_env)
        openai = OpenAIEmbedderOptions(base_url=config.llm.base_url, api_key=api_key)
    return open_embedder(
        embeddings.provider,
        model=embeddings.model,
        batch_size=embeddings.batch_size,
        batch_embeddings=config.features.batch_embeddings,
        openai=openai,
        local_runtime=embeddings.local_runtime,
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
    embedder_factory: EmbedderFactory | None = None,
    embedder: Embedder | None = None,
) -> AsyncIterator[Orchestrator]:
    """The orchestrator with its provider, shared HTTP client and agents; closed on exit.

    `memory_index` / `documents_index` / `wait_for`: the running memory and documents
    projections and their runner's wait (read-your-writes), for recall and document
    search; the key store is the memory projection's own (one per process).
    `embedder_factory` replaces the `[embeddings]` embedder (tests use a hashed one);
    `embedder` is one already open (the caller's, not closed here).
    """
    limits = httpx.Limits(max_connections=config.performance.max_parallel_steps * 2)
    keys = memory_index.keys if memory_index is not None else memory_keys(config)
    async with (
        httpx.AsyncClient(limits=limits, timeout=HTTP_TIMEOUT_S) as http,
        _given_or_opened(embedder, embedder_factory or open_configured_embedder, config) as used,
    ):
        async with open_provider(llm_options(config.llm), CallRecorder(store)) as provider:
            memory = MemoryAccess(keys, used, memory_index, wait_for)
            documents = DocumentsAccess(used, documents_index, wait_for, indexer_options(config))
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


@asynccontextmanager
async def _given_or_opened(
    embedder: Embedder | None, factory: EmbedderFactory, config: Config
) -> AsyncIterator[Embedder]:
    if embedder is not None:
        yield embedder
        return
    async with factory(config) as opened:
        yield opened


@dataclass(frozen=True)
class LiveIndexes:
    """The projections running in this process (None when not asked for) and the
    runner's wait (read-your-writes)."""

    memory: MemoryProjection | None
    documents: DocumentsProjection | None
    wait_for: Callable[[int], Awaitable[None]]


@asynccontextmanager
async def open_live_indexes(
    config: Config, store: EventStore, *, memory: bool = True, documents: bool = True
) -> AsyncIterator[LiveIndexes]:
    """The chosen vector projections caught up with the log and followed live until exit.

    For one-shot commands (`run`, `documents`) on a data dir without a server: recall
    and document search read live FAISS indexes. Snapshot and checkpoint are saved on
    exit; a server on the same data dir that commits second finds the checkpoint moved
    and reloads.
    """
    options = memory_options(config)
    keys = await open_configured_keys(config)
    memories = MemoryProjection(keys, options) if memory else None
    docs = DocumentsProjection(options) if documents else None
    chosen: list[Projection] = [p for p in (memories, docs) if p is not None]
    async with _running_projections(config, store, chosen, None, "catching up") as runner:
        yield LiveIndexes(memories, docs, runner.wait_for)


@asynccontextmanager
async def _running_projections(
    config: Config,
    store: EventStore,
    chosen: list[Projection],
    state: StateStore | None,
    label: str,
    warmup: WarmUp | None = None,
) -> AsyncIterator[ProjectionRunner]:
    """A runner over `chosen`, caught up (progress on a terminal) and following live.

    With `warmup`, the catch-up runs in the background instead: the runner is handed
    out at once and `warmup` lists "projections" until it is done. Readers that need a
    projection's state wait for their position (`wait_for`), so nothing reads it early.
    `state` None opens the data dir's projection store (closed on exit). The
    projections are closed on exit either way: closing waits for a FAISS training
    thread, so it is shielded.
    """
    try:
        owned = state is None
        if state is None:
            state = await trio.to_thread.run_sync(open_configured_state, config)
        try:
            runner = ProjectionRunner(
                store.log,
                state,
                chosen,
                snapshot_every=config.performance.snapshot_every,
                linger_s=config.performance.projection_linger_ms / 1000,
            )
            async with trio.open_nursery() as nursery:
                progress = Progress(label + " " + ", ".join(p.name for p in chosen))
                follow = functools.partial(runner.run, store, progress=progress.update)
                if warmup is None:
                    await nursery.start(follow)
                    progress.close()
                else:
                    warmup.start("projections")
                    nursery.start_soon(_catch_up, nursery, follow, progress, warmup)
                yield runner
                nursery.cancel_scope.cancel()
        finally:
            if owned:
                state.close()
    finally:
        with trio.CancelScope(shield=True):
            for projection in chosen:
                if isinstance(projection, MemoryProjection | DocumentsProjection):
                    await trio.to_thread.run_sync(projection.close)


async def _catch_up(
    nursery: trio.Nursery,
    follow: Callable[..., Awaitable[None]],
    progress: Progress,
    warmup: WarmUp,
) -> None:
    """Start the runner (it reports once caught up), then say the projections are warm."""
    await nursery.start(follow)
    progress.close()
    warmup.finish("projections")


@dataclass
class WarmUp:
    """Parts still loading in the background after start; /healthz lists them."""

    pending: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    _done: dict[str, trio.Event] = field(default_factory=dict)

    def warming(self) -> list[str]:
        return sorted(self.pending)

    def start(self, part: str) -> None:
        self.pending.add(part)
        self._done.setdefault(part, trio.Event())

    def finish(self, part: str) -> None:
        self.pending.discard(part)
        self._done.setdefault(part, trio.Event()).set()

    async def wait(self, part: str) -> None:
        """Until `part` is warm (at once if it never needed warming)."""
        if part in self.pending:
            await self._done[part].wait()
        else:
            await trio.lowlevel.checkpoint()


@dataclass(frozen=True)
class Application:
    """The parts of a running autoagent, built from one config by `open_application`."""

    config: Config
    store: EventStore
    runner: ProjectionRunner
    orchestrator: Orchestrator
    warmup: WarmUp = field(default_factory=WarmUp)
    traces: TraceExport | None = None  # the live trace export, when configured
    leases: RunLeases | None = None  # this node's run leases (None: this process alone)


def _embedder_is_used(config: Config) -> bool:
    """Whether an enabled agent embeds text (memory, documents) with the local model.

    The OpenAI embedder's warm-up is a paid request, so it is not warmed in advance.
    """
    used = {"memory", "documents"} & set(config.agents.enabled)
    return bool(used) and config.embeddings.provider == "local"


async def _warm_embedder(embedder: Embedder, warmup: WarmUp) -> None:
    """Load the embedder in the background; a goal that needs it meanwhile waits for
    this load (the model cache loads once), and one that comes later finds it ready."""
    try:
        await embedder.warm_up()
    except EmbeddingError as exc:  # the goal that needs it reports the same error
        warmup.failed["embedder"] = str(exc)
    finally:
        warmup.finish("embedder")


async def _warm_agents(orchestrator: Orchestrator, warmup: WarmUp) -> None:
    """Prompt templates, tool catalog and agents ready before the first goal needs them
    (`Orchestrator.warm_up`); a goal meanwhile shares the builds in progress. An agent
    that fails to build is reported by the goal that uses it, as without the warm-up."""
    try:
        failed = await orchestrator.warm_up()
    finally:
        warmup.finish("agents")
    if failed:
        warmup.failed["agents"] = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))


def _projections_for(config: Config, every: bool) -> list[Projection]:
    """Every projection (a server), or the vector indexes the enabled agents read."""
    keys, options = memory_keys(config), memory_options(config)
    if every:
        return build_projections(None, config.performance.session_window, keys=keys, memory=options)
    chosen: list[Projection] = []
    if "memory" in config.agents.enabled:
        chosen.append(MemoryProjection(keys, options))
    if "documents" in config.agents.enabled:
        chosen.append(DocumentsProjection(options))
    return chosen


@asynccontextmanager
async def open_application(
    config: Config,
    *,
    every_projection: bool = True,
    state: StateStore | None = None,
    embedder_factory: EmbedderFactory | None = None,
    node_id: str | None = None,
) -> AsyncIterator[Application]:
    """Store, projections (caught up, followed live) and orchestrator, closed on exit.

    `every_projection` False runs only the vector indexes the enabled agents read (what
    a one-shot command needs). `state` replaces the data dir's projection store (tests
    pass a `MemoryStateStore`); `embedder_factory` the `[embeddings]` embedder; `node_id`
    the configured node id in the run leases.

    The local embedder starts loading in the background at once, the projections catch
    up in the background too, and the orchestrator reads its prompt templates and
    builds every enabled agent (`Orchestrator.warm_up`, a few ms; `WarmUp` lists each
    part until done): a server listens at once, and the first goal is planned while they
    finish; the first goal that remembers or searches no longer pays for the model load
    on its own path. A one-shot `autoagent run` warms the same way, in parallel with its
    plan call; what failed to warm up is in `warmup.failed` (the goal that needs it
    reports the error itself).
    """
    warmup = WarmUp()
    await open_configured_keys(config)  # connects (PostgreSQL) in a worker thread, once
    async with (
        (embedder_factory or open_configured_embedder)(config) as embedder,
        trio.open_nursery() as background,
    ):
        if _embedder_is_used(config):
            warmup.start("embedder")
            background.start_soon(_warm_embedder, embedder, warmup)
        async with (
            open_run_leases(config, node_id) as leases,
            open_configured_store(config, Sealer(memory_keys(config))) as store,
            _running_projections(
                config,
                store,
                _projections_for(config, every_projection),
                state,
                "projections",
                warmup,
            ) as runner,
        ):
            memory = runner.projections.get(MemoryProjection.name)
            documents = runner.projections.get(DocumentsProjection.name)
            opened_at = store.head_position

            async def wait_for(position: int) -> None:
                # The projections catch up in the background: a reader waits for what
                # the log held at start as well as for its own writes.
                await runner.wait_for(max(position, opened_at))

            async with (
                # Only with `telemetry.otlp_endpoint` set; closed after the orchestrator,
                # so the runs that ended are still exported.
                open_trace_export(store, config.telemetry.otlp_endpoint) as traces,
                open_orchestrator(
                    config,
                    store,
                    memory_index=memory if isinstance(memory, MemoryProjection) else None,
                    documents_index=(
                        documents if isinstance(documents, DocumentsProjection) else None
                    ),
                    wait_for=wait_for,
                    embedder=embedder,
                ) as orchestrator,
                trio.open_nursery() as warming,
            ):
                warmup.start("agents")
                warming.start_soon(_warm_agents, orchestrator, warmup)
                yield Application(config, store, runner, orchestrator, warmup, traces, leases)
                warming.cancel_scope.cancel()
        background.cancel_scope.cancel()


def server_tokens(config: Config, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every token the server accepts: `server.tokens`, `AUTOAGENT_TOKEN` and the
    principals' (each refused when too short or missing)."""
    return tuple(server_principals(config, env))


def server_principals(config: Config, env: Mapping[str, str] | None = None) -> dict[str, Principal]:
    """Token -> principal: `server.tokens` and `AUTOAGENT_TOKEN` stand for `admin`, each
    `server.principals` entry's token is read from its `token_env` variable.

    A principal whose variable is unset or too short, two principals with one name, or
    one token given to two principals stops start-up with an error naming the setting.
    """
    env = os.environ if env is None else env
    extra = env.get(TOKEN_ENV, "").strip()
    problem = token_problem(extra) if extra else None
    if problem is not None:
        raise ConfigError(problem, source=TOKEN_ENV)
    principals = {t: ADMIN for t in (*config.server.tokens, extra) if t}
    names = {ADMIN.name} if principals else set()
    for index, entry in enumerate(config.server.principals):
        where = f"server.principals item {index} ({entry.name!r})"
        token = env.get(entry.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"{where}: environment variable {entry.token_env} is not set",
                source=entry.token_env,
            )
        problem = token_problem(token)
        if problem is not None:
            raise ConfigError(f"{where}: {problem}", source=entry.token_env)
        if entry.name in names:
            raise ConfigError(
                f"{where}: another principal is already named {entry.name!r}",
                source="server.principals",
            )
        if token in principals:
            raise ConfigError(
                f"{where}: its token is already another principal's", source=entry.token_env
            )
        names.add(entry.name)
        principals[token] = Principal(entry.name, entry.role)
    return principals


def server_limits(config: Config) -> ServerLimits:
    server = config.server
    return ServerLimits(
        max_frame_bytes=server.max_frame_bytes,
        requests_per_second=server.requests_per_second,
        max_connections=server.max_connections,
        max_connections_per_token=server.max_connections_per_token,
        max_runs_per_session=server.max_runs_per_session,
        slow_client_timeout_s=server.slow_client_timeout_s,
        hello_timeout_s=server.hello_timeout_s,
        idle_timeout_s=server.idle_timeout_s,
    )


def agent_server(app: Application) -> AgentServer:
    """The WebSocket server over a running application, with `[server]`'s limits and tokens."""
    return AgentServer(
        app.store,
        app.orchestrator,
        app.runner,
        server_limits(app.config),
        warming=app.warmup.warming,
        allowed_origins=app.config.server.allowed_origins,
        metrics_public=app.config.server.metrics_public,
        principals=server_principals(app.config),
        console=app.config.server.console,
        leases=app.leases,
    )
