"""The projection runner's failure boundary: while it follows the log (`run`), a
projection that raises is stopped alone, with its error in its status and the log, and
the others go on to the head; the synchronous catch-up (CLI, replay) still raises.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from events import EventStore, RecordedEvent, SessionStarted, StoreOptions, open_event_store
from projections import (
    MemoryStateStore,
    ProjectionRunner,
    SessionsProjection,
    StateCommit,
    StateStore,
)

from .helpers import TIMEOUT_S, CountingProjection, EventWriter, SnapshotCounter, session_messages


class UnpackableProjection(CountingProjection):
    """Saves a value the state store cannot encode: its commit fails, not its apply."""

    name = "unpackable"

    def apply(self, record: RecordedEvent) -> None:
        super().apply(record)
        if record.position == 3:
            self.save(b"bad", object())


class BrokenSnapshot(SnapshotCounter):
    name = "broken-snapshot"

    def snapshot_state(self) -> Any:
        raise ValueError("injected: this snapshot cannot be taken")


async def append_sessions(store: EventStore, first: int, count: int) -> int:
    """One `SessionStarted` each for sessions first..first+count-1; the last position."""
    last = 0
    for i in range(first, first + count):
        appended = await store.append(f"session-{i}", [SessionStarted(session_id=str(i))])
        last = appended.last_position
    return last


async def test_projection_failing_while_following_stops_alone_and_the_rest_reach_the_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = MemoryStateStore()
    sessions, failing = SessionsProjection(), CountingProjection()
    failing.fail_at = 7
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(tmp_path / "data", StoreOptions(sync=False)) as store:
            await append_sessions(store, 0, 5)
            runner = ProjectionRunner(store.log, state, [sessions, failing], batch_size=3)
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run, store)
                head = await append_sessions(store, 5, 20)
                await runner.wait_for(head)  # does not wait on the stopped projection
                assert runner.position == head == 25
                statuses = {s.name: s for s in runner.statuses()}
                nursery.cancel_scope.cancel()
    assert len(state.items("sessions")) == 25
    counter = statuses["counter"]
    assert counter.stopped and not statuses["sessions"].stopped
    assert counter.error == "RuntimeError: simulated crash at position 7 (at position 7)"
    assert counter.position == counter.persisted == state.checkpoint("counter").position == 6
    assert failing.applied[-1] == 6  # nothing after the failure was fed to it
    assert state.get("counter", b"count") == 6  # the failed batch's changes were dropped
    logged = [r for r in caplog.records if r.name == "projections._runner"]
    assert logged and logged[0].levelno == logging.ERROR
    assert "'counter' stopped at position 7" in logged[0].getMessage()
    assert logged[0].exc_info is not None and "simulated crash" in str(logged[0].exc_info[1])


async def test_stopped_projection_is_tried_again_from_its_checkpoint_on_the_next_start(
    tmp_path: Path,
) -> None:
    state = MemoryStateStore()
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(tmp_path / "data", StoreOptions(sync=False)) as store:
            head = await append_sessions(store, 0, 12)
            failing = CountingProjection()
            failing.fail_at = 5
            runner = ProjectionRunner(store.log, state, [failing], batch_size=4)
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run, store)
                assert runner.statuses()[0].stopped
                nursery.cancel_scope.cancel()
            fixed = ProjectionRunner(store.log, state, [CountingProjection()], batch_size=4)
            async with trio.open_nursery() as nursery:
                await nursery.start(fixed.run, store)
                await fixed.wait_for(head)
                nursery.cancel_scope.cancel()
    assert not fixed.statuses()[0].stopped
    assert state.get("counter", b"count") == head  # each event applied exactly once


@pytest.mark.parametrize(
    "failing",
    [UnpackableProjection, BrokenSnapshot],
    ids=["commit-of-an-unencodable-value", "snapshot-that-raises"],
)
async def test_projection_whose_commit_or_snapshot_fails_stops_alone(
    tmp_path: Path, failing: type[CountingProjection] | type[SnapshotCounter]
) -> None:
    state = MemoryStateStore()
    projection = failing()
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(tmp_path / "data", StoreOptions(sync=False)) as store:
            head = await append_sessions(store, 0, 10)
            runner = ProjectionRunner(
                store.log, state, [SessionsProjection(), projection], batch_size=5, snapshot_every=2
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run, store)
                await runner.wait_for(head)
                statuses = {s.name: s for s in runner.statuses()}
                nursery.cancel_scope.cancel()
    assert statuses[projection.name].stopped
    assert not statuses["sessions"].stopped
    assert state.checkpoint("sessions").position == head
    assert state.checkpoint(projection.name).position == 0


async def test_every_projection_stopped_leaves_the_runner_following_without_spinning(
    tmp_path: Path,
) -> None:
    failing = CountingProjection()
    failing.fail_at = 1
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(tmp_path / "data", StoreOptions(sync=False)) as store:
            runner = ProjectionRunner(store.log, MemoryStateStore(), [failing])
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run, store)
                head = await append_sessions(store, 0, 3)
                await runner.wait_for(head)
                nursery.cancel_scope.cancel()
    assert runner.statuses()[0].stopped


def test_synchronous_catch_up_still_raises_for_the_cli_and_replay(
    state: StateStore, writer: EventWriter
) -> None:
    session_messages(writer, "a", 9)
    failing = CountingProjection()
    failing.fail_at = 4
    runner = ProjectionRunner(writer.log, state, [failing], batch_size=3)
    runner.prepare()
    with pytest.raises(RuntimeError, match="simulated crash at position 4"):
        runner.catch_up()
    assert not runner.statuses()[0].stopped


def test_memory_state_store_commit_is_all_or_nothing() -> None:
    state = MemoryStateStore()
    good = StateCommit("a", 1, 0, 5, {b"k": 1})
    bad = StateCommit("b", 1, 0, 5, {b"k": object()})
    with pytest.raises(TypeError):
        state.commit([good, bad])
    assert state.checkpoint("a").position == 0 and state.get("a", b"k") is None
    state.commit([good])
    assert state.get("a", b"k") == 1
