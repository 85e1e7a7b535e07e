"""`FileChanges`: a write to the watched file, by this process or another, makes its
descriptor readable until drained; a file that cannot be watched gives None (the store
then polls)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio
import trio.testing

from events._file_changes import FileChanges

from .conftest import TIMEOUT_S


async def test_a_write_by_another_process_wakes_the_waiter(tmp_path: Path) -> None:
    watched = tmp_path / "data.mdb"
    watched.write_bytes(b"")
    changes = FileChanges.watch(watched)
    assert changes is not None
    woke = trio.Event()

    async def waiter() -> None:
        await trio.lowlevel.wait_readable(changes.fileno)
        assert changes.drain()
        woke.set()

    try:
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert not woke.is_set()  # nothing written yet
                code = f"open({str(watched)!r}, 'ab').write(b'x')"
                await trio.run_process([sys.executable, "-c", code])
                await woke.wait()
    finally:
        changes.close()
        changes.close()  # closing twice is harmless


async def test_writes_before_a_drain_are_drained_at_once(tmp_path: Path) -> None:
    watched = tmp_path / "data.mdb"
    watched.write_bytes(b"")
    changes = FileChanges.watch(watched)
    assert changes is not None
    try:
        with watched.open("ab") as file:
            for _ in range(3):
                file.write(b"x")
                file.flush()
        with trio.fail_after(TIMEOUT_S):
            await trio.lowlevel.wait_readable(changes.fileno)  # at once: writes are queued
        assert changes.drain()
        assert not changes.drain()  # all three were taken by the first
        with trio.move_on_after(0.1) as again:
            await trio.lowlevel.wait_readable(changes.fileno)
        assert again.cancelled_caught
    finally:
        changes.close()


def test_a_file_that_cannot_be_watched_gives_none(tmp_path: Path) -> None:
    assert FileChanges.watch(tmp_path / "missing" / "data.mdb") is None
