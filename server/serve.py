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
import signal
import sys
from collections.abc import AsyncIterator
from typing import TextIO

import trio

from agents.orchestrator import Orchestrator
from events import EventStore, StoreOptions, open_event_store
from projections import LmdbStateStore, ProjectionRunner, build_projections

from .agent_wiring import open_orchestrator
from .config import Config
from .render import Progress
from .views import projections_path


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
    config: Config, store: EventStore, *, task_status: trio.TaskStatus[Orchestrator]
) -> None:
    """Own the orchestrator (provider, HTTP client, agents) for the server's lifetime."""
    async with open_orchestrator(config, store) as orchestrator:
        task_status.started(orchestrator)
        await trio.sleep_forever()


async def serve(config: Config, out: TextIO = sys.stdout) -> int:
    path = config.store.data_path
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_event_store(path, store_options(config)) as store:
            state = await trio.to_thread.run_sync(
                functools.partial(
                    LmdbStateStore.open, projections_path(config), sync=config.store.sync
                )
            )
            try:
                runner = ProjectionRunner(
                    store.log,
                    state,
                    build_projections(None, config.performance.session_window),
                    snapshot_every=config.performance.snapshot_every,
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope, out)
                    progress = Progress("projections")
                    await nursery.start(
                        functools.partial(runner.run, store, progress=progress.update)
                    )
                    progress.close()
                    orchestrator = await nursery.start(_run_orchestrator, config, store)
                    out.write(
                        f"autoagent: event store open at {path.resolve()} (head position "
                        f"{store.head_position}, projections at {runner.position}); "
                        "Ctrl-C to stop\n"
                    )
                    out.flush()
                    resumed = await orchestrator.resume_unfinished()
                    if resumed:
                        out.write(f"autoagent: resumed {len(resumed)} unfinished run(s)\n")
                        out.flush()
            finally:
                state.close()
    out.write("autoagent: stopped cleanly\n")
    out.flush()
    return 0
