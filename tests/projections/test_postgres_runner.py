"""The projection runner over `PostgresStateStore`: a real LMDB event log, a real
PostgreSQL (`pgserver`), and the exactly-once promise across a crash and a reopen.

- a batch that fails mid-way commits nothing; a new process (a new store on the same
  database and node, a new runner, fresh projections) goes on from the checkpoints and
  ends with every event applied once, keyed and snapshotting projections alike;
- two nodes on one database each build their own state from the same log;
- the CLI's overlay over a pinned base applies each event once while a server commits
  to that base (the PostgreSQL twin of the LMDB test in test_runner.py).
"""

from __future__ import annotations

import pytest
import trio

from events import LmdbEventLog
from projections import (
    MemoryStateStore,
    PostgresStateStore,
    ProjectionRunner,
    SessionsProjection,
    rebuild,
)

from .helpers import (
    TIMEOUT_S,
    CountingProjection,
    EventWriter,
    SnapshotCounter,
    assert_counted_once,
    in_thread,
    session_messages,
)


def fill(writer: EventWriter, sessions: int, messages: int) -> int:
    head = 0
    for sid in range(sessions):
        head = session_messages(writer, f"s{sid}", messages)
    return head


async def test_runner_over_postgres_applies_each_event_once_across_a_crash_and_reopen(
    postgres_url: str, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 5, 18)  # 95 events
        store = await in_thread(PostgresStateStore.open, postgres_url, "node-1")
        crashing = CountingProjection()
        crashing.fail_at = 47
        first = [crashing, SnapshotCounter(), SessionsProjection()]
        runner = ProjectionRunner(log, store, first, batch_size=10, snapshot_every=20)
        runner.prepare()
        await in_thread(runner.catch_up, until=40)
        with pytest.raises(RuntimeError, match="simulated crash at position 47"):
            runner.step()  # the batch 41-50 fails at 47: the process dies here
        await in_thread(store.close)

        store = await in_thread(PostgresStateStore.open, postgres_url, "node-1")
        try:
            assert [store.checkpoint(n).position for n in ("counter", "sessions")] == [40, 40]
            assert_counted_once(store, 40)
            persisted = store.checkpoint("snapcount").position
            assert persisted == 40  # snapshots every 20 events: at 20 and at 40
            snapcount = SnapshotCounter()
            again = ProjectionRunner(
                log, store, [CountingProjection(), snapcount, SessionsProjection()], batch_size=10
            )
            again.prepare()
            await in_thread(again.catch_up)
            again.flush_snapshots()
            assert again.position == head
            assert_counted_once(store, head)
            assert snapcount.applied == list(range(persisted + 1, head + 1))
            assert (snapcount.count, snapcount.sum) == (head, head * (head + 1) // 2)
            expected = rebuild(log, SessionsProjection(), head).items("sessions")
            assert store.items("sessions") == expected
            assert store.checkpoint("snapcount").position == head
        finally:
            await in_thread(store.close)


async def test_two_nodes_build_their_own_state_from_one_log_in_one_database(
    postgres_url: str, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = fill(writer, 3, 9)  # 30 events
        a = await in_thread(PostgresStateStore.open, postgres_url, "node-a")
        b = await in_thread(PostgresStateStore.open, postgres_url, "node-b")
        try:
            node_a = ProjectionRunner(log, a, [CountingProjection()], batch_size=7)
            node_a.prepare()
            await in_thread(node_a.catch_up)
            # node b starts later, from nothing: a's checkpoint is not its own
            node_b = ProjectionRunner(log, b, [CountingProjection()], batch_size=7)
            node_b.prepare()
            assert node_b.position == 0
            await in_thread(node_b.catch_up, until=12)
            assert_counted_once(a, head)
            assert_counted_once(b, 12)
            await in_thread(node_b.catch_up)
            assert_counted_once(a, head)
            assert_counted_once(b, head)
        finally:
            await in_thread(a.close)
            await in_thread(b.close)


async def test_overlay_over_a_pinned_postgres_base_applies_each_event_once(
    postgres_url: str, log: LmdbEventLog, writer: EventWriter
) -> None:
    with trio.fail_after(TIMEOUT_S):
        session_messages(writer, "a", 9)  # positions 1-10
        head = session_messages(writer, "b", 9)  # positions 11-20
        base = await in_thread(PostgresStateStore.open, postgres_url, "node-1")
        try:
            server = ProjectionRunner(log, base, [SessionsProjection()], batch_size=10)
            server.prepare()
            with base.pinned() as pinned:
                overlay = MemoryStateStore(base=pinned)
                cli = ProjectionRunner(log, overlay, [SessionsProjection()], batch_size=10)
                cli.prepare()
                cli.step()  # the CLI has applied session a
                await in_thread(server.catch_up)  # meanwhile the server persists a and b
                await in_thread(cli.catch_up)
                expected = rebuild(log, SessionsProjection(), head).items("sessions")
                assert base.items("sessions") == expected
                assert overlay.items("sessions") == expected
        finally:
            await in_thread(base.close)
