"""The vector projections (`memory`, `documents`) running inside a one-shot command.

`autoagent run` and `autoagent documents` work on the data dir without a server, yet
recall and document search read live FAISS indexes. This opens the projection state,
catches the chosen projections up with the log (a progress bar on a terminal), follows
the log while the command runs, and saves snapshot and checkpoint on exit. A server
running on the same data dir saves its own: whichever commits second finds the
checkpoint moved and reloads.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from events import EventStore
from projections import (
    DocumentsProjection,
    LmdbStateStore,
    MemoryProjection,
    Projection,
    ProjectionRunner,
)
from server._render import Progress
from server._views import memory_keys, memory_options, projections_path
from server.config import Config


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
    """The chosen projections caught up with the log and followed live until exit."""
    options = memory_options(config)
    memories = MemoryProjection(memory_keys(config), options) if memory else None
    docs = DocumentsProjection(options) if documents else None
    chosen: list[Projection] = [p for p in (memories, docs) if p is not None]
    try:
        state = await trio.to_thread.run_sync(
            functools.partial(LmdbStateStore.open, projections_path(config), sync=config.store.sync)
        )
        try:
            runner = ProjectionRunner(
                store.log, state, chosen, snapshot_every=config.performance.snapshot_every
            )
            async with trio.open_nursery() as nursery:
                progress = Progress("catching up " + ", ".join(p.name for p in chosen))
                await nursery.start(functools.partial(runner.run, store, progress=progress.update))
                progress.close()
                yield LiveIndexes(memories, docs, runner.wait_for)
                nursery.cancel_scope.cancel()
        finally:
            state.close()
    finally:
        with trio.CancelScope(shield=True):  # closing waits for a FAISS training thread
            for projection in (memories, docs):
                if projection is not None:
                    await trio.to_thread.run_sync(projection.close)
