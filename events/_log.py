"""The storage interface of the event log, and the batch planner its backends share.

An `EventLog` is synchronous: its methods block and are called from worker threads
(`trio.to_thread`) by the `EventStore`, which owns concurrency. `commit` receives every
append pending at one moment and writes the accepted ones in one transaction (group
commit). The checks that decide what is accepted (expected versions, idempotent
retries) live in `plan_batch`, so every backend enforces exactly the same rules.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from events._codec import (
    PreparedEvent,
    decode_record,
    encode_record,
    record_hash,
    split_value,
    unpack_body,
)
from events._model import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, Expected, RecordedEvent
from events.errors import (
    DuplicateEventConflict,
    EventStoreError,
    ImportRefused,
    StoreCorrupted,
    UnknownEventType,
    WrongExpectedVersion,
)

Outcome = AppendResult | EventStoreError


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One producer's append: all of its events are written, or none."""

    stream: str
    expected: Expected
    events: tuple[PreparedEvent, ...]


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """One record as it will be stored."""

    position: int
    stream: str
    version: int
    type: str
    id_bytes: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class BatchPlan:
    writes: list[PlannedWrite]
    outcomes: list[Outcome]
    head_position: int
    head_hash: bytes


class LogView(Protocol):
    """What the planner needs to read from committed state."""

    def stream_version(self, stream: str) -> int: ...

    def find_id(self, id_bytes: bytes) -> tuple[int, int, str] | None:
        """(position, version, stream) of the record written with this event id."""


@dataclass(frozen=True, slots=True)
class LogStatistics:
    head_position: int
    streams: int
    size_bytes: int
    map_size_bytes: int


