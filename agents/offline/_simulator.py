"""An OpenAI-compatible HTTP server that answers with the offline model, for tests and benchmarks.

Tests and benchmarks drive the real openai SDK against it, so the whole client path
(pooling, JSON mode, streaming, retries, rate-limit headers) is exercised without a
network. It serves `POST /v1/chat/completions` (plain and `stream: true` as SSE with
usage), `POST /v1/embeddings` (deterministic hashed unit vectors, validated as the API
validates), `GET /v1/models`, and `GET /_sim/stats` / `POST /_sim/reset` for tests.

It can behave like a real service: latency that charges for the work (`realistic`, see
`RealisticLatency`: time to first token growing with the prompt, then output tokens at a
model's decode speed, streamed chunks paced by their tokens, embeddings per input token;
log-normal spread, all times `time_scale`), its own RPM/TPM limits with the real
`x-ratelimit-*` headers and 429s, and injected faults at `fault_rate`: 429 with
Retry-After, 500, a response slower than any sane client timeout, or a truncated /
invalid JSON body. Seeded, so runs repeat.

A `fallback` answers every other path (not under `/v1/` or `/_sim/`) on the same port,
uncounted: `autoagent sim` puts the bench's world of quotes and web pages there, so
every tool can be tried offline against one address.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import trio

from agents.llm import estimate_prompt_tokens, estimate_tokens
from agents.offline import _model as offline_model
from agents.offline._entities import hash_embedding
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http
from agents.offline._wire import (
    _JSON_HEADERS,
    STREAM_CHUNK_CHARS,
    _bucket,
    _chat_messages,
    _completion,
    _dimensions,
    _duration,
    _embedding,
    _embedding_inputs,
    _encoding,
    _error,
    _include_usage,
    _invalid,
    _json,
    _json_body,
    _model_object,
    _Reject,
    _Reply,
    _response_format,
    _retry_after,
    _sse,
    _stream_events,
    _usage_json,
)

LATENCY_PROFILES = ("none", "realistic")
OWN_PREFIXES = ("/v1/", "/_sim/")
# Answers the paths the simulator does not serve: (method, target) -> status, type, body.
Fallback = Callable[[str, str], Awaitable[tuple[int, str, bytes]]]
FAULT_KINDS = ("429", "500", "slow", "bad_json")
LATENCY_SIGMA = 0.35  # spread of the time to first token (log-normal)
SPEED_SIGMA = 0.15  # spread of the decode speed of one reply


@dataclass(frozen=True, slots=True)
class RealisticLatency:
    """What the `realistic` profile charges, as a gpt-4o-mini-class hosted model does.

    Sources: Artificial Analysis's published measurements for gpt-4o-mini (time to first
    token ~0.3-0.6 s for short prompts; ~80-100 output tokens/s) and OpenAI's note that
    latency is dominated by output tokens, with prompt tokens adding a little through
    prefill. Embeddings: text-embedding-3-small answers a small batch in ~0.1-0.2 s and
    grows with the tokens sent. Figures are medians; each reply draws its own spread.
    """

    first_token_s: float = 0.4  # median time to first token of a short prompt
    prefill_tokens_per_s: float = 20_000.0  # a 4,000-token plan prompt adds ~0.2 s
    output_tokens_per_s: float = 90.0
    embed_base_s: float = 0.12
    embed_tokens_per_s: float = 100_000.0

    def first_token(self, prompt_tokens: int) -> float:
        return self.first_token_s + prompt_tokens / self.prefill_tokens_per_s

    def decode(self, output_tokens: int) -> float:
        return output_tokens / self.output_tokens_per_s

    def embedding(self, input_tokens: int) -> float:
        return self.embed_base_s + input_tokens / self.embed_tokens_per_s


REALISTIC = RealisticLatency()
DEFAULT_MODELS = (offline_model.MODEL_NAME, "gpt-4o-mini", "text-embedding-3-small")


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """How the simulator behaves; `rpm_limit` / `tpm_limit` None means unlimited.

    `retry_after_s` (the wait an injected 429 asks for) is scaled by `time_scale`;
    `slow_response_s` is not, as it must outlast the client's timeout.
    """

    host: str = "127.0.0.1"
    port: int = 0
    latency_profile: str = "none"
    time_scale: float = 1.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    fault_purposes: tuple[str, ...] = ()  # calls that may fail (plan, answer, embed...); () = all
    seed: int | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    burst_s: float = 60.0
    api_key: str | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    embedding_dim: int = 256
    slow_response_s: float = 30.0
    retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        if self.latency_profile not in LATENCY_PROFILES:
            raise ValueError(
                f"latency profile must be one of {LATENCY_PROFILES}, got {self.latency_profile!r}"
            )
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.fault_rate}")
        if self.time_scale < 0:
            raise ValueError(f"time scale must be at least 0, got {self.time_scale}")
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown or not self.faults:
            raise ValueError(
                f"faults must be a non-empty subset of {FAULT_KINDS}, got {self.faults}"
            )
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be at least 1, got {self.embedding_dim}")


@dataclass(frozen=True, slots=True)
class SimulatorStatistics:
    """What the simulator has seen since start (or the last reset)."""

    requests: int
    by_purpose: Mapping[str, int]
    by_endpoint: Mapping[str, int]
    by_status: Mapping[str, int]
    faults: Mapping[str, int]
    rate_limited: int
    connections_opened: int
    connections_open: int
    max_in_flight: int
    prompt_tokens: int
    completion_tokens: int
    # Prompt and completion tokens charged, per purpose: where a goal's budget goes.
    tokens_by_purpose: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(self).items()}


Route = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Simulator:
    """The simulator's state and request handling; `serve` puts it on a socket."""

    def __init__(
        self, options: SimulatorOptions = SimulatorOptions(), *, fallback: Fallback | None = None
    ) -> None:
        self.options = options
        self._fallback = fallback
        self._rng = random.Random(options.seed)
        self._connections = ConnectionCounts()
        self._request_bucket = _bucket(options.rpm_limit, options.burst_s)
        self._token_bucket = _bucket(options.tpm_limit, options.burst_s)
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("GET", "/_sim/stats"): self._stats,
            ("POST", "/_sim/reset"): self._reset,
        }
        self.reset_statistics()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound port through `task_status`."""
        host, port = self.options.host, self.options.port
        await serve_http(self.handle, host, port, self._connections, task_status=task_status)

    # --- statistics ---------------------------------------------------------------

    def reset_statistics(self) -> None:
        self._requests = self._rate_limited = self._in_flight = self._max_in_flight = 0
        self._prompt_tokens = self._completion_tokens = 0
        self._by_purpose: collections.Counter[str] = collections.Counter()
        self._tokens_by_purpose: collections.Counter[str] = collections.Counter()
        # Latency it imposed, summed (benchmarks subtract it from what they measure).
        self.latency_s = 0.0
        self._by_endpoint: collections.Counter[str] = collections.Counter()
        self._by_status: collections.Counter[str] = collections.Counter()
        self._faults: collections.Counter[str] = collections.Counter()
        self._connections.opened = self._connections.open

    def statistics(self) -> SimulatorStatistics:
        return SimulatorStatistics(
            requests=self._requests,
            by_purpose=dict(self._by_purpose),
            by_endpoint=dict(self._by_endpoint),
            by_status=dict(self._by_status),
            faults=dict(self._faults),
            rate_limited=self._rate_limited,
            connections_opened=self._connections.opened,
            connections_open=self._connections.open,
            max_in_flight=self._max_in_flight,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            tokens_by_purpose=dict(self._tokens_by_purpose),
        )

    # --- dispatch -----------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if self._fallback is not None and not request.path.startswith(OWN_PREFIXES):
            return await self._answer_fallback(self._fallback, request)
        route = self._route(request)
        counted = not request.path.startswith("/_sim/")
        if counted:
            self._begin(request.path)
        try:
            response = await route(request)
        except _Reject as rejected:
            response = rejected.response
        except Exception as exc:  # a bug here must not take the whole server down
            response = _error(500, f"simulator error: {exc!r}", "server_error")
        finally:
            self._in_flight -= counted
        if counted:
            self._by_status[str(response.status)] += 1
        return response

    @staticmethod
    async def _answer_fallback(fallback: Fallback, request: HttpRequest) -> HttpResponse:
        try:
            status, content_type, body = await fallback(request.method, request.target)
        except Exception as exc:  # a bug there must not take the whole server down
            return _error(500, f"simulator error: {exc!r}", "server_error")
        return HttpResponse(status, (("content-type", content_type),), body)

    def _begin(self, path: str) -> None:
        self._requests += 1
        self._by_endpoint[path] += 1
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _route(self, request: HttpRequest) -> Route:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route
        if request.method == "GET" and request.path.startswith("/v1/models/"):
            return self._model
        return self._not_found

    async def _not_found(self, request: HttpRequest) -> HttpResponse:
        await trio.lowlevel.checkpoint()
        message = f"Invalid URL ({request.method} {request.path})"
        return _error(404, message, "invalid_request_error")

    # --- /v1/models ---------------------------------------------------------------

    async def _models(self, request: HttpRequest) -> HttpResponse:
        self._authorise(request)
        await trio.lowlevel.checkpoint()
        data = [_model_object(name) for name in self.options.models]
        return _json(200, {"object": "list", "data": data})

    async def _model(self, request: HttpRequest) -> HttpResponse:
        self._authorise(request)
        await trio.lowlevel.checkpoint()
        name = request.path.removeprefix("/v1/models/")
        self._check_model({"model": name})
        return _json(200, _model_object(name))

    # --- /v1/chat/completions -----------------------------------------------------

    async def _chat(self, request: HttpRequest) -> HttpResponse:
        self._authorise(request)
        body = _json_body(request)
        messages = _chat_messages(body)
        model = self._check_model(body)
        purpose = request.headers.get("x-autoagent-purpose") or offline_model.task_of(messages)
        self._by_purpose[purpose] += 1
        prompt_tokens = estimate_prompt_tokens(messages)
        headers = self._admit(prompt_tokens)
        fault = await self._inject_fault(headers, purpose)
        json_mode = _response_format(body) in ("json_object", "json_schema")
        text = offline_model.complete(messages, json_mode=json_mode)
        usage = self._charge(prompt_tokens, estimate_tokens(text), purpose)
        reply = _Reply(model, text, usage, headers, fault == "bad_json", json_mode)
        first, per_token = self._chat_latency(usage[0])
        self.latency_s += first + per_token * usage[1]
        if body.get("stream"):
            return self._streamed(reply, _include_usage(body), first, per_token)
        await trio.sleep(first + per_token * usage[1])
        return self._completed(reply)

    def _completed(self, reply: _Reply) -> HttpResponse:
        content = reply.text
        if reply.corrupt and reply.json_mode and self._rng.random() < 0.5:
            content = content[: len(content) // 2]  # well-framed, but not JSON inside
        elif reply.corrupt:
            full = _json(200, _completion(reply, content), reply.headers).body
            return HttpResponse(200, _JSON_HEADERS + reply.headers, full[: len(full) // 2])
        return _json(200, _completion(reply, content), reply.headers)

    def _streamed(
        self, reply: _Reply, include_usage: bool, first: float, per_token: float
    ) -> HttpResponse:
        """Chunks as a model sends them: the first after the time to first token, each
        content piece after the time its tokens take to decode."""
        events = _stream_events(reply, include_usage)
        piece = per_token * estimate_tokens("x" * STREAM_CHUNK_CHARS)
        chunks = tuple(
            (first if i == 0 else piece if _has_content(e) else 0.0, _sse(e))
            for i, e in enumerate(events)
        )
        chunks += ((0.0, b"data: [DONE]\n\n"),)
        drop_after = len(chunks) // 2 if reply.corrupt else None
        headers = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))
        return HttpResponse(200, headers + reply.headers, chunks=chunks, drop_after=drop_after)

    # --- /v1/embeddings -----------------------------------------------------------

    async def _embeddings(self, request: HttpRequest) -> HttpResponse:
        self._authorise(request)
        body = _json_body(request)
        inputs = _embedding_inputs(body)
        model = self._check_model(body)
        dim, encoding = _dimensions(body, self.options.embedding_dim), _encoding(body)
        purpose = request.headers.get("x-autoagent-purpose") or "embed"
        self._by_purpose[purpose] += 1
        tokens = sum(estimate_tokens(text) for text in inputs)
        headers = self._admit(tokens)
        fault = await self._inject_fault(headers, purpose)
        usage = self._charge(tokens, 0, purpose)
        latency = self._embedding_latency(tokens)
        self.latency_s += latency
        await trio.sleep(latency)
        data = [_embedding(i, hash_embedding(t, dim), encoding) for i, t in enumerate(inputs)]
        payload = {"object": "list", "data": data, "model": model, "usage": _usage_json(usage)}
        response = _json(200, payload, headers)
        if fault == "bad_json":
            return HttpResponse(200, response.headers, response.body[: len(response.body) // 2])
        return response

    # --- checks shared by the endpoints -------------------------------------------

    def _authorise(self, request: HttpRequest) -> None:
        key = self.options.api_key
        if key is None or request.headers.get("authorization") == f"Bearer {key}":
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        shown = f"{given[:3]}...{given[-4:]}" if len(given) > 8 else "<none>"
        message = f"Incorrect API key provided: {shown}."
        raise _Reject(_error(401, message, "invalid_request_error", code="invalid_api_key"))

    def _check_model(self, body: Mapping[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Reject(_invalid("you must provide a model parameter", "model"))
        if model not in self.options.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise _Reject(_error(404, message, "invalid_request_error", code="model_not_found"))
        return model

    def _admit(self, tokens: int) -> tuple[tuple[str, str], ...]:
        """Take a request and `tokens` from the budgets, or answer 429 as OpenAI does."""
        now = trio.current_time()
        if self._request_bucket and (wait := self._request_bucket.try_take(1, now)) > 0:
            raise _Reject(self._limited("requests", wait, now))
        if self._token_bucket and (wait := self._token_bucket.try_take(tokens, now)) > 0:
            if self._request_bucket:
                self._request_bucket.give_back(1, now)
            raise _Reject(self._limited("tokens", wait, now))
        return self._limit_headers(now)

    def _limited(self, kind: str, wait: float, now: float) -> HttpResponse:
        self._rate_limited += 1
        message = f"Rate limit reached for {kind}. Please try again in {_duration(wait)}."
        headers = _retry_after(wait) + self._limit_headers(now)
        return _error(429, message, kind, code="rate_limit_exceeded", headers=headers)

    def _limit_headers(self, now: float) -> tuple[tuple[str, str], ...]:
        headers: list[tuple[str, str]] = []
        limits = (
            ("requests", self._request_bucket, self.options.rpm_limit),
            ("tokens", self._token_bucket, self.options.tpm_limit),
        )
        for kind, bucket, limit in limits:
            if bucket is not None:
                headers += [
                    (f"x-ratelimit-limit-{kind}", str(limit)),
                    (f"x-ratelimit-remaining-{kind}", str(max(0, math.floor(bucket.level(now))))),
                    (f"x-ratelimit-reset-{kind}", _duration(bucket.time_to_full(now))),
                ]
        return tuple(headers)

    def _charge(self, prompt_tokens: int, completion_tokens: int, purpose: str) -> tuple[int, int]:
        """Count usage; completion tokens also come off the token budget, after the fact."""
        if self._token_bucket is not None:
            self._token_bucket.give_back(-completion_tokens, trio.current_time())
        self._prompt_tokens += prompt_tokens
        self._completion_tokens += completion_tokens
        self._tokens_by_purpose[purpose] += prompt_tokens + completion_tokens
        return prompt_tokens, completion_tokens

    async def _inject_fault(self, headers: tuple[tuple[str, str], ...], purpose: str) -> str | None:
        """Maybe misbehave: answer 429 or 500 now, stall, or mark the body for corruption."""
        purposes = self.options.fault_purposes
        if self.options.fault_rate <= 0 or (purposes and purpose not in purposes):
            await trio.lowlevel.checkpoint()
            return None
        if self._rng.random() >= self.options.fault_rate:
            return None
        fault = self._rng.choice(self.options.faults)
        self._faults[fault] += 1
        if fault == "429":
            wait = self.options.retry_after_s * self.options.time_scale
            message = "Rate limit reached for requests (injected fault)."
            retry = _retry_after(wait) + headers
            raise _Reject(_error(429, message, "requests", "rate_limit_exceeded", headers=retry))
        if fault == "500":
            message = "The server had an error while processing your request (injected fault)."
            raise _Reject(_error(500, message, "server_error", headers=headers))
        if fault == "slow":
            await trio.sleep(self.options.slow_response_s)
        return fault

    def _realistic(self) -> bool:
        return self.options.latency_profile == "realistic" and self.options.time_scale > 0

    def _chat_latency(self, prompt_tokens: int) -> tuple[float, float]:
        """Seconds to the first token, and seconds per output token, for one reply."""
        if not self._realistic():
            return 0.0, 0.0
        scale = self.options.time_scale
        first = REALISTIC.first_token(prompt_tokens) * math.exp(self._rng.gauss(0, LATENCY_SIGMA))
        speed = REALISTIC.output_tokens_per_s * math.exp(self._rng.gauss(0, SPEED_SIGMA))
        return first * scale, scale / speed

    def _embedding_latency(self, input_tokens: int) -> float:
        if not self._realistic():
            return 0.0
        spread = math.exp(self._rng.gauss(0.0, LATENCY_SIGMA))
        return REALISTIC.embedding(input_tokens) * spread * self.options.time_scale

    # --- test hooks ---------------------------------------------------------------

    async def _stats(self, request: HttpRequest) -> HttpResponse:
        await trio.lowlevel.checkpoint()
        return _json(200, self.statistics().as_dict())

    async def _reset(self, request: HttpRequest) -> HttpResponse:
        await trio.lowlevel.checkpoint()
        self.reset_statistics()
        return _json(200, {"reset": True})


async def serve_simulator(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a simulator until cancelled: `port = await nursery.start(serve_simulator, options)`."""
    await Simulator(options).serve(task_status=task_status)


def _has_content(event: Mapping[str, Any]) -> bool:
    """Whether a stream event carries generated text (it takes decode time)."""
    choices = event.get("choices") or ()
    return any((choice.get("delta") or {}).get("content") for choice in choices)
