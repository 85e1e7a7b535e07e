"""The provider interface every language model sits behind, and its value types.

`LLMProvider` has two implementations side by side: `OpenAIProvider` (any
OpenAI-compatible endpoint through the openai SDK) and `OfflineProvider` (the
deterministic offline model, in-process). `open_provider` picks one by name. The
orchestrator only ever sees this interface, and one conformance suite runs over both.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from agents.errors import BadRequest, InvalidModelOutput

Messages = Sequence[Mapping[str, str]]

MAX_EMBEDDING_INPUTS = 2048
PURPOSE_HEADER = "X-Autoagent-Purpose"


@dataclass(frozen=True, slots=True)
class LLMOptions:
    """What `[llm]` configures, as the agents layer needs it (server maps its config here).

    `completion_tokens_estimate` is reserved from the TPM budget before a call and
    corrected by the reported usage afterwards; `burst_s` sizes the buckets.
    """

    provider: str = "offline"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    model: str = "gpt-4o-mini"
    timeout_s: float = 30.0
    max_retries: int = 4
    rpm_limit: int = 500
    tpm_limit: int = 200_000
    max_parallel_calls: int = 8
    embedding_model: str = "text-embedding-3-small"
    completion_tokens_estimate: int = 256
    retry_deadline_s: float = 120.0
    retry_base_delay_s: float = 0.5
    burst_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A JSON chat call's answer: the parsed object, its text, and what it cost."""

    data: dict[str, Any]
    text: str
    usage: Usage
    model: str
    latency_s: float
    retries: int


class ChatStream:
    """The text deltas of one streamed chat call, then its usage.

    Use it as `async with provider.stream_chat(...) as stream: async for delta in stream`;
    leaving the block closes the response and records the call, also when the consumer
    stops early. `usage` is set once the stream has ended.
    """

    def __init__(self, source: AsyncGenerator[str | Usage, None]) -> None:
        self._source = source
        self._parts: list[str] = []
        self.usage: Usage | None = None

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        while True:
            item = await self._source.__anext__()
            if isinstance(item, Usage):
                self.usage = item
                continue
            self._parts.append(item)
            return item

    @property
    def text(self) -> str:
        """Everything received so far."""
        return "".join(self._parts)

    async def aclose(self) -> None:
        await self._source.aclose()


class LLMProvider(ABC):
    """A language model: JSON chat, streamed chat, embeddings. Every call is an event."""

    model: str

    @abstractmethod
    async def chat_json(
        self,
        messages: Messages,
        *,
        purpose: str,
        run_id: str | None = None,
        schema_hint: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """Ask for one JSON object; `schema_hint` (JSON schema) checks its top-level shape.

        Raises InvalidModelOutput when the answer is not a JSON object of that shape
        (after the retries the provider allows).
        """

    @abstractmethod
    def stream_chat(
        self,
        messages: Messages,
        *,
        purpose: str,
        run_id: str | None = None,
        json_mode: bool = False,
    ) -> ChatStream:
        """Stream the answer's text; the request is sent when iteration starts."""

    @abstractmethod
    async def embed(
        self,
        texts: Sequence[str],
        *,
        purpose: str = "embed",
        run_id: str | None = None,
        model: str | None = None,
    ) -> list[list[float]]:
        """One vector per text, in order; one request (batching is the caller's policy)."""

    async def check(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Fail now, with an error naming the setting, if the provider cannot work."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; the provider is unusable afterwards."""


# Deeper than any answer we ask for; bounds every later walk over a model's answer.
MAX_JSON_DEPTH = 64


def parse_json_object(text: str, schema_hint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON object in a model's answer, checked against the hint's top-level shape."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidModelOutput(f"not JSON ({exc})", text) from exc
    except RecursionError:
        raise InvalidModelOutput("not JSON (nested too deeply to read)", text) from None
    if nesting_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidModelOutput(f"nested deeper than {MAX_JSON_DEPTH} levels", text)
    if not isinstance(data, dict):
        raise InvalidModelOutput(f"expected a JSON object, got {type(data).__name__}", text)
    if schema_hint:
        _check_shape(data, schema_hint, text)
    return data


def nesting_depth(value: object, limit: int) -> int:
    """How deeply lists and mappings nest in `value` (a scalar: 0), counted up to
    `limit + 1`; iterative, so no value can exhaust the recursion limit here."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


def _check_shape(data: Mapping[str, Any], schema: Mapping[str, Any], text: str) -> None:
    for key in schema.get("required", ()):
        if key not in data:
            raise InvalidModelOutput(f"missing required key {key!r}", text)
    for key, spec in (schema.get("properties") or {}).items():
        wanted = _JSON_TYPES.get(spec.get("type", "")) if isinstance(spec, Mapping) else None
        if key in data and wanted and not isinstance(data[key], wanted):
            raise InvalidModelOutput(f"key {key!r} should be of type {spec['type']}", text)


def with_schema_hint(
    messages: Messages, schema_hint: Mapping[str, Any] | None
) -> list[dict[str, str]]:
    """The messages with the expected schema appended to the system prompt, for real models."""
    result = [dict(m) for m in messages]
    if schema_hint and result and result[0].get("role") == "system":
        hint = json.dumps(schema_hint, sort_keys=True)
        result[0]["content"] += f"\n\nThe answer must be JSON matching this schema: {hint}"
    return result


def validate_embedding_inputs(texts: Sequence[str]) -> None:
    """The API's own rules, checked before sending: 1 to 2048 non-empty strings."""
    if isinstance(texts, str):
        raise BadRequest("embed takes a sequence of strings, not one string")
    if not 1 <= len(texts) <= MAX_EMBEDDING_INPUTS:
        raise BadRequest(f"embed takes 1 to {MAX_EMBEDDING_INPUTS} inputs, got {len(texts)}")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise BadRequest(f"embedding input {index} must be a non-empty string")
