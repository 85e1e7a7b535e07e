"""The records the LMDB log's indexes do not hold yet, kept in memory for lookups.

A durable append writes only the record itself (the `events` sub-database), so a commit
dirties the pages of one B-tree instead of four. The indexes (`streams`, `ids`,
`types`) are written behind the log, every few thousand records, in the same kind of
transaction as an append; `meta.indexed` says how far they reach. Everything after it
is the tail: the records are on disk, and every lookup the indexes would answer
(a stream's version, an event id, a stream's or a type's records) is answered for the
tail from this structure. So an expected-version check stays exact: it sees the index
up to `indexed` and every record after it.

The tail is checked against the log in every transaction, so it is right whatever other
processes appended: a transaction reads `indexed` and the last position, and the tail
is brought to cover exactly that range (records another process wrote are read from
the log and parsed; this process's own commits add their records as they commit them).
One `LogTail` is shared by the threads of a process: `window` and `committed` hold its
lock; lookups through a window do not (they only read lists and dicts that other
threads may append to, which CPython's GIL makes safe; a pruned window is a new
object). A read transaction older than the tail's window (the indexes moved on since
it began) gets a private tail parsed from its own snapshot.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from events._codec import HASH_SIZE, unpack_body
from events.errors import StoreCorrupted

_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class TailEntry:
    """What the indexes would hold for one record."""

    position: int
    stream: str
    version: int
    type: str
    id_bytes: bytes


def parse_entry(position: int, value: bytes | memoryview) -> TailEntry:
    """The index fields of a stored value (hash + msgpack body)."""
    fields = unpack_body(position, memoryview(value)[HASH_SIZE:])
    stream, version, etype, id_bytes = fields[1], fields[2], fields[3], fields[5]
    if (
        fields[0] != position
        or type(stream) is not str
        or type(version) is not int
        or type(etype) is not str
        or type(id_bytes) is not bytes
    ):
        raise StoreCorrupted(position, "record envelope does not match its position")
    return TailEntry(position, stream, version, etype, id_bytes)


# Reads the records (after, upto] of one transaction's snapshot, in order.
RecordScan = Callable[[int, int], Iterable[tuple[int, Any]]]


class _Entries:
    """Tail entries in position order with the lookups the indexes would answer."""

    def __init__(self, start: int) -> None:
        self.start = start  # entries are the records after this position
        self.end = start  # ... up to and including this one
        self.entries: list[TailEntry] = []
        self.by_stream: dict[str, list[TailEntry]] = {}
        self.by_id: dict[bytes, TailEntry] = {}
        self.by_type: dict[str, list[TailEntry]] = {}

    def add(self, entry: TailEntry) -> None:
        if entry.position != self.end + 1:
            raise StoreCorrupted(entry.position, f"tail expected position {self.end + 1}")
        self.entries.append(entry)
        self.by_stream.setdefault(entry.stream, []).append(entry)
        self.by_id[entry.id_bytes] = entry
        self.by_type.setdefault(entry.type, []).append(entry)
        self.end = entry.position

    def extend(self, scan: RecordScan, upto: int) -> None:
        for position, value in scan(self.end, upto):
            self.add(parse_entry(position, value))
        if self.end != upto:
            raise StoreCorrupted(self.end + 1, "record missing from the log's tail")

    def dropped_to(self, start: int) -> _Entries:
        """The same entries without those at or before `start` (now indexed)."""
        kept = _Entries(start)
        kept.end = start
        for entry in self.entries:
            if entry.position > start:
                kept.add(entry)
        return kept


class TailWindow:
    """The tail as one transaction sees it: records in (indexed, head]."""

    def __init__(self, parts: list[_Entries], indexed: int, head: int) -> None:
        self._parts = parts  # lower positions first, disjoint
        self.indexed = indexed
        self.head = head

    def _visible(self, entries: Iterable[TailEntry]) -> Iterator[TailEntry]:
        lo, hi = self.indexed, self.head
        return (e for e in entries if lo < e.position <= hi)

    def stream_version(self, stream: str) -> int | None:
        """The stream's last version in the tail, None when the tail has none of it."""
        for part in reversed(self._parts):
            entries = part.by_stream.get(stream)
            if entries:
                for entry in reversed(entries):
                    if self.indexed < entry.position <= self.head:
                        return entry.version
        return None

    def find_id(self, id_bytes: bytes) -> tuple[int, int, str] | None:
        for part in self._parts:
            entry = part.by_id.get(id_bytes)
            if entry is not None and self.indexed < entry.position <= self.head:
                return entry.position, entry.version, entry.stream
        return None

    def of_stream(self, stream: str) -> list[TailEntry]:
        return [e for p in self._parts for e in self._visible(p.by_stream.get(stream, ()))]

    def of_type(self, event_type: str) -> list[TailEntry]:
        return [e for p in self._parts for e in self._visible(p.by_type.get(event_type, ()))]

    def all(self) -> list[TailEntry]:
        return [e for p in self._parts for e in self._visible(p.entries)]

    def __len__(self) -> int:
        return self.head - self.indexed


class LogTail:
    """This process's parsed tail of one LMDB log; see the module docstring."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._entries = _Entries(0)
        self._known = False  # nothing parsed yet: the first window sets the start

    def window(self, indexed: int, head: int, scan: RecordScan) -> TailWindow:
        """The tail (indexed, head] of a transaction; call with `lock` held.

        `scan` reads that transaction's records, so what is parsed here is what the
        transaction sees.
        """
        current = self._entries
        if not self._known or indexed >= current.end:
            current = self._entries = _Entries(indexed)
            self._known = True
        elif indexed > current.start:
            current = self._entries = current.dropped_to(indexed)
        if head > current.end:
            current.extend(scan, head)
        parts = [current]
        if indexed < current.start:
            # A snapshot from before the indexes last moved: parse its older part alone.
            older = _Entries(indexed)
            older.extend(scan, min(current.start, head))
            parts.insert(0, older)
        return TailWindow(parts, indexed, head)

    def committed(self, entries: Iterable[TailEntry], indexed: int) -> None:
        """Record this process's own commit (lock held): its records follow the window
        its transaction saw, and `indexed` is where the indexes reach after it."""
        current = self._entries
        if indexed > current.start:
            if indexed >= current.end:
                current = self._entries = _Entries(indexed)
            else:
                current = self._entries = current.dropped_to(indexed)
        for entry in entries:
            if entry.position <= current.end:
                continue  # a reader parsed it from the log already
            if entry.position != current.end + 1:
                break  # the window moved on; later readers parse these from the log
            current.add(entry)


def position_of(key: bytes | memoryview) -> int:
    return int(_U64.unpack(bytes(key))[0])
