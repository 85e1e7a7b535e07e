"""The WebSocket protocol's frames: parsing client requests, building server replies.

JSON text frames, one object each, with a `type`. Client requests and their fields:
  hello {token, client?}          message {id, session_id?, text}
  subscribe {id, stream, after?}  cancel {id, run_id}   resume {id, run_id}   ping {id}
  approve {id, run_id, step_id, decision: "approve" | "deny", note?}
Server frames: welcome, accepted, subscribed, cancelled, resumed, approved, pong, event,
error {id?, code, message}.
A frame that does not parse becomes a `BadFrame` naming the problem; the connection
answers it with one `error` frame and stays up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from events import RecordedEvent
from server._render import dumps

ERROR_CODES = (
    "bad_request",
    "unauthorized",
    "not_found",
    "conflict",
    "rate_limited",
    "too_large",
    "internal",
)

# type -> (required fields and their types, optional fields and their types)
_FIELDS: dict[
    str, tuple[dict[str, type | tuple[type, ...]], dict[str, type | tuple[type, ...]]]
] = {
    "hello": ({"token": str}, {"client": str, "id": (str, int)}),
    "message": ({"id": (str, int), "text": str}, {"session_id": str}),
    "subscribe": ({"id": (str, int), "stream": str}, {"after": int}),
    "cancel": ({"id": (str, int), "run_id": str}, {}),
    "resume": ({"id": (str, int), "run_id": str}, {}),
    "ping": ({"id": (str, int)}, {}),
    "approve": (
        {"id": (str, int), "run_id": str, "step_id": str, "decision": str},
        {"note": str},
    ),
}


class BadFrame(Exception):
    """A client frame that cannot be served; `code` is the error code to answer with."""

    def __init__(self, message: str, code: str = "bad_request", request_id: Any = None) -> None:
        self.code = code
        self.request_id = request_id
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Request:
    type: str
    id: Any
    fields: dict[str, Any]


def parse_request(text: str) -> Request:
    """A checked client request, or `BadFrame` saying exactly what is wrong."""
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise BadFrame(f"not JSON: {exc.__class__.__name__}") from None
    if not isinstance(frame, dict):
        raise BadFrame(f"a frame must be a JSON object, got {type(frame).__name__}")
    request_id = frame.get("id")
    kind = frame.get("type")
    if kind not in _FIELDS:
        known = ", ".join(_FIELDS)
        raise BadFrame(
            f"unknown type {kind!r}; expected one of {known}", request_id=_safe_id(request_id)
        )
    _check_fields(kind, frame)
    return Request(kind, request_id, frame)


def _safe_id(value: Any) -> Any:
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


MAX_SESSION_ID_CHARS = 128


def _check_session_id(frame: dict[str, Any], request_id: Any) -> None:
    session_id = frame.get("session_id")
    if session_id is None:
        return
    if not session_id or len(session_id) > MAX_SESSION_ID_CHARS or not session_id.isprintable():
        raise BadFrame(
            f"session_id must be 1 to {MAX_SESSION_ID_CHARS} printable characters",
            request_id=request_id,
        )


def _check_fields(kind: str, frame: dict[str, Any]) -> None:
    required, optional = _FIELDS[kind]
    request_id = _safe_id(frame.get("id"))
    for name, wanted in required.items():
        if name not in frame:
            raise BadFrame(f"{kind}: missing field {name!r}", request_id=request_id)
        _check_type(kind, name, frame[name], wanted, request_id)
    for name, wanted in optional.items():
        if frame.get(name) is not None:
            _check_type(kind, name, frame[name], wanted, request_id)
    _check_session_id(frame, request_id)


def _check_type(
    kind: str, name: str, value: Any, wanted: type | tuple[type, ...], request_id: Any
) -> None:
    if isinstance(value, bool) or not isinstance(value, wanted):
        expected = (
            wanted.__name__ if isinstance(wanted, type) else " or ".join(t.__name__ for t in wanted)
        )
        raise BadFrame(f"{kind}: field {name!r} must be {expected}", request_id=request_id)


def error_frame(code: str, message: str, request_id: Any = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return dumps(frame)


def reply_frame(kind: str, request_id: Any, **fields: Any) -> str:
    return dumps({"type": kind, "id": request_id, **fields})


def event_frame(record: RecordedEvent) -> str:
    return dumps(
        {
            "type": "event",
            "position": record.position,
            "stream": record.stream,
            "event_type": record.type,
            "data": record.data,
            "ts": record.ts,
        }
    )
