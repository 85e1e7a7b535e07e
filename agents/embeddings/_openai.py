"""`OpenAIEmbedder`: embeddings from any OpenAI-compatible `/v1/embeddings` endpoint.

Batching stays inside the API's limits: at most 2,048 inputs and 300,000 tokens per
request, 8,192 tokens per input. Tokens are estimated without a tokenizer (tiktoken
downloads its tables at run time) as one token per three UTF-8 bytes: real English text
runs at about four characters a token, so the estimate errs on the safe side. A text
over the per-input limit is cut at whitespace into chunks that fit; the chunk vectors are
averaged, weighted by their estimated tokens, and renormalised.

A batch that fails with an error a smaller batch might not hit (400, 413, 422, 5xx, a
timeout, a malformed body) is split in halves and each half tried again, down to single
inputs; a single input that still fails raises `EmbeddingRequestFailed`. Errors no split
can cure (unreachable endpoint, refused key, unknown model, rate limit) are raised at
once. `statistics()` counts requests, splits and failures.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import openai
import trio
from openai.types import CreateEmbeddingResponse

from agents.embeddings._embedder import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingRequestFailed,
    EmbeddingStatistics,
    InvalidEmbeddingResponse,
    Vectors,
    batch_ranges,
    combine_chunks,
    l2_normalise,
)

__all__ = [
    "BYTES_PER_TOKEN",
    "MAX_INPUTS_PER_REQUEST",
    "MAX_TOKENS_PER_INPUT",
    "MAX_TOKENS_PER_REQUEST",
    "OpenAIEmbedder",
    "OpenAIEmbedderOptions",
    "estimate_tokens",
    "split_text",
]

MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_INPUT = 8192
MAX_TOKENS_PER_REQUEST = 300_000
BYTES_PER_TOKEN = 3
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_PROBE_TEXT = "autoagent embedding probe"
_WORDS = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class OpenAIEmbedderOptions:
    """Where and how to ask for embeddings.

    base_url / api_key: None takes the SDK's own default ($OPENAI_BASE_URL or OpenAI;
    $OPENAI_API_KEY). batch_size: inputs per request (at most 2,048). timeout: seconds
    per request. dimensions: sent as the API's `dimensions` (text-embedding-3 models);
    None keeps the model's own size, known for OpenAI's models and otherwise learnt from
    one probe request. batch_embeddings=False sends one request per input (the baseline).
    max_retries: the SDK's own retries of 408/409/429/5xx and connection errors.
    """

    base_url: str | None = None
    api_key: str | None = None
    model: str = "text-embedding-3-small"
    batch_size: int = MAX_INPUTS_PER_REQUEST
    timeout: float = 60.0
    dimensions: int | None = None
    batch_embeddings: bool = True
    max_retries: int = 2
    max_concurrent_requests: int = 4
    max_tokens_per_input: int = MAX_TOKENS_PER_INPUT
    max_tokens_per_request: int = MAX_TOKENS_PER_REQUEST
    encoding_format: Literal["base64", "float"] = "base64"

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty string (embeddings.model)")
        if not 1 <= self.batch_size <= MAX_INPUTS_PER_REQUEST:
            raise ValueError(
                f"batch_size must be between 1 and {MAX_INPUTS_PER_REQUEST}, got {self.batch_size}"
            )
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError(f"dimensions must be >= 1 or None, got {self.dimensions}")
        if self.max_retries < 0 or self.max_concurrent_requests < 1:
            raise ValueError("max_retries must be >= 0 and max_concurrent_requests >= 1")
        if not 1 <= self.max_tokens_per_input <= self.max_tokens_per_request:
            raise ValueError("need 1 <= max_tokens_per_input <= max_tokens_per_request")


@dataclass(frozen=True, slots=True)
class _Work:
    """One `embed` call's chunks, the text each came from, and the rows being filled."""

    chunks: list[str]
    owners: list[int]
    out: Vectors


