"""Msgpack encoding of records, compression of large payloads, and the hash chain.

A stored value is `hash (32 bytes) + body`, where body is one msgpack array:

    [position, stream, version, type, schema, id (16 bytes), ts (ns),
     correlation, causation, flags, prev_hash, data]

`data` is the payload map itself, or (flag `COMPRESSED`) zlib-compressed msgpack bytes.
`hash = blake2b(prev_hash + body)`: each record commits to the whole chain before it,
so any altered byte is found by walking the chain (see `audit`).

The body is built by concatenating pre-packed parts: the payload is packed once, by
the producer, where an unencodable payload can fail before anything is queued.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from events._model import RecordedEvent
from events._types import _CURRENT_SCHEMA, upcast
from events.errors import EventEncodingError, StoreCorrupted, UnknownEventType

HASH_SIZE = 32
GENESIS_HASH = bytes(HASH_SIZE)
COMPRESSED = 1
_ARRAY_12 = b"\x9c"  # msgpack fixarray header for 12 elements

_packer = msgpack.Packer(use_bin_type=True)
_thread_packers = threading.local()
_unpackb = msgpack.unpackb


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event whose payload is already msgpack-encoded, ready for the writer."""

    type: str
    schema: int
    id_bytes: bytes
    correlation: str | None
    causation: str | None
    packed_data: bytes
    # The id was made for this append (`new_event_id_bytes`), never given by a caller:
    # no record can hold it, so the writer does not look it up (idempotent retries
    # carry their ids as `NewEvent`s).
    fresh_id: bool = False


def pack_data(event_type: str, data: object) -> bytes:
    """Encode a payload; a value msgpack cannot encode becomes `EventEncodingError`.

    So does one that encodes but would not decode (a tuple as a map key packs as an
    array, which no reader can use as a key): the log takes only what it can give
    back, or one such record would make every later read fail as "corrupted". The
    check is one C-level unpack, about half the cost of the pack.
    """
    try:
        packed: bytes = _own_packer().pack(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EventEncodingError(f"cannot encode payload of {event_type}: {exc}") from exc
    try:
        msgpack.unpackb(packed, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise EventEncodingError(
            f"cannot encode payload of {event_type}: it would not decode ({exc})"
        ) from exc
    return packed


def _own_packer() -> msgpack.Packer:
    """This thread's packer: `msgpack.packb` builds one per call (half the cost of
    packing a step's payload). Not one shared packer: a payload is any caller's data,
    and packing a mapping that is not a plain dict runs Python code, which may let
    another thread in half-way. (`encode_record`'s shared packer packs only the
    envelope's ints, strings and bytes, which never leave C.)"""
    try:
        packer: msgpack.Packer = _thread_packers.packer
    except AttributeError:
        packer = _thread_packers.packer = msgpack.Packer(use_bin_type=True)
    return packer


def record_hash(prev_hash: bytes, body: bytes | memoryview) -> bytes:
    digest = hashlib.blake2b(prev_hash, digest_size=HASH_SIZE)
    digest.update(body)
    return digest.digest()


def encode_record(
    position: int,
    stream: str,
    version: int,
    ts: int,
    event: PreparedEvent,
    prev_hash: bytes,
    compress_over: int,
) -> tuple[bytes, bytes]:
    """Build the stored value of one record; returns (value, hash)."""
    flags, data = 0, event.packed_data
    if compress_over and len(data) > compress_over:
        flags, data = COMPRESSED, _packer.pack(zlib.compress(data, 1))
    # Pack the 11 envelope fields as one array, then widen its header to 12 and
    # append the pre-packed payload as the last element: one pack call per record.
    envelope = _packer.pack(
        [
            position,
            stream,
            version,
            event.type,
            event.schema,
            event.id_bytes,
            ts,
            event.correlation,
            event.causation,
            flags,
            prev_hash,
        ]
    )
    body = _ARRAY_12 + envelope[1:] + data
    digest = record_hash(prev_hash, body)
    return digest + body, digest


def split_value(value: bytes | memoryview) -> tuple[bytes, memoryview]:
    view = memoryview(value)
    return bytes(view[:HASH_SIZE]), view[HASH_SIZE:]


def unpack_body(position: int, body: bytes | memoryview) -> list[Any]:
    try:
        fields = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise StoreCorrupted(position, f"undecodable record ({exc})") from exc
    if not isinstance(fields, list) or len(fields) != 12:
        raise StoreCorrupted(position, "record is not a 12-field envelope")
    return fields


def decode_record(value: bytes | memoryview, expected_position: int | None = None) -> RecordedEvent:
    """Decode one stored value, upcasting its payload to the current schema.

    The hot path of every read and replay: kept to one unpack and one tuple build, with
    no call that is not needed (`unpack_body`'s checks inlined). Total: bytes that are
    no record of ours (a damaged disk, a foreign value) raise `StoreCorrupted`, never a
    `TypeError` from deep inside a reader.
    """
    view = value if type(value) is memoryview else memoryview(value)
    try:
        fields = _unpackb(view[HASH_SIZE:], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        pos = expected_position if expected_position is not None else -1
        raise StoreCorrupted(pos, f"undecodable record ({exc})") from exc
    if type(fields) is not list or len(fields) != 12:
        pos = expected_position if expected_position is not None else -1
        raise StoreCorrupted(pos, "record is not a 12-field envelope")
    etype, schema = fields[3], fields[4]
    if type(etype) is not str or type(fields[9]) is not int or type(fields[0]) is not int:
        pos = expected_position if expected_position is not None else -1
        raise StoreCorrupted(pos, "record envelope has fields of the wrong type")
    if fields[9] & COMPRESSED:
        fields[11] = _decompress(fields[0], fields[11])
    if _CURRENT_SCHEMA.get(etype) != schema:
        fields[4], fields[11] = _upcast(fields[0], etype, schema, fields[11])
    if type(fields[11]) is not dict:
        pos = expected_position if expected_position is not None else -1
        raise StoreCorrupted(pos, f"payload of {etype} is not a map")
    fields[9] = fields[11]  # the tuple's order: ..., data, prev_hash, hash
    fields[11] = view[:HASH_SIZE].tobytes()
    return tuple.__new__(RecordedEvent, fields)


def _upcast(position: int, etype: str, schema: int, data: Any) -> tuple[int, Any]:
    try:
        return upcast(etype, schema, data, position)
    except UnknownEventType:
        raise
    except Exception as exc:
        raise StoreCorrupted(position, f"upcasting {etype} failed ({exc})") from exc


def _decompress(position: int, data: bytes) -> Any:
    try:
        return msgpack.unpackb(zlib.decompress(data), raw=False, strict_map_key=False)
    except Exception as exc:
        raise StoreCorrupted(position, f"compressed payload does not decode ({exc})") from exc
