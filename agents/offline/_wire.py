"""The simulator's OpenAI wire format: request bodies checked the way the API checks
them, and response bodies, stream chunks and error answers built the way it sends them.

Apart from `_simulator.py`, which holds the state (limits, faults, latency) and routes.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents.llm import MAX_EMBEDDING_INPUTS, TokenBucket, estimate_tokens
from agents.offline._http import HttpRequest, HttpResponse

# The API's own limits on embedding requests, and the size of a streamed content piece.
MAX_TOKENS_PER_EMBEDDING_INPUT = 8192
MAX_TOKENS_PER_EMBEDDING_REQUEST = 300_000
STREAM_CHUNK_CHARS = 16


class _Reject(Exception):
    """An early answer (an error response) from inside a handler."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


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
