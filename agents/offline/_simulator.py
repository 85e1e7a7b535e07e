"""An OpenAI-compatible HTTP server that answers with the offline model, for tests and benchmarks.

Tests and benchmarks drive the real openai SDK against it, so the whole client path
(pooling, JSON mode, streaming, retries, rate-limit headers) is exercised without a
network. It serves `POST /v1/chat/completions` (plain and `stream: true` as SSE with
usage), `POST /v1/embeddings` (deterministic hashed unit vectors, validated as the API
validates), `GET /v1/models`, and `GET /_sim/stats` / `POST /_sim/reset` for tests.

It can behave like a real service: latency per purpose (`realistic`: planner ~1.5 s,
LLM-backed step ~2 s, verification and the rest ~0.8 s, log-normal spread, all times
`time_scale`), its own RPM/TPM limits with the real `x-ratelimit-*` headers and 429s,
and injected faults at `fault_rate`: 429 with Retry-After, 500, a response slower than
any sane client timeout, or a truncated / invalid JSON body. Seeded, so runs repeat.
"""

from __future__ import annotations

import base64
import collections
import json
import math
import random
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import trio

from agents.llm import MAX_EMBEDDING_INPUTS, TokenBucket, estimate_prompt_tokens, estimate_tokens
from agents.offline import _model as offline_model
from agents.offline._entities import hash_embedding
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http

LATENCY_PROFILES = ("none", "realistic")
FAULT_KINDS = ("429", "500", "slow", "bad_json")
REALISTIC_MEDIAN_S: Mapping[str, float] = {
    "plan": 1.5,
    "step": 2.0,
    "verify": 0.8,
    "answer": 0.8,
    "embed": 0.2,
}
DEFAULT_MEDIAN_S = 0.8
LATENCY_SIGMA = 0.35
MAX_TOKENS_PER_EMBEDDING_INPUT = 8192
MAX_TOKENS_PER_EMBEDDING_REQUEST = 300_000
STREAM_CHUNK_CHARS = 16
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
    burst_s: float = 1.0
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

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(self).items()}


