"""Several server nodes, one PostgreSQL log: two `EventStore`s on two `PostgresEventLog`s
of one database, as two nodes would be. (The whole conformance suite runs on the
"postgres" backend too; this module covers what only several nodes can show.)

Properties under test:

- positions are gap-free and in commit order under concurrent writers on both nodes:
  every subscriber, on either node, sees every position exactly once and in order,
  and the log holds 1..N with no duplicate (stream, version) and a clean hash chain;
- group commit still applies per node (fewer commits than appends);
- expected versions and idempotent retries are checked against the other node's
  records, and a subscriber on one node sees the other node's appends live;
- a commit NOTIFYs: `wait_for_append` of another node's log wakes on it;
- a URL that does not connect raises `StoreUnreachable` without its password.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace

import pytest
import trio
import trio.lowlevel

from events import (
    EventStore,
    NewEvent,
    RecordedEvent,
    StepStarted,
    StoreUnreachable,
    WrongExpectedVersion,
    audit_log,
)
from events._postgres_log import PostgresEventLog

from .conftest import TEST_OPTIONS, TIMEOUT_S, open_postgres_store

OPTIONS = replace(TEST_OPTIONS, watch_interval_s=0.005)
NODES = 2
PRODUCERS = 4  # per node
APPENDS = 30  # per producer: alternately to a shared stream and to its own
PER_APPEND = 2
TOTAL = NODES * PRODUCERS * APPENDS * PER_APPEND


def steps(stream: str, first: int, count: int) -> list[StepStarted]:
    return [StepStarted(run_id=stream, step_id=f"p{first + i}") for i in range(count)]


async def produce(store: EventStore, node: int, producer: int) -> None:
    """Appends to two streams every producer of both nodes writes (any version) and
    to one of its own (exact expected versions, which must always hold)."""
    own = f"own-{node}-{producer}"
    version = 0
    for i in range(APPENDS):
        if i % 2:
            await store.append(own, steps(own, i, PER_APPEND), expected_version=version)
            version += PER_APPEND
        else:
            shared = f"shared-{(node + producer + i) % 2}"
            await store.append(shared, steps(shared, i, PER_APPEND))
        if i % 7 == 0:
            await trio.lowlevel.checkpoint()


async def subscribe_all(store: EventStore, seen: list[int]) -> None:
    async for record in store.subscribe():
        seen.append(record.position)
        if len(seen) == TOTAL:
            return


async def test_two_nodes_appending_at_once_keep_positions_gap_free_for_every_subscriber(
    postgres_url: str,
) -> None:
    seen: list[list[int]] = [[], []]
    with trio.fail_after(TIMEOUT_S * 2):
        async with (
            open_postgres_store(postgres_url, OPTIONS) as a,
            open_postgres_store(postgres_url, OPTIONS) as b,
        ):
            nodes = (a, b)
            async with trio.open_nursery() as subscribers:
                for store, positions in zip(nodes, seen, strict=True):
                    subscribers.start_soon(subscribe_all, store, positions)
                async with trio.open_nursery() as producers:
                    for node, store in enumerate(nodes):
                        for producer in range(PRODUCERS):
                            producers.start_soon(produce, store, node, producer)
            records = await a.read(0, TOTAL + 10)
            stats = [store.statistics() for store in nodes]
            report = await trio.to_thread.run_sync(audit_log, a.log)

    for positions in seen:
        assert positions == list(range(1, TOTAL + 1))
    assert [r.position for r in records] == list(range(1, TOTAL + 1))
    assert not [k for k, n in Counter((r.stream, r.version) for r in records).items() if n > 1]
    for stream in {r.stream for r in records}:
        versions = [r.version for r in records if r.stream == stream]
        assert versions == list(range(1, len(versions) + 1)), stream
    assert report.ok, report
    assert report.checked == TOTAL
    # Each node's writer grouped its producers' appends into fewer commits.
    for stat in stats:
        assert stat.appends == PRODUCERS * APPENDS
        assert stat.commits < stat.appends


async def test_a_node_checks_versions_and_ids_against_the_other_nodes_records(
    postgres_url: str,
) -> None:
    event = NewEvent(type="StepStarted", data={"run_id": "r", "step_id": "x"}, id=uuid.uuid4())
    received: list[RecordedEvent] = []

    async def follow(store: EventStore) -> None:
        async for record in store.subscribe(stream="run-1"):
            received.append(record)
            return

    with trio.fail_after(TIMEOUT_S):
        async with (
            open_postgres_store(postgres_url, OPTIONS) as a,
            open_postgres_store(postgres_url, OPTIONS) as b,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow, b)
                await trio.sleep(0.01)
                first = await a.append("run-1", [event])
            retried = await b.append("run-1", [event])
            with pytest.raises(WrongExpectedVersion) as info:
                await b.append("run-1", steps("run-1", 0, 1), expected_version=0)
            await b.append("run-1", steps("run-1", 1, 1), expected_version=1)
            await a.wait_for_position(2)
            assert await a.stream_version("run-1") == 2

    assert [r.id for r in received] == [event.id]
    assert retried.duplicate and retried.positions == first.positions
    assert (info.value.expected, info.value.actual) == (0, 1)


async def test_a_commit_wakes_the_other_nodes_listener(postgres_url: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        listening = await trio.to_thread.run_sync(PostgresEventLog.open, postgres_url)
        try:
            assert not await trio.to_thread.run_sync(listening.wait_for_append, 0.01)
            async with open_postgres_store(postgres_url, OPTIONS) as store:
                async with trio.open_nursery() as nursery:
                    woken: list[bool] = []

                    async def wait() -> None:
                        woken.append(await trio.to_thread.run_sync(listening.wait_for_append, 5))

                    nursery.start_soon(wait)
                    await trio.sleep(0.05)  # the listener is waiting (LISTEN is issued)
                    await store.append("s", steps("s", 0, 1))
            assert woken == [True]
        finally:
            listening.close()


def test_a_url_that_does_not_connect_raises_store_unreachable_without_its_password(
    tmp_path: object,
) -> None:
    url = f"postgresql://someone:hunter2@/nowhere?host={tmp_path}&connect_timeout=1"
    with pytest.raises(StoreUnreachable) as info:
        PostgresEventLog.open(url, connect_timeout_s=1)
    message = str(info.value)
    assert "hunter2" not in message
    assert message.startswith(
        f"cannot open the event log at postgresql host={tmp_path} dbname=nowhere user=someone "
        "(store.url): "
    )


async def test_a_dropped_connection_does_not_stop_the_other_node(postgres_url: str) -> None:
    """The server closes node B's connections (a restart, an admin): B's watcher logs it
    and reconnects, its writer goes on, and it still sees node A's appends."""
    import psycopg

    with trio.fail_after(TIMEOUT_S):
        async with (
            open_postgres_store(postgres_url, OPTIONS) as node_a,
            open_postgres_store(postgres_url, OPTIONS) as node_b,
        ):
            await node_a.append("a", steps("a", 0, 1))
            await node_b.wait_for_position(1)

            def drop_b() -> None:
                with psycopg.connect(postgres_url, autocommit=True) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )

            await trio.to_thread.run_sync(drop_b)  # every connection of both nodes
            await trio.sleep(0.2)  # the watchers meet the closed connections
            appended = await node_a.append("a", steps("a", 1, 2))
            await node_b.wait_for_position(appended.last_position)
            done = await node_b.append("b", steps("b", 0, 1))
            assert done.last_position == appended.last_position + 1


def test_a_reader_on_a_database_without_the_log_creates_nothing(
    postgres_cluster: object, postgres_url: str
) -> None:
    import psycopg

    from events import NotAnEventStore

    with pytest.raises(NotAnEventStore, match="no event log there"):
        PostgresEventLog.open(postgres_url, readonly=True)
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT to_regclass('autoagent_events')").fetchone()
    assert row is not None and row[0] is None
    PostgresEventLog.open(postgres_url).close()  # a writer creates it
    PostgresEventLog.open(postgres_url, readonly=True).close()
