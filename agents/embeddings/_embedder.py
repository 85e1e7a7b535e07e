"""The `Embedder` interface: texts in, L2-normalised float32 rows out.

Two implementations live beside this module: `LocalEmbedder` (_local.py, the
default: a sentence-transformers model shipped inside a PyPI wheel, no network) and
`OpenAIEmbedder` (_openai.py: any OpenAI-compatible `/v1/embeddings`).

Every implementation shares the contract enforced here, so callers never special-case a
backend: input is a sequence of non-empty strings (checked up front, so an empty string
never reaches an API); the output is one row per input, float32, unit length; an empty
sequence gives a `(0, dim)` array; a text longer than the backend's input limit is split
into chunks, each chunk embedded, and the chunk vectors averaged (weighted by chunk
length) and renormalised - the approach of OpenAI's cookbook for long inputs.

The factory is `_factory.py`; the errors (`EmbeddingError` and its subclasses) are in
`agents/errors.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import numpy as np
import trio
from numpy.typing import NDArray

from agents.errors import (
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingRequestFailed,
    InvalidEmbeddingInput,
    InvalidEmbeddingResponse,
    UnknownEmbeddingProvider,
)

__all__ = [
    "EMBEDDING_PROVIDERS",
    "Embedder",
    "EmbedderUnavailable",
    "EmbeddingError",
    "EmbeddingProviderName",
    "EmbeddingRequestFailed",
    "EmbeddingStatistics",
    "InvalidEmbeddingInput",
    "InvalidEmbeddingResponse",
    "UnknownEmbeddingProvider",
    "Vectors",
    "batch_ranges",
    "combine_chunks",
    "l2_normalise",
    "validate_texts",
]

Vectors = NDArray[np.float32]
EmbeddingProviderName = Literal["local", "openai"]
EMBEDDING_PROVIDERS: tuple[EmbeddingProviderName, ...] = ("local", "openai")


@dataclass(frozen=True, slots=True)
class EmbeddingStatistics:
    """What an embedder has done since it was made.

    requests: calls into the backend (HTTP requests, failed ones included; for the local
    model, encoder batches); inputs: texts embedded; chunks: pieces sent (a long text is
    several); splits: failing batches split in halves; failures: requests that failed.
    """

    requests: int = 0
    inputs: int = 0
    chunks: int = 0
    splits: int = 0
    failures: int = 0


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors, one row per text.

    Subclasses implement `_embed_texts` (non-empty, validated input) and `_ensure_ready`;
    the checks and the empty case live here so every backend behaves the same.
    """

    @property
    @abstractmethod
    def model(self) -> str:
        """The model's name, as recorded beside every stored embedding."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of every vector (raises `EmbeddingError` when not known yet)."""

    @abstractmethod
    def statistics(self) -> EmbeddingStatistics:
        """A snapshot of the counters."""

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`: an `(len(texts), dim)` float32 array of unit rows, in order."""
        batch = validate_texts(texts)
        await self._ensure_ready()
        if not batch:
            await trio.lowlevel.checkpoint()
            return np.zeros((0, self.dim), dtype=np.float32)
        return await self._embed_texts(batch)

    async def warm_up(self) -> None:
        """Load the model or check the endpoint now, so start-up reports bad settings."""
        await self._ensure_ready()

    async def aclose(self) -> None:
        """Release what the embedder holds (an HTTP client); the default holds nothing."""
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def _ensure_ready(self) -> None:
        """Make `dim` known and the backend usable (idempotent)."""

    @abstractmethod
    async def _embed_texts(self, texts: list[str]) -> Vectors:
        """Embed at least one validated text."""


def validate_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list, or `InvalidEmbeddingInput` naming the first bad one.

    A bare `str` is refused too: iterating it would embed single characters.
    """
    if isinstance(texts, str | bytes):
        raise InvalidEmbeddingInput(-1, "expected a sequence of str, got a single str or bytes")
    batch = list(texts)
    for index, text in enumerate(batch):
        if not isinstance(text, str):
            raise InvalidEmbeddingInput(index, f"expected str, got {type(text).__name__}")
        if not text.strip():
            raise InvalidEmbeddingInput(index, "empty or whitespace-only text")
    return batch


def l2_normalise(vectors: NDArray[np.floating]) -> Vectors:
    """Rows scaled to unit length, as float32; a zero or non-finite row is an error."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise InvalidEmbeddingResponse(f"expected a 2-d array of vectors, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidEmbeddingResponse(f"vector {row} is zero or not finite")
    result: Vectors = (matrix / norms).astype(np.float32, copy=False)
    return result


def combine_chunks(
    vectors: NDArray[np.floating], owners: Sequence[int], weights: Sequence[float], count: int
) -> Vectors:
    """One unit row per text from its chunks' rows: the weighted mean, renormalised.

    `owners[i]` is the text chunk `i` came from, `weights[i]` its length (tokens or
    characters); every text in `range(count)` must own at least one chunk.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if len(owners) == count and list(owners) == list(range(count)):
        return l2_normalise(matrix)
    sums = np.zeros((count, matrix.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(owners), matrix * np.asarray(weights, dtype=np.float64)[:, None])
    return l2_normalise(sums)


def batch_ranges(costs: Sequence[int], max_inputs: int, max_cost: int) -> list[range]:
    """Consecutive index ranges of at most `max_inputs` items and `max_cost` summed cost.

    An item costing more than `max_cost` on its own still gets a range of its own (the
    callers chunk texts first, so that does not happen with well-chosen limits).
    """
    if max_inputs < 1 or max_cost < 1:
        raise ValueError(f"max_inputs and max_cost must be >= 1, got {max_inputs}, {max_cost}")
    ranges: list[range] = []
    start, total = 0, 0
    for index, cost in enumerate(costs):
        if index > start and (index - start >= max_inputs or total + cost > max_cost):
            ranges.append(range(start, index))
            start, total = index, 0
        total += cost
    if start < len(costs):
        ranges.append(range(start, len(costs)))
    return ranges
