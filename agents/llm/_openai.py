"""`OpenAIProvider`: any OpenAI-compatible endpoint through the openai SDK, on Trio.

One `AsyncOpenAI` per provider over one pooled HTTP client (the SDK's httpx2 client,
`max_connections = llm.max_parallel_calls`), so 200 concurrent calls share a handful of
TCP connections instead of opening 200. The SDK's own retries are off
(`max_retries=0`): our `CallRunner` retries, so every retry is counted and recorded,
and our limiter sees every 429. SDK errors become ours here, at the boundary, each
naming the setting to fix. Always `aclose()` it (`open_provider` does): under Trio the
SDK's fallback cleanup, which is asyncio-only, cannot run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import httpx2
import openai
import trio
from openai._constants import RAW_RESPONSE_HEADER
from openai._legacy_response import LegacyAPIResponse
from openai._response import AsyncAPIResponse, AsyncResponseContextManager
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agents.errors import (
    AuthenticationFailed,
    BadRequest,
    InvalidModelOutput,
    LLMError,
    LLMTimeout,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
)
from agents.llm._calls import CallRequest, CallRunner, settling
from agents.llm._provider import (
    PURPOSE_HEADER,
    ChatResult,
    ChatStream,
    LLMOptions,
    LLMProvider,
    Messages,
    Usage,
    parse_json_object,
    validate_embedding_inputs,
    with_schema_hint,
)
from agents.llm._rate_limiter import LimiterOptions, RateLimiter, retry_after_from
from agents.llm._recorder import CallRecorder
from agents.llm._retry import RetryPolicy
from agents.llm._sse import SseReader, json_of, usage_of_dict
from agents.llm._tokens import estimate_prompt_tokens, estimate_tokens

R = TypeVar("R")


class _HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


RawT = TypeVar("RawT", bound=_HasHeaders)
_SDK_ERRORS = (openai.OpenAIError, httpx2.HTTPError, ValueError)


def pooled_http_client(options: LLMOptions) -> httpx2.AsyncClient:
    """One connection pool for all calls, as large as the calls we allow at once."""
    size = options.max_parallel_calls
    limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
    timeout = httpx2.Timeout(options.timeout_s, connect=min(5.0, options.timeout_s))
    return openai.DefaultAsyncHttpx2Client(limits=limits, timeout=timeout)


def limiter_for(options: LLMOptions) -> RateLimiter:
    return RateLimiter(
        LimiterOptions(
            rpm=options.rpm_limit,
            tpm=options.tpm_limit,
            max_concurrency=options.max_parallel_calls,
            burst_s=options.burst_s,
        )
    )


class OpenAIProvider(LLMProvider):
    """Chat, streamed chat and embeddings against `options.base_url` with `api_key`."""

    def __init__(
        self,
        options: LLMOptions,
        api_key: str,
        recorder: CallRecorder | None = None,
        *,
        limiter: RateLimiter | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.options = options
        self.model = options.model
        self.limiter = limiter or limiter_for(options)
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=options.base_url,
            max_retries=0,
            timeout=options.timeout_s,
            http_client=http_client or pooled_http_client(options),
        )
        policy = RetryPolicy(
            max_retries=options.max_retries,
            base_delay_s=options.retry_base_delay_s,
            deadline_s=options.retry_deadline_s,
        )
        self._runner = CallRunner(recorder or CallRecorder(), policy, self.limiter)

    # --- chat ---------------------------------------------------------------------

    async def chat_json(
        self,
        messages: Messages,
        *,
        purpose: str,
        run_id: str | None = None,
        schema_hint: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        sent = with_schema_hint(messages, schema_hint)
        request = self._request(purpose, run_id, self.model, sent)

        async def attempt() -> tuple[tuple[dict[str, Any], str], Usage]:
            text, usage = await self._create_chat(sent, purpose, json_mode=True)
            found = usage or _estimated_usage(sent, text)
            return (parse_json_object(text, schema_hint), text), found

        done = await self._runner.call(request, attempt)
        data, text = done.value
        return ChatResult(data, text, done.usage, self.model, done.latency_s, done.retries)

    async def _create_chat(
        self, messages: Messages, purpose: str, *, json_mode: bool
    ) -> tuple[str, Usage | None]:
        """The reply's text and its usage (None when the endpoint reported none).

        Read from the body's JSON rather than through the SDK's `ChatCompletion` model:
        building that pydantic model took 12 % of the LLM client's CPU in a profile of
        the orchestrator benchmark (`bench_orchestrator`'s zero-latency pass, py-spy),
        for the two fields we read.
        """
        headers = {PURPOSE_HEADER: purpose, RAW_RESPONSE_HEADER: "true"}
        body = self._chat_body(messages, json_mode)

        async def request() -> LegacyAPIResponse[ChatCompletion]:
            # the raw-response header makes `post` answer the raw response, not the model
            sent = await self._client.post(
                "/chat/completions", body=body, cast_to=ChatCompletion, options={"headers": headers}
            )
            return cast("LegacyAPIResponse[ChatCompletion]", sent)

        raw = await self._send(request)
        return _completion_text(json_of(raw.http_response.content, "the response body"))

    def _chat_body(
        self, messages: Messages, json_mode: bool, *, stream: bool = False
    ) -> dict[str, Any]:
        """The request body, already plain JSON data.

        Sent with the SDK's `post`, past `chat.completions.create`'s typed transform,
        which walks every message against the TypedDicts and cost 0.6 ms of CPU per call
        (of 1.0 ms for the whole SDK path, measured with a mock transport) while
        changing nothing in a body of plain strings and dicts like ours.
        """
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    def stream_chat(
        self,
        messages: Messages,
        *,
        purpose: str,
        run_id: str | None = None,
        json_mode: bool = False,
    ) -> ChatStream:
        request = self._request(purpose, run_id, self.model, messages)
        return ChatStream(self._stream(request, messages, json_mode))

    async def _stream(
        self, request: CallRequest, messages: Messages, json_mode: bool
    ) -> AsyncGenerator[str | Usage, None]:
        async with contextlib.AsyncExitStack() as stack:

            async def attempt() -> httpx2.Response:
                return await self._open_stream(stack, messages, request.purpose, json_mode)

            response, lease = await self._runner.open(request, attempt)
            async with settling(lease, Usage(estimate_prompt_tokens(messages), 0)) as settle:
                parts: list[str] = []
                async with contextlib.aclosing(self._read_sse(response)) as events:
                    async for delta, usage in events:
                        settle.usage = usage or settle.usage
                        if delta:
                            parts.append(delta)
                            yield delta
                if settle.usage.completion_tokens == 0:  # endpoint reported no usage: estimate
                    settle.usage = _estimated_usage(messages, "".join(parts))
                yield settle.usage

    async def _open_stream(
        self, stack: contextlib.AsyncExitStack, messages: Messages, purpose: str, json_mode: bool
    ) -> httpx2.Response:
        """Send the request; the response stays open (on `stack`) for `_read_sse`."""
        headers = {PURPOSE_HEADER: purpose, RAW_RESPONSE_HEADER: "stream"}
        body = self._chat_body(messages, json_mode, stream=True)

        def request() -> Awaitable[AsyncAPIResponse[Any]]:
            sent = self._client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletion,
                options={"headers": headers},
                stream=True,
                stream_cls=openai.AsyncStream[ChatCompletionChunk],
            )
            return cast("Awaitable[AsyncAPIResponse[Any]]", sent)

        opened = await self._send(
            lambda: stack.enter_async_context(AsyncResponseContextManager(request()))
        )
        return opened.http_response

    async def _read_sse(
        self, response: httpx2.Response
    ) -> AsyncGenerator[tuple[str | None, Usage | None], None]:
        """(text, usage) per network read that carried any, read to the end of the body.

        We parse the SSE ourselves (`_sse.py`, which says why per read and not per
        event) instead of using the SDK's stream: it stops reading at `[DONE]` and leaves
        its chain of async generators suspended, which Trio reports (ResourceWarning)
        when they are collected. Reading to the end, or cancelling the read when closed
        early, finishes every generator in the chain.
        """
        reads = response.aiter_bytes()
        reader = SseReader()
        done = False
        try:
            while (data := await self._next_read(reads)) is not None:
                found = reader.feed(data)
                done = done or found.done
                if found.text or found.usage:
                    yield found.text or None, found.usage
            last = reader.end()
            done = done or last.done
            if last.text or last.usage:
                yield last.text or None, last.usage
        finally:
            await _finish(reads)
        if not done:
            raise InvalidModelOutput("the stream ended before its [DONE] marker")

    async def _next_read(self, reads: AsyncIterator[bytes]) -> bytes | None:
        try:
            return await reads.__anext__()
        except StopAsyncIteration:
            return None
        except _SDK_ERRORS as exc:
            raise self._translate(exc, self.model) from exc

    # --- embeddings -----------------------------------------------------------------

    async def embed(
        self,
        texts: Sequence[str],
        *,
        purpose: str = "embed",
        run_id: str | None = None,
        model: str | None = None,
    ) -> list[list[float]]:
        validate_embedding_inputs(texts)
        name = model or self.options.embedding_model
        tokens = sum(estimate_tokens(t) for t in texts)
        request = CallRequest(purpose, run_id, name, tokens)

        async def attempt() -> tuple[list[list[float]], Usage]:
            return await self._create_embeddings(list(texts), name, purpose)

        return (await self._runner.call(request, attempt)).value

    async def _create_embeddings(
        self, texts: list[str], model: str, purpose: str
    ) -> tuple[list[list[float]], Usage]:
        raw = await self._send(
            lambda: self._client.embeddings.with_raw_response.create(
                model=model, input=texts, extra_headers={PURPOSE_HEADER: purpose}
            ),
            model,
        )
        response = self._parse(raw.parse)
        vectors = [list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise InvalidModelOutput(f"{len(vectors)} embeddings for {len(texts)} inputs")
        return vectors, Usage(response.usage.prompt_tokens, 0)

    # --- start-up check and closing -------------------------------------------------

    async def check(self) -> None:
        """Reach the endpoint once: a wrong URL, key or model fails here, naming the setting.

        Endpoints that do not list models (404) are given the benefit of the doubt.
        """
        try:
            page = await self._client.models.list()
        except openai.NotFoundError:
            return
        except _SDK_ERRORS as exc:
            raise self._translate(exc, self.model) from exc
        served = {m.id for m in page.data}
        if served and self.model not in served:
            raise UnknownModel(self.model, self.options.base_url)

    async def aclose(self) -> None:
        await self._client.close()

    # --- the SDK boundary ------------------------------------------------------------

    def _request(
        self, purpose: str, run_id: str | None, model: str, messages: Messages
    ) -> CallRequest:
        tokens = estimate_prompt_tokens(messages) + self.options.completion_tokens_estimate
        return CallRequest(purpose, run_id, model, tokens)

    async def _send(self, make: Callable[[], Awaitable[RawT]], model: str | None = None) -> RawT:
        """Await one SDK request; feed its rate-limit headers to the limiter either way."""
        try:
            raw = await make()
        except openai.APIStatusError as exc:
            self.limiter.observe(exc.response.headers)
            raise self._translate(exc, model or self.model) from exc
        except _SDK_ERRORS as exc:
            raise self._translate(exc, model or self.model) from exc
        self.limiter.observe(raw.headers)
        return raw

    def _parse(self, parse: Callable[[], R]) -> R:
        try:
            return parse()
        except _SDK_ERRORS as exc:
            raise InvalidModelOutput(f"the response body is not valid: {exc}") from exc

    def _translate(self, exc: BaseException, model: str) -> LLMError:
        """Our error for an SDK one, naming the setting a person would change."""
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc, model)
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return LLMTimeout(self.options.timeout_s)
        if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
            return ProviderUnavailable(self.options.base_url, _reason(exc))
        if isinstance(exc, openai.APIError):
            return ProviderError(502, f"the endpoint reported an error: {exc.message}")
        return InvalidModelOutput(f"the response is not valid: {exc}")

    def _status_error(self, exc: openai.APIStatusError, model: str) -> LLMError:
        status, message = exc.status_code, _message(exc)
        if status in (401, 403):
            reason = f"the endpoint refused the API key ({status}: {message})"
            return AuthenticationFailed(self.options.api_key_env, reason)
        if status == 404 and (exc.code == "model_not_found" or "model" in message.lower()):
            return UnknownModel(model, self.options.base_url)
        if status == 429 and exc.code != "insufficient_quota":
            return RateLimited(f"rate limited: {message}", retry_after_from(exc.response.headers))
        if status in (400, 422):
            return BadRequest(f"the endpoint rejected the request ({status}): {message}")
        return ProviderError(status, message)


async def _finish(reads: AsyncIterator[bytes]) -> None:
    """Unwind a partly read body iterator: the cancelled read ends every generator under it."""
    with trio.CancelScope() as scope:
        scope.cancel()
        with contextlib.suppress(*_SDK_ERRORS):
            async for _ in reads:
                pass


def _completion_text(body: object) -> tuple[str, Usage | None]:
    """The first choice's message text and the usage of a `chat.completion` body."""
    if not isinstance(body, Mapping):
        raise InvalidModelOutput("the response body is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise InvalidModelOutput("the response has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if content is not None and not isinstance(content, str):
        raise InvalidModelOutput("the response's message content is not text")
    return content or "", usage_of_dict(body.get("usage"))


def _estimated_usage(messages: Messages, text: str) -> Usage:
    return Usage(estimate_prompt_tokens(messages), estimate_tokens(text))


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else str(exc)
