"""The event catalog: typed, frozen classes, a registry by type name, and upcasters.

A record stores its type name and the schema number of the class that wrote it. When
a class's schema is bumped, an upcaster registered for the old number turns the old
payload into the new shape on read, so old logs decode as current types.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeVar

from events._model import FORGOTTEN_KEY, SEALED_KEY, NewEvent, RecordedEvent, new_event_id
from events.errors import UnknownEventType

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_EVENT_TYPES: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_CURRENT_SCHEMA: dict[str, int] = {}
# (type, schema) pairs `check_decodable` found readable; emptied when the catalog changes.
_DECODABLE: set[tuple[str, int]] = set()


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event class: a past-tense fact with a plain-data payload."""

    schema: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    def to_data(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        return cls(**data)

    def new(
        self,
        *,
        id: uuid.UUID | None = None,
        correlation: str | None = None,
        causation: str | None = None,
    ) -> NewEvent:
        """This event as a `NewEvent` ready to append."""
        return NewEvent(
            type=self.type_name(),
            data=self.to_data(),
            id=id or new_event_id(),
            correlation=correlation,
            causation=causation,
            schema=self.schema,
        )


E = TypeVar("E", bound=type[Event])
_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def register_event(cls: E) -> E:
    """Class decorator: make `cls` decodable by its type name."""
    name = cls.type_name()
    if name in _EVENT_TYPES and _EVENT_TYPES[name] is not cls:
        raise ValueError(f"event type {name!r} is already registered")
    _EVENT_TYPES[name] = cls
    _CURRENT_SCHEMA[name] = cls.schema
    _DECODABLE.clear()
    return cls


def register_upcaster(type_name: str, from_schema: int, upcaster: Upcaster) -> None:
    """Register how to turn a `type_name` payload of `from_schema` into `from_schema + 1`."""
    _UPCASTERS[(type_name, from_schema)] = upcaster
    _DECODABLE.clear()


def event_class(type_name: str, position: int | None = None) -> type[Event]:
    try:
        return _EVENT_TYPES[type_name]
    except KeyError:
        raise UnknownEventType(type_name, position) from None


def is_known_type(type_name: str) -> bool:
    return type_name in _EVENT_TYPES


def current_schema(type_name: str, position: int | None = None) -> int:
    try:
        return _CURRENT_SCHEMA[type_name]
    except KeyError:
        raise UnknownEventType(type_name, position) from None


def typed_event(record: RecordedEvent) -> Event:
    """A record's payload as its typed event class (upcast data, current schema)."""
    data = record.data
    if SEALED_KEY in data or FORGOTTEN_KEY in data:  # sealed or forgotten: the stubs
        data = {k: v for k, v in data.items() if k not in (SEALED_KEY, FORGOTTEN_KEY)}
    return event_class(record.type, record.position).from_data(data)


def upcast(
    type_name: str, schema: int, data: dict[str, Any], position: int | None = None
) -> tuple[int, dict[str, Any]]:
    """Bring `data` from `schema` up to the type's current schema, one step at a time."""
    target = current_schema(type_name, position)
    while schema < target:
        step = _UPCASTERS.get((type_name, schema))
        if step is None:
            raise UnknownEventType(f"{type_name} schema {schema} (no upcaster)", position)
        data = step(data)
        schema += 1
    return schema, data


def check_decodable(type_name: str, schema: int) -> None:
    """Raise `UnknownEventType` unless a record of this type and schema can be read back.

    Every append asks, so a pair found readable is remembered until the catalog changes.
    """
    if (type_name, schema) in _DECODABLE:
        return
    target = current_schema(type_name)
    if schema > target:
        raise UnknownEventType(f"{type_name} schema {schema} (newer than {target})")
    for old in range(schema, target):
        if (type_name, old) not in _UPCASTERS:
            raise UnknownEventType(f"{type_name} schema {schema} (no upcaster from {old})")
    _DECODABLE.add((type_name, schema))


def registered_types() -> list[str]:
    return sorted(_EVENT_TYPES)


# --- session stream: session-<id> -------------------------------------------------

# The principal of a server without tokens (loopback only) and of in-process commands:
# the machine's one operator, an admin.
LOCAL_PRINCIPAL = "local"


@register_event
@dataclass(frozen=True, slots=True)
class SessionStarted(Event):
    """`user` is the principal the session belongs to (its name, never its token)."""

    session_id: str
    user: str = "anonymous"
    client: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class UserMessageReceived(Event):
    session_id: str
    message_id: str
    text: str


@register_event
@dataclass(frozen=True, slots=True)
class AssistantMessageSent(Event):
    session_id: str
    text: str
    run_id: str | None = None


@register_event
@dataclass(frozen=True, slots=True)
class ContextUpdated(Event):
    session_id: str
    values: dict[str, Any]


@register_event
@dataclass(frozen=True, slots=True)
class SessionClosed(Event):
    session_id: str
    reason: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class SessionForgotten(Event):
    """The session's key `key_id` was destroyed (`forget {scope: "session"}`): the
    personal content of the session and of its runs no longer opens. `by` is the
    principal that asked."""

    session_id: str
    key_id: str
    by: str = ""


# --- run stream: run-<id> ---------------------------------------------------------


@register_event
@dataclass(frozen=True, slots=True)
class RunRequested(Event):
    """`principal` asked for the run (its name; "" in logs written before principals);
    `retry_of` names the failed or cancelled run this one tries again."""

    run_id: str
    session_id: str
    goal: str
    principal: str = ""
    retry_of: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class IntentAnalyzed(Event):
    run_id: str
    intent: str
    entities: dict[str, Any]


@register_event
@dataclass(frozen=True, slots=True)
class PlanCreated(Event):
    """steps: dicts with id, agent, action, parameters, dependencies, reasoning."""

    run_id: str
    steps: list[dict[str, Any]]


@register_event
@dataclass(frozen=True, slots=True)
class StepStarted(Event):
    run_id: str
    step_id: str
    attempt: int = 1


@register_event
@dataclass(frozen=True, slots=True)
class StepCompleted(Event):
    run_id: str
    step_id: str
    result: Any
    duration_s: float


@register_event
@dataclass(frozen=True, slots=True)
class StepFailed(Event):
    run_id: str
    step_id: str
    error_type: str
    message: str
    retryable: bool


@register_event
@dataclass(frozen=True, slots=True)
class StepSkipped(Event):
    run_id: str
    step_id: str
    reason: str


@register_event
@dataclass(frozen=True, slots=True)
class VerificationCompleted(Event):
    run_id: str
    step_id: str
    passed: bool
    confidence: float
    notes: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class ApprovalRequested(Event):
    """A step of a tool that needs a human's approval waits for a decision."""

    run_id: str
    step_id: str
    tool: str
    parameters: dict[str, Any]
    reason: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class ApprovalGranted(Event):
    run_id: str
    step_id: str
    note: str = ""
    by: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class ApprovalDenied(Event):
    run_id: str
    step_id: str
    note: str = ""
    by: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class ReplanRequested(Event):
    run_id: str
    reason: str


@register_event
@dataclass(frozen=True, slots=True)
class LLMCallCompleted(Event):
    run_id: str | None
    purpose: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int = 0
    outcome: str = "ok"


@register_event
@dataclass(frozen=True, slots=True)
class RunCompleted(Event):
    run_id: str
    answer: str


@register_event
@dataclass(frozen=True, slots=True)
class RunFailed(Event):
    run_id: str
    reason: str


@register_event
@dataclass(frozen=True, slots=True)
class RunCancelled(Event):
    run_id: str
    reason: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class RunCancelRequested(Event):
    """A client asked to cancel a run another server node executes: that node cancels
    it (`RunCancelled`); a node that resumes the run later finds the request and
    cancels it at once. Not terminal: the run ends only with `RunCancelled`."""

    run_id: str
    by: str = ""


# A run ends with exactly one of these; each names the run status it leaves behind.
TERMINAL_RUN_STATUS: Mapping[str, str] = {
    "RunCompleted": "completed",
    "RunFailed": "failed",
    "RunCancelled": "cancelled",
}
TERMINAL_RUN_TYPES = frozenset(TERMINAL_RUN_STATUS)


@register_event
@dataclass(frozen=True, slots=True)
class RunResumed(Event):
    run_id: str
    reason: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class RunRetried(Event):
    """Appended to a failed or cancelled run: `new_run_id` tries it again (the run
    itself stays as it ended)."""

    run_id: str
    new_run_id: str
    by: str = ""


@register_event
@dataclass(frozen=True, slots=True)
class StepReused(Event):
    """A retried run takes a completed step's result from the run it retries (the
    step's tool is idempotent, so running it again would give nothing new)."""

    run_id: str
    step_id: str
    from_run_id: str
    result: Any = None


# --- memory stream: memory-<user> -------------------------------------------------


@register_event
@dataclass(frozen=True, slots=True)
class MemoryAdded(Event):
    """A memory of `user`; embedding: float32 bytes (little-endian).

    Schema 2 seals memories for crypto-shredding: `sealed_content` and
    `sealed_embedding` hold the content (UTF-8) and the embedding encrypted with the
    user's key `key_id`, which lives outside the log; `content` and `embedding` then
    stay empty. A schema-1 event (upcast with `key_id` "") carries them in plaintext.
    """

    schema: ClassVar[int] = 2

    user: str
    memory_id: str
    content: str
    embedding: bytes
    model: str
    key_id: str = ""
    sealed_content: bytes = b""
    sealed_embedding: bytes = b""


def _memory_added_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "key_id": "", "sealed_content": b"", "sealed_embedding": b""}


register_upcaster("MemoryAdded", 1, _memory_added_v1_to_v2)


@register_event
@dataclass(frozen=True, slots=True)
class MemoryForgotten(Event):
    """One memory removed from search; its sealed record stays in the log."""

    user: str
    memory_id: str


@register_event
@dataclass(frozen=True, slots=True)
class MemoryKeyDestroyed(Event):
    """`user`'s key `key_id` was destroyed: every memory sealed with it is gone for good."""

    user: str
    key_id: str


# --- docs stream: docs-<collection> -----------------------------------------------


@register_event
@dataclass(frozen=True, slots=True)
class DocumentIndexed(Event):
    """chunks: dicts with text, offset and embedding (float32 bytes, little-endian).

    `model` names the embedding model (a collection holds one model's vectors) and
    `size` the file's size in bytes; both default for events written before them.
    """

    collection: str
    path: str
    sha256: str
    chunks: list[dict[str, Any]]
    model: str = ""
    size: int = 0


@register_event
@dataclass(frozen=True, slots=True)
class DocumentRemoved(Event):
    collection: str
    path: str
