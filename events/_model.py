"""Value objects of the event log: what producers append and what readers get back."""

from __future__ import annotations

import enum
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Payload keys added by sealing (see `events._sealing`): the sealed box of a record's
# personal content, and the mark of a record whose content was forgotten.
SEALED_KEY = "sealed"
FORGOTTEN_KEY = "forgotten"


class ExpectedVersion(enum.Enum):
    """Symbolic expectations for optimistic concurrency (an int means an exact version)."""

    ANY = "any"
    NO_STREAM = "no-stream"
    STREAM_EXISTS = "stream-exists"

    def __str__(self) -> str:
        return self.value


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

Expected = ExpectedVersion | int


# The random bits of event ids: a generator of this module's own, seeded from the OS
# and seeded again in a forked child (two processes never share its sequence), never
# by code that seeds `random` for repeatable results.
_ID_BITS = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ID_BITS.seed(os.urandom(32)))


# The UUID's version (7: bits 76-79, byte 6's high nibble) and variant (0b10: bits
# 62-63, byte 8's top two) over the 128-bit integer of time and random bits.
_ID_MARKS = 0x7 << 76 | 0x2 << 62
_ID_KEEP = ((1 << 128) - 1) & ~(0xF << 76 | 0x3 << 62)


def new_event_id_bytes() -> bytes:
    """A time-ordered UUID as 16 bytes (version 7 layout: 48-bit ms time, random bits).

    Ids that grow with time land next to each other in the `ids` index, so a group
    commit dirties few B-tree pages; uuid4 ids would scatter over the whole index.
    The 74 random bits keep ids apart (they only need to be unique; ids go to every
    client and are never a secret: the generator is predictable from a few hundred) and
    come from a seeded generator rather than `os.urandom`: a system call on every
    event let go of the interpreter lock, and under load the event loop waited for a
    worker thread to hand it back (39 us per call, profiled at 100 clients).
    """
    value = (time.time_ns() // 1_000_000) << 80 | _ID_BITS.getrandbits(80)
    return (value & _ID_KEEP | _ID_MARKS).to_bytes(16, "big")


def new_event_id() -> uuid.UUID:
    return uuid.UUID(bytes=new_event_id_bytes())


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event ready to append: its type name, payload and identity.

    `id` makes the append idempotent: appending the same ids again returns the
    original positions instead of writing twice.
    """

    type: str
    data: Mapping[str, Any]
    id: uuid.UUID = field(default_factory=new_event_id)
    correlation: str | None = None
    causation: str | None = None
    schema: int = 1


class RecordedEvent(NamedTuple):
    """One decoded record of the log, upcast to the current schema of its type.

    Its typed view is `typed_event(record)`, a function of the event catalog, so this
    module needs nothing from the catalog. A NamedTuple rather than a frozen dataclass:
    equally immutable, and building one costs a sixth as much, which matters when a
    replay decodes millions of them.
    """

    position: int
    stream: str
    version: int
    type: str
    schema: int
    id_bytes: bytes
    ts: int
    correlation: str | None
    causation: str | None
    data: dict[str, Any]
    prev_hash: bytes
    hash: bytes

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.id_bytes)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed. `duplicate` is true when it was an idempotent retry."""

    stream: str
    positions: tuple[int, ...]
    version: int
    duplicate: bool = False

    @property
    def last_position(self) -> int:
        return self.positions[-1]
