"""The LMDB backend of the event log.

Sub-databases of one environment:
  events   position (8-byte big-endian) -> hash + body       (written with append=True)
  streams  stream + NUL + version (8-byte BE) -> position
  ids      event id (16 bytes) -> position + version + stream (idempotent appends)
  types    type + NUL + position -> empty                     (reads by type)
  meta     b"format", b"head" (position + hash of the last record)

Threading: py-lmdb requires a write transaction to begin and commit on one thread, so
`commit` opens and commits its transaction inside the single call the writer makes in
a worker thread. The map is grown on `MapFullError` only while no transaction of this
process is open: readers hold a shared gate around their (short) transactions and the
resize takes it exclusively.

Several processes may append to one environment (LMDB serialises their write
transactions). Nothing cached is trusted inside a write transaction without a check
against the log in that same transaction: the head and event ids are read there, and
the cache of stream versions is used only while the head it was filled at is still
the log's head (`_VersionCache`).
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
from events._log import AppendRequest, EventLog, LogStatistics, Outcome, PlannedWrite, plan_batch
from events._model import RecordedEvent
from events.errors import EventStoreError, NotAnEventStore, StoreClosed, StoreCorrupted

FORMAT = b"autoagent-eventlog/1"
_U64 = struct.Struct(">Q")
_U64x2 = struct.Struct(">QQ")
_DB_NAMES = (b"events", b"streams", b"ids", b"types", b"meta")
_MAX_DBS = 16
_MAX_READERS = 1024
_VERSION_CACHE_SIZE = 100_000
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


class _VersionCache:
    """Stream versions this process committed, valid only at the head they were taken at.

    Another process that appends moves the head; the next write transaction then finds
    the head it reads differ from `at` and drops every entry before using any.
    """

    def __init__(self) -> None:
        self.at: tuple[int, bytes] | None = None
        self.versions: dict[str, int] = {}

    def checked(self, head: tuple[int, bytes]) -> dict[str, int]:
        """The versions, emptied first unless `head` (read in the txn) is where they hold."""
        if head != self.at:
            self.versions.clear()
            self.at = head
        return self.versions

    def committed(self, writes: list[PlannedWrite], head: tuple[int, bytes]) -> None:
        """Remember a committed batch (bounded: cleared when it grows too big)."""
        if len(self.versions) > _VERSION_CACHE_SIZE:
            self.versions.clear()
        for write in writes:
            self.versions[write.stream] = write.version
        self.at = head


class LmdbEventLog(EventLog):
    """Event log in one LMDB environment (a directory)."""

    shared: ClassVar[bool] = True

    def __init__(
        self, env: lmdb.Environment, dbs: dict[bytes, Any], compress_over: int, readonly: bool
    ) -> None:
        self._env = env
        self._dbs = dbs
        self._compress_over = compress_over
        self._gate = _Gate()
        self._closed = False
        self._versions = _VersionCache()
        self.readonly = readonly
        self.path = Path(env.path())

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
    ) -> LmdbEventLog:
        """Open (creating when writable) the store in directory `path`."""
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
        return cls(env, dbs, compress_over, readonly)

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
        with self._env.begin(write=True) as txn:
            # The head is read in this transaction, never cached: another process may
            # have appended since this one last did, and the versions cached here are
            # used only if it has not (LMDB serialises the two write transactions).
            view = _TxnView(txn, self._dbs)
            head = view.head()
            view.versions = self._versions.checked(head)
            plan = plan_batch(view, head, requests, ts, self._compress_over)
            for write in plan.writes:
                self._put_record(txn, write)
            if plan.writes:
                txn.put(
                    b"head", _pos_key(plan.head_position) + plan.head_hash, db=self._dbs[b"meta"]
                )
        self._versions.committed(plan.writes, (plan.head_position, plan.head_hash))
        return plan.outcomes, plan.writes

    def _put_record(self, txn: lmdb.Transaction[bytes], write: PlannedWrite) -> None:
        key = _pos_key(write.position)
        if not txn.put(key, write.value, append=True, db=self._dbs[b"events"]):
            raise StoreCorrupted(write.position, "position is not after the last record")
        stream_key = _stream_prefix(write.stream) + _U64.pack(write.version)
        txn.put(stream_key, key, db=self._dbs[b"streams"])
        id_value = _U64x2.pack(write.position, write.version) + write.stream.encode()
        txn.put(write.id_bytes, id_value, db=self._dbs[b"ids"])
        txn.put(write.type.encode() + b"\x00" + key, b"", db=self._dbs[b"types"])

    def _grow_map(self) -> None:
        with self._gate.exclusive():
            size = self._env.info()["map_size"]
            self._env.set_mapsize(size * 2)

    # --- reading -------------------------------------------------------------------

    def head(self) -> tuple[int, bytes]:
        return self._read(lambda txn: _TxnView(txn, self._dbs).head())

    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        def scan(txn: lmdb.Transaction[memoryview]) -> list[RecordedEvent]:
            cursor = txn.cursor(self._dbs[b"events"])
            out: list[RecordedEvent] = []
            if not cursor.set_range(_pos_key(after + 1)):
                return out
            for key, value in cursor:
                out.append(_decode_at(key, value))
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
        start = _stream_prefix(stream) + _U64.pack(after_version + 1)
        return self._read(
            lambda txn: self._scan_index(txn, b"streams", _stream_prefix(stream), start, 0, limit)
        )

    def read_stream_after(self, stream: str, after: int, limit: int = 1000) -> list[RecordedEvent]:
        prefix = _stream_prefix(stream)
        return self._read(
            lambda txn: self._scan_index(txn, b"streams", prefix, prefix, after, limit)
        )

    def read_type(self, event_type: str, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        prefix = event_type.encode() + b"\x00"
        start = prefix + _pos_key(after + 1)
        return self._read(
            lambda txn: self._scan_index(txn, b"types", prefix, start, after, limit, key_pos=True)
        )

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
        return self._read(lambda txn: _TxnView(txn, self._dbs).stream_version(stream))

    def streams(self, prefix: str = "") -> list[tuple[str, int]]:
        def scan(txn: lmdb.Transaction[memoryview]) -> list[tuple[str, int]]:
            view = _TxnView(txn, self._dbs)
            cursor = txn.cursor(self._dbs[b"streams"])
            out: list[tuple[str, int]] = []
            seek = prefix.encode()
            while cursor.set_range(seek):
                name_bytes = bytes(cursor.key())[:-9]
                if not name_bytes.startswith(prefix.encode()):
                    break
                name = name_bytes.decode()
                out.append((name, view.stream_version(name)))
                seek = name_bytes + b"\x01"
            return out

        return self._read(scan)

    def type_counts(self) -> dict[str, int]:
        def scan(txn: lmdb.Transaction[memoryview]) -> dict[str, int]:
            counts: dict[str, int] = {}
            cursor = txn.cursor(self._dbs[b"types"])
            for key in cursor.iternext(values=False):
                name = bytes(key[:-9]).decode()
                counts[name] = counts.get(name, 0) + 1
            return counts

        return self._read(scan)

    def statistics(self) -> LogStatistics:
        def stats(txn: lmdb.Transaction[memoryview]) -> LogStatistics:
            position, _ = _TxnView(txn, self._dbs).head()
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


class _TxnView:
    """Committed state seen through one transaction (the planner's `LogView`)."""

    def __init__(
        self,
        txn: lmdb.Transaction[Any],
        dbs: dict[bytes, Any],
        versions: dict[str, int] | None = None,
    ) -> None:
        self._txn = txn
        self._dbs = dbs
        self.versions = versions if versions is not None else {}

    def head(self) -> tuple[int, bytes]:
        raw = self._txn.get(b"head", db=self._dbs[b"meta"])
        if raw is None:
            return 0, GENESIS_HASH
        raw = bytes(raw)
        return _U64.unpack(raw[:8])[0], raw[8 : 8 + HASH_SIZE]

    def stream_version(self, stream: str) -> int:
        cached = self.versions.get(stream)
        if cached is not None:
            return cached
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
        raw = self._txn.get(id_bytes, db=self._dbs[b"ids"])
        if raw is None:
            return None
        raw = bytes(raw)
        position, version = _U64x2.unpack(raw[:16])
        return int(position), int(version), raw[16:].decode()


def _decode_at(key: bytes | memoryview, value: bytes | memoryview) -> RecordedEvent:
    """Decode a record, naming its key's position if the record itself cannot."""
    try:
        return decode_record(value)
    except StoreCorrupted as exc:
        if exc.position >= 0:
            raise
        raise StoreCorrupted(_U64.unpack(bytes(key))[0], exc.reason) from exc


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
        if found is None and not readonly:
            txn.put(b"format", FORMAT, db=meta)
            return
    if found != FORMAT:
        raise NotAnEventStore(f"{path}: not an autoagent store (format {found!r})")
