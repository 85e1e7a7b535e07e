"""`EventLog.import_records` on every backend: a copy keeps positions, versions, ids and
hashes, continues the chain, and refuses records that do not continue the log exactly.

The logs are used directly (synchronous, as the store's worker threads use them); the
source of every copy is a `MemoryEventLog`, whose record bytes are those of every backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from events import (
    ANY,
    EventLog,
    ImportRefused,
    LmdbEventLog,
    MemoryEventLog,
    NewEvent,
    PostgresEventLog,
    audit_log,
    prepare_append,
)
from events._codec import GENESIS_HASH, PreparedEvent, encode_record, pack_data, split_value

TS = 1_700_000_000_000_000_000
MAX_BYTES = 1 << 20

OpenLog = Callable[..., EventLog]


@pytest.fixture
def open_log(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OpenLog]:
    """`open_log()`: a fresh, empty log of this test's backend (closed at the end)."""
    opened: list[EventLog] = []

    def _open() -> EventLog:
        log: EventLog
        if backend in ("lmdb", "lmdb-tail"):
            every = 3 if backend == "lmdb-tail" else 2048
            path = tmp_path / f"log-{len(opened)}"
            log = LmdbEventLog.open(path, sync=False, map_size=16 << 20, index_every=every)
        elif backend == "postgres":
            log = PostgresEventLog.open(str(request.getfixturevalue("postgres_url")))
        else:
            log = MemoryEventLog()
        opened.append(log)
        return log

    yield _open
    for log in opened:
        log.close()


def _event(i: int, text: str = "") -> NewEvent:
    data = {"run_id": f"r{i % 3}", "step_id": f"s{i}" + text}
    return NewEvent("StepStarted", data, id=uuid.UUID(int=i + 1))


def _append(log: EventLog, first: int, count: int) -> None:
    """`count` single-event appends, events `first`..., to three streams."""
    requests = [
        prepare_append(f"run-{i % 3}", [_event(i, "x" * (200 * (i % 4)))], ANY, MAX_BYTES)
        for i in range(first, first + count)
    ]
    outcomes, _ = log.commit(requests, TS)
    assert not [o for o in outcomes if isinstance(o, Exception)]


def _source(count: int = 12) -> MemoryEventLog:
    source = MemoryEventLog(compress_over=300)  # some records compressed
    _append(source, 0, count)
    return source


def _same_contents(copy: EventLog, source: EventLog) -> None:
    assert copy.read_raw(0, 1000) == source.read_raw(0, 1000)
    assert copy.head() == source.head()
    assert copy.streams() == source.streams()
    assert copy.type_counts() == source.type_counts()
    for stream, _ in source.streams():
        assert copy.read_stream(stream) == source.read_stream(stream)
        assert copy.read_stream_after(stream, 4) == source.read_stream_after(stream, 4)
    assert copy.read_type("StepStarted", 3) == source.read_type("StepStarted", 3)
    assert audit_log(copy).ok


def test_import_keeps_positions_versions_and_hashes(open_log: OpenLog) -> None:
    source, copy = _source(), open_log()
    raw = source.read_raw(0, 1000)
    copy.import_records(raw[:5])
    copy.import_records(raw[5:])
    _same_contents(copy, source)


def test_empty_import_writes_nothing(open_log: OpenLog) -> None:
    copy = open_log()
    copy.import_records([])
    assert copy.head() == (0, GENESIS_HASH)


def test_append_after_import_is_idempotent_and_continues_the_chain(open_log: OpenLog) -> None:
    source, copy = _source(), open_log()
    copy.import_records(source.read_raw(0, 1000))
    retry = prepare_append("run-1", [_event(4, "x" * 200)], ANY, MAX_BYTES)
    (outcome,), writes = copy.commit([retry], TS)
    assert not writes
    assert not isinstance(outcome, Exception)
    assert (outcome.positions, outcome.version, outcome.duplicate) == ((5,), 2, True)
    _append(copy, 12, 1)
    assert copy.head()[0] == 13
    assert copy.stream_version("run-0") == 5
    assert audit_log(copy).ok


def test_import_continues_a_log_with_records_of_its_own(open_log: OpenLog) -> None:
    copy = open_log()
    _append(copy, 0, 2)  # with "lmdb-tail": an unindexed tail the import must index too
    source = MemoryEventLog()
    source.import_records(copy.read_raw(0, 1000))
    _append(source, 2, 8)
    copy.import_records(source.read_raw(2, 1000))
    _same_contents(copy, source)
    if isinstance(copy, LmdbEventLog):
        assert copy.indexed_position() == 10


