"""The WebSocket protocol's frames: parsing client requests, building server replies.

JSON text frames, one object each, with a `type`. The client requests are declared once,
in `REQUESTS`: each message type with its fields, what each field accepts and whether it
is required. `parse_request` checks a frame against that table and nothing else, and
`protocol_reference()` renders the same table for the docs, so the two cannot drift.
Server frames: welcome, accepted, subscribed, cancelled, resumed, retried, approved, forgotten,
index_progress, documents_indexed, pong, event,
error {id?, code, message}.

Validation is total: whatever a frame holds (any JSON value in any field, nesting deep
enough to exhaust the parser, numbers past any range, lone surrogates in strings) ends as
a `Request` whose fields have the declared kinds, or as a `BadFrame` naming the field.
The connection answers a `BadFrame` with one `error` frame and stays up.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from events import RecordedEvent
from server._render import json_default

ERROR_CODES = (
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "rate_limited",
    "too_large",
    "internal",
)

MAX_ID_CHARS = 128
MAX_NAME_CHARS = 128
MAX_NOTE_CHARS = 4000
# As long as a path the file system takes (Linux PATH_MAX, in bytes, caps it there too).
MAX_PATH_CHARS = 4096
# The indexer checks the name's form itself (1-64 letters, digits, '.', '_', '-').
MAX_COLLECTION_CHARS = 64
# Integers a JavaScript client holds exactly; ids and positions stay within them.
MAX_SAFE_INTEGER = 2**53 - 1
# How deep a value in an outgoing frame may nest before the rest is elided.
MAX_FRAME_DEPTH = 100


class BadFrame(Exception):
    """A client frame that cannot be served; `code` is the error code to answer with."""

    def __init__(self, message: str, code: str = "bad_request", request_id: Any = None) -> None:
        self.code = code
        self.request_id = request_id
        super().__init__(message)


class _Invalid(Exception):
    """A value that does not fit its kind; the parser adds the message type and field."""


# --- kinds: what a field accepts --------------------------------------------------------------


class Kind(abc.ABC):
    """What one field accepts; `check` returns the value or raises `_Invalid`."""

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """The kind in words, for error messages and the protocol docs."""

    @abc.abstractmethod
    def check(self, value: object) -> object: ...

    def _refuse(self, value: object) -> _Invalid:
        return _Invalid(f"must be {self.description}, got {json_kind(value)}")


@dataclass(frozen=True, slots=True)
class Text(Kind):
    """A string of Unicode text (no lone surrogates), optionally bounded and printable."""

    min_chars: int = 0
    max_chars: int | None = None
    printable: bool = False

    @property
    def description(self) -> str:
        words = "printable characters" if self.printable else "characters"
        if self.max_chars is None:
            return "a string" if not self.min_chars else f"a string of {self.min_chars}+ {words}"
        if not self.min_chars:
            return f"a string of at most {self.max_chars} {words}"
        return f"a string of {self.min_chars} to {self.max_chars} {words}"

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise self._refuse(value)
        if not is_unicode(value):
            raise _Invalid("must be valid Unicode text (it holds a lone surrogate)")
        too_long = self.max_chars is not None and len(value) > self.max_chars
        if len(value) < self.min_chars or too_long or (self.printable and not value.isprintable()):
            raise _Invalid(f"must be {self.description}")
        return value


@dataclass(frozen=True, slots=True)
class Integer(Kind):
    """A JSON integer (not a boolean, not a float) within bounds."""

    minimum: int = -MAX_SAFE_INTEGER
    maximum: int = MAX_SAFE_INTEGER

    @property
    def description(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"

    def check(self, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._refuse(value)
        if not self.minimum <= value <= self.maximum:
            raise _Invalid(f"must be {self.description}")
        return value


@dataclass(frozen=True, slots=True)
class OneOf(Kind):
    """One of a few fixed strings."""

    choices: tuple[str, ...]

    @property
    def description(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def check(self, value: object) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise _Invalid(f"must be {self.description}")
        return value


@dataclass(frozen=True, slots=True)
class RequestId(Kind):
    """What a client names a request by; echoed in the reply."""

    @property
    def description(self) -> str:
        return f"a string of at most {MAX_ID_CHARS} characters or an integer"

    def check(self, value: object) -> str | int:
        if isinstance(value, str):
            return _ID_TEXT.check(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return _ID_INTEGER.check(value)
        raise self._refuse(value)


@dataclass(frozen=True, slots=True)
class StreamName(Kind):
    """`$all`, `run-<id>` or `session-<id>`, the id printable and bounded."""

    @property
    def description(self) -> str:
        return f"'$all', 'run-<id>' or 'session-<id>' (id: 1 to {MAX_NAME_CHARS} printable)"

    def check(self, value: object) -> str:
        if value == "$all":
            return "$all"
        if not isinstance(value, str) or not value.startswith(("run-", "session-")):
            raise self._refuse(value) if not isinstance(value, str) else self._wrong()
        try:
            _NAME_TEXT.check(value.partition("-")[2])
        except _Invalid:
            raise self._wrong() from None
        return value

    def _wrong(self) -> _Invalid:
        return _Invalid(f"must be {self.description}")


_ID_TEXT = Text(0, MAX_ID_CHARS)
_ID_INTEGER = Integer()
_NAME_TEXT = Text(1, MAX_NAME_CHARS, printable=True)


def json_kind(value: object) -> str:
    """The JSON word for a value's type (values stay out of messages: they may be huge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def is_unicode(text: str) -> bool:
    """True when `text` encodes to UTF-8 (JSON escapes can smuggle in lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- the schema: one table of message types and their fields ---------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    required: bool = True
    doc: str = ""


@dataclass(frozen=True, slots=True)
class MessageType:
    name: str
    fields: tuple[Field, ...]
    reply: str
    doc: str


ID = Field("id", RequestId(), doc="echoed in the reply, an error included")
NAME = _NAME_TEXT

REQUESTS: Mapping[str, MessageType] = {
    m.name: m
    for m in (
        MessageType(
            "hello",
            (
                Field("token", Text(), doc="a configured token"),
                Field("client", Text(0, MAX_NAME_CHARS), required=False, doc="client name"),
                Field("id", RequestId(), required=False, doc=ID.doc),
            ),
            "welcome {id}",
            "First frame when auth is on; a wrong token is answered, then the close (1008).",
        ),
        MessageType(
            "message",
            (
                ID,
                Field("text", Text(), doc="the goal (the orchestrator bounds its length)"),
                Field("session_id", NAME, required=False, doc="continue this session"),
            ),
            "accepted {id, session_id, run_id}",
            "Start a run; its events follow on this connection.",
        ),
        MessageType(
            "subscribe",
            (
                ID,
                Field("stream", StreamName(), doc="what to follow"),
                Field("after", Integer(0), required=False, doc="last position seen (0)"),
            ),
            "subscribed {id, stream, after}",
            "Catch-up from `after`, then live.",
        ),
        MessageType(
            "cancel",
            (ID, Field("run_id", NAME, doc="a run of yours")),
            "cancelled {id, run_id}",
            "Stop a run.",
        ),
        MessageType(
            "resume",
            (ID, Field("run_id", NAME, doc="an unfinished run")),
            "resumed {id, run_id}",
            "Continue an unfinished run; its events follow.",
        ),
        MessageType(
            "retry",
            (ID, Field("run_id", NAME, doc="a failed or cancelled run of yours")),
            "retried {id, run_id, new_run_id}",
            "Run it again as a new run (idempotent results reused); its events follow.",
        ),
        MessageType(
            "approve",
            (
                ID,
                Field("run_id", NAME, doc="a run of yours"),
                Field("step_id", NAME, doc="a step waiting for approval"),
                Field("decision", OneOf(("approve", "deny"))),
                Field("note", Text(0, MAX_NOTE_CHARS), required=False, doc="recorded with it"),
            ),
            "approved {id, run_id, step_id, decision}",
            "Decide on a step that waits for a human.",
        ),
        MessageType(
            "forget",
            (
                ID,
                Field("scope", OneOf(("me", "session")), doc="your key, or one session's"),
                Field("session_id", NAME, required=False, doc="with scope 'session'"),
                Field("user", NAME, required=False, doc="with scope 'me': an admin names whom"),
            ),
            "forgotten {id, scope, session_id, user, key_destroyed}",
            "Destroy a key: what it sealed (goals, answers, results, memories) is gone.",
        ),
        MessageType(
            "index_documents",
            (
                ID,
                Field(
                    "path",
                    Text(1, MAX_PATH_CHARS),
                    doc="a folder or file in the workspace (relative: to the first root)",
                ),
                Field(
                    "collection",
                    Text(1, MAX_COLLECTION_CHARS, printable=True),
                    required=False,
                    doc="collection to index into ('default')",
                ),
            ),
            "documents_indexed {id, report}",
            "Index a workspace folder or file as the documents agent does; "
            "`index_progress {id, files_done, files_total, chunks_embedded}` frames come first.",
        ),
        MessageType("ping", (ID,), "pong {id}", "Liveness check."),
    )
}


@dataclass(frozen=True, slots=True)
class Request:
    """A checked request: `fields` holds every declared field (None when left out)."""

    type: str
    id: str | int | None
    fields: Mapping[str, Any]


# --- parsing ------------------------------------------------------------------------------------


def parse_request(text: str) -> Request:
    """A checked client request, or `BadFrame` saying exactly what is wrong."""
    frame = _load(text)
    if not isinstance(frame, dict):
        raise BadFrame(f"a frame must be a JSON object, got {json_kind(frame)}")
    request_id = safe_id(frame.get("id"))
    kind = frame.get("type")
    message = REQUESTS.get(kind) if isinstance(kind, str) else None
    if message is None:
        known = ", ".join(REQUESTS)
        got = repr(kind) if isinstance(kind, str) and len(kind) <= 40 else json_kind(kind)
        raise BadFrame(f"unknown type {got}; expected one of {known}", request_id=request_id)
    return Request(message.name, request_id, _check_fields(message, frame, request_id))


def _load(text: str) -> object:
    """JSON, strictly: no NaN or Infinity, no nesting past what the parser can hold."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadFrame("not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, integers past the digit limit
        raise BadFrame(f"not JSON: {str(exc)[:100]}") from None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def safe_id(value: object) -> str | int | None:
    """The request id to echo, or None when it is not a valid one."""
    try:
        return RequestId().check(value)
    except _Invalid:
        return None


