"""The embedder factory: `embeddings.provider` names a backend, this builds it.

Apart from the interface (`_embedder.py`) so that the implementations can import the
interface while the factory imports the implementations, as `agents.offline`'s
provider factory does for LLMs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from agents.embeddings._embedder import EMBEDDING_PROVIDERS, Embedder, EmbeddingProviderName
from agents.embeddings._local import DEFAULT_LOCAL_BATCH_SIZE, DEFAULT_LOCAL_MODEL, LocalEmbedder
from agents.errors import UnknownEmbeddingProvider

if TYPE_CHECKING:
    from agents.embeddings._openai import OpenAIEmbedderOptions


@asynccontextmanager
async def open_embedder(
    provider: EmbeddingProviderName = "local",
    *,
    model: str | None = None,
    batch_size: int | None = None,
    batch_embeddings: bool = True,
    openai: OpenAIEmbedderOptions | None = None,
    local_runtime: str = "auto",
    warm_up: bool = True,
) -> AsyncIterator[Embedder]:
    """The embedder `provider` names (`embeddings.provider`), closed on exit.

    `model` and `batch_size` come from `[embeddings]` (None: the backend's default);
    `openai` carries the endpoint settings (base_url, api_key, timeout) for the "openai"
    provider, whose `model` and `batch_size` these two override when given.
    `batch_embeddings=False` is the one-request-per-text baseline; `local_runtime` is
    what runs the "local" model (`embeddings.local_runtime`). With `warm_up`, the
    model is loaded (local) or the endpoint checked with one request (openai) before the
    embedder is handed out.
    """
    embedder: Embedder
    if provider == "local":
        embedder = LocalEmbedder(
            model=model or DEFAULT_LOCAL_MODEL,
            batch_size=batch_size or DEFAULT_LOCAL_BATCH_SIZE,
            batch_embeddings=batch_embeddings,
            runtime=local_runtime,
        )
    elif provider == "openai":
        from agents.embeddings._openai import OpenAIEmbedder, OpenAIEmbedderOptions

        options = openai or OpenAIEmbedderOptions()
        options = dataclasses.replace(
            options,
            model=model or options.model,
            batch_size=batch_size or options.batch_size,
            batch_embeddings=batch_embeddings,
        )
        embedder = OpenAIEmbedder(options)
    else:
        raise UnknownEmbeddingProvider(provider, EMBEDDING_PROVIDERS)
    async with embedder:
        if warm_up:
            await embedder.warm_up()
        yield embedder