def test_import_not_at_the_next_position_is_refused(open_log: OpenLog) -> None:
    source, copy = _source(), open_log()
    raw = source.read_raw(0, 1000)
    with pytest.raises(ImportRefused) as caught:
        copy.import_records(raw[1:])
    assert str(caught.value) == (
        "cannot import the record at position 2: the log continues at position 1 (head 0)"
    )
    copy.import_records(raw[:3])
    with pytest.raises(ImportRefused, match="position 3: the log continues at position 4"):
        copy.import_records(raw[2:])
    with pytest.raises(ImportRefused, match="position 6: the log continues at position 5"):
        copy.import_records([raw[3], raw[5]])
    assert copy.head() == (3, split_value(raw[2][1])[0])


def test_import_of_another_chain_is_refused_whole(open_log: OpenLog) -> None:
    source, other, copy = _source(), MemoryEventLog(), open_log()
    _append(other, 100, 6)
    copy.import_records(source.read_raw(0, 3))
    with pytest.raises(ImportRefused) as caught:
        copy.import_records(other.read_raw(3, 3))
    assert str(caught.value) == (
        "cannot import the record at position 4: "
        "its prev_hash is not the hash of the record before it"
    )
    position, value = source.read_raw(4, 1)[0]
    altered = value[:-1] + bytes([value[-1] ^ 1])
    with pytest.raises(ImportRefused, match="position 5: hash does not match its bytes"):
        copy.import_records([source.read_raw(3, 1)[0], (position, altered)])
    assert copy.head()[0] == 3  # nothing of a refused import is written
    assert audit_log(copy).ok


def _forged(position: int, prev_hash: bytes, stream: str, version: int, event_id: int) -> bytes:
    event = PreparedEvent(
        "StepStarted",
        1,
        uuid.UUID(int=event_id).bytes,
        None,
        None,
        pack_data("StepStarted", {"run_id": "r", "step_id": "s"}),
    )
    value, _ = encode_record(position, stream, version, TS, event, prev_hash, 0)
    return value


def test_import_with_a_known_event_id_or_a_version_gap_is_refused(open_log: OpenLog) -> None:
    source, copy = _source(3), open_log()
    copy.import_records(source.read_raw(0, 1000))
    head = copy.head()[1]
    with pytest.raises(ImportRefused, match="position 4: its event id is already in the log"):
        copy.import_records([(4, _forged(4, head, "run-0", 2, 1))])
    with pytest.raises(ImportRefused) as caught:
        copy.import_records([(4, _forged(4, head, "run-0", 3, 99))])
    assert str(caught.value) == (
        "cannot import the record at position 4: "
        "stream 'run-0' is at version 1, the record has version 3"
    )
    with pytest.raises(ImportRefused, match="position 4: the record says position 5"):
        copy.import_records([(4, _forged(5, head, "run-0", 2, 99))])
    with pytest.raises(ImportRefused, match="position 4: undecodable record"):
        copy.import_records([(4, head + b"\xc1")])
    copy.import_records([(4, _forged(4, head, "run-0", 2, 99))])
    assert copy.stream_version("run-0") == 2
    assert audit_log(copy).ok


def test_import_of_a_record_no_reader_could_decode_is_refused(open_log: OpenLog) -> None:
    """The log takes only what it can give back: a chain-valid record whose payload is
    not a map, or whose type no one registered, is refused before anything is written."""
    import msgpack

    copy = open_log()
    not_a_map = PreparedEvent(
        "StepStarted", 1, uuid.UUID(int=7).bytes, None, None, msgpack.packb([1])
    )
    value, _ = encode_record(1, "run-0", 1, TS, not_a_map, GENESIS_HASH, 0)
    with pytest.raises(ImportRefused, match="position 1: payload of StepStarted is not a map"):
        copy.import_records([(1, value)])
    unknown = PreparedEvent("NoSuchType", 1, uuid.UUID(int=8).bytes, None, None, msgpack.packb({}))
    value, _ = encode_record(1, "run-0", 1, TS, unknown, GENESIS_HASH, 0)
    with pytest.raises(ImportRefused, match=r"position 1: .*NoSuchType"):
        copy.import_records([(1, value)])
    assert copy.head()[0] == 0
