"""Embeddings: the embedder interface, the local and OpenAI embedders, batching.

Public API; every other module in this package is private.
"""

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
from agents.embeddings._openai import (
    OpenAIEmbedder,
    OpenAIEmbedderOptions,
)

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
