"""Embeddings: the embedder interface, the local and OpenAI embedders, batching.

Public API; every other module in this package is private.
"""

import typing as _typing

from agents.embeddings._embedder import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingRequestFailed,
    EmbeddingStatistics,
    InvalidEmbeddingInput,
    InvalidEmbeddingResponse,
    UnknownEmbeddingProvider,
)
from agents.embeddings._factory import open_embedder
from agents.embeddings._local import (
    LocalEmbedder,
)
from events import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from agents.embeddings._openai import OpenAIEmbedder, OpenAIEmbedderOptions

# The OpenAI backends are imported when first named: openai's SDK costs ~0.45 s and ~28 MB
# of every process that imports this package, the offline default's and every CLI command's.
_LAZY = {
    "OpenAIEmbedder": "agents.embeddings._openai",
    "OpenAIEmbedderOptions": "agents.embeddings._openai",
}
if not _typing.TYPE_CHECKING:  # mypy sees the names above, not a catch-all for any name
    __getattr__ = _lazy_attributes(__name__, _LAZY)

__all__ = [
    "Embedder",
    "EmbedderUnavailable",
    "EmbeddingError",
    "EmbeddingRequestFailed",
    "EmbeddingStatistics",
    "InvalidEmbeddingInput",
    "InvalidEmbeddingResponse",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "OpenAIEmbedderOptions",
    "UnknownEmbeddingProvider",
    "open_embedder",
]
