"""The LMDB log's indexes written behind it: lookups over the unindexed tail stay exact.

The conformance suite runs on a log indexing every 3 records too ("lmdb-tail" in
conftest); another process's tail records are checked in `test_shared_log.py`.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import lmdb
import pytest

from events import ANY, LmdbEventLog, NewEvent, audit_log, prepare_append
from events._codec import GENESIS_HASH, PreparedEvent, encode_record, pack_data
from events._tail import LogTail

_U64 = struct.Struct(">Q")


def _event(text: str, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent(
        type="UserMessageReceived",
        data={"session_id": "s", "message_id": text, "text": text},
        id=event_id or uuid.uuid4(),
    )


def _append(log: LmdbEventLog, stream: str, texts: list[str], expected: object = ANY) -> object:
    request = prepare_append(stream, [_event(t) for t in texts], expected, 1 << 20)  # type: ignore[arg-type]
    outcomes, _ = log.commit([request], 1)
    return outcomes[0]


def test_a_commit_leaves_records_unindexed_until_the_tail_is_full(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = LmdbEventLog.open(path, sync=False, index_every=5)
    try:
        _append(log, "session-a", ["1", "2"])
        _append(log, "session-b", ["3"])
        assert log.indexed_position() == 0  # three records, all in the tail
        assert log.stream_version("session-a") == 2
        assert [r.data["text"] for r in log.read_stream("session-a")] == ["1", "2"]
        _append(log, "session-a", ["4", "5"])  # the tail reaches 5: indexed
        assert log.indexed_position() == 5
        _append(log, "session-a", ["6"])
        assert log.indexed_position() == 5
        texts = [r.data["text"] for r in log.read_stream("session-a")]
        assert texts == ["1", "2", "4", "5", "6"]  # index, then tail
        assert [r.data["text"] for r in log.read_stream("session-a", 3)] == ["5", "6"]
        assert [r.position for r in log.read_stream_after("session-a", 4)] == [5, 6]
        assert [r.position for r in log.read_type("UserMessageReceived", 2, 3)] == [3, 4, 5]
        assert log.streams("session-") == [("session-a", 5), ("session-b", 1)]
        assert log.type_counts() == {"UserMessageReceived": 6}
    finally:
        log.close()


def _format(path: Path) -> bytes:
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return bytes(txn.get(b"format", db=env.open_db(b"meta", txn=txn, create=False)))
    finally:
        env.close()


def test_a_log_of_the_earlier_layout_reads_its_head_mark_as_indexed(tmp_path: Path) -> None:
    """Before the indexes moved behind, `meta.head` (position + hash) was written on
    every commit and everything was indexed: such a log opens and continues."""
    path = tmp_path / "log"
    log = LmdbEventLog.open(path, sync=False, index_every=1)
    _append(log, "session-a", ["1", "2"])
    head = log.head()
    log.close()
    env = lmdb.open(str(path), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:  # rewrite the marks as the earlier layout had them
        txn.delete(b"indexed", db=meta)
        txn.put(b"head", _U64.pack(head[0]) + head[1], db=meta)
        txn.put(b"format", b"autoagent-eventlog/1", db=meta)
    env.close()
    readonly = LmdbEventLog.open(path, readonly=True)
    try:
        assert readonly.stream_version("session-a") == 2
    finally:
        readonly.close()
    log = LmdbEventLog.open(path, sync=False, index_every=3)
    try:
        assert log.head() == head and log.stream_version("session-a") == 2
        _append(log, "session-a", ["3"])
        assert log.indexed_position() == 2  # one record in the tail, the mark still `head`
        assert [r.data["text"] for r in log.read_stream("session-a")] == ["1", "2", "3"]
        _append(log, "session-a", ["4", "5"])
        assert log.indexed_position() == 5
        assert [r.data["text"] for r in log.read_stream("session-a")] == list("12345")
        assert audit_log(log).ok
    finally:
        log.close()
    assert _format(path) == b"autoagent-eventlog/2"  # upgraded: older binaries refuse it


def _records(last: int) -> dict[int, bytes]:
    """Stored values of records 1..last, alternating between streams s1 and s0."""
    values, prev = {}, GENESIS_HASH
    for p in range(1, last + 1):
        event = PreparedEvent("T", 1, p.to_bytes(16, "big"), None, None, pack_data("T", {}))
        values[p], prev = encode_record(p, f"s{p % 2}", (p + 1) // 2, 0, event, prev, 0)
    return values


def test_a_snapshot_from_before_the_indexes_moved_gets_its_own_older_part() -> None:
    """A read transaction begun before another thread's commit moved `indexed` sees
    records the shared tail has dropped; they are parsed for it alone."""
    records = _records(10)
    parsed: list[int] = []

    def scan(after: int, upto: int) -> list[tuple[int, bytes]]:
        parsed.extend(range(after + 1, upto + 1))
        return [(p, records[p]) for p in range(after + 1, upto + 1)]

    tail = LogTail()
    newest = tail.window(6, 10, scan)  # the indexes reach 6
    assert [e.position for e in newest.all()] == [7, 8, 9, 10]
    older = tail.window(2, 8, scan)  # begun when they reached 2
    assert [e.position for e in older.all()] == [3, 4, 5, 6, 7, 8]
    assert older.stream_version("s0") == 4 and newest.stream_version("s0") == 5
    assert older.find_id((3).to_bytes(16, "big")) == (3, 2, "s1")
    assert newest.find_id((3).to_bytes(16, "big")) is None
    assert parsed == [7, 8, 9, 10, 3, 4, 5, 6]  # the shared part was parsed once


@pytest.mark.parametrize("index_every", [1, 4, 2048])
def test_reopened_log_finds_every_stream_and_id(tmp_path: Path, index_every: int) -> None:
    path = tmp_path / "log"
    log = LmdbEventLog.open(path, sync=False, index_every=index_every)
    ids = []
    for i in range(10):
        event_id = uuid.uuid4()
        ids.append(event_id)
        request = prepare_append(f"run-{i % 3}", [_event(str(i), event_id)], ANY, 1 << 20)
        log.commit([request], i)
    log.close()
    log = LmdbEventLog.open(path, sync=False, index_every=index_every)
    try:
        assert [log.stream_version(f"run-{k}") for k in range(3)] == [4, 3, 3]
        again = [
            prepare_append(f"run-{i % 3}", [_event(str(i), ids[i])], ANY, 1 << 20)
            for i in range(10)
        ]
        outcomes, writes = log.commit(again, 99)
        assert writes == [] and [o.positions for o in outcomes] == [(i + 1,) for i in range(10)]  # type: ignore[union-attr]
    finally:
        log.close()
