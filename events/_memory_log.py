"""The in-memory backend of the event log: same rules and record bytes, no disk.

Used by tests of higher layers and as a second implementation that keeps the
`EventLog` interface honest (both run the same conformance suite).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from events._codec import GENESIS_HASH, HASH_SIZE, decode_record
from events._log import (
    AppendRequest,
    EventLog,
    LogStatistics,
    Outcome,
    PlannedWrite,
    parse_import,
    plan_batch,
    plan_import,
)
from events._model import RecordedEvent
from events.errors import StoreClosed


class MemoryEventLog(EventLog):
    """Event log held in lists and dicts, guarded by one lock."""

    def __init__(self, compress_over: int = 4096) -> None:
        self._compress_over = compress_over
        self._lock = threading.Lock()
        self._values: list[bytes] = []
        self._streams: dict[str, list[int]] = {}
        self._types: dict[str, list[int]] = {}
        self._ids: dict[bytes, tuple[int, int, str]] = {}
        self._head_hash = GENESIS_HASH
        self._closed = False

    # --- LogView for the planner (called with the lock held) ---------------------

    def stream_version(self, stream: str) -> int:
        self._check_open()
        return len(self._streams.get(stream, ()))

    def find_id(self, id_bytes: bytes) -> tuple[int, int, str] | None:
        return self._ids.get(id_bytes)

    # --- EventLog ------------------------------------------------------------------

    def commit(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        with self._lock:
            self._check_open()
            plan = plan_batch(
                self, (len(self._values), self._head_hash), requests, ts, self._compress_over
            )
            self._store(plan.writes)
            self._head_hash = plan.head_hash
        return plan.outcomes, plan.writes

    def import_records(self, records: Sequence[tuple[int, bytes]]) -> None:
        writes = parse_import(records)
        with self._lock:
            self._check_open()
            plan_import(self, (len(self._values), self._head_hash), writes)
            self._store(writes)
            if writes:
                self._head_hash = writes[-1].value[:HASH_SIZE]

    def _store(self, writes: Sequence[PlannedWrite]) -> None:
        for write in writes:
            self._values.append(write.value)
            self._streams.setdefault(write.stream, []).append(write.position)
            self._types.setdefault(write.type, []).append(write.position)
            self._ids[write.id_bytes] = (write.position, write.version, write.stream)

    def head(self) -> tuple[int, bytes]:
        with self._lock:
            return len(self._values), self._head_hash

    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        with self._lock:
            self._check_open()
            values = self._values[after : after + limit]
        return [_decode_at(after + i + 1, v) for i, v in enumerate(values)]

    def read_raw(self, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        with self._lock:
            self._check_open()
            values = self._values[after : after + limit]
        return [(after + i + 1, v) for i, v in enumerate(values)]

    def read_stream(
        self, stream: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        with self._lock:
            self._check_open()
            positions = self._streams.get(stream, [])[after_version : after_version + limit]
        return self._at(positions)

    def read_stream_after(self, stream: str, after: int, limit: int = 1000) -> list[RecordedEvent]:
        return self._indexed(self._streams.get(stream, []), after, limit)

    def read_type(self, event_type: str, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._indexed(self._types.get(event_type, []), after, limit)

    def _indexed(self, index: list[int], after: int, limit: int) -> list[RecordedEvent]:
        with self._lock:
            self._check_open()
            start = bisect.bisect_right(index, after)
            positions = index[start : start + limit]
        return self._at(positions)

    def _at(self, positions: list[int]) -> list[RecordedEvent]:
        with self._lock:
            values = [self._values[p - 1] for p in positions]
        return [_decode_at(p, v) for p, v in zip(positions, values, strict=True)]

    def streams(self, prefix: str = "") -> list[tuple[str, int]]:
        with self._lock:
            return sorted((s, len(p)) for s, p in self._streams.items() if s.startswith(prefix))

    def type_counts(self) -> dict[str, int]:
        with self._lock:
            return {t: len(p) for t, p in sorted(self._types.items())}

    def statistics(self) -> LogStatistics:
        with self._lock:
            size = sum(len(v) for v in self._values)
            return LogStatistics(len(self._values), len(self._streams), size, size)

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the event log is closed")


def _decode_at(position: int, value: bytes) -> RecordedEvent:
    return decode_record(value, position)