class _Reject(Exception):
    """An early answer (an error response) from inside a handler."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


Route = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Simulator:
    """The simulator's state and request handling; `serve` puts it on a socket."""

    def __init__(self, options: SimulatorOptions = SimulatorOptions()) -> None:
        self.options = options
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
        )

    # --- dispatch -----------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse:
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
        usage = self._charge(prompt_tokens, estimate_tokens(text))
        reply = _Reply(model, text, usage, headers, fault == "bad_json", json_mode)
        latency = self._latency(purpose)
        if body.get("stream"):
            return self._streamed(reply, _include_usage(body), latency)
        await trio.sleep(latency)
        return self._completed(reply)

    def _completed(self, reply: _Reply) -> HttpResponse:
        content = reply.text
        if reply.corrupt and reply.json_mode and self._rng.random() < 0.5:
            content = content[: len(content) // 2]  # well-framed, but not JSON inside
        elif reply.corrupt:
            full = _json(200, _completion(reply, content), reply.headers).body
            return HttpResponse(200, _JSON_HEADERS + reply.headers, full[: len(full) // 2])
        return _json(200, _completion(reply, content), reply.headers)

    def _streamed(self, reply: _Reply, include_usage: bool, latency: float) -> HttpResponse:
        events = _stream_events(reply, include_usage)
        first, rest = latency * 0.3, latency * 0.7 / max(1, len(events) - 1)
        chunks = tuple((first if i == 0 else rest, _sse(e)) for i, e in enumerate(events))
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
        usage = self._charge(tokens, 0)
        await trio.sleep(self._latency(purpose))
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

    def _charge(self, prompt_tokens: int, completion_tokens: int) -> tuple[int, int]:
        """Count usage; completion tokens also come off the token budget, after the fact."""
        if self._token_bucket is not None:
            self._token_bucket.give_back(-completion_tokens, trio.current_time())
        self._prompt_tokens += prompt_tokens
        self._completion_tokens += completion_tokens
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

    def _latency(self, purpose: str) -> float:
        if self.options.latency_profile == "none" or self.options.time_scale == 0:
            return 0.0
        median = REALISTIC_MEDIAN_S.get(purpose, DEFAULT_MEDIAN_S)
        return median * math.exp(self._rng.gauss(0.0, LATENCY_SIGMA)) * self.options.time_scale

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


# --- request parsing ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    model: str
    text: str
    usage: tuple[int, int]
    headers: tuple[tuple[str, str], ...]
    corrupt: bool
    json_mode: bool


def _bucket(per_minute: int | None, burst_s: float) -> TokenBucket | None:
    if per_minute is None:
        return None
    return TokenBucket(per_minute / 60, max(1.0, per_minute / 60 * burst_s))


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body)
    except ValueError:
        raise _Reject(_invalid("the request body is not valid JSON", None)) from None
    if not isinstance(body, dict):
        raise _Reject(_invalid("the request body must be a JSON object", None))
    return body


def _chat_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Reject(_invalid("'messages' must be a non-empty array", "messages"))
    return [_chat_message(index, m) for index, m in enumerate(messages)]


def _chat_message(index: int, message: object) -> dict[str, str]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise _Reject(_invalid(f"messages[{index}] must be an object with a role", "messages"))
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"role": message["role"], "content": content if isinstance(content, str) else ""}


def _response_format(body: Mapping[str, Any]) -> str | None:
    fmt = body.get("response_format")
    return fmt.get("type") if isinstance(fmt, dict) else None


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    """The API's rules: a string or 1..2048 non-empty strings, each within the token limits."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
        raise _Reject(_invalid("'input' must be a string or an array of strings", "input"))
    if not 1 <= len(inputs) <= MAX_EMBEDDING_INPUTS:
        message = f"'input' must hold 1 to {MAX_EMBEDDING_INPUTS} items, got {len(inputs)}"
        raise _Reject(_invalid(message, "input"))
    for index, text in enumerate(inputs):
        _check_embedding_input(index, text)
    if sum(estimate_tokens(t) for t in inputs) > MAX_TOKENS_PER_EMBEDDING_REQUEST:
        message = f"the request exceeds {MAX_TOKENS_PER_EMBEDDING_REQUEST} tokens in all"
        raise _Reject(_invalid(message, "input"))
    return inputs


def _check_embedding_input(index: int, text: str) -> None:
    if not text:
        raise _Reject(_invalid(f"'input[{index}]' must not be an empty string", "input"))
    if estimate_tokens(text) > MAX_TOKENS_PER_EMBEDDING_INPUT:
        message = (
            f"This model's maximum context length is {MAX_TOKENS_PER_EMBEDDING_INPUT} tokens, "
            f"but input[{index}] has {estimate_tokens(text)} tokens"
        )
        raise _Reject(_invalid(message, "input"))


def _encoding(body: Mapping[str, Any]) -> str:
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _Reject(_invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format"))
    return str(encoding)


def _dimensions(body: Mapping[str, Any], default: int) -> int:
    dim = body.get("dimensions", default)
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 8192:
        raise _Reject(_invalid("'dimensions' must be an integer from 1 to 8192", "dimensions"))
    return dim


# --- response building --------------------------------------------------------------

_JSON_HEADERS = (("content-type", "application/json"),)


def _json(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, _JSON_HEADERS + headers, json.dumps(payload).encode())


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    param: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> HttpResponse:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return _json(status, {"error": error}, headers)


def _invalid(message: str, param: str | None) -> HttpResponse:
    return _error(400, message, "invalid_request_error", param=param)


def _retry_after(seconds: float) -> tuple[tuple[str, str], ...]:
    return (
        ("retry-after", str(max(1, math.ceil(seconds)))),
        ("retry-after-ms", str(max(1, math.ceil(seconds * 1000)))),
    )


def _duration(seconds: float) -> str:
    """OpenAI's duration format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3g}s" if minutes else f"{rest:.3g}s"


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "autoagent-sim"}


def _usage_json(usage: tuple[int, int]) -> dict[str, int]:
    prompt, completion = usage
    result = {"prompt_tokens": prompt, "total_tokens": prompt + completion}
    return result | ({"completion_tokens": completion} if completion else {})


def _completion(reply: _Reply, content: str) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    prompt, completion = reply.usage
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return _envelope(reply, "chat.completion") | {
        "choices": [choice],
        "usage": usage | {"total_tokens": prompt + completion},
    }


def _envelope(reply: _Reply, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sim-{abs(hash((reply.text, time.time_ns()))) % 10**12}",
        "object": kind,
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": "autoagent-sim",
    }


def _stream_events(reply: _Reply, include_usage: bool) -> list[dict[str, Any]]:
    """The chunks of a streamed completion: role, content pieces, finish, then usage."""
    envelope = _envelope(reply, "chat.completion.chunk")
    size = STREAM_CHUNK_CHARS
    pieces = [reply.text[i : i + size] for i in range(0, len(reply.text), size)]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": piece} for piece in pieces]
    events = [_chunk(envelope, delta, None, include_usage) for delta in deltas]
    events.append(_chunk(envelope, {}, "stop", include_usage))
    if include_usage:
        prompt, completion = reply.usage
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        events.append(
            envelope | {"choices": [], "usage": usage | {"total_tokens": sum(reply.usage)}}
        )
    return events


def _chunk(
    envelope: dict[str, Any], delta: dict[str, Any], finish: str | None, with_usage: bool
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return envelope | {"choices": [choice]} | ({"usage": None} if with_usage else {})


def _sse(event: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _embedding(index: int, vector: list[float], encoding: str) -> dict[str, Any]:
    if encoding == "base64":
        packed = struct.pack(f"<{len(vector)}f", *vector)
        return {
            "object": "embedding",
            "index": index,
            "embedding": base64.b64encode(packed).decode(),
        }
    return {"object": "embedding", "index": index, "embedding": vector}
