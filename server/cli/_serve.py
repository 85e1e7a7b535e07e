"""`autoagent serve`: own the event store and the projections kept from it.

The server holds the store open with its writer running, brings every projection up
to the log head (with a progress bar on a terminal), follows the log live, and waits
for SIGINT/SIGTERM. Runs left unfinished by a crash are resumed from the log. On a
signal everything is cancelled between batches: queued appends commit, snapshots are
flushed, unfinished runs stay in the log for the next start, and the process exits 0.
The WebSocket API is wired in by a later issue.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from typing import TextIO

import trio

from agents.runs import Orchestrator, load_run
from events import EventStore, StoreOptions, open_event_store
from projections import (
    DocumentsProjection,
    LmdbStateStore,
    MemoryProjection,
    ProjectionRunner,
    build_projections,
)
from server._render import Progress
from server._views import memory_keys, memory_options, projections_path
from server.app import open_orchestrator
from server.config import Config
from server.ws import AgentServer, ServerLimits, check_bind

TOKEN_ENV = "AUTOAGENT_TOKEN"


def store_options(config: Config) -> StoreOptions:
    """Map the `[store]` section onto the event store's options."""
    return StoreOptions(
        sync=config.store.sync,
        map_size_mb=config.store.map_size_mb,
        compress_over_bytes=config.store.compress_over_bytes,
        max_event_bytes=config.store.max_event_bytes,
    )


async def _stop_on_signal(
    signals: AsyncIterator[int], scope: trio.CancelScope, out: TextIO
) -> None:
    async for signum in signals:
        out.write(f"autoagent: {signal.Signals(signum).name} received, stopping\n")
        out.flush()
        scope.cancel()
        return


async def _run_orchestrator(
    config: Config,
    store: EventStore,
    runner: ProjectionRunner,
    *,
    task_status: trio.TaskStatus[Orchestrator],
) -> None:
    """Own the orchestrator (provider, HTTP client, agents) for the server's lifetime."""
    memory = runner.projection(MemoryProjection.name)
    documents = runner.projection(DocumentsProjection.name)
    assert isinstance(memory, MemoryProjection)
    assert isinstance(documents, DocumentsProjection)
    async with open_orchestrator(
        config, store, memory_index=memory, documents_index=documents, wait_for=runner.wait_for
    ) as orchestrator:
        task_status.started(orchestrator)
        await trio.sleep_forever()


def server_tokens(config: Config, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Tokens from `server.tokens` plus `AUTOAGENT_TOKEN`."""
    extra = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    return tuple(t for t in (*config.server.tokens, extra) if t)


def server_limits(config: Config) -> ServerLimits:
    server = config.server
    return ServerLimits(
        max_frame_bytes=server.max_frame_bytes,
        requests_per_second=server.requests_per_second,
        max_connections=server.max_connections,
        max_connections_per_token=server.max_connections_per_token,
        max_runs_per_session=server.max_runs_per_session,
        slow_client_timeout_s=server.slow_client_timeout_s,
    )


async def serve(config: Config, out: TextIO = sys.stdout) -> int:
    path = config.store.data_path
    tokens = server_tokens(config)
    check_bind(config.server.host, tokens)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_event_store(path, store_options(config)) as store:
            state = await trio.to_thread.run_sync(
                functools.partial(
                    LmdbStateStore.open, projections_path(config), sync=config.store.sync
                )
            )
            try:
                await _serve_store(config, store, state, tokens, signals, out)
            finally:
                state.close()
    out.write("autoagent: stopped cleanly\n")
    out.flush()
    return 0


async def _serve_store(
    config: Config,
    store: EventStore,
    state: LmdbStateStore,
    tokens: tuple[str, ...],
    signals: AsyncIterator[int],
    out: TextIO,
) -> None:
    runner = ProjectionRunner(
        store.log,
        state,
        build_projections(
            None,
            config.performance.session_window,
            keys=memory_keys(config),
            memory=memory_options(config),
        ),
        snapshot_every=config.performance.snapshot_every,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope, out)
        progress = Progress("projections")
        await nursery.start(functools.partial(runner.run, store, progress=progress.update))
        progress.close()
        orchestrator = await nursery.start(_run_orchestrator, config, store, runner)
        app = AgentServer(store, orchestrator, runner, server_limits(config), tokens)
        port = await nursery.start(app.serve, config.server.host, config.server.port)
        out.write(
            f"autoagent: event store open at {config.store.data_path.resolve()} (head position "
            f"{store.head_position}, projections at {runner.position}); Ctrl-C to stop\n"
            f"autoagent: listening on ws://{config.server.host}:{port} "
            f"(HTTP /healthz, /metrics; auth {'on' if tokens else 'off'})\n"
        )
        out.flush()
        unfinished = await orchestrator.unfinished_runs()
        for run_id in unfinished:
            state_of_run = await load_run(store, run_id)
            app.start_run(run_id, state_of_run.session_id, None, resume=True)
        if unfinished:
            out.write(f"autoagent: resumed {len(unfinished)} unfinished run(s)\n")
            out.flush()
