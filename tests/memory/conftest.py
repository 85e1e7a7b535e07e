"""Fixtures of the memory tests.

`HashEmbedder` is a test double of the embedding *model* only (the real one takes
seconds to load): it hashes words into a fixed-size vector, so texts sharing words are
close and the rest nearly orthogonal; every other part is real. `lab` is the memory
stack as `autoagent serve` wires it: an LMDB event store and projection state in
`tmp_path/data`, the file key store in `data/keys`, the `memory` projection fed by a
running `ProjectionRunner`, and a `MemoryAgent` built from an `AgentContext`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from agents.embeddings._embedder import Embedder, EmbeddingStatistics, Vectors, l2_normalise
from agents.tools import AgentContext
from agents.tools._memory import MemoryAccess, MemoryAgent
from events import EventStore, StoreOptions, open_event_store
from projections import (
    FileKeyStore,
    IndexOptions,
    LmdbStateStore,
    MemoryProjection,
    ProjectionRunner,
    Trainer,
)

# Upper bound on any single test's I/O.
TIMEOUT_S = 20
HASH_DIM = 256
STORE_OPTIONS = StoreOptions(sync=False, map_size_mb=64)


def hash_vector(text: str, dim: int = HASH_DIM) -> Vectors:
    """Bag of words, each word hashed to one signed coordinate; unit length."""
    vector = np.zeros(dim, dtype=np.float64)
    for word in re.findall(r"[a-z0-9]+", text.lower()) or [text]:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dim
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    if not vector.any():
        vector[0] = 1.0
    return l2_normalise(vector[None, :])


class HashEmbedder(Embedder):
    """Deterministic word-hashing embeddings (see module docstring)."""

    def __init__(self, dim: int = HASH_DIM, model: str = "test-hash") -> None:
        self._dim = dim
        self._model = model
        self.calls = 0

    @property
    def model(self) -> str:
        return self._model

    @property
    def dim(self) -> int:
        return self._dim

    def statistics(self) -> EmbeddingStatistics:
        return EmbeddingStatistics(requests=self.calls)

    async def _ensure_ready(self) -> None:
        await trio.lowlevel.checkpoint()

    async def _embed_texts(self, texts: list[str]) -> Vectors:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        return np.vstack([hash_vector(t, self._dim) for t in texts])


@dataclass
class Lab:
    data_dir: Path
    store: EventStore
    keys: FileKeyStore
    projection: MemoryProjection
    runner: ProjectionRunner
    agent: MemoryAgent
    embedder: Embedder

    async def call(self, action: str, **parameters: Any) -> Any:
        return await self.agent.tools()[action].call(parameters)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@asynccontextmanager
async def open_lab(
    data_dir: Path,
    ivf_threshold: int = 50,
    embedder: Embedder | None = None,
    linger_s: float = 0.0,
) -> AsyncIterator[Lab]:
    """The memory stack over `data_dir`, closed (store, state, runner) on exit."""
    keys = FileKeyStore(data_dir / "keys")
    options = IndexOptions(ivf_threshold=ivf_threshold)
    projection = MemoryProjection(keys, options, Trainer(inline=True))
    embedder = embedder or HashEmbedder()
    async with open_event_store(data_dir, STORE_OPTIONS) as store:
        state = LmdbStateStore.open(data_dir / "projections", sync=False)
        try:
            async with trio.open_nursery() as nursery:
                runner = ProjectionRunner(
                    store.log, state, [projection], snapshot_every=20, linger_s=linger_s
                )
                await nursery.start(runner.run, store)
                access = MemoryAccess(keys, embedder, projection, runner.wait_for)
                agent = MemoryAgent(AgentContext(store=store, memory=access))
                yield Lab(data_dir, store, keys, projection, runner, agent, embedder)
                nursery.cancel_scope.cancel()
        finally:
            state.close()


@pytest.fixture
async def lab(data_dir: Path) -> AsyncIterator[Lab]:
    async with open_lab(data_dir) as opened:
        yield opened
