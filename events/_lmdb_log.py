"""The LMDB backend of the event log.

Sub-databases of one environment:
  events   position (8-byte big-endian) -> hash + body       (written with append=True)
  streams  stream + NUL + version (8-byte BE) -> position
  ids      event id (16 bytes) -> position + version + stream (idempotent appends)
  types    type + NUL + position -> empty                     (reads by type)
  meta     b"format", b"indexed" (the last position the three indexes hold)

The head (last position and its hash) is the last record of `events`. A commit writes
its records to `events` only; the indexes are written behind it, in the commit that
brings the unindexed tail to `index_every` records (see `events._tail`, which answers
lookups for the tail meanwhile). One B-tree dirtied per durable append instead of four
is what brings a commit close to a raw synced LMDB transaction. A log written before
the indexes moved behind has `meta.head` instead of `meta.indexed`, and every record
indexed: its `head` position is where the indexes reach until the first index write.

Threading: py-lmdb requires a write transaction to begin and commit on one thread, so
`commit` opens and commits its transaction inside the single call the writer makes in
a worker thread. The map is grown on `MapFullError` only while no transaction of this
process is open: readers hold a shared gate around their (short) transactions and the
resize takes it exclusively.

Several processes may append to one environment (LMDB serialises their write
transactions). Nothing cached is trusted inside a write transaction without a check
against the log in that same transaction: the head and `indexed` are read there, and
the tail is brought to cover exactly the records between them (another process's
records are parsed from the log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import lmdb

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
from events._tail import LogTail, TailEntry, TailWindow, position_of
from events.errors import EventStoreError, NotAnEventStore, StoreClosed, StoreCorrupted

FORMAT = b"autoagent-eventlog/2"
# The layout before the indexes moved behind the log: opened and upgraded (its
# `meta.head` marks how far the indexes reach); a binary that knows only it refuses
# the new format instead of misreading it.
_FORMAT_1 = b"autoagent-eventlog/1"
_U64 = struct.Struct(">Q")
_U64x2 = struct.Struct(">QQ")
_DB_NAMES = (b"events", b"streams", b"ids", b"types", b"meta")
_MAX_DBS = 16
_MAX_READERS = 1024
# Records a commit leaves unindexed before one writes the indexes: large enough that
# the index pages dirtied by many producers' streams are written once per thousands of
# events, small enough that a new reader parses the tail in a few milliseconds.
INDEX_EVERY = 2048
T = TypeVar("T")


def _pos_key(position: int) -> bytes:
    return _U64.pack(position)


def _stream_prefix(stream: str) -> bytes:
    return stream.encode() + b"\x00"


class _Gate:
    """A readers-writer gate: many read transactions, or one map resize."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def shared_if_free(self) -> Iterator[bool]:
        """Like `shared`, but never waits: yields False (not entered) during a resize."""
        with self._cond:
            if self._resizing:
                entered = False
            else:
                self._readers += 1
                entered = True
        try:
            yield entered
        finally:
            if entered:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._resizing = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class LmdbEventLog(EventLog):
    """Event log in one LMDB environment (a directory)."""

    shared: ClassVar[bool] = True

    def __init__(
        self,
        env: lmdb.Environment,
        dbs: dict[bytes, Any],
        compress_over: int,
        readonly: bool,
        index_every: int = INDEX_EVERY,
    ) -> None:
        self._env = env
        self._dbs = dbs
        self._compress_over = compress_over
        self._gate = _Gate()
        self._closed = False
        self._tail = LogTail()
        self._index_every = max(1, index_every)
        self.readonly = readonly
        self.path = Path(env.path())
        self._commit_marker: int | None = None  # `last_commit_marker`

    # --- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        sync: bool = True,
        map_size: int = 1 << 30,
        compress_over: int = 4096,
        index_every: int = INDEX_EVERY,
    ) -> LmdbEventLog:
        """Open (creating when writable) the store in directory `path`.

        `index_every`: unindexed records a commit may leave behind (see module docstring).
        """
        path = Path(path)
        if readonly:
            _require_store_dir(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
        try:
            env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=_MAX_DBS,
                readonly=readonly,
                sync=sync,
                metasync=sync,
                max_readers=_MAX_READERS,
                subdir=True,
            )
        except lmdb.Error as exc:
            raise NotAnEventStore(f"{path}: cannot open as an event store ({exc})") from exc
        try:
            dbs = _open_dbs(env, path, readonly)
            _check_format(env, dbs[b"meta"], path, readonly)
            if not readonly:
                # Free the reader slots of processes that died (a killed `run`), so
                # their old snapshots do not keep pages from being reused.
                env.reader_check()
        except BaseException:
            env.close()
            raise
        return cls(env, dbs, compress_over, readonly, index_every)

    # --- transactions ------------------------------------------------------------

    def _read(self, fn: Callable[[lmdb.Transaction[memoryview]], T]) -> T:
        """Run `fn` in a short read transaction, adopting a map grown by another process."""
        if self._closed:
            raise StoreClosed("the event log is closed")
        for _ in range(3):
            try:
                with self._gate.shared(), self._env.begin(buffers=True) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                self._adopt_map_size()
        raise EventStoreError("the map keeps being resized under this reader")

    def _adopt_map_size(self) -> None:
        """Another process grew the map: adopt its size, with no transaction of this
        process open (LMDB's rule), hence the exclusive gate."""
        with self._gate.exclusive():
            self._env.set_mapsize(0)

    # --- writing -------------------------------------------------------------------

    def commit(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        if self._closed:
            raise StoreClosed("the event log is closed")
        if self.readonly:
            raise EventStoreError(f"{self.path}: the event log is open read-only")
        while True:
            try:
                return self._commit_once(requests, ts)
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.MapResizedError:
                self._adopt_map_size()

    def _commit_once(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        self._commit_marker = None
        with self._env.begin(write=True) as txn:
            # The head and `indexed` are read in this transaction, never cached: another
            # process may have appended since this one last did (LMDB serialises the
            # two write transactions), and the tail is brought up to what it wrote.
            view = self._view(txn)
            window = view.window
            plan = plan_batch(
                view, (window.head, view.head_hash), requests, ts, self._compress_over
            )
            events = self._dbs[b"events"]
            for write in plan.writes:
                if not txn.put(_pos_key(write.position), write.value, append=True, db=events):
                    raise StoreCorrupted(write.position, "position is not after the last record")
            entries = [
                TailEntry(w.position, w.stream, w.version, w.type, w.id_bytes) for w in plan.writes
            ]
            indexed = window.indexed
            if plan.writes and len(window) + len(entries) >= self._index_every:
                self._write_index(txn, [*window.all(), *entries])
                indexed = plan.head_position
            # The id this transaction commits as (a transaction that wrote nothing
            # commits no id: the next writer, of any process, takes it).
            marker = txn.id() if plan.writes else None
        self._commit_marker = marker
        with self._tail.lock:
            self._tail.committed(entries, indexed)
        return plan.outcomes, plan.writes

    def last_commit_marker(self) -> int | None:
        return self._commit_marker

    def change_marker(self) -> int | None:
        """LMDB's id of the last committed write transaction of any process, read from
        the meta pages in the map: no I/O, and no lock a commit holds (only the gate,
        not waited for: during this process's map resize there is no marker). With
        `sync`, a commit's meta page is in the map while it is still being flushed, a
        moment before new readers take the commit up (the lock file's txn id)."""
        if self._closed:
            return None
        with self._gate.shared_if_free() as entered:
            if not entered:
                return None
            try:
                marker: int = self._env.info()["last_txnid"]
            except lmdb.Error:
                return None
            return marker

    def changed_file(self) -> Path | None:
        return self.path / "data.mdb"

    def import_records(self, records: Sequence[tuple[int, bytes]]) -> None:
        if self._closed:
            raise StoreClosed("the event log is closed")
        if self.readonly:
            raise EventStoreError(f"{self.path}: the event log is open read-only")
        writes = parse_import(records)
        while writes:
            try:
                self._import_once(writes)
                return
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.MapResizedError:
                self._adopt_map_size()

    def _import_once(self, writes: list[PlannedWrite]) -> None:
        with self._env.begin(write=True) as txn:
            view = self._view(txn)
            window = view.window
            plan_import(view, (window.head, view.head_hash), writes)
            events = self._dbs[b"events"]
            for write in writes:
                if not txn.put(_pos_key(write.position), write.value, append=True, db=events):
                    raise StoreCorrupted(write.position, "position is not after the last record")
            entries = [
                TailEntry(w.position, w.stream, w.version, w.type, w.id_bytes) for w in writes
            ]
            # An import indexes its records at once, with the tail before them: the
            # indexes then reach the head, so no tail of thousands of records is left
            # for every reader to parse.
            self._write_index(txn, [*window.all(), *entries])
        with self._tail.lock:
            self._tail.committed(entries, writes[-1].position)

    def _write_index(self, txn: lmdb.Transaction[Any], entries: list[TailEntry]) -> None:
        """Index the tail in this transaction; `meta.indexed` moves to its last record."""
        streams, ids, types = self._dbs[b"streams"], self._dbs[b"ids"], self._dbs[b"types"]
        for entry in entries:
            key = _pos_key(entry.position)
            txn.put(_stream_prefix(entry.stream) + _U64.pack(entry.version), key, db=streams)
            id_value = _U64x2.pack(entry.position, entry.version) + entry.stream.encode()
            txn.put(entry.id_bytes, id_value, db=ids)
            txn.put(entry.type.encode() + b"\x00" + key, b"", db=types)
        meta = self._dbs[b"meta"]
        txn.put(b"indexed", _pos_key(entries[-1].position), db=meta)
        txn.delete(b"head", db=meta)  # a log of the earlier layout: no longer its mark

    def _view(self, txn: lmdb.Transaction[Any]) -> _TxnView:
        """The committed state one transaction sees, its tail parsed as far as its head."""
        indexed, head, head_hash = _snapshot(txn, self._dbs)
        events = self._dbs[b"events"]

        def scan(after: int, upto: int) -> Iterator[tuple[int, Any]]:
            cursor = txn.cursor(events)
            if not cursor.set_range(_pos_key(after + 1)):
                return
            for key, value in cursor:
                position = _U64.unpack(key)[0]
                if position > upto:
                    return
                yield position, value

        with self._tail.lock:
            window = self._tail.window(indexed, head, scan)
        return _TxnView(txn, self._dbs, window, head_hash)

    def _grow_map(self) -> None:
        with self._gate.exclusive():
            size = self._env.info()["map_size"]
            self._env.set_mapsize(size * 2)

    # --- reading -------------------------------------------------------------------

    def head(self) -> tuple[int, bytes]:
        def last(txn: lmdb.Transaction[memoryview]) -> tuple[int, bytes]:
            _, head, head_hash = _snapshot(txn, self._dbs)
            return head, head_hash

        return self._read(last)

    def seen_head(self) -> tuple[int | None, int]:
        """The read transaction's own id (the last commit it sees) with its head."""

        def last(txn: lmdb.Transaction[memoryview]) -> tuple[int | None, int]:
            marker: int = txn.id()
            return marker, _snapshot(txn, self._dbs)[1]

        return self._read(last)

    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        def scan(txn: lmdb.Transaction[memoryview]) -> list[RecordedEvent]:
            cursor = txn.cursor(self._dbs[b"events"])
            out: list[RecordedEvent] = []
            if not cursor.set_range(_pos_key(after + 1)):
                return out
            # Values only (the position is in the record): the replay's hot loop.
            for value in cursor.iternext(keys=False, values=True):
                try:
                    out.append(decode_record(value))
                except StoreCorrupted as exc:
                    if exc.position >= 0:
                        raise
                    raise _at_key(exc, cursor.key()) from exc
                if len(out) >= limit:
                    break
            return out

        return self._read(scan)

    def read_raw(self, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        def scan(txn: lmdb.Transaction[memoryview]) -> list[tuple[int, bytes]]:
            cursor = txn.cursor(self._dbs[b"events"])
            out: list[tuple[int, bytes]] = []
            if not cursor.set_range(_pos_key(after + 1)):
                return out
            for key, value in cursor:
                out.append((_U64.unpack(key)[0], bytes(value)))
                if len(out) >= limit:
                    break
            return out

        return self._read(scan)

    def read_stream(
        self, stream: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        prefix = _stream_prefix(stream)
        start = prefix + _U64.pack(after_version + 1)

        def scan(txn: lmdb.Transaction[memoryview]) -> list[RecordedEvent]:
            view = self._view(txn)
            out = self._scan_index(txn, b"streams", prefix, start, 0, limit)
            tail = (e for e in view.window.of_stream(stream) if e.version > after_version)
            return _with_tail(view, out, tail, limit)

        return self._read(scan)

    def read_stream_after(self, stream: str, after: int, limit: int = 1000) -> list[RecordedEvent]:
        prefix = _stream_prefix(stream)

        def scan(txn: lmdb.Transaction[memoryview]) -> list[RecordedEvent]:
            view = self._view(txn)
            out = self._scan_index(txn, b"streams", prefix, prefix, after, limit)
            tail = (e for e in view.window.of_stream(stream) if e.position > after)
            return _with_tail(view, out, tail, limit)

        return self._read(scan)

    def read_type(self, event_type: str, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        prefix = event_type.encode() + b"\x00"
        start = prefix + _pos_key(after + 1)

        def scan(txn: lmdb.Transaction[memoryview]) -> list[RecordedEvent]:
            view = self._view(txn)
            out = self._scan_index(txn, b"types", prefix, start, after, limit, key_pos=True)
            tail = (e for e in view.window.of_type(event_type) if e.position > after)
            return _with_tail(view, out, tail, limit)

        return self._read(scan)

    def _scan_index(
        self,
        txn: lmdb.Transaction[memoryview],
        db: bytes,
        prefix: bytes,
        start: bytes,
        after: int,
        limit: int,
        key_pos: bool = False,
    ) -> list[RecordedEvent]:
        """Follow an index (streams or types) to records with position > after."""
        cursor = txn.cursor(self._dbs[db])
        events = self._dbs[b"events"]
        out: list[RecordedEvent] = []
        if not cursor.set_range(start):
            return out
        for key, value in cursor:
            key_bytes = bytes(key)
            if not key_bytes.startswith(prefix):
                break
            pos_bytes = key_bytes[-8:] if key_pos else bytes(value)
            if _U64.unpack(pos_bytes)[0] <= after:
                continue
            record = txn.get(pos_bytes, db=events)
            if record is None:
                raise StoreCorrupted(
                    _U64.unpack(pos_bytes)[0], f"index {db.decode()} names a missing record"
                )
            out.append(_decode_at(pos_bytes, record))
            if len(out) >= limit:
                break
        return out

    def stream_version(self, stream: str) -> int:
        return self._read(lambda txn: self._view(txn).stream_version(stream))

    def indexed_position(self) -> int:
        """The last position the indexes hold (the records after it are the tail)."""
        return self._read(lambda txn: _snapshot(txn, self._dbs)[0])

    def streams(self, prefix: str = "") -> list[tuple[str, int]]:
        def scan(txn: lmdb.Transaction[memoryview]) -> list[tuple[str, int]]:
            view = self._view(txn)
            cursor = txn.cursor(self._dbs[b"streams"])
            names: set[bytes] = set()
            seek = prefix.encode()
            while cursor.set_range(seek):
                name_bytes = bytes(cursor.key())[:-9]
                if not name_bytes.startswith(prefix.encode()):
                    break
                names.add(name_bytes)
                seek = name_bytes + b"\x01"
            names.update(
                e.stream.encode() for e in view.window.all() if e.stream.startswith(prefix)
            )
            return [(n.decode(), view.stream_version(n.decode())) for n in sorted(names)]

        return self._read(scan)

    def type_counts(self) -> dict[str, int]:
        def scan(txn: lmdb.Transaction[memoryview]) -> dict[str, int]:
            view = self._view(txn)
            counts: dict[str, int] = {}
            cursor = txn.cursor(self._dbs[b"types"])
            for key in cursor.iternext(values=False):
                name = bytes(key[:-9]).decode()
                counts[name] = counts.get(name, 0) + 1
            for entry in view.window.all():
                counts[entry.type] = counts.get(entry.type, 0) + 1
            return counts

        return self._read(scan)

    def statistics(self) -> LogStatistics:
        def stats(txn: lmdb.Transaction[memoryview]) -> LogStatistics:
            _, position, _ = _snapshot(txn, self._dbs)
            info = self._env.info()
            stat = self._env.stat()
            used = (info["last_pgno"] + 1) * stat["psize"]
            return LogStatistics(position, 0, used, info["map_size"])

        partial = self._read(stats)
        return dataclasses.replace(partial, streams=len(self.streams()))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._gate.exclusive():
                self._env.close()


def _snapshot(txn: lmdb.Transaction[Any], dbs: dict[bytes, Any]) -> tuple[int, int, bytes]:
    """(indexed, head position, head hash) as one transaction sees them."""
    cursor = txn.cursor(dbs[b"events"])
    if cursor.last():
        head = position_of(cursor.key())
        head_hash = bytes(cursor.value()[:HASH_SIZE])
    else:
        head, head_hash = 0, GENESIS_HASH
    meta = dbs[b"meta"]
    raw = txn.get(b"indexed", db=meta)
    if raw is None:
        raw = txn.get(b"head", db=meta)  # the earlier layout: indexed up to its head
    indexed = position_of(bytes(raw)[:8]) if raw is not None else 0
    return min(indexed, head), head, head_hash


class _TxnView:
    """Committed state seen through one transaction: the indexes up to `indexed`, the
    tail after it (the planner's `LogView`)."""

    def __init__(
        self,
        txn: lmdb.Transaction[Any],
        dbs: dict[bytes, Any],
        window: TailWindow,
        head_hash: bytes,
    ) -> None:
        self._txn = txn
        self._dbs = dbs
        self.window = window
        self.head_hash = head_hash

    def stream_version(self, stream: str) -> int:
        in_tail = self.window.stream_version(stream)
        return in_tail if in_tail is not None else self.indexed_version(stream)

    def indexed_version(self, stream: str) -> int:
        prefix = _stream_prefix(stream)
        cursor = self._txn.cursor(self._dbs[b"streams"])
        if cursor.set_range(prefix + b"\xff" * 8):
            if not cursor.prev():
                return 0
        elif not cursor.last():
            return 0
        key = bytes(cursor.key())
        if not key.startswith(prefix) or len(key) != len(prefix) + 8:
            return 0
        return int(_U64.unpack(key[-8:])[0])

    def find_id(self, id_bytes: bytes) -> tuple[int, int, str] | None:
        in_tail = self.window.find_id(id_bytes)
        if in_tail is not None:
            return in_tail
        raw = self._txn.get(id_bytes, db=self._dbs[b"ids"])
        if raw is None:
            return None
        raw = bytes(raw)
        position, version = _U64x2.unpack(raw[:16])
        return int(position), int(version), raw[16:].decode()

    def record(self, position: int) -> RecordedEvent:
        key = _pos_key(position)
        value = self._txn.get(key, db=self._dbs[b"events"])
        if value is None:
            raise StoreCorrupted(position, "the tail names a missing record")
        return _decode_at(key, value)


def _with_tail(
    view: _TxnView, out: list[RecordedEvent], tail: Iterator[TailEntry], limit: int
) -> list[RecordedEvent]:
    """An index scan's records followed by the tail's (every tail position is after
    every indexed one), up to `limit`."""
    for entry in tail:
        if len(out) >= limit:
            break
        out.append(view.record(entry.position))
    return out


def _decode_at(key: bytes | memoryview, value: bytes | memoryview) -> RecordedEvent:
    """Decode a record, naming its key's position if the record itself cannot."""
    try:
        return decode_record(value)
    except StoreCorrupted as exc:
        if exc.position >= 0:
            raise
        raise _at_key(exc, key) from exc


def _at_key(exc: StoreCorrupted, key: bytes | memoryview) -> StoreCorrupted:
    """`exc` again, naming the position of the record's key (the record could not)."""
    return StoreCorrupted(_U64.unpack(bytes(key))[0], exc.reason)


def _require_store_dir(path: Path) -> None:
    if not path.is_dir():
        raise NotAnEventStore(f"{path}: no such data directory")
    if not (path / "data.mdb").is_file():
        raise NotAnEventStore(f"{path}: not an autoagent store (no data.mdb)")


def _open_dbs(env: lmdb.Environment, path: Path, readonly: bool) -> dict[bytes, Any]:
    try:
        # No explicit transaction: py-lmdb drops handles opened in a read-only one.
        return {name: env.open_db(name, create=not readonly) for name in _DB_NAMES}
    except lmdb.Error as exc:
        raise NotAnEventStore(f"{path}: not an autoagent store ({exc})") from exc


def _check_format(env: lmdb.Environment, meta: Any, path: Path, readonly: bool) -> None:
    with env.begin(write=not readonly) as txn:
        found = txn.get(b"format", db=meta)
        if not readonly and found in (None, _FORMAT_1):
            txn.put(b"format", FORMAT, db=meta)
            return
    if found not in (FORMAT, _FORMAT_1):
        raise NotAnEventStore(f"{path}: not an autoagent store (format {found!r})")
