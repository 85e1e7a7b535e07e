"""Fixtures of the documents tests.

The embedding *model* is the memory tests' `HashEmbedder` (words hashed into a vector,
so texts sharing words are close; the real model takes seconds to load) or, where
requests are counted, the real `OpenAIEmbedder` against the simulator. Everything else
is real: `open_lab` is the documents stack as `autoagent serve` wires it, an LMDB event
store and projection state in `tmp_path/data`, the `documents` projection followed by a
running `ProjectionRunner`, and a `DocumentsAgent` built from an `AgentContext` whose
workspace root is `tmp_path/workspace`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.embeddings._embedder import Embedder
from agents.tools import AgentContext
from agents.tools._document_indexer import IndexerOptions
from agents.tools._documents import DocumentsAccess, DocumentsAgent
from events import EventStore, RecordedEvent, StoreOptions, open_event_store
from projections import DocumentsProjection, IndexOptions, LmdbStateStore, ProjectionRunner, Trainer
from tests.memory.conftest import HashEmbedder, hash_vector

__all__ = ["HashEmbedder", "hash_vector"]

# Upper bound on any single test's I/O.
TIMEOUT_S = 20
STORE_OPTIONS = StoreOptions(sync=False, map_size_mb=64)

# Three short documents about unrelated things, and the words that find each.
REPORT = (
    "# Quarterly report\n\nRevenue grew twelve percent in the third quarter, led by "
    "strong sales in Europe and Asia.\n\nOperating costs stayed flat."
)
RECIPE = "Pancakes need flour, milk, eggs and a pinch of salt. Whisk and fry in butter."
TRAVEL = (
    "<html><head><title>Trip</title><style>p {color: red}</style></head><body>"
    "<h1>Lisbon trip</h1><p>The flight to Lisbon leaves on Friday morning; the hotel "
    "is near the river.</p><script>alert('x')</script></body></html>"
)


@dataclass
class Lab:
    data_dir: Path
    workspace: Path
    store: EventStore
    projection: DocumentsProjection
    runner: ProjectionRunner
    agent: DocumentsAgent
    embedder: Embedder

    async def call(self, action: str, **parameters: Any) -> Any:
        return await self.agent.tools()[action].call(parameters)

    async def records(self, collection: str = "default") -> list[RecordedEvent]:
        return await self.store.read_stream(f"docs-{collection}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    return root


def write_docs(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@asynccontextmanager
async def open_lab(
    data_dir: Path,
    workspace: Path,
    *,
    embedder: Embedder | None = None,
    ivf_threshold: int = 10_000,
    options: IndexerOptions | None = None,
    linger_s: float = 0.0,
) -> AsyncIterator[Lab]:
    """The documents stack over `data_dir`, closed (store, state, runner) on exit."""
    projection = DocumentsProjection(
        IndexOptions(ivf_threshold=ivf_threshold), Trainer(inline=True)
    )
    embedder = embedder or HashEmbedder()
    async with open_event_store(data_dir, STORE_OPTIONS) as store:
        state = LmdbStateStore.open(data_dir / "projections", sync=False)
        try:
            async with trio.open_nursery() as nursery:
                runner = ProjectionRunner(
                    store.log, state, [projection], snapshot_every=20, linger_s=linger_s
                )
                await nursery.start(runner.run, store)
                access = DocumentsAccess(
                    embedder, projection, runner.wait_for, options or IndexerOptions()
                )
                context = AgentContext(workspace_roots=(workspace,), store=store, documents=access)
                agent = DocumentsAgent(context)
                yield Lab(data_dir, workspace, store, projection, runner, agent, embedder)
                nursery.cancel_scope.cancel()
        finally:
            state.close()


@pytest.fixture
async def lab(data_dir: Path, workspace: Path) -> AsyncIterator[Lab]:
    async with open_lab(data_dir, workspace) as opened:
        yield opened
