"""ProjectionRunner: catch-up from checkpoints, exactly-once application, version
rebuilds, snapshots, checkpoint races, and the live Trio side (follow, wait_for,
shutdown), over both state store backends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from events import LmdbEventLog, SessionStarted, StoreOptions, UserMessageReceived, open_event_store
from projections import (
    LmdbStateStore,
    MemoryStateStore,
    ProjectionRunner,
    SessionsProjection,
    StateCommit,
    StateStore,
    rebuild,
)

from .helpers import (
    TIMEOUT_S,
    CountingProjection,
    CountingProjectionV2,
    EventWriter,
    SnapshotCounter,
    SnapshotCounterV2,
    assert_counted_once,
    in_thread,
    open_state,
    session_messages,
)


def fill(writer: EventWriter, events: int) -> int:
    """`events` events over a few sessions; returns the head position."""
    head = 0
    per_session = 10
    for sid in range(0, events, per_session):
        head = session_messages(writer, f"s{sid}", min(per_session, events - sid) - 1)
    assert head == events
    return head


def fill_interleaved(writer: EventWriter, sessions: int, events: int) -> int:
    """`sessions` sessions, then user messages round robin up to `events` events."""
    head = 0
    for sid in range(sessions):
        head = writer.add(f"session-{sid}", SessionStarted(session_id=str(sid)))
    while head < events:
        session_id = str(head % sessions)
        message = UserMessageReceived(session_id=session_id, message_id=str(head), text=f"m{head}")
        head = writer.add(f"session-{session_id}", message)
    return head


# --- catch-up and exactly-once ----------------------------------------------------------


async def test_catch_up_applies_every_event_once_and_checkpoints_the_head(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 95)
        projection = CountingProjection()
        runner = ProjectionRunner(log, state, [projection], batch_size=10)
        runner.prepare()
        progress: list[tuple[int, int]] = []
        caught_up = await in_thread(
            runner.catch_up, progress=lambda done, total: progress.append((done, total))
        )
        assert caught_up == head
        assert projection.applied == list(range(1, head + 1))
        assert runner.position == head
        assert state.checkpoint("counter").position == head
        assert progress[-1] == (head, head) and len(progress) == 10
        assert_counted_once(state, head)


async def test_stopped_runner_is_continued_by_a_new_one_from_the_checkpoint(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 87)
        first = CountingProjection()
        runner = ProjectionRunner(log, state, [first], batch_size=10)
        runner.prepare()
        for _ in range(3):
            runner.step()
        assert state.checkpoint("counter").position == 30
        # The first runner is abandoned (a crash between batches); a new one goes on.
        second = CountingProjection()
        again = ProjectionRunner(log, state, [second], batch_size=10)
        again.prepare()
        assert again.position == 30
        await in_thread(again.catch_up)
        assert first.applied + second.applied == list(range(1, head + 1))
        assert_counted_once(state, head)
        assert state.items("counter") == rebuild(log, CountingProjection(), head).items("counter")


async def test_catch_up_until_stops_there_and_follows_later_appends(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        fill(writer, 40)
        runner = ProjectionRunner(log, state, [CountingProjection()], batch_size=7)
        runner.prepare()
        await in_thread(runner.catch_up, until=25)
        assert (runner.position, state.checkpoint("counter").position) == (25, 25)
        head = session_messages(writer, "late", 9)
        await in_thread(runner.catch_up)
        assert runner.position == head == 50
        assert_counted_once(state, head)


async def test_batch_failing_midway_is_not_committed_and_is_applied_once_on_restart(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 50)
        crashing = CountingProjection()
        crashing.fail_at = 26
        runner = ProjectionRunner(log, state, [crashing], batch_size=10)
        runner.prepare()
        await in_thread(runner.catch_up, until=20)
        with pytest.raises(RuntimeError, match="simulated crash"):
            runner.step()
        assert state.checkpoint("counter").position == 20
        assert_counted_once(state, 20)
        restarted = ProjectionRunner(log, state, [CountingProjection()], batch_size=10)
        restarted.prepare()
        await in_thread(restarted.catch_up)
        assert_counted_once(state, head)


async def counter_ahead(state: StateStore, log: LmdbEventLog, until: int | None = None) -> None:
    """The counting projection alone, caught up to `until` (default: the head)."""
    ahead = ProjectionRunner(log, state, [CountingProjection()], batch_size=10)
    ahead.prepare()
    await in_thread(ahead.catch_up, until)


def counter_and_sessions(state: StateStore, log: LmdbEventLog, **options: Any) -> ProjectionRunner:
    runner = ProjectionRunner(log, state, [CountingProjection(), SessionsProjection()], **options)
    runner.prepare()
    return runner


async def test_projection_ahead_of_the_others_keeps_its_checkpoint(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    # A projection added later (or rebuilt after a version bump) starts at 0 while
    # another is already at the head: the runner replays the log for the new one, and
    # the one ahead must neither move its checkpoint back nor apply an event twice,
    # even if the process dies in the middle of that catch-up.
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 60)
        await counter_ahead(state, log)
        both = counter_and_sessions(state, log, batch_size=10)
        assert both.position == 0
        both.step()
        assert state.checkpoint("counter").position == head
        # crash here; the next start goes on from the checkpoints on disk
        restarted = counter_and_sessions(state, log)
        await in_thread(restarted.catch_up)
        assert_counted_once(state, head)


async def test_a_batch_partly_applied_already_applies_only_the_records_after_the_checkpoint(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    # The runner skips the records a projection has applied by position: here its
    # checkpoint falls inside a batch the slower projection needs whole.
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 60)
        await counter_ahead(state, log, 35)
        assert state.checkpoint("counter").position == 35
        both = counter_and_sessions(state, log, batch_size=10)
        await in_thread(both.catch_up)
        assert_counted_once(state, head)


# --- version bumps --------------------------------------------------------------------


async def test_version_bump_resets_and_rebuilds_from_position_one(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 45)
        runner = ProjectionRunner(log, state, [CountingProjection()], batch_size=10)
        runner.prepare()
        await in_thread(runner.catch_up)
        state.commit([])  # a no-op commit is allowed
        unchanged = ProjectionRunner(log, state, [CountingProjection()])
        unchanged.prepare()
        assert [s.rebuilt for s in unchanged.statuses()] == [False]

        bumped = CountingProjectionV2()
        runner = ProjectionRunner(log, state, [bumped], batch_size=10)
        runner.prepare()
        (status,) = runner.statuses()
        assert (status.name, status.version, status.position, status.rebuilt) == (
            "counter",
            2,
            0,
            True,
        )
        await in_thread(runner.catch_up)
        assert bumped.applied == list(range(1, head + 1))
        assert state.checkpoint("counter").version == 2
        assert_counted_once(state, head)


async def test_version_bump_of_a_snapshotting_projection_drops_its_snapshot(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 30)
        runner = ProjectionRunner(log, state, [SnapshotCounter()], snapshot_every=10)
        runner.prepare()
        await in_thread(runner.catch_up)
        bumped = SnapshotCounterV2()
        runner = ProjectionRunner(log, state, [bumped], snapshot_every=10)
        runner.prepare()
        assert bumped.count == 0 and runner.statuses()[0].rebuilt
        await in_thread(runner.catch_up)
        assert (bumped.count, bumped.applied) == (head, list(range(1, head + 1)))


# --- snapshots ------------------------------------------------------------------------


async def test_snapshot_is_saved_every_n_events(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        fill(writer, 237)
        runner = ProjectionRunner(log, state, [SnapshotCounter()], batch_size=10, snapshot_every=50)
        runner.prepare()
        checkpoints = []
        while await in_thread(runner.step):
            checkpoints.append(state.checkpoint("snapcount").position)
        assert sorted(set(checkpoints)) == [0, 50, 100, 150, 200]
        assert runner.statuses()[0].persisted == 200
        assert runner.statuses()[0].position == 237


async def test_restart_restores_the_snapshot_and_applies_only_the_tail(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 237)
        every = 50
        runner = ProjectionRunner(
            log, state, [SnapshotCounter()], batch_size=10, snapshot_every=every
        )
        runner.prepare()
        await in_thread(runner.catch_up)
        # killed: no flush; the last snapshot is all there is
        persisted = state.checkpoint("snapcount").position
        assert 0 < persisted <= head
        restarted = SnapshotCounter()
        runner = ProjectionRunner(log, state, [restarted], batch_size=10, snapshot_every=every)
        runner.prepare()
        assert restarted.count == persisted
        await in_thread(runner.catch_up)
        assert restarted.applied == list(range(persisted + 1, head + 1))
        assert len(restarted.applied) < every
        assert (restarted.count, restarted.sum) == (head, head * (head + 1) // 2)


async def test_flush_snapshots_persists_the_current_position(
    state: StateStore, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 37)
        runner = ProjectionRunner(log, state, [SnapshotCounter()], snapshot_every=1000)
        runner.prepare()
        await in_thread(runner.catch_up)
        assert state.checkpoint("snapcount").position == 0
        runner.flush_snapshots()
        assert state.checkpoint("snapcount").position == head
        restarted = SnapshotCounter()
        runner = ProjectionRunner(log, state, [restarted], snapshot_every=1000)
        runner.prepare()
        await in_thread(runner.catch_up)
        assert (restarted.count, restarted.applied) == (head, [])


# --- someone else moves the checkpoint (replay beside a running server) ---------------


@pytest.mark.parametrize("swap", ["reset", "rebuild-behind"], ids=["reset", "rebuild-behind"])
async def test_replace_under_a_running_runner_makes_it_reload_and_end_consistent(
    state: StateStore, log: LmdbEventLog, writer: EventWriter, swap: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill_interleaved(writer, 3, 60)  # every batch touches every session
        projections = [SessionsProjection(), CountingProjection(), SnapshotCounter()]
        runner = ProjectionRunner(log, state, projections, batch_size=10, snapshot_every=5)
        runner.prepare()
        runner.step()
        runner.step()
        assert runner.position == 20
        # `autoagent replay` swaps in a state rebuilt elsewhere, at another position.
        for name, factory in (("sessions", SessionsProjection), ("counter", CountingProjection)):
            if swap == "reset":
                state.reset(name)
            else:
                state.replace(name, 1, 10, rebuild(log, factory(), 10).items(name))
        runner.step()  # meets CheckpointMoved: nothing is committed, checkpoints reload
        await in_thread(runner.catch_up)
        assert runner.position == head
        assert_counted_once(state, head)
        assert state.items("sessions") == rebuild(log, SessionsProjection(), head).items("sessions")
        counter = projections[2]
        assert isinstance(counter, SnapshotCounter)
        assert counter.count == head


async def test_overlay_over_a_base_advancing_underneath_applies_each_event_once(
    tmp_path: Path, log: LmdbEventLog, writer: EventWriter
) -> None:
    # The admin CLI brings a lagging state up to the head in a memory overlay over the
    # on-disk state, while the server may be writing that same state. The overlay's
    # base is a pinned view (one read transaction), as server/views.py uses it.
    with trio.fail_after(TIMEOUT_S):
        session_messages(writer, "a", 9)  # positions 1-10
        head = session_messages(writer, "b", 9)  # positions 11-20
        base = open_state(tmp_path / "projections")
        try:
            server = ProjectionRunner(log, base, [SessionsProjection()], batch_size=10)
            server.prepare()
            pinned_view = base.pinned()
            overlay = MemoryStateStore(base=pinned_view.__enter__())
            cli = ProjectionRunner(log, overlay, [SessionsProjection()], batch_size=10)
            cli.prepare()
            cli.step()  # the CLI has applied session a
            await in_thread(server.catch_up)  # meanwhile the server persists a and b
            await in_thread(cli.catch_up)
            expected = rebuild(log, SessionsProjection(), head).items("sessions")
            assert base.items("sessions") == expected
            assert overlay.items("sessions") == expected
            pinned_view.__exit__(None, None, None)
        finally:
            base.close()


# --- the Trio side: run(), live following, wait_for, shutdown -------------------------


@pytest.fixture
def lmdb_state(tmp_path: Path) -> Iterator[LmdbStateStore]:
    store = open_state(tmp_path / "projections")
    yield store
    store.close()


async def test_run_catches_up_then_follows_live_appends_with_read_your_writes(
    tmp_path: Path, lmdb_state: LmdbStateStore
) -> None:
    state = lmdb_state
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(tmp_path / "data", StoreOptions(sync=False)) as store:
            await store.append("session-a", [SessionStarted(session_id="a")])
            await store.append(
                "session-a", [UserMessageReceived(session_id="a", message_id="1", text="x")]
            )
            sessions, snaps = SessionsProjection(), SnapshotCounter()
            runner = ProjectionRunner(store.log, state, [sessions, snaps], snapshot_every=1000)
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run, store)
                assert runner.position == 2  # caught up before reporting ready
                await runner.wait_for(1)  # already reached: returns at once
                for i in range(5):
                    result = await store.append(
                        "session-a",
                        [UserMessageReceived(session_id="a", message_id=f"m{i}", text=f"t{i}")],
                    )
                    await runner.wait_for(result.last_position)
                    # read-your-writes: the state already holds the append
                    assert state.get("sessions", b"s/a")["messages"] == 2 + i
                    assert state.checkpoint("sessions").position >= result.last_position

                async def producer(n: int) -> None:
                    for j in range(10):
                        await store.append(
                            f"session-p{n}", [SessionStarted(session_id=f"p{n}-{j}")]
                        )

                async with trio.open_nursery() as producers:
                    for n in range(8):
                        producers.start_soon(producer, n)
                await runner.wait_for(store.head_position)
                assert len(state.items("sessions")) == 1 + 80
                assert snaps.count == store.head_position == 87
                assert state.checkpoint("snapcount").position == 0  # no snapshot yet
                nursery.cancel_scope.cancel()
        # Shutdown (cancellation) flushed the snapshot at the position reached.
        assert state.checkpoint("snapcount").position == 87
        log = LmdbEventLog.open(tmp_path / "data", readonly=True)
        try:
            restarted = SnapshotCounter()
            ProjectionRunner(log, state, [restarted]).prepare()
        finally:
            log.close()
        assert (restarted.count, restarted.sum) == (87, 87 * 88 // 2)


async def test_wait_for_a_future_position_blocks_until_it_is_applied(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        state = MemoryStateStore()
        async with open_event_store(tmp_path / "data", StoreOptions(sync=False)) as store:
            runner = ProjectionRunner(store.log, state, [SessionsProjection()])
            reached: list[int] = []
            done = trio.Event()

            async def reader() -> None:
                await runner.wait_for(3)
                reached.append(runner.position)
                done.set()

            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run, store)
                nursery.start_soon(reader)
                for i in range(3):
                    await trio.testing.wait_all_tasks_blocked()
                    assert reached == []
                    await store.append(f"session-{i}", [SessionStarted(session_id=str(i))])
                with trio.fail_after(5):
                    await done.wait()
                nursery.cancel_scope.cancel()
        assert reached[0] >= 3
        assert len(state.items("sessions")) == 3


class _CommitCountingState(MemoryStateStore):
    """A state store counting its commits: one per step of the runner."""

    commits = 0

    def commit(self, commits: list[StateCommit]) -> None:
        self.commits += 1
        super().commit(commits)


async def test_a_lingering_runner_applies_several_commits_in_one_step_unless_a_reader_waits(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        state = _CommitCountingState()
        async with open_event_store(tmp_path / "data", StoreOptions(sync=False)) as store:
            # An hour: only a reader's `wait_for` can end this linger within the test.
            runner = ProjectionRunner(store.log, state, [SessionsProjection()], linger_s=3600)
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run, store)
                caught_up = state.commits
                for i in range(4):
                    await store.append(f"session-{i}", [SessionStarted(session_id=str(i))])
                    # Time for a runner that did not linger to apply the append.
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.sleep(0.05)
                assert (runner.position, state.commits) == (0, caught_up)
                await runner.wait_for(store.head_position)
                assert runner.position == 4
                assert state.commits == caught_up + 1  # the four commits in one step
                assert len(state.items("sessions")) == 4
                # The next commit lingers again; a reader already waiting cuts it short.
                reader_done = trio.Event()

                async def reader() -> None:
                    await runner.wait_for(5)
                    reader_done.set()

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await store.append("session-4", [SessionStarted(session_id="4")])
                await reader_done.wait()
                assert state.commits == caught_up + 2
                nursery.cancel_scope.cancel()


class _CountingLmdbState(LmdbStateStore):
    """An LMDB state store counting the reads made on it directly and the batch views
    it hands out."""

    direct_gets = 0
    views = 0

    def get(self, name: str, key: bytes) -> Any:
        self.direct_gets += 1
        return super().get(name, key)

    @contextlib.contextmanager
    def batch_view(self) -> Iterator[StateStore]:
        self.views += 1
        with super().batch_view() as view:
            yield view


async def test_a_batchs_reads_go_through_one_view_of_the_lmdb_state(
    tmp_path: Path, log: LmdbEventLog, writer: EventWriter
) -> None:
    """One read transaction per batch (`batch_view`), not one per key first loaded; the
    state is the one an in-memory rebuild makes."""
    head = fill_interleaved(writer, sessions=30, events=300)
    state = _CountingLmdbState.open(tmp_path / "state", sync=False, map_size=1 << 24)
    assert isinstance(state, _CountingLmdbState)
    try:
        runner = ProjectionRunner(log, state, [SessionsProjection()], batch_size=50)
        runner.prepare()
        with trio.fail_after(TIMEOUT_S):
            assert await in_thread(runner.catch_up) == head
        assert state.views == head // 50
        assert state.direct_gets == 0
        memory = MemoryStateStore()
        reference = ProjectionRunner(log, memory, [SessionsProjection()], batch_size=50)
        reference.prepare()
        reference.catch_up()
        assert state.items("sessions") == memory.items("sessions")
        assert len(state.items("sessions")) == 30
    finally:
        state.close()
