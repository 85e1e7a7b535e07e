"""Reading only what projections read: `record_type` against the codec, `decode_wanted`
(compressed and old-schema payloads included), `BatchReader` choosing raw reads only
when they pay, and the runner handing each projection only the types it declares
while every checkpoint still advances over the records nobody reads.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from events import (
    LLMCallCompleted,
    LmdbEventLog,
    NewEvent,
    RecordedEvent,
    SessionStarted,
    StoreCorrupted,
    UnknownEventType,
    UserMessageReceived,
    decode_record,
)
from events._codec import PreparedEvent, encode_record, pack_data
from projections import (
    MemoryStateStore,
    Projection,
    ProjectionRunner,
    RunsProjection,
    SessionsProjection,
    StateStore,
    rebuild,
)
from projections._batches import BatchReader, decode_wanted, record_type

from .helpers import CountingProjection, EventWriter

BIG_TEXT = "x" * 10_000  # over the log's compress_over (4096): stored compressed


class SessionWatcher(Projection):
    """Reads two types; remembers every record it is handed."""

    name = "watcher"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[RecordedEvent] = []

    def _on_SessionStarted(self, record: RecordedEvent) -> None:
        self.seen.append(record)

    def _on_MemoryAdded(self, record: RecordedEvent) -> None:
        self.seen.append(record)


class CountingLog(LmdbEventLog):
    """The LMDB log, counting which of its two batch reads was used."""

    decoded_reads = 0
    raw_reads = 0

    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self.decoded_reads += 1
        return super().read(after, limit)

    def read_raw(self, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        self.raw_reads += 1
        return super().read_raw(after, limit)


def old_memory(user: str) -> NewEvent:
    """A `MemoryAdded` of schema 1, which reads back upcast to schema 2."""
    data = {"user": user, "memory_id": "m1", "content": "c", "embedding": b"\0" * 8, "model": "e"}
    return NewEvent(type="MemoryAdded", data=data, schema=1)


def chatter(writer: EventWriter, count: int) -> int:
    """`count` records of types `SessionWatcher` does not read; the last position."""
    last = 0
    for i in range(count):
        if i % 2:
            event: Any = UserMessageReceived(session_id="s", message_id=str(i), text=f"m{i}")
            last = writer.add("session-s", event)
        else:
            call = LLMCallCompleted(
                run_id="r", purpose="plan", model="m", prompt_tokens=1, completion_tokens=1,
                latency_s=0.1, retries=0,
            )  # fmt: skip
            last = writer.add("run-r", call)
    return last


def mixed_log(writer: EventWriter) -> int:
    """Wanted records (one compressed, one old-schema) among many unread ones."""
    chatter(writer, 12)
    writer.add("session-a", SessionStarted(session_id="a", user=BIG_TEXT))
    chatter(writer, 12)
    writer.add("memory-u", old_memory("u"))
    chatter(writer, 12)
    writer.add("session-b", SessionStarted(session_id="b", user="short"))
    return chatter(writer, 9)


# --- record_type ------------------------------------------------------------------------


def value_at(position: int, stream: str, event_type: str = "SessionStarted") -> bytes:
    event = PreparedEvent(
        event_type, 1, uuid.uuid4().bytes, None, None, pack_data(event_type, {"session_id": "s"})
    )
    value, _ = encode_record(position, stream, 3, 1, event, bytes(32), 0)
    return value


@pytest.mark.parametrize(
    ("position", "stream"),
    [
        pytest.param(1, "session-s", id="fixint-fixstr"),
        pytest.param(200, "session-" + "a" * 40, id="uint8-str8"),
        pytest.param(70_000, "s", id="uint32"),
        pytest.param(2**40, "run-" + "b" * 200, id="uint64-long-str8"),
    ],
)
def test_record_type_reads_the_type_the_codec_wrote(position: int, stream: str) -> None:
    value = value_at(position, stream)
    assert record_type(value) == b"SessionStarted"
    assert decode_record(value).type == "SessionStarted"


def test_record_type_matches_decode_record_on_every_record_of_a_log(
    writer: EventWriter, log: LmdbEventLog
) -> None:
    head = mixed_log(writer)
    rows = log.read_raw(0, head)
    assert [record_type(value) for _, value in rows] == [
        decode_record(value).type.encode() for _, value in rows
    ]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(32) + b"\x93\x01", id="not-12-fields"),
        pytest.param(bytes(32) + b"\x9c\xff", id="negative-position"),
        pytest.param(bytes(32) + b"\x9c\x01\xa9sess", id="truncated"),
    ],
)
def test_record_type_of_a_value_not_shaped_like_a_record_is_none(value: bytes) -> None:
    assert record_type(value) is None


# --- decode_wanted ----------------------------------------------------------------------


def test_decode_wanted_gives_the_wanted_records_as_read_decodes_them(
    writer: EventWriter, log: LmdbEventLog
) -> None:
    head = mixed_log(writer)
    wanted = frozenset({"SessionStarted", "MemoryAdded"})

    selected = decode_wanted(log.read_raw(0, head), wanted)

    assert selected == [r for r in log.read(0, head) if r.type in wanted]
    big, memory, small = selected
    assert big.data["user"] == BIG_TEXT  # stored compressed
    assert memory.schema == 2 and memory.data["sealed_content"] == b""  # upcast from 1
    assert small.data["user"] == "short"


def test_decode_wanted_raises_on_an_unknown_type_as_read_does() -> None:
    event = PreparedEvent("NoSuchEvent", 1, uuid.uuid4().bytes, None, None, pack_data("x", {}))
    value, _ = encode_record(1, "s", 1, 1, event, bytes(32), 0)
    with pytest.raises(UnknownEventType):
        decode_wanted([(1, value)], frozenset({"SessionStarted"}))


def test_decode_wanted_raises_on_a_damaged_record_it_cannot_type() -> None:
    with pytest.raises(StoreCorrupted):
        decode_wanted([(1, bytes(32) + b"\x9c\xff\xff")], frozenset({"SessionStarted"}))


# --- BatchReader ------------------------------------------------------------------------


@pytest.fixture
def counting_log(tmp_path: Path) -> CountingLog:
    opened = CountingLog.open(tmp_path / "counted", sync=False, map_size=1 << 26)
    assert isinstance(opened, CountingLog)
    return opened


def test_batch_reader_reads_raw_after_a_batch_mostly_unread(counting_log: CountingLog) -> None:
    head = mixed_log(EventWriter(counting_log))
    reader = BatchReader(counting_log)
    wanted = frozenset({"SessionStarted", "MemoryAdded"})
    records: list[RecordedEvent] = []
    after = 0
    while (batch := reader.read(after, 10, wanted)).count:
        records.extend(batch.records)
        after = batch.last

    assert after == head
    assert (counting_log.decoded_reads, counting_log.raw_reads) == (1, 5)  # 5: the empty end
    assert records == [r for r in counting_log.read(0, head) if r.type in wanted]
    counting_log.close()


def test_batch_reader_keeps_decoding_when_nearly_everything_is_read(
    counting_log: CountingLog,
) -> None:
    mixed_log(EventWriter(counting_log))
    reader = BatchReader(counting_log)
    every = frozenset({"SessionStarted", "MemoryAdded", "UserMessageReceived", "LLMCallCompleted"})
    after = 0
    while (batch := reader.read(after, 10, every)).count:
        assert batch.records == counting_log.read(after, 10)
        after = batch.last

    assert counting_log.raw_reads == 0
    counting_log.close()


# --- the runner ---------------------------------------------------------------------------


def test_a_projection_is_handed_only_the_types_it_reads(
    writer: EventWriter, log: LmdbEventLog, state: StateStore
) -> None:
    head = mixed_log(writer)
    watcher = SessionWatcher()
    runner = ProjectionRunner(log, state, [watcher], batch_size=7)
    runner.prepare()

    assert runner.catch_up() == head

    assert watcher.reads == frozenset({"SessionStarted", "MemoryAdded"})
    assert [r.position for r in watcher.seen] == [
        r.position for r in log.read(0, head) if r.type in watcher.reads
    ]
    assert watcher.seen[0].data["user"] == BIG_TEXT
    assert watcher.seen[1].schema == 2
    # The last records are all unread: the checkpoint moved over them all the same.
    assert runner.position == head
    assert state.checkpoint("watcher").position == head


def test_a_projection_overriding_apply_sees_every_type(
    writer: EventWriter, log: LmdbEventLog, state: StateStore
) -> None:
    head = mixed_log(writer)
    counter = CountingProjection()
    runner = ProjectionRunner(log, state, [SessionWatcher(), counter], batch_size=7)
    runner.prepare()
    runner.catch_up()

    assert counter.reads is None
    assert counter.applied == list(range(1, head + 1))
    assert state.checkpoint("counter").position == head


def test_sessions_rebuilt_reading_raw_equal_sessions_rebuilt_decoding_everything(
    writer: EventWriter, log: LmdbEventLog
) -> None:
    """Sessions alone skip the run records: most batches are read raw."""
    head = mixed_log(writer)
    for i in range(30):
        writer.add("session-b", UserMessageReceived(session_id="b", message_id=str(i), text="t"))
        head = chatter(writer, 3)
    selective = MemoryStateStore()
    runner = ProjectionRunner(log, selective, [SessionsProjection()], batch_size=6)
    runner.prepare()
    runner.catch_up()
    # Replay reads through the hash-checking reader: every record decoded.
    decoded = rebuild(log, SessionsProjection(), head, batch_size=6)

    assert selective.items("sessions") == decoded.items("sessions")
    assert selective.checkpoint("sessions") == decoded.checkpoint("sessions")
    assert selective.checkpoint("sessions").position == head


def test_runs_and_sessions_read_their_types_only(
    writer: EventWriter, log: LmdbEventLog, state: StateStore
) -> None:
    assert "LLMCallCompleted" not in (SessionsProjection().reads or ())
    assert "UserMessageReceived" not in (RunsProjection().reads or ())
    head = mixed_log(writer)
    runner = ProjectionRunner(log, state, [SessionsProjection(), RunsProjection()], batch_size=5)
    runner.prepare()
    runner.catch_up()
    assert [state.checkpoint(n).position for n in ("sessions", "runs")] == [head, head]