class _BatchFailed(Exception):
    """A request failed in a way a smaller batch might not (internal: triggers a split)."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        self.reason = reason
        self.status_code = status_code
        super().__init__(reason)


class OpenAIEmbedder(Embedder):
    """Batched embeddings over the `openai` SDK's `AsyncOpenAI` client.

    Owns its client unless one is passed in: a shared, pooled client brings its own
    base_url, key, timeout and retries, and stays open on `aclose()` (its owner closes
    it). Requests run up to `max_concurrent_requests` at once.
    """

    def __init__(
        self, options: OpenAIEmbedderOptions, *, client: openai.AsyncOpenAI | None = None
    ) -> None:
        self._options = options
        self._owns_client = client is None
        self._client = client if client is not None else _make_client(options)
        self._dim = options.dimensions or KNOWN_DIMENSIONS.get(options.model)
        self._probed = False
        self._stats = EmbeddingStatistics()

    @property
    def model(self) -> str:
        return self._options.model

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise EmbeddingError(
                f"the size of {self._options.model!r} vectors is not known yet: "
                "await warm_up() first, or set dimensions"
            )
        return self._dim

    @property
    def options(self) -> OpenAIEmbedderOptions:
        return self._options

    def statistics(self) -> EmbeddingStatistics:
        return self._stats

    async def warm_up(self) -> None:
        """One probe request: checks the URL, key and model, and learns the vector size."""
        if not self._probed:
            await self._probe()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if self._owns_client:
            # The SDK's fallback cleanup is asyncio-only: under Trio, close explicitly.
            await self._client.close()
        else:
            await trio.lowlevel.checkpoint()

    async def _ensure_ready(self) -> None:
        if self._dim is None:
            await self._probe()
        else:
            await trio.lowlevel.checkpoint()

    async def _probe(self) -> None:
        """One request with the model as configured: learns its vector size."""
        try:
            # Any size is accepted here: the known-model table may not hold for this server.
            vectors = await self._request([_PROBE_TEXT], dim=self._options.dimensions)
        except _BatchFailed as exc:
            raise EmbedderUnavailable(
                f"the embeddings endpoint {self._client.base_url} failed a probe request "
                f"for model {self._options.model!r} (embeddings.model): {exc.reason}"
            ) from exc
        self._dim = int(vectors.shape[1])
        self._probed = True

    async def _embed_texts(self, texts: list[str]) -> Vectors:
        chunks, owners, weights = _chunk_texts(texts, self._options.max_tokens_per_input)
        per_request = self._options.batch_size if self._options.batch_embeddings else 1
        ranges = batch_ranges(
            [estimate_tokens(chunk) for chunk in chunks],
            max_inputs=per_request,
            max_cost=self._options.max_tokens_per_request,
        )
        work = _Work(chunks, owners, np.empty((len(chunks), self.dim), dtype=np.float32))
        await self._run_batches(work, ranges)
        self._count(inputs=len(texts), chunks=len(chunks))
        return combine_chunks(work.out, owners, weights, len(texts))

    async def _run_batches(self, work: _Work, ranges: list[range]) -> None:
        """Fill `out` batch by batch, a few requests in flight; the first error wins."""
        # Batches start in order: a slot is taken before each task starts, and freed
        # when it ends, so at most max_concurrent_requests tasks exist at once.
        slots = trio.Semaphore(self._options.max_concurrent_requests)
        errors: list[EmbeddingError] = []

        async def run(batch: range) -> None:
            try:
                await self._embed_range(work, batch)
            except EmbeddingError as exc:
                errors.append(exc)
                nursery.cancel_scope.cancel()
            finally:
                slots.release()

        async with trio.open_nursery() as nursery:
            for batch in ranges:
                await slots.acquire()
                nursery.start_soon(run, batch)
        if errors:
            raise errors[0]

    async def _embed_range(self, work: _Work, batch: range) -> None:
        try:
            inputs = [work.chunks[i] for i in batch]
            work.out[batch.start : batch.stop] = await self._request(inputs, dim=self.dim)
        except _BatchFailed as exc:
            if len(batch) == 1:
                index = work.owners[batch.start]
                raise EmbeddingRequestFailed(
                    f"embedding request for texts[{index}] failed: {exc.reason}",
                    status_code=exc.status_code,
                    index=index,
                ) from exc
            self._count(splits=1)
            middle = batch.start + len(batch) // 2
            await self._embed_range(work, range(batch.start, middle))
            await self._embed_range(work, range(middle, batch.stop))

    async def _request(self, inputs: list[str], *, dim: int | None) -> Vectors:
        """One request; `_BatchFailed` for errors a split may cure, `EmbeddingError` else."""
        options = self._options
        self._count(requests=1)
        try:
            if options.dimensions is None:
                response = await self._client.embeddings.create(
                    input=inputs, model=options.model, encoding_format=options.encoding_format
                )
            else:
                response = await self._client.embeddings.create(
                    input=inputs,
                    model=options.model,
                    encoding_format=options.encoding_format,
                    dimensions=options.dimensions,
                )
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a body not JSON
            self._count(failures=1)
            raise self._translate(exc) from exc
        try:
            return self._vectors(response, len(inputs), dim)
        except _BatchFailed:
            self._count(failures=1)
            raise

    def _vectors(self, response: CreateEmbeddingResponse, count: int, dim: int | None) -> Vectors:
        """The response's vectors in input order; `_BatchFailed` for a garbled answer.

        Vectors of the wrong size are `InvalidEmbeddingResponse` at once: a split would
        not change them.
        """
        data = sorted(getattr(response, "data", None) or [], key=lambda item: item.index)
        indexes = [item.index for item in data]
        if indexes != list(range(count)):
            raise _BatchFailed(
                f"expected {count} vectors indexed from 0, got indexes {indexes[:8]}"
            )
        try:
            rows = [_decode(item.embedding) for item in data]
        except ValueError as exc:
            raise _BatchFailed(f"undecodable vector: {exc}") from exc
        dim = dim or len(rows[0])
        if any(len(row) != dim for row in rows):
            raise InvalidEmbeddingResponse(
                f"expected {dim}-d vectors from {self._options.model!r}, got lengths "
                f"{sorted({len(row) for row in rows})} (set dimensions, or warm_up() first)"
            )
        return l2_normalise(np.stack(rows))

    def _translate(self, exc: Exception) -> Exception:
        where = self._client.base_url
        model = self._options.model
        match exc:
            case openai.APITimeoutError():
                return _BatchFailed(f"no answer within {self._options.timeout:g} s")
            case openai.APIConnectionError():
                return EmbedderUnavailable(f"cannot reach the embeddings endpoint {where}: {exc}")
            case openai.AuthenticationError() | openai.PermissionDeniedError():
                return EmbedderUnavailable(
                    f"the embeddings endpoint {where} refused the API key "
                    f"({exc.status_code}): {exc.message}"
                )
            case openai.NotFoundError():
                return EmbedderUnavailable(
                    f"the embeddings endpoint {where} does not serve model {model!r} "
                    f"(embeddings.model): {exc.message}"
                )
            case openai.RateLimitError():
                return EmbeddingRequestFailed(
                    f"the embeddings endpoint {where} is still rate limiting after "
                    f"{self._client.max_retries} retries: {exc.message}",
                    status_code=429,
                )
            case openai.APIStatusError():
                return _BatchFailed(exc.message, exc.status_code)
            case _:  # a body the SDK could not parse (truncated, not JSON)
                return _BatchFailed(f"unusable answer: {exc}")

    def _count(
        self,
        *,
        requests: int = 0,
        inputs: int = 0,
        chunks: int = 0,
        splits: int = 0,
        failures: int = 0,
    ) -> None:
        old = self._stats
        self._stats = EmbeddingStatistics(
            requests=old.requests + requests,
            inputs=old.inputs + inputs,
            chunks=old.chunks + chunks,
            splits=old.splits + splits,
            failures=old.failures + failures,
        )


def _make_client(options: OpenAIEmbedderOptions) -> openai.AsyncOpenAI:
    try:
        return openai.AsyncOpenAI(
            base_url=options.base_url,
            api_key=options.api_key,
            timeout=options.timeout,
            max_retries=options.max_retries,
        )
    except openai.OpenAIError as exc:
        raise EmbedderUnavailable(
            f"cannot set up the embeddings client: {exc} (set an API key, or use "
            "embeddings.provider = 'local')"
        ) from exc


def _decode(embedding: object) -> Vectors:
    """A vector as sent: base64 of little-endian float32, or a list of floats (ValueError)."""
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"bad base64: {exc}") from exc
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if isinstance(embedding, list) and embedding:
        try:
            return np.asarray(embedding, dtype=np.float32)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
    raise ValueError(f"expected base64 or a list of floats, got {type(embedding).__name__}")


def estimate_tokens(text: str) -> int:
    """A safe over-estimate of the tokens in `text`: one per three UTF-8 bytes."""
    return max(1, math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN))


def split_text(text: str, max_tokens: int) -> list[str]:
    """`text` cut at whitespace into pieces of at most `max_tokens` estimated tokens.

    A single word over the budget is cut between characters (a piece holds at least one
    character, so `max_tokens` of 2 or more always fits). Joined, the pieces give
    back the text less its trailing whitespace.
    """
    budget = max_tokens * BYTES_PER_TOKEN
    if len(text.encode("utf-8")) <= budget:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for word in _pieces_of_words(text, budget):
        length = len(word.encode("utf-8"))
        if current and size + length > budget:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(word)
        size += length
    if current:
        pieces.append("".join(current))
    return pieces


def _pieces_of_words(text: str, budget: int) -> Sequence[str]:
    words: list[str] = []
    # A character is at most 4 UTF-8 bytes, so budget // 4 characters always fit.
    step = max(1, budget // 4)
    for match in _WORDS.finditer(text):
        word = match.group()
        if len(word.encode("utf-8")) <= budget:
            words.append(word)
        else:
            words.extend(word[start : start + step] for start in range(0, len(word), step))
    return words


def _chunk_texts(texts: list[str], max_tokens: int) -> tuple[list[str], list[int], list[float]]:
    chunks: list[str] = []
    owners: list[int] = []
    weights: list[float] = []
    for index, text in enumerate(texts):
        for piece in split_text(text, max_tokens):
            if piece.strip():
                chunks.append(piece)
                owners.append(index)
                weights.append(float(estimate_tokens(piece)))
    return chunks, owners, weights
