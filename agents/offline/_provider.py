"""`OfflineProvider`: the offline model in-process, behind the same interface as a real one.

No network, no rate limit, no retries (the model is deterministic: asking again gives
the same answer). Usage is estimated the way the simulator estimates it, so the two
report the same token counts for the same request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import trio

from agents.llm import (
    CallRecorder,
    CallRequest,
    CallRunner,
    ChatResult,
    ChatStream,
    LLMOptions,
    LLMProvider,
    Messages,
    RetryPolicy,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
    parse_json_object,
    settling,
    validate_embedding_inputs,
)
from agents.offline import _model as offline_model
from agents.offline._entities import hash_embedding

EMBEDDING_DIM = 256
OFFLINE_OPTIONS = LLMOptions(provider="offline")
STREAM_CHUNK_CHARS = 16


class OfflineProvider(LLMProvider):
    """The deterministic offline model as an `LLMProvider`."""

    def __init__(
        self,
        options: LLMOptions = OFFLINE_OPTIONS,
        recorder: CallRecorder | None = None,
        *,
        embedding_dim: int = EMBEDDING_DIM,
    ) -> None:
        self.options = options
        self.model = offline_model.MODEL_NAME
        self.embedding_dim = embedding_dim
        self._runner = CallRunner(recorder or CallRecorder(), RetryPolicy(max_retries=0))

    async def chat_json(
        self,
        messages: Messages,
        *,
        purpose: str,
        run_id: str | None = None,
        schema_hint: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        request = CallRequest(purpose, run_id, self.model, estimate_prompt_tokens(messages))

        async def attempt() -> tuple[tuple[dict[str, Any], str], Usage]:
            await trio.lowlevel.checkpoint()
            text = offline_model.complete(messages, json_mode=True)
            return (parse_json_object(text, schema_hint), text), _usage(messages, text)

        done = await self._runner.call(request, attempt)
        data, text = done.value
        return ChatResult(data, text, done.usage, self.model, done.latency_s, done.retries)

    def stream_chat(
        self,
        messages: Messages,
        *,
        purpose: str,
        run_id: str | None = None,
        json_mode: bool = False,
    ) -> ChatStream:
        request = CallRequest(purpose, run_id, self.model, estimate_prompt_tokens(messages))
        return ChatStream(self._stream(request, messages, json_mode))

    async def _stream(
        self, request: CallRequest, messages: Messages, json_mode: bool
    ) -> AsyncGenerator[str | Usage, None]:
        async def attempt() -> str:
            await trio.lowlevel.checkpoint()
            return offline_model.complete(messages, json_mode=json_mode)

        text, lease = await self._runner.open(request, attempt)
        async with settling(lease, _usage(messages, text)):
            for start in range(0, len(text), STREAM_CHUNK_CHARS):
                yield text[start : start + STREAM_CHUNK_CHARS]
                await trio.lowlevel.checkpoint()
            yield _usage(messages, text)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        purpose: str = "embed",
        run_id: str | None = None,
        model: str | None = None,
    ) -> list[list[float]]:
        validate_embedding_inputs(texts)
        tokens = sum(estimate_tokens(t) for t in texts)
        request = CallRequest(purpose, run_id, model or self.model, tokens)

        async def attempt() -> tuple[list[list[float]], Usage]:
            await trio.lowlevel.checkpoint()
            return [hash_embedding(t, self.embedding_dim) for t in texts], Usage(tokens, 0)

        return (await self._runner.call(request, attempt)).value

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _usage(messages: Messages, text: str) -> Usage:
    return Usage(estimate_prompt_tokens(messages), estimate_tokens(text))
