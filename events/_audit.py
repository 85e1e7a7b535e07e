"""Walk the whole log and check it: contiguous positions, the hash chain, decoding.

The audit reads raw stored bytes, recomputes every hash from the previous one and
decodes every record, so a flipped byte anywhere (payload, envelope or hash) is found
and named by its position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from events._codec import GENESIS_HASH, decode_record, record_hash, split_value
from events._log import EventLog
from events._model import RecordedEvent
from events.errors import EventStoreError, StoreCorrupted


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What an audit found: how far it got and the first problem, if any."""

    checked: int
    head_position: int
    first_bad_position: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_position is None


def audit_log(
    log: EventLog, batch: int = 5000, progress: Callable[[int, int], None] | None = None
) -> AuditReport:
    """Check every record from position 1 to the head; stops at the first problem."""
    head, head_hash = log.head()
    prev_hash, expected = GENESIS_HASH, 1
    while expected <= head:
        rows = log.read_raw(expected - 1, min(batch, head - expected + 1))
        if not rows:
            return AuditReport(expected - 1, head, expected, "record missing")
        for position, value in rows:
            problem = _check(position, expected, value, prev_hash)
            if problem:
                return AuditReport(expected - 1, head, expected, problem)
            prev_hash = split_value(value)[0]
            expected += 1
        if progress:
            progress(expected - 1, head)
    if head and prev_hash != head_hash:
        return AuditReport(head, head, head, "head hash does not match the last record")
    return AuditReport(head, head)


def _check(position: int, expected: int, value: bytes, prev_hash: bytes) -> str | None:
    if position != expected:
        return f"positions not contiguous (found {position})"
    digest, body = split_value(value)
    if record_hash(prev_hash, body) != digest:
        return "hash chain broken (record bytes altered)"
    try:
        record = decode_record(value, position)
    except StoreCorrupted as exc:
        return exc.reason
    except EventStoreError as exc:
        return str(exc)
    if record.position != position:
        return f"record says position {record.position}"
    if record.prev_hash != prev_hash:
        return "record's prev_hash does not match the previous record"
    return None


class VerifiedReader:
    """Reads records like `EventLog.read` while checking the hash chain as it goes.

    `replay` reads through this so that an altered record stops the rebuild at its
    position instead of producing a state built from bad data.
    """

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._next = 1
        self._prev_hash = GENESIS_HASH

    def _seek(self, after: int) -> None:
        if after == self._next - 1:
            return
        if after == 0:
            self._prev_hash = GENESIS_HASH
        else:
            rows = self._log.read_raw(after - 1, 1)
            if not rows:
                raise StoreCorrupted(after, "record missing")
            self._prev_hash = split_value(rows[0][1])[0]
        self._next = after + 1

    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self._seek(after)
        out: list[RecordedEvent] = []
        for position, value in self._log.read_raw(after, limit):
            problem = _check(position, self._next, value, self._prev_hash)
            if problem:
                raise StoreCorrupted(self._next, problem)
            out.append(decode_record(value, position))
            self._prev_hash = split_value(value)[0]
            self._next += 1
        return out
