"""The event log as the store benchmarks see it: a log that times its commits, and full
scans through the log and through raw LMDB (the ceiling any reader of the log has)."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from pathlib import Path

import lmdb
import msgpack

from events import EventLog, LmdbEventLog, StoreOptions
from events._log import AppendRequest, Outcome, PlannedWrite

from ._common import Clock, clocked

HASH_BYTES = 32  # a stored value is blake2b hash + msgpack body (events/_codec.py)
ENVELOPE_FIELDS = 12  # the msgpack body: the record's envelope and its data
U64 = struct.Struct(">Q")  # keys of the events sub-database: the position, big-endian
RAW_MAP_SIZE = 4 << 30  # read-only: only address space, larger than any benchmark's log


class TimedCommits(EventLog):
    """A log of any backend, adding up the time the writer's worker thread spends in
    `commit` (mixed in before the backend's class)."""

    commit_seconds = 0.0

    def commit(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        start = time.perf_counter()
        try:
            return super().commit(requests, ts)
        finally:
            self.commit_seconds += time.perf_counter() - start


class TimedLog(TimedCommits, LmdbEventLog):
    """The LMDB log, adding up the time the writer's worker thread spends in `commit`."""


def open_timed_log(path: Path, options: StoreOptions) -> TimedLog:
    """A `TimedLog` at `path`, opened with the settings `open_event_store` gives a log."""
    log = TimedLog.open(
        path,
        sync=options.sync,
        map_size=options.map_size_mb * 1024 * 1024,
        compress_over=options.compress_over_bytes,
    )
    assert isinstance(log, TimedLog)
    return log


def check_scan(name: str, count: int, last: int, total: int) -> None:
    """A full scan read positions 1..`total`, each once."""
    if count != total or last != total:
        raise AssertionError(f"{name}: read {count} events ending at {last}, expected {total}")


def scan_log(log: EventLog, total: int, batch_size: int) -> Clock:
    """Decode every record through `log.read`, `batch_size` records per call."""
    count = last = 0
    with clocked() as clock:
        while batch := log.read(last, batch_size):
            count += len(batch)
            last = batch[-1].position
    check_scan("log.read", count, last, total)
    return clock


def scan_raw(path: Path, total: int) -> Clock:
    """A raw LMDB cursor over the events sub-database, `msgpack.unpackb` of each body."""
    env = lmdb.open(str(path), readonly=True, max_dbs=16, subdir=True, map_size=RAW_MAP_SIZE)
    fields: object = None
    try:
        # No explicit transaction: py-lmdb drops handles opened in a read-only one.
        events_db = env.open_db(b"events", create=False)
        count = last = 0
        with clocked() as clock, env.begin(buffers=True) as txn:
            for key, value in txn.cursor(events_db):
                fields = msgpack.unpackb(value[HASH_BYTES:], raw=False)
                count += 1
                last = U64.unpack(key)[0]
    finally:
        env.close()
    check_scan("raw", count, last, total)
    if count and (not isinstance(fields, list) or len(fields) != ENVELOPE_FIELDS):
        raise AssertionError(f"raw scan: unexpected envelope {fields!r}")
    return clock
