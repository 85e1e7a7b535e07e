"""LMDB-only behaviour: read-only opens from other processes, what is not a store, map
growth, persistence across reopen, and an audit that finds one flipped byte on disk.

Readers in another process are real subprocesses (`sys.executable -c ...`): LMDB must
not open one environment twice in one process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio

from events import (
    ANY,
    AuditReport,
    EventStoreError,
    LmdbEventLog,
    MemoryAdded,
    NewEvent,
    NotAnEventStore,
    SessionStarted,
    StoreOptions,
    UserMessageReceived,
    audit_log,
    open_event_store,
)
from events._codec import PreparedEvent, pack_data
from events._log import AppendRequest

from .conftest import TIMEOUT_S

PROJECT_ROOT = Path(__file__).resolve().parents[2]

READER = """
import sys, time
from events import LmdbEventLog, audit_log

path, wait_for = sys.argv[1], int(sys.argv[2])
log = LmdbEventLog.open(path, readonly=True)
print("ready", log.head()[0], flush=True)
deadline = time.monotonic() + 10
while log.head()[0] < wait_for and time.monotonic() < deadline:
    time.sleep(0.005)
records = log.read(0, 100_000)
print(len(records), log.head()[0], audit_log(log).ok, records[-1].stream if records else "-")
log.close()
"""


def reader_command(path: Path, wait_for: int = 0) -> dict[str, Any]:
    return {
        "command": [sys.executable, "-c", READER, str(path), str(wait_for)],
        "cwd": PROJECT_ROOT,
        "env": {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        "check": False,
    }


async def run_reader(path: Path) -> list[str]:
    """Run the reader process to completion; its last line, split."""
    result = await trio.run_process(
        **reader_command(path), capture_stdout=True, capture_stderr=True
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()[-1].split()


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str:
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        assert chunk, f"reader exited early: {bytes(buffer)!r}"
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


def started(n: int) -> SessionStarted:
    return SessionStarted(session_id=f"session-{n}")


# --- read-only opens ------------------------------------------------------------------


async def test_readonly_process_reads_while_the_store_is_open_for_writing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(path, StoreOptions(map_size_mb=16)) as store:
            for i in range(5):
                await store.append(f"run-{i}", [started(j) for j in range(5)])
            assert await run_reader(path) == ["25", "25", "True", "run-4"]

            await store.append("run-late", [started(0)])
            assert await run_reader(path) == ["26", "26", "True", "run-late"]


async def test_readonly_process_opened_before_appends_sees_them(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(path, StoreOptions(map_size_mb=16)) as store:
            await store.append("run-0", [started(0)])
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        **reader_command(path, wait_for=41),
                        stdout=subprocess.PIPE,
                    )
                )
                assert process.stdout is not None
                buffer = bytearray()
                assert await read_line(process.stdout, buffer) == "ready 1"
                for i in range(40):
                    await store.append("run-1", [started(i)])
                result = await read_line(process.stdout, buffer)
    assert process.returncode == 0
    assert result.split() == ["41", "41", "True", "run-1"]


def test_readonly_open_of_a_missing_directory_raises_not_an_event_store(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    with pytest.raises(NotAnEventStore, match="no such data directory"):
        LmdbEventLog.open(path, readonly=True)
    assert not path.exists()


def test_readonly_open_of_a_directory_without_data_raises_not_an_event_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "empty"
    path.mkdir()
    with pytest.raises(NotAnEventStore, match=r"not an autoagent store \(no data.mdb\)"):
        LmdbEventLog.open(path, readonly=True)
    assert list(path.iterdir()) == []


def test_readonly_open_of_a_file_that_is_not_lmdb_raises_not_an_event_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "junk"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"this is not an lmdb file" * 500)
    with pytest.raises(NotAnEventStore):
        LmdbEventLog.open(path, readonly=True)


def test_readonly_open_of_a_foreign_lmdb_environment_raises_not_an_event_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "foreign"
    env = lmdb.open(str(path), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"key", b"value")
    env.close()
    with pytest.raises(NotAnEventStore, match="not an autoagent store"):
        LmdbEventLog.open(path, readonly=True)


def test_readonly_open_of_an_environment_with_another_format_raises(tmp_path: Path) -> None:
    path = tmp_path / "other-format"
    LmdbEventLog.open(path, map_size=1 << 20).close()
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"someone-else/9", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(NotAnEventStore, match="format b'someone-else/9'"):
        LmdbEventLog.open(path, readonly=True)


def test_readonly_open_of_an_empty_store_reads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store"
    LmdbEventLog.open(path, map_size=1 << 20).close()
    log = LmdbEventLog.open(path, readonly=True)
    try:
        assert log.head() == (0, bytes(32))
        assert log.read() == []
        assert log.streams() == []
        assert audit_log(log).ok
    finally:
        log.close()


async def test_readonly_log_refuses_commits_with_an_event_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(path, StoreOptions(sync=False, map_size_mb=4)) as store:
            await store.append("s", [started(1)])
    event = PreparedEvent(
        "SessionStarted", 1, uuid.uuid4().bytes, None, None, pack_data("x", {"session_id": "x"})
    )
    log = LmdbEventLog.open(path, readonly=True)
    try:
        with pytest.raises(EventStoreError):
            log.commit([AppendRequest("s", ANY, (event,))], 1)
        assert log.head()[0] == 1
    finally:
        log.close()


# --- map growth and persistence -------------------------------------------------------


async def test_map_grows_while_appending_several_megabytes(tmp_path: Path) -> None:
    options = StoreOptions(sync=False, map_size_mb=1)
    blobs = [os.urandom(100_000) for _ in range(40)]
    big_batch = [os.urandom(600_000) for _ in range(3)]
    reads = 0

    def memory(blob: bytes, i: int) -> MemoryAdded:
        return MemoryAdded(user="u", memory_id=str(i), content="c", embedding=blob, model="m")

    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(tmp_path / "store", options) as store:
            done = trio.Event()

            async def reader() -> None:
                # Reads race the resizes, which take the map exclusively.
                nonlocal reads
                while not done.is_set():
                    await store.read(max(0, store.head_position - 2), 2)
                    reads += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                for i, blob in enumerate(blobs):
                    await store.append("memory-u", [memory(blob, i)])
                # One commit larger than the whole initial map.
                await store.append(
                    "memory-u", [memory(b, 100 + i) for i, b in enumerate(big_batch)]
                )
                done.set()

            records = [r async for r in store.iterate()]
            stats = await store.log_statistics()
            report = audit_log(store.log)

    assert [r.data["embedding"] for r in records] == blobs + big_batch
    assert stats.map_size_bytes > 4 * 1024 * 1024
    assert stats.size_bytes <= stats.map_size_bytes
    assert report.ok and report.checked == 43
    assert reads > 0


async def test_reopened_store_continues_the_log(tmp_path: Path) -> None:
    path = tmp_path / "store"
    options = StoreOptions(sync=False, map_size_mb=1)
    retried = [NewEvent(type="SessionStarted", data={"session_id": "r"}) for _ in range(2)]
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(path, options) as store:
            await store.append("s", [started(1), started(2)])
            first = await store.append("t", retried)
            await store.append("s", [UserMessageReceived("s", "m", "x" * 3_000_000)])
            head, head_hash = store.log.head()

        async with open_event_store(path, options) as store:
            assert store.head_position == head == 5
            assert store.log.head() == (head, head_hash)
            assert await store.stream_version("s") == 3
            retry = await store.append("t", retried, expected_version=0)
            nxt = await store.append("s", [started(3)], expected_version=3)
            [record] = await store.read(after=head)
            report = audit_log(store.log)

    assert retry.duplicate and retry.positions == first.positions
    assert (nxt.positions, nxt.version) == ((6,), 4)
    assert record.prev_hash == head_hash
    assert report.ok and report.checked == 6


async def test_subscription_on_a_reopened_store_catches_up_from_the_log(tmp_path: Path) -> None:
    path = tmp_path / "store"
    options = StoreOptions(sync=False, map_size_mb=4, read_batch=8)
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(path, options) as store:
            for i in range(30):
                await store.append(f"s-{i % 3}", [started(i)])

        async with open_event_store(path, options) as store:
            positions: list[int] = []
            streams: list[int] = []

            async def subscriber() -> None:
                async for record in store.subscribe():
                    positions.append(record.position)
                    if record.position == 35:
                        return

            async def stream_subscriber() -> None:
                async for record in store.subscribe(after=10, stream="s-1"):
                    streams.append(record.version)
                    if record.version == 12:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(subscriber)
                nursery.start_soon(stream_subscriber)
                for i in range(5):
                    await store.append("s-1", [started(i)])

    assert positions == list(range(1, 36))
    # s-1 holds positions 2, 5, 8, 11, ...: its first record after position 10 is version 4.
    assert streams == list(range(4, 13))


# --- tampering ------------------------------------------------------------------------


def audit_dir(path: Path) -> AuditReport:
    log = LmdbEventLog.open(path, readonly=True)
    try:
        return audit_log(log, batch=4)
    finally:
        log.close()


def flipped_copy(original: Path, copy: Path, offset: int) -> Path:
    shutil.copytree(original, copy)
    data = bytearray((copy / "data.mdb").read_bytes())
    data[offset] ^= 0x01
    (copy / "data.mdb").write_bytes(bytes(data))
    return copy


async def test_audit_names_the_position_of_one_flipped_payload_byte(tmp_path: Path) -> None:
    original = tmp_path / "original"
    marker = f"MARKER-{uuid.uuid4().hex}".encode()
    # Stored uncompressed so the marker is findable in data.mdb.
    options = StoreOptions(sync=False, map_size_mb=4, compress_over_bytes=1 << 20)
    text = marker.decode() + " " + "padding " * 400
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(original, options) as store:
            for i in range(5):
                await store.append(f"s-{i}", [started(i)])
            tampered = await store.append("s-x", [UserMessageReceived("s", "m", text)])
            for i in range(5):
                await store.append(f"s-{i}", [started(i)])

    # LMDB leaves stale copies of page contents in free space; only one occurrence is
    # the live record. Flip the same marker byte in each, one copy of the store each.
    data = (original / "data.mdb").read_bytes()
    offsets: list[int] = []
    while (found := data.find(marker, offsets[-1] + 1 if offsets else 0)) >= 0:
        offsets.append(found)
    assert offsets
    reports = [
        audit_dir(flipped_copy(original, tmp_path / f"copy-{n}", offset + len(marker) - 5))
        for n, offset in enumerate(offsets)
    ]

    assert audit_dir(original).ok
    bad = [r for r in reports if not r.ok]
    assert len(bad) == 1, reports
    [report] = bad
    assert report.first_bad_position == tampered.last_position == 6
    assert (report.checked, report.head_position) == (5, 11)
    assert report.problem == "hash chain broken (record bytes altered)"
