"""Errors of the event log, and the root of every autoagent error.

AutoagentError                      root of everything the project raises on purpose
 +-- EventStoreError                the event log refused or failed an operation
 |    +-- WrongExpectedVersion      optimistic concurrency check failed (stream, expected, actual)
 |    +-- DuplicateEventConflict    some event ids of an append were seen before, not all,
 |                                  or in another stream
 |    +-- InvalidStreamName         empty, too long or not text
 |    +-- EventTooLarge             one encoded event over the configured cap
 |    +-- EventEncodingError        a payload msgpack cannot encode
 |    +-- UnknownEventType          a record names a type no class is registered for
 |    +-- StoreCorrupted            a record fails its hash, contiguity or decoding check
 |    +-- NotAnEventStore           a directory that is not (or not yet) an autoagent store
 |    +-- StoreClosed               the store was used after it closed
 |    +-- InvalidAppend             malformed append arguments (no events, bad expected version)
 |    +-- StoreUnreachable          the PostgreSQL server of `store.url` cannot be reached
 |    +-- ImportRefused             copied records that do not continue the log exactly
 |                                  (position, reason)
 +-- PoolUnreachable                no PostgreSQL connection opened in time (each store raises
 |                                  its own named error from it)
 +-- KeyStoreError                  a sealing key could not be read, stored or destroyed
 |    +-- KeyStoreReadOnly          a write to a key store opened read-only
 |    +-- KeyStoreUnreachable       the PostgreSQL server of a key store cannot be reached
 |    +-- KeyStoreMissing           a key store opened read-only where there is none
 |    +-- KeyConflict               an imported key for an owner that holds another one
 |                                  (owner, held, offered)
 +-- SealBroken                     a sealed value does not open with its key (altered, or
 |                                  sealed for another owner, event or field)
 +-- (other packages add their own subtrees)
"""

from __future__ import annotations


class AutoagentError(Exception):
    """Root of every error autoagent raises on purpose."""


class EventStoreError(AutoagentError):
    """The event log refused or failed an operation."""


class WrongExpectedVersion(EventStoreError):
    """An append's expected version did not match the stream's current version."""

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"wrong expected version for stream {stream!r}: expected {expected}, actual {actual}"
        )


class DuplicateEventConflict(EventStoreError):
    """Part of an append was written before under the same event ids, part was not."""

    def __init__(self, stream: str, seen: int, total: int) -> None:
        self.stream = stream
        self.seen = seen
        self.total = total
        super().__init__(
            f"append to {stream!r}: {seen} of {total} event ids were already written "
            "(possibly to another stream); an idempotent retry must repeat the whole "
            "original append to the same stream"
        )


class InvalidStreamName(EventStoreError):
    """A stream name that is empty, too long or not a string."""


class EventTooLarge(EventStoreError):
    """An encoded event over the configured per-event size cap."""

    def __init__(self, stream: str, event_type: str, size: int, limit: int) -> None:
        self.stream = stream
        self.event_type = event_type
        self.size = size
        self.limit = limit
        super().__init__(
            f"event {event_type} for stream {stream!r} is {size} bytes encoded, "
            f"over the limit of {limit} bytes (store.max_event_bytes)"
        )


class EventEncodingError(EventStoreError):
    """A payload that msgpack cannot encode."""


class UnknownEventType(EventStoreError):
    """A record whose type has no registered event class."""

    def __init__(self, event_type: str, position: int | None = None) -> None:
        self.event_type = event_type
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"unknown event type {event_type!r}{where}")


class StoreCorrupted(EventStoreError):
    """A record fails its hash, contiguity or decoding check."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(f"event log corrupted at position {position}: {reason}")


class NotAnEventStore(EventStoreError):
    """A path that does not hold an autoagent event store."""


class StoreClosed(EventStoreError):
    """The store was used after it was closed."""


class InvalidAppend(EventStoreError):
    """An append whose arguments are malformed (no events, bad expected version...)."""


class StoreUnreachable(EventStoreError):
    """The database server of a PostgreSQL event log cannot be reached (or refuses us).

    `target` names where the URL points without its password; `reason` is the driver's.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"cannot open the event log at {target} (store.url): {reason}")


class ImportRefused(EventStoreError):
    """Records handed to `EventLog.import_records` that do not continue the log exactly:
    a position that is not the next one, a broken hash chain, a stream version out of
    order, an event id already in the log, or bytes that are no record."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(f"cannot import the record at position {position}: {reason}")


class KeyStoreError(AutoagentError):
    """A sealing key could not be read, stored or destroyed."""


class KeyStoreReadOnly(KeyStoreError):
    """A write to a key store opened read-only (the admin CLI's)."""


class KeyStoreUnreachable(KeyStoreError):
    """The database server of a PostgreSQL key store cannot be reached (or refuses us).

    `target` names where the URL points without its password; `reason` is the driver's.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"cannot open the key store at {target}: {reason}")


class KeyStoreMissing(KeyStoreError):
    """A key store opened read-only where none was ever made (no keys table)."""


class KeyConflict(KeyStoreError):
    """`import_record` of a key for an owner that already holds another one: the key
    store is someone else's, and replacing its key would shred what it sealed."""

    def __init__(self, owner: str, held: str, offered: str) -> None:
        self.owner = owner
        self.held = held
        self.offered = offered
        super().__init__(
            f"the key store holds another key for {owner!r} (key {held}, not {offered}); "
            "refusing to replace it"
        )


class SealBroken(AutoagentError):
    """A sealed value does not open with its key: altered, or sealed for another context."""

    def __init__(self, owner: str, key_id: str, reason: str) -> None:
        self.owner = owner
        self.user = owner
        self.key_id = key_id
        self.reason = reason
        super().__init__(f"a value sealed for {owner!r} (key {key_id}) does not open: {reason}")


class PoolUnreachable(AutoagentError):
    """No pooled PostgreSQL connection opened within the timeout; the store that asked
    raises its own named error from it."""