class EventLog(abc.ABC):
    """Durable ordered storage of records; see module docstring for the threading rule."""

    # Whether other processes may append to this log too: the store then watches its
    # head for records it did not write itself.
    shared: ClassVar[bool] = False
    # Whether `wait_for_append` can block until another process appends (PostgreSQL's
    # LISTEN/NOTIFY); otherwise the store's watcher polls every `watch_interval_s`.
    announces_appends: ClassVar[bool] = False

    def wait_for_append(self, timeout: float) -> bool:
        """Block until some process appends, at most `timeout` s (worker thread)."""
        raise NotImplementedError(f"{type(self).__name__} does not announce appends")

    def change_marker(self) -> int | None:
        """A number that grows with every commit any process makes to this log, read
        without I/O or waiting for a commit, so a Trio task may call it; None when the
        backend has none (the store's watcher then looks at the log each time).

        A hint, possibly ahead of what a read begun now sees (LMDB: a commit's meta
        page is in the map before new readers take it up); what a read saw is
        `seen_head`'s marker.
        """
        return None

    def seen_head(self) -> tuple[int | None, int]:
        """The change marker of what a read begun now sees, and the head position it
        sees; the marker is None when the backend has none."""
        return None, self.head()[0]

    def last_commit_marker(self) -> int | None:
        """The change marker of this object's latest `commit`, if it wrote records;
        None otherwise. Called on the commit thread, right after `commit` returns."""
        return None

    def changed_file(self) -> Path | None:
        """A file every commit of any process writes (the watcher waits for writes to
        it instead of polling); None when there is none."""
        return None

    @abc.abstractmethod
    def commit(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        """Write the accepted appends in one transaction; an outcome per request."""

    @abc.abstractmethod
    def import_records(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Append already-encoded records as they are, in one transaction (for copies).

        `records` are (position, stored value) pairs, as `read_raw` returns them from
        another log. They must continue this log exactly: the first position is
        head + 1, positions are contiguous, each value's hash and prev_hash chain on
        from the record before it, each stream's versions follow on, and no event id is
        in the log yet (checked by `plan_import`, never trusted). Otherwise nothing is
        written and `ImportRefused` names the first record that does not fit.
        """

    @abc.abstractmethod
    def head(self) -> tuple[int, bytes]:
        """(last position, its hash); (0, genesis hash) when empty."""

    @abc.abstractmethod
    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Records with position > after, in order, at most `limit`."""

    @abc.abstractmethod
    def read_raw(self, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """(key position, stored value) pairs, undecoded, for audit."""

    @abc.abstractmethod
    def read_stream(
        self, stream: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Records of one stream with version > after_version."""

    @abc.abstractmethod
    def read_stream_after(self, stream: str, after: int, limit: int = 1000) -> list[RecordedEvent]:
        """Records of one stream with global position > after."""

    @abc.abstractmethod
    def read_type(self, event_type: str, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Records of one type with position > after."""

    @abc.abstractmethod
    def stream_version(self, stream: str) -> int:
        """Current version of a stream, 0 when it does not exist."""

    @abc.abstractmethod
    def streams(self, prefix: str = "") -> list[tuple[str, int]]:
        """(stream, version) of every stream whose name starts with `prefix`."""

    @abc.abstractmethod
    def type_counts(self) -> dict[str, int]:
        """How many records of each event type the log holds."""

    @abc.abstractmethod
    def statistics(self) -> LogStatistics: ...

    @abc.abstractmethod
    def close(self) -> None: ...


def check_expected(stream: str, expected: Expected, actual: int) -> None:
    if expected is ANY:
        return
    if expected is NO_STREAM:
        ok = actual == 0
    elif expected is STREAM_EXISTS:
        ok = actual > 0
    else:
        ok = actual == expected
    if not ok:
        raise WrongExpectedVersion(stream, expected, actual)


class _Planner:
    """Assigns positions, versions and hashes to the accepted appends of one batch."""

    def __init__(self, view: LogView, head: tuple[int, bytes], ts: int, compress_over: int):
        self.view = view
        self.position, self.prev_hash = head
        self.ts = ts
        self.compress_over = compress_over
        self.versions: dict[str, int] = {}
        self.ids: dict[bytes, tuple[int, int, str]] = {}
        self.writes: list[PlannedWrite] = []

    def version_of(self, stream: str) -> int:
        if stream not in self.versions:
            self.versions[stream] = self.view.stream_version(stream)
        return self.versions[stream]

    def find_id(self, id_bytes: bytes) -> tuple[int, int, str] | None:
        return self.ids.get(id_bytes) or self.view.find_id(id_bytes)

    def plan(self, request: AppendRequest) -> AppendResult:
        # Ids made for this append are in no record: only callers' ids are looked up.
        known = [
            found
            for e in request.events
            if not e.fresh_id and (found := self.find_id(e.id_bytes)) is not None
        ]
        if known:
            events = len(request.events)
            if len(known) != events or any(s != request.stream for _, _, s in known):
                raise DuplicateEventConflict(request.stream, len(known), events)
            positions = tuple(p for p, _, _ in known)
            return AppendResult(request.stream, positions, known[-1][1], duplicate=True)
        version = self.version_of(request.stream)
        check_expected(request.stream, request.expected, version)
        positions = tuple(
            self._write(request.stream, version + i + 1, e) for i, e in enumerate(request.events)
        )
        self.versions[request.stream] = version + len(request.events)
        return AppendResult(request.stream, positions, version + len(request.events))

    def _write(self, stream: str, version: int, event: PreparedEvent) -> int:
        self.position += 1
        value, self.prev_hash = encode_record(
            self.position, stream, version, self.ts, event, self.prev_hash, self.compress_over
        )
        self.ids[event.id_bytes] = (self.position, version, stream)
        self.writes.append(
            PlannedWrite(self.position, stream, version, event.type, event.id_bytes, value)
        )
        return self.position


def plan_batch(
    view: LogView,
    head: tuple[int, bytes],
    requests: Sequence[AppendRequest],
    ts: int,
    compress_over: int,
) -> BatchPlan:
    """Decide every request of a batch against committed state plus earlier requests."""
    planner = _Planner(view, head, ts, compress_over)
    outcomes: list[Outcome] = []
    for request in requests:
        try:
            outcomes.append(planner.plan(request))
        except EventStoreError as exc:
            outcomes.append(exc)
    return BatchPlan(planner.writes, outcomes, planner.position, planner.prev_hash)


def parse_import(records: Sequence[tuple[int, bytes]]) -> list[PlannedWrite]:
    """The index fields of records to import, read from their envelopes (no log needed)."""
    return [_parse_record(position, bytes(value)) for position, value in records]


def _parse_record(position: int, value: bytes) -> PlannedWrite:
    try:
        fields = unpack_body(position, split_value(value)[1])
        decode_record(value, position)  # what the log takes it must give back
    except (StoreCorrupted, UnknownEventType) as exc:
        reason = exc.reason if isinstance(exc, StoreCorrupted) else str(exc)
        raise ImportRefused(position, reason) from exc
    stream, version, etype, id_bytes = fields[1], fields[2], fields[3], fields[5]
    if type(fields[0]) is not int or fields[0] != position:
        raise ImportRefused(position, f"the record says position {fields[0]!r}")
    if (
        type(stream) is not str
        or type(version) is not int
        or type(etype) is not str
        or type(id_bytes) is not bytes
    ):
        raise ImportRefused(position, "record envelope has fields of the wrong type")
    return PlannedWrite(position, stream, version, etype, id_bytes, value)


def plan_import(
    view: LogView, head: tuple[int, bytes], writes: Sequence[PlannedWrite]
) -> list[PlannedWrite]:
    """Check that parsed records continue the log at `head` exactly (see
    `EventLog.import_records`); returns them, or raises `ImportRefused`."""
    position, prev_hash = head
    versions: dict[str, int] = {}
    ids: set[bytes] = set()
    for write in writes:
        position += 1
        if write.position != position:
            raise ImportRefused(
                write.position, f"the log continues at position {position} (head {head[0]})"
            )
        digest, body = split_value(write.value)
        if unpack_body(write.position, body)[10] != prev_hash:
            raise ImportRefused(position, "its prev_hash is not the hash of the record before it")
        if record_hash(prev_hash, body) != digest:
            raise ImportRefused(position, "hash does not match its bytes (record altered)")
        if write.stream not in versions:
            versions[write.stream] = view.stream_version(write.stream)
        if write.version != versions[write.stream] + 1:
            raise ImportRefused(
                position,
                f"stream {write.stream!r} is at version {versions[write.stream]}, "
                f"the record has version {write.version}",
            )
        if write.id_bytes in ids or view.find_id(write.id_bytes) is not None:
            raise ImportRefused(position, "its event id is already in the log")
        versions[write.stream] = write.version
        ids.add(write.id_bytes)
        prev_hash = digest
    return list(writes)
