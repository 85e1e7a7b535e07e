"""How the runner reads the log: in batches, decoding only the payloads its projections read.

Each projection declares the event types it reads (`Projection.reads`). A record of any
other type still counts, since its position advances every checkpoint, but its payload
is never needed. Reading raw (`EventLog.read_raw`) and decoding only the wanted records
(`decode_wanted`) costs a copy of every stored value and a look at its envelope, which
is more than decoding a small record: it pays only when enough records of a batch go
unread. So each batch is read the way the previous batch's share of unread records
says is cheaper; both ways hand the projections exactly the same records.

The look at the envelope (`record_type`) belongs with the codec in `events`; it lives
here until `events` exports it (the layout it reads is the log's stored format, which
cannot change without a migration, and a test checks it against `decode_record`).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from events import EventLog, RecordedEvent, decode_record, registered_types

Reader = Callable[[int, int], list[RecordedEvent]]

# From this share of records no projection reads, a raw read with selective decoding
# is cheaper than decoding everything. Measured on the benchmark workload (CPU time,
# read + decode): 6 % unread (sessions+runs) about even, 20 % (runs) 12 % faster, 81 %
# (sessions) 2.3x faster; break-even is near 6 %, so this stays clear of the noise.
SELECTIVE_SHARE = 0.15

# A stored value is a 32-byte hash, then the msgpack array of the 12 envelope fields
# [position, stream, version, type, ...] (events/_codec.py).
_HASH_SIZE = 32
_ARRAY_12 = 0x9C
# Bytes taken by a msgpack unsigned int, by its first byte (0: not an unsigned int).
_UINT_WIDTH = bytes([1] * 0x80 + [0] * 0x4C + [2, 3, 5, 9] + [0] * 0x30)


@dataclass(frozen=True, slots=True)
class Batch:
    """One read: the wanted records, and how far the read went (wanted or not)."""

    records: list[RecordedEvent]
    count: int  # records read, wanted or not
    last: int  # position of the last record read; 0 when none was


class BatchReader:
    """Reads batches of the records of wanted types from a log (see module docstring).

    With a `reader` (replay's hash-checking one), every batch comes from it, decoded.
    """

    def __init__(self, log: EventLog, reader: Reader | None = None) -> None:
        self._log = log
        self._reader = reader
        self._selective = False  # whether the next batch is read raw

    def read(self, after: int, limit: int, wanted: AbstractSet[str] | None) -> Batch:
        """Records after `after`, at most `limit` read; `wanted` None: every type."""
        if self._reader is None and wanted is not None and self._selective:
            rows = self._log.read_raw(after, limit)
            if not rows:
                return Batch([], 0, 0)
            records = decode_wanted(rows, wanted)
            return self._counted(records, len(rows), rows[-1][0])
        read = self._reader or self._log.read
        decoded = read(after, limit)
        if not decoded:
            return Batch([], 0, 0)
        last = decoded[-1].position
        if wanted is None:
            return Batch(decoded, len(decoded), last)
        return self._counted([r for r in decoded if r.type in wanted], len(decoded), last)

    def _counted(self, records: list[RecordedEvent], count: int, last: int) -> Batch:
        self._selective = count - len(records) >= SELECTIVE_SHARE * count
        return Batch(records, count, last)


def record_type(value: bytes) -> bytes | None:
    """The UTF-8 event type of a stored value, read from its first four envelope fields
    (position, stream, version, type) without unpacking the rest of the record.

    None when the envelope is not in the shape the codec writes: the caller then
    decodes the record fully, which names any damage.
    """
    try:
        if value[_HASH_SIZE] != _ARRAY_12:
            return None
        at = _HASH_SIZE + 1
        width = _UINT_WIDTH[value[at]]  # position
        if not width:
            return None
        at += width
        head = value[at]  # stream: a fixstr or a str8
        if 0xA0 <= head <= 0xBF:
            at += 1 + (head & 0x1F)
        elif head == 0xD9:
            at += 2 + value[at + 1]
        else:
            return None
        width = _UINT_WIDTH[value[at]]  # version
        if not width:
            return None
        at += width
        head = value[at]  # the event type: a fixstr or a str8
        if 0xA0 <= head <= 0xBF:
            start, end = at + 1, at + 1 + (head & 0x1F)
        elif head == 0xD9:
            start, end = at + 2, at + 2 + value[at + 1]
        else:
            return None
    except IndexError:
        return None
    return value[start:end] if end <= len(value) else None


def decode_wanted(rows: list[tuple[int, bytes]], wanted: AbstractSet[str]) -> list[RecordedEvent]:
    """Decode, in order, the records of `rows` (position, stored value) whose type is
    in `wanted`; the others are left out without their payload being unpacked.

    Only a record whose type `record_type` reads as a registered one is skipped that
    way; any other is decoded by `decode_record` as `EventLog.read` would (an unknown
    type or a damaged envelope raises just the same), then kept only if wanted.
    Compressed and old-schema payloads of wanted records are `decode_record`'s work.
    """
    skip = {name.encode() for name in registered_types() if name not in wanted}
    out: list[RecordedEvent] = []
    for position, value in rows:
        if record_type(value) in skip:
            continue
        record = decode_record(value, position)
        if record.type in wanted:
            out.append(record)
    return out
