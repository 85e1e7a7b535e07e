"""Sealing personal content: what is personal in each event, and how it is sealed
with the key of its session and opened again.

Personal content - goal and message texts, plan parameters, step results, answers,
verdict notes, failure messages - never reaches the log in clear. When a store has a
`Sealer`, an append to a `session-<id>` or `run-<id>` stream replaces each personal
field by a content-free stub of the same shape (`"[forgotten]"`, `{}`, `[]`, `None`)
and adds one `sealed` box: the fields' values, msgpack-encoded and sealed (AES-GCM)
with the session's key, bound to the event's type and id. The envelope, the types, the
positions, the clear fields and the hash chain stay readable, so `audit`, `replay
--verify` and every projection keep working on sealed records; projections only ever
see (and store) the stubs.

Readers that show or use content open records: `Sealer.open(record)` puts the values
back, or - when the key was destroyed by a forget - leaves the stubs and marks the
record `forgotten: true`. Nothing is cached in clear here: opening costs one AES-GCM
decryption of the box each time (a few microseconds for a typical event).

A run's content is sealed with its session's key (a run belongs to one session, and
forgetting the session forgets its runs); the session key is wrapped with its
principal's key (see `events._keys`), so forgetting the principal forgets every session
of it at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import trio

from events._keys import KeyStore, UserKey, session_owner
from events._log import EventLog
from events._model import FORGOTTEN_KEY, SEALED_KEY, NewEvent, RecordedEvent
from events._types import Event
from events.errors import SealBroken

FORGOTTEN_TEXT = "[forgotten]"
SESSION_STREAM = "session-"
RUN_STREAM = "run-"
_MAP_LIMIT = 100_000  # run -> session and session -> principal entries remembered

Path = tuple[str, ...]

# Where personal content lives in each event type: paths into the payload, "*" for
# every item of a list. Add a path when an event gains a field that can carry content
# a user typed or a tool returned; a record sealed before keeps its old paths (the box
# lists the values in path order, and an absent field is skipped on both sides).
PERSONAL_FIELDS: dict[str, tuple[Path, ...]] = {
    "UserMessageReceived": (("text",),),
    "AssistantMessageSent": (("text",),),
    "ContextUpdated": (("values",),),
    "RunRequested": (("goal",),),
    "IntentAnalyzed": (("entities",),),
    "PlanCreated": (("steps", "*", "parameters"), ("steps", "*", "reasoning")),
    "StepCompleted": (("result",),),
    "StepReused": (("result",),),
    "StepFailed": (("message",),),
    "VerificationCompleted": (("notes",),),
    "ApprovalRequested": (("parameters",),),
    "ApprovalGranted": (("note",),),
    "ApprovalDenied": (("note",),),
    "ReplanRequested": (("reason",),),
    "RunCompleted": (("answer",),),
    "RunFailed": (("reason",),),
}


def stub(value: Any) -> Any:
    """A content-free value of the same shape as `value`."""
    if isinstance(value, str):
        return FORGOTTEN_TEXT
    if isinstance(value, dict):
        return {}
    if isinstance(value, list | tuple):
        return []
    return None


def _take(node: Any, path: Path, out: list[Any]) -> Any:
    """`node` with the values at `path` moved into `out` and stubs left behind.

    Copy-on-write: only the containers along the path are copied, so the caller's
    payload is never changed and nothing else is copied.
    """
    head, rest = path[0], path[1:]
    if head == "*":
        return [_take(item, rest, out) for item in node] if isinstance(node, list) else node
    if not isinstance(node, dict) or head not in node:
        return node
    node = dict(node)
    if rest:
        node[head] = _take(node[head], rest, out)
    else:
        out.append(node[head])
        node[head] = stub(node[head])
    return node


def _put(node: Any, path: Path, values: list[Any]) -> Any:
    """`node` with values (in `_take`'s order, reversed) put back at `path` (copy-on-write)."""
    head, rest = path[0], path[1:]
    if head == "*":
        return [_put(item, rest, values) for item in node] if isinstance(node, list) else node
    if not isinstance(node, dict) or head not in node or not values:
        return node
    node = dict(node)
    node[head] = _put(node[head], rest, values) if rest else values.pop()
    return node


def _context(event_type: str, id_bytes: bytes) -> bytes:
    return event_type.encode() + b"\x00" + id_bytes


def seal_payload(
    event_type: str, data: dict[str, Any], id_bytes: bytes, key: UserKey
) -> dict[str, Any]:
    """`data` with its personal fields stubbed and their values sealed in one box."""
    sealed: Any = data
    values: list[Any] = []
    for path in PERSONAL_FIELDS[event_type]:
        sealed = _take(sealed, path, values)
    packed = msgpack.packb(values, use_bin_type=True)
    box = {"o": key.user, "k": key.key_id, "b": key.seal(packed, _context(event_type, id_bytes))}
    return {**sealed, SEALED_KEY: box}


def box_owner(data: dict[str, Any]) -> str | None:
    """The key-store owner a record's box is sealed for; None when it has no box."""
    box = data.get(SEALED_KEY)
    return box.get("o") if isinstance(box, dict) else None


def open_payload(record: RecordedEvent, key: UserKey | None) -> RecordedEvent:
    """The record with its content back (or marked forgotten when `key` is None or
    another key than the box's)."""
    data = dict(record.data)
    box = data.pop(SEALED_KEY)
    if key is None or not isinstance(box, dict) or key.key_id != box.get("k"):
        data[FORGOTTEN_KEY] = True
        return record._replace(data=data)
    plain = key.open(box["b"], _context(record.type, record.id_bytes))
    try:
        values = msgpack.unpackb(plain, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise SealBroken(key.user, key.key_id, f"box of {record.type} does not decode") from exc
    values.reverse()  # popped from the end, in path order
    opened: Any = data
    for path in PERSONAL_FIELDS.get(record.type, ()):
        opened = _put(opened, path, values)
    data = opened
    return record._replace(data=data)


class Sealer:
    """Seals appends to session and run streams, and opens records, with a key store.

    Remembers which session a run belongs to and which principal a session belongs
    to (learned from the appends it sees, else read from the streams' first records),
    so sealing needs no lookup once a run is going.
    """

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._session_of_run: dict[str, str] = {}
        self._principal_of_session: dict[str, str | None] = {}

    # --- sealing ---------------------------------------------------------------------

    def observe(self, stream: str, events: Iterable[Event | NewEvent], *, committed: bool) -> None:
        """Learn run -> session (from an append about to be sealed: the run's own first
        event says it) and session -> principal (only from a committed append: a
        `SessionStarted` another principal's won the race to must not name the owner)."""
        wanted = ("RunRequested", "SessionStarted") if committed else ("RunRequested",)
        for event in events:
            etype = event.type_name() if isinstance(event, Event) else event.type
            if etype not in wanted:
                continue
            data = event.to_data() if isinstance(event, Event) else dict(event.data)
            if etype == "RunRequested" and stream.startswith(RUN_STREAM):
                self._remember(self._session_of_run, stream[len(RUN_STREAM) :], data)
            elif etype == "SessionStarted" and stream.startswith(SESSION_STREAM):
                self._remember_principal(stream[len(SESSION_STREAM) :], data.get("user"))

    def _remember(self, table: dict[str, str], run_id: str, data: dict[str, Any]) -> None:
        session_id = data.get("session_id")
        if isinstance(session_id, str):
            if len(table) >= _MAP_LIMIT:
                table.clear()
            table[run_id] = session_id

    def _remember_principal(self, session_id: str, user: object) -> None:
        if len(self._principal_of_session) >= _MAP_LIMIT:
            self._principal_of_session.clear()
        self._principal_of_session[session_id] = user if isinstance(user, str) else None

    @staticmethod
    def wants(stream: str, events: Sequence[Event | NewEvent]) -> bool:
        """Whether an append carries personal content to seal."""
        if not (stream.startswith(SESSION_STREAM) or stream.startswith(RUN_STREAM)):
            return False
        return any(
            (e.type_name() if isinstance(e, Event) else e.type) in PERSONAL_FIELDS for e in events
        )

    async def key_for(self, stream: str, log: EventLog) -> UserKey:
        """The key an append to `stream` is sealed with: its session's, made if needed
        (read from disk in a worker thread only when not cached)."""
        session_id = self._session_id(stream)
        key = self._cached_session_key(session_id) if session_id is not None else None
        if key is None:
            key = await trio.to_thread.run_sync(self._session_key_blocking, stream, log)
        return key

    def _session_id(self, stream: str) -> str | None:
        if stream.startswith(SESSION_STREAM):
            return stream[len(SESSION_STREAM) :]
        return self._session_of_run.get(stream[len(RUN_STREAM) :])

    def _cached_session_key(self, session_id: str) -> UserKey | None:
        return self.keys.cached(session_owner(session_id))

    def _session_key_blocking(self, stream: str, log: EventLog) -> UserKey:
        """The session key for an append to `stream`, made if needed (blocking I/O)."""
        session_id = self._session_id(stream)
        if session_id is None:  # a run this process has not seen requested
            first = log.read_stream(stream, 0, 1)
            found = first[0].data.get("session_id") if first else None
            # A run stream with no session (a bare test log) is its own session.
            session_id = found if isinstance(found, str) else stream
            self._session_of_run[stream[len(RUN_STREAM) :]] = session_id
        if session_id not in self._principal_of_session:
            first = log.read_stream(SESSION_STREAM + session_id, 0, 1)
            user = first[0].data.get("user") if first else None
            self._remember_principal(session_id, user)
        principal = self._principal_of_session[session_id]
        key = self.keys.session_key(session_id, principal, create=True)
        if key is None:
            raise SealBroken(
                session_owner(session_id), "", "its session or principal was forgotten"
            )
        return key

    # --- opening ---------------------------------------------------------------------

    def open(self, record: RecordedEvent) -> RecordedEvent:
        """`record` with its content back, or marked forgotten (may read a key file)."""
        owner = box_owner(record.data)
        if owner is None:
            return record
        return open_payload(record, self._key_of(owner))

    def _key_of(self, owner: str) -> UserKey | None:
        cached = self.keys.cached(owner)
        if cached is not None:
            return cached
        if owner.startswith("session:"):
            return self.keys.session_key(owner[len("session:") :], None)
        return self.keys.current(owner)

    def open_many(self, records: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        return [self.open(record) for record in records]

    async def open_async(self, records: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """`open_many`, in a worker thread only when a key must be read from disk."""
        owners = {box_owner(r.data) for r in records} - {None}
        if all(self.keys.cached(owner) is not None for owner in owners if owner):
            return self.open_many(records)
        return await trio.to_thread.run_sync(self.open_many, records)

    def reader(self, log: EventLog) -> OpenedReader:
        """`log` read through this sealer."""
        return OpenedReader(log, self)

    def forget_session(self, session_id: str) -> str | None:
        """Destroy a session's key (blocking); returns its id, None if it had none."""
        return self.keys.destroy_session(session_id)

    def forget_principal(self, principal: str) -> str | None:
        """Destroy a principal's key, and with it every session key it wraps."""
        return self.keys.destroy(principal)


class OpenedReader:
    """A log read through a sealer, for the admin CLI: every record comes back opened,
    or marked forgotten (`events tail`, `show`, `export` never print a box)."""

    def __init__(self, log: EventLog, sealer: Sealer) -> None:
        self.log = log
        self.sealer = sealer

    def head(self) -> tuple[int, bytes]:
        return self.log.head()

    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self.sealer.open_many(self.log.read(after, limit))

    def read_stream(
        self, stream: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        return self.sealer.open_many(self.log.read_stream(stream, after_version, limit))

    def close(self) -> None:
        self.log.close()