def _check_fields(
    message: MessageType, frame: dict[str, Any], request_id: str | int | None
) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for spec in message.fields:
        value = frame.get(spec.name)
        if value is None:
            if spec.required:
                raise BadFrame(
                    f"{message.name}: missing field {spec.name!r}", request_id=request_id
                )
            checked[spec.name] = None
            continue
        try:
            checked[spec.name] = spec.kind.check(value)
        except _Invalid as exc:
            raise BadFrame(
                f"{message.name}: field {spec.name!r} {exc}", request_id=request_id
            ) from None
    return checked


def protocol_reference() -> str:
    """The client requests as a Markdown table, rendered from `REQUESTS`."""
    lines = ["| request -> reply | field | required | accepts | meaning |", "|---|---|---|---|---|"]
    for message in REQUESTS.values():
        lines.append(f"| `{message.name}` -> `{message.reply}` | | | | {message.doc} |")
        for spec in message.fields:
            required = "yes" if spec.required else "no"
            accepts = spec.kind.description
            lines.append(f"| | `{spec.name}` | {required} | {accepts} | {spec.doc} |")
    return "\n".join(lines)


# --- server frames ------------------------------------------------------------------------------


def error_frame(code: str, message: str, request_id: Any = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return dumps_frame(frame)


def reply_frame(kind: str, request_id: Any, **fields: Any) -> str:
    return dumps_frame({"type": kind, "id": request_id, **fields})


def event_frame(record: RecordedEvent) -> str:
    """An event as clients get it: the documented fields, then the record's envelope
    (its version in the stream, id, correlation, causation and its place in the hash
    chain), so a client can show and check what the log holds."""
    return dumps_frame(
        {
            "type": "event",
            "position": record.position,
            "stream": record.stream,
            "event_type": record.type,
            "data": record.data,
            "ts": record.ts,
            "version": record.version,
            "id": str(record.id),
            "correlation": record.correlation,
            "causation": record.causation,
            "prev_hash": record.prev_hash.hex(),
            "hash": record.hash.hex(),
        }
    )


def dumps_frame(frame: Mapping[str, Any]) -> str:
    """Strict JSON text of a server frame, whatever it holds.

    Payloads read back from the log may hold what JSON has no word for (bytes, map keys
    that are not text, NaN); those frames are rebuilt from `plain_json` instead of
    failing, so no record can break the connection that follows it.
    """
    try:
        text = json.dumps(frame, default=json_default, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(plain_json(frame), ensure_ascii=False, allow_nan=False)
    return text if is_unicode(text) else json.dumps(plain_json(frame), allow_nan=False)


def plain_json(value: object, depth: int = 0) -> object:
    """`value` as plain JSON: text keys, finite numbers, valid Unicode, bounded nesting."""
    if depth > MAX_FRAME_DEPTH:
        return "(nested too deeply)"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 10**300 else None
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return {_key(k): plain_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_json(v, depth + 1) for v in value]
    try:
        return plain_json(json_default(value), depth + 1)
    except TypeError:
        return f"({type(value).__name__})"


def _key(key: object) -> str:
    if isinstance(key, str):
        return str(plain_json(key))
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    return json.dumps(plain_json(key, MAX_FRAME_DEPTH - 1), allow_nan=False)
