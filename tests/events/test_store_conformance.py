"""Conformance suite of the event store, run over every `EventLog` backend.

Every test here takes the `store` (or `open_store`) fixture, which is parametrized over
LMDB and memory: a new backend gets the whole suite by adding one fixture id. Tests that
check "nothing was written" look at the head, the stream and the writer's statistics.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ContextUpdated,
    DuplicateEventConflict,
    Event,
    EventEncodingError,
    EventStore,
    EventStoreError,
    EventTooLarge,
    Expected,
    InvalidAppend,
    InvalidStreamName,
    NewEvent,
    RecordedEvent,
    RunRequested,
    SessionStarted,
    StepStarted,
    StoreClosed,
    StoreOptions,
    UnknownEventType,
    UserMessageReceived,
    WrongExpectedVersion,
    audit_log,
    typed_event,
)
from events._log import AppendRequest, Outcome, PlannedWrite

from .conftest import TEST_OPTIONS, TIMEOUT_S, OpenStore

GENESIS = bytes(32)


def started(n: int) -> SessionStarted:
    return SessionStarted(session_id=f"session-{n}", user="ada", client="test")


def new(n: int, **kwargs: Any) -> NewEvent:
    return started(n).new(**kwargs)


async def append_n(store: EventStore, stream: str, n: int) -> AppendResult:
    return await store.append(stream, [started(i) for i in range(n)])


async def read_all(store: EventStore) -> list[RecordedEvent]:
    return [record async for record in store.iterate()]


async def assert_nothing_written(store: EventStore, head: int, written: int) -> None:
    assert store.head_position == head
    assert store.statistics().events_written == written
    assert [r.position for r in await read_all(store)] == list(range(1, head + 1))


# --- append and read back -------------------------------------------------------------


async def test_append_assigns_contiguous_positions_from_one(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        first = await append_n(store, "run-a", 3)
        second = await append_n(store, "run-b", 2)
        third = await append_n(store, "run-a", 1)

        assert first.positions == (1, 2, 3)
        assert second.positions == (4, 5)
        assert third.positions == (6,)
        assert third.last_position == 6
        assert store.head_position == 6
        assert [r.position for r in await store.read()] == [1, 2, 3, 4, 5, 6]


async def test_read_stream_end_gives_a_streams_last_records_in_order(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        await append_n(store, "s-a", 5)
        await append_n(store, "s-b", 2)  # another stream between two appends to s-a
        await append_n(store, "s-a", 2)
        last = await store.read_stream_end("s-a", 3)
        every = await store.read_stream_end("s-a", 100)
        empty = await store.read_stream_end("s-none", 3)
        with pytest.raises(ValueError, match="at least 1"):
            await store.read_stream_end("s-a", 0)
    assert [r.version for r in last] == [5, 6, 7]
    assert {r.stream for r in last} == {"s-a"}
    assert [r.version for r in every] == list(range(1, 8))
    assert empty == []


async def test_append_assigns_per_stream_versions(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        a1 = await append_n(store, "run-a", 2)
        b1 = await append_n(store, "run-b", 3)
        a2 = await append_n(store, "run-a", 2)

        assert (a1.stream, a1.version, a1.duplicate) == ("run-a", 2, False)
        assert (b1.stream, b1.version) == ("run-b", 3)
        assert (a2.stream, a2.version) == ("run-a", 4)
        records = await store.read()
        assert [(r.stream, r.version) for r in records] == [
            ("run-a", 1),
            ("run-a", 2),
            ("run-b", 1),
            ("run-b", 2),
            ("run-b", 3),
            ("run-a", 3),
            ("run-a", 4),
        ]


async def test_stream_exists_says_yes_once_a_stream_holds_a_record_and_never_caches_a_no(
    store: EventStore,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        assert not await store.stream_exists("run-a")
        await append_n(store, "run-a", 1)
        assert await store.stream_exists("run-a")
        assert not await store.stream_exists("run-b")
        # Written without `append` (queued, then flushed): the no above is not kept.
        await store.submit("run-b", [RunRequested(run_id="b", session_id="s", goal="g")])
        await store.flush()
        assert await store.stream_exists("run-b")
        assert not await store.stream_exists("run-c")


async def test_recorded_event_round_trips_every_field(store: EventStore) -> None:
    data = {
        "session_id": "s-1",
        "values": {
            "text": "héllo ✓",
            "bytes": b"\x00\xff",
            "float": 1.5,
            "int": -(2**40),
            "none": None,
            "list": [1, "two", [3.0]],
            "bool": True,
        },
    }
    event = NewEvent(
        type="ContextUpdated",
        data=data,
        id=uuid.uuid4(),
        correlation="run-42",
        causation="cause-7",
    )
    with trio.fail_after(TIMEOUT_S):
        before = time.time_ns()
        result = await store.append("session-s-1", [event])
        after = time.time_ns()
        [record] = await store.read()

    assert result.positions == (1,)
    assert record.position == 1
    assert record.stream == "session-s-1"
    assert record.version == 1
    assert record.type == "ContextUpdated"
    assert record.schema == ContextUpdated.schema
    assert record.id == event.id
    assert record.id_bytes == event.id.bytes
    assert record.correlation == "run-42"
    assert record.causation == "cause-7"
    assert before <= record.ts <= after
    assert record.data == data
    assert typed_event(record) == ContextUpdated(session_id="s-1", values=data["values"])
    assert record.prev_hash == GENESIS
    assert len(record.hash) == 32


async def test_append_applies_correlation_and_causation_to_typed_events(
    store: EventStore,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append(
            "run-1",
            [RunRequested(run_id="1", session_id="s", goal="g"), StepStarted("1", "a")],
            correlation="run-1",
            causation="msg-9",
        )
        records = await store.read()

    assert [(r.correlation, r.causation) for r in records] == [("run-1", "msg-9")] * 2
    assert [typed_event(r) for r in records] == [
        RunRequested(run_id="1", session_id="s", goal="g"),
        StepStarted(run_id="1", step_id="a", attempt=1),
    ]


async def test_new_event_keeps_its_own_correlation_over_the_append_arguments(
    store: EventStore,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [new(1, correlation="mine", causation=None)], correlation="theirs")
        [record] = await store.read()
    assert (record.correlation, record.causation) == ("mine", None)


async def test_records_link_into_a_hash_chain(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        for i in range(5):
            await append_n(store, f"s-{i % 2}", 2)
        records = await store.read()

    assert records[0].prev_hash == GENESIS
    for previous, record in itertools.pairwise(records):
        assert record.prev_hash == previous.hash
    assert len({r.hash for r in records}) == len(records)
    head, head_hash = store.log.head()
    assert (head, head_hash) == (10, records[-1].hash)


async def test_events_of_one_append_are_adjacent_and_share_a_timestamp(
    store: EventStore,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await append_n(store, "s", 4)
        records = await store.read_stream("s")
    assert result.positions == (1, 2, 3, 4)
    assert len({r.ts for r in records}) == 1


# --- expected versions ----------------------------------------------------------------

# (existing events in the stream, expected version)
ACCEPTED: list[Any] = [
    pytest.param(0, ANY, id="any-new-stream"),
    pytest.param(2, ANY, id="any-existing-stream"),
    pytest.param(0, NO_STREAM, id="no-stream-new-stream"),
    pytest.param(2, STREAM_EXISTS, id="stream-exists-existing-stream"),
    pytest.param(0, 0, id="exact-0-new-stream"),
    pytest.param(2, 2, id="exact-current-version"),
]

REFUSED: list[Any] = [
    pytest.param(2, NO_STREAM, id="no-stream-existing-stream"),
    pytest.param(0, STREAM_EXISTS, id="stream-exists-new-stream"),
    pytest.param(2, 1, id="exact-stale-version"),
    pytest.param(2, 3, id="exact-future-version"),
    pytest.param(0, 1, id="exact-1-new-stream"),
    pytest.param(2, 0, id="exact-0-existing-stream"),
]


@pytest.mark.parametrize(("existing", "expected"), ACCEPTED)
async def test_append_with_matching_expected_version_succeeds(
    store: EventStore, existing: int, expected: Expected
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await append_n(store, "other", 1)
        if existing:
            await append_n(store, "s", existing)
        result = await store.append("s", [started(9)], expected_version=expected)
        assert result.version == existing + 1
        assert await store.stream_version("s") == existing + 1


@pytest.mark.parametrize(("existing", "expected"), REFUSED)
async def test_append_with_wrong_expected_version_raises_and_writes_nothing(
    store: EventStore, existing: int, expected: Expected
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await append_n(store, "other", 1)
        if existing:
            await append_n(store, "s", existing)
        head, written = store.head_position, store.statistics().events_written

        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s", [started(9)], expected_version=expected)

        assert info.value.stream == "s"
        assert info.value.expected == expected
        assert info.value.actual == existing
        assert str(info.value) == (
            f"wrong expected version for stream 's': expected {expected}, actual {existing}"
        )
        assert await store.stream_version("s") == existing
        await assert_nothing_written(store, head, written)


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool"),
        pytest.param(1.0, id="float"),
        pytest.param("any", id="string"),
        pytest.param(None, id="none"),
    ],
)
async def test_append_with_malformed_expected_version_raises_invalid_append(
    store: EventStore, expected: Any
) -> None:
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(InvalidAppend, match="expected_version must be"):
            await store.append("s", [started(1)], expected_version=expected)
        await assert_nothing_written(store, 0, 0)


# --- idempotent appends ---------------------------------------------------------------


async def test_append_retry_with_same_ids_returns_original_positions(store: EventStore) -> None:
    events = [new(1), new(2)]
    with trio.fail_after(TIMEOUT_S):
        await append_n(store, "before", 1)
        original = await store.append("s", events, expected_version=NO_STREAM)
        await append_n(store, "after", 2)
        head, written = store.head_position, store.statistics().events_written

        # The retry carries its original (now stale) expectation: still a duplicate.
        retry = await store.append("s", events, expected_version=NO_STREAM)

        assert original == AppendResult("s", (2, 3), 2, duplicate=False)
        assert retry == AppendResult("s", (2, 3), 2, duplicate=True)
        await assert_nothing_written(store, head, written)
        assert [r.id for r in await store.read_stream("s")] == [e.id for e in events]


async def test_an_id_the_store_made_for_a_typed_event_is_found_when_a_caller_sends_it(
    store: EventStore,
) -> None:
    # The writer does not look up ids it made itself (no record can hold them yet); a
    # caller's `NewEvent` is always looked up, also when it carries such an id.
    with trio.fail_after(TIMEOUT_S):
        first = await store.append("s", [started(1)])
        await append_n(store, "other", 2)
        head, written = store.head_position, store.statistics().events_written
        (record,) = await store.read_stream("s")
        again = await store.append("s", [started(1).new(id=record.id)])
        assert again == AppendResult("s", first.positions, 1, duplicate=True)
        await assert_nothing_written(store, head, written)


async def test_append_retry_in_the_same_batch_is_a_duplicate(store: EventStore) -> None:
    events = [new(1), new(2)]
    results: list[AppendResult] = []

    async def produce() -> None:
        results.append(await store.append("s", events))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(produce)

    assert sorted(r.duplicate for r in results) == [False, True, True, True, True]
    assert {r.positions for r in results} == {(1, 2)}
    assert store.head_position == 2


async def test_append_reusing_an_id_of_another_stream_is_not_acknowledged_for_this_one(
    store: EventStore,
) -> None:
    """An `AppendResult` names records of its own stream; refusing the append is fine."""
    event = new(1)
    with trio.fail_after(TIMEOUT_S):
        await store.append("a", [event])
        try:
            result = await store.append("b", [event], expected_version=NO_STREAM)
        except EventStoreError:
            assert await store.stream_version("b") == 0
            return
        by_position = {r.position: r for r in await store.read()}
        assert [by_position[p].stream for p in result.positions] == [result.stream]
        assert await store.stream_version(result.stream) == result.version


async def test_append_with_partly_seen_ids_raises_duplicate_conflict(store: EventStore) -> None:
    seen, unseen = new(1), new(2)
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [seen])
        with pytest.raises(DuplicateEventConflict) as info:
            await store.append("s", [seen, unseen])

        assert (info.value.stream, info.value.seen, info.value.total) == ("s", 1, 2)
        assert "1 of 2 event ids were already written" in str(info.value)
        await assert_nothing_written(store, 1, 1)


async def test_append_with_the_same_id_twice_raises_invalid_append(store: EventStore) -> None:
    event = new(1)
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(InvalidAppend, match="the same event id appears twice in one append"):
            await store.append("s", [event, event])
        await assert_nothing_written(store, 0, 0)


# --- group commit ---------------------------------------------------------------------


async def test_concurrent_producers_get_unique_contiguous_positions(store: EventStore) -> None:
    producers, appends_each = 50, 20
    acknowledged: list[AppendResult] = []

    async def produce(p: int) -> None:
        for version in range(appends_each):
            acknowledged.append(
                await store.append(f"p-{p}", [started(version)], expected_version=version)
            )

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for p in range(producers):
                nursery.start_soon(produce, p)
        records = await read_all(store)

    total = producers * appends_each
    positions = sorted(p for r in acknowledged for p in r.positions)
    assert positions == list(range(1, total + 1))
    assert [r.position for r in records] == positions
    for p in range(producers):
        stream = [r for r in records if r.stream == f"p-{p}"]
        assert [r.version for r in stream] == list(range(1, appends_each + 1))
    stats = store.statistics()
    assert stats.appends == total
    assert stats.events_written == total
    assert stats.head_position == total
    assert stats.commits < stats.appends, "group commit never batched two appends"
    assert stats.mean_batch_requests > 1
    assert audit_log(store.log).ok


class GatedCommit:
    """Wraps a log's `commit`: records each batch and holds the writer until released."""

    def __init__(self, store: EventStore) -> None:
        self.inner = store.log.commit
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.entered = trio.Event()

    def __call__(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        self.batches.append([r.stream for r in requests])
        trio.from_thread.run_sync(self.entered.set)
        # Bounded, so a failing test cannot leave a worker thread blocked forever.
        self.release.wait(TIMEOUT_S)
        return self.inner(requests, ts)


async def test_failing_request_does_not_affect_others_in_its_batch(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = new(0)
    conflicting = [seen, new(1)]
    outcomes: dict[str, AppendResult | Exception] = {}

    async def produce(name: str, stream: str, events: list[Any], expected: Expected) -> None:
        try:
            outcomes[name] = await store.append(stream, events, expected_version=expected)
        except (WrongExpectedVersion, DuplicateEventConflict) as exc:
            outcomes[name] = exc

    with trio.fail_after(TIMEOUT_S):
        await store.append("seen", [seen])
        gate = GatedCommit(store)
        monkeypatch.setattr(store.log, "commit", gate)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, "blocker", "blocker", [started(0)], ANY)
                await gate.entered.wait()
                nursery.start_soon(produce, "ok-a", "a", [started(1), started(2)], NO_STREAM)
                nursery.start_soon(produce, "stale", "b", [started(3)], 5)
                nursery.start_soon(produce, "dup", "c", conflicting, ANY)
                nursery.start_soon(produce, "ok-d", "d", [started(4)], ANY)
                await trio.testing.wait_all_tasks_blocked()
                gate.release.set()
        finally:
            gate.release.set()

    assert gate.batches[0] == ["blocker"]
    assert sorted(gate.batches[1]) == ["a", "b", "c", "d"]
    assert len(gate.batches) == 2
    assert isinstance(outcomes["stale"], WrongExpectedVersion)
    assert isinstance(outcomes["dup"], DuplicateEventConflict)
    ok_a, ok_d = outcomes["ok-a"], outcomes["ok-d"]
    assert isinstance(ok_a, AppendResult)
    assert isinstance(ok_d, AppendResult)
    assert sorted(ok_a.positions + ok_d.positions) == [3, 4, 5]
    records = {r.position: r for r in await read_all(store)}
    assert sorted(records) == [1, 2, 3, 4, 5]
    assert [records[p].stream for p in ok_a.positions] == ["a", "a"]
    assert [records[p].stream for p in ok_d.positions] == ["d"]
    assert await store.stream_version("b") == 0
    assert await store.stream_version("c") == 0
    assert audit_log(store.log).ok


async def test_producer_cancelled_while_waiting_can_retry_with_the_same_ids(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [new(1), new(2)]
    gate = GatedCommit(store)
    monkeypatch.setattr(store.log, "commit", gate)
    with trio.fail_after(TIMEOUT_S):
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.append, "blocker", [started(0)])
                await gate.entered.wait()
                cancelled = trio.CancelScope()
                nursery.start_soon(_append_in_scope, cancelled, store, "s", events)
                await trio.testing.wait_all_tasks_blocked()
                cancelled.cancel()
                gate.release.set()
        finally:
            gate.release.set()

        retry = await store.append("s", events)

    assert [r.id for r in await store.read_stream("s")] == [e.id for e in events]
    assert retry.positions == (2, 3)
    # The cancelled append was already queued, so the writer committed it.
    assert retry.duplicate
    assert cancelled.cancelled_caught


async def _append_in_scope(
    scope: trio.CancelScope, store: EventStore, stream: str, events: list[NewEvent]
) -> None:
    with scope:
        await store.append(stream, events)


async def test_aclose_drains_queued_appends_then_refuses_new_ones(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    results: list[AppendResult] = []

    async def produce(i: int) -> None:
        results.append(await store.append(f"s-{i}", [started(i)]))

    gate = GatedCommit(store)
    monkeypatch.setattr(store.log, "commit", gate)
    with trio.fail_after(TIMEOUT_S):
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, 0)
                await gate.entered.wait()
                for i in range(1, 10):
                    nursery.start_soon(produce, i)
                await trio.testing.wait_all_tasks_blocked()
                await store.aclose()
                with pytest.raises(StoreClosed):
                    await store.append("late", [started(99)])
                gate.release.set()
        finally:
            gate.release.set()

    assert sorted(r.last_position for r in results) == list(range(1, 11))
    assert store.head_position == 10


async def test_a_flush_after_a_cancelled_send_returns(open_store: OpenStore) -> None:
    """An append cancelled while it waited for room in the queue was never queued: a
    flush does not wait for it."""
    options = replace(TEST_OPTIONS, queue_size=1)
    async with open_store(options) as store:
        gate = GatedCommit(store)
        store.log.commit = gate  # type: ignore[method-assign]
        with trio.fail_after(TIMEOUT_S):
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(store.append, "s-1", [started(1)])
                    await gate.entered.wait()  # the writer is busy
                    for i in (2, 3):  # one more on the thread, one held by the writer
                        nursery.start_soon(store.append, f"s-{i}", [started(i)])
                        await trio.testing.wait_all_tasks_blocked()
                    await store.submit("s-4", [started(4)])  # fills the queue
                    with trio.move_on_after(0.05):
                        await store.submit("s-5", [started(5)])  # no room: cancelled
                    gate.release.set()
                    await store.flush()
            finally:
                gate.release.set()
        assert store.head_position == 4


async def test_a_failed_commit_fails_its_batch_and_nothing_queued_after_it_is_written(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer queues the next batch while one commits; when that commit fails, its
    appends and the next batch's get the error, nothing after it reaches the log, and
    the writer stops with the failure."""
    outcomes: dict[int, AppendResult | Exception] = {}

    async def produce(i: int) -> None:
        try:
            outcomes[i] = await store.append(f"s-{i}", [started(i)])
        except EventStoreError as exc:
            outcomes[i] = exc

    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        async with open_store() as store:
            await store.append("first", [started(0)])
            gate = GatedCommit(store)
            inner = gate.inner

            def failing(requests: Sequence[AppendRequest], ts: int) -> Any:
                gate.inner = failing_inner
                return gate(requests, ts)

            def failing_inner(requests: Sequence[AppendRequest], ts: int) -> Any:
                if len(gate.batches) == 1:
                    raise OSError("the disk went away")
                return inner(requests, ts)

            monkeypatch.setattr(store.log, "commit", failing)
            with trio.fail_after(TIMEOUT_S):
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(produce, 1)
                        await gate.entered.wait()  # batch 1 is committing, held
                        for i in (2, 3):
                            nursery.start_soon(produce, i)
                        await trio.testing.wait_all_tasks_blocked()  # batch 2: queued
                        for i in (4, 5):
                            nursery.start_soon(produce, i)
                        await trio.testing.wait_all_tasks_blocked()  # the writer holds 4, 5
                        gate.release.set()
                        await store.flush()  # every append is answered: no waiter hangs
                finally:
                    gate.release.set()
    assert all(isinstance(outcomes[i], EventStoreError) for i in range(1, 6)), outcomes
    assert "disk went away" in str(outcomes[1])
    assert gate.batches == [["s-1"]]  # the queued batch was never committed
    assert store.head_position == 1


# --- validation before anything is queued ---------------------------------------------


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        pytest.param("", "stream name must be a non-empty string", id="empty"),
        pytest.param("x" * 257, "stream name is 257 bytes, over the limit of 256", id="too-long"),
        pytest.param(
            "é" * 129, "stream name is 258 bytes, over the limit of 256", id="too-long-in-bytes"
        ),
        pytest.param("run-\x00-1", "stream name must not contain NUL", id="nul"),
        pytest.param(None, "stream name must be a non-empty string", id="none"),
        pytest.param(b"run-1", "stream name must be a non-empty string", id="bytes"),
        pytest.param(42, "stream name must be a non-empty string", id="int"),
        pytest.param("run-\ud800", None, id="lone-surrogate"),
    ],
)
async def test_append_to_invalid_stream_name_raises_and_writes_nothing(
    store: EventStore, stream: Any, message: str | None
) -> None:
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(InvalidStreamName, match=message):
            await store.append(stream, [started(1)])
        await assert_nothing_written(store, 0, 0)


async def test_append_to_stream_name_of_exactly_256_bytes_succeeds(store: EventStore) -> None:
    stream = "é" * 128
    with trio.fail_after(TIMEOUT_S):
        await store.append(stream, [started(1)])
        assert await store.stream_version(stream) == 1
        assert [r.stream for r in await store.read_stream(stream)] == [stream]


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(
            [NewEvent(type="ContextUpdated", data={"session_id": "s", "values": object()})],
            id="object",
        ),
        pytest.param(
            [NewEvent(type="ContextUpdated", data={"session_id": "s", "values": {1, 2}})],
            id="set",
        ),
        pytest.param([ContextUpdated(session_id="s", values={"k": {1, 2}})], id="typed-set"),
        pytest.param([ContextUpdated(session_id="s", values={"big": 2**70})], id="int-overflow"),
        pytest.param(
            [started(1), ContextUpdated(session_id="s", values={"k": object()})],
            id="second-of-two",
        ),
    ],
)
async def test_append_with_unencodable_payload_raises_and_writes_nothing(
    store: EventStore, events: list[Event | NewEvent]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(EventEncodingError, match="cannot encode payload of ContextUpdated"):
            await store.append("s", events)
        await assert_nothing_written(store, 0, 0)


async def test_append_of_event_over_max_event_bytes_raises_event_too_large(
    open_store: OpenStore,
) -> None:
    small = UserMessageReceived(session_id="s", message_id="m", text="x" * 100)
    limit = len(msgpack.packb(small.to_data(), use_bin_type=True))
    big = UserMessageReceived(session_id="s", message_id="m", text="x" * 101)
    size = len(msgpack.packb(big.to_data(), use_bin_type=True))
    options = StoreOptions(sync=False, map_size_mb=16, max_event_bytes=limit)

    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            with pytest.raises(EventTooLarge) as info:
                await store.append("session-s", [small, big])
            await assert_nothing_written(store, 0, 0)

            # Exactly at the limit is accepted.
            await store.append("session-s", [small])
            assert store.head_position == 1

    exc = info.value
    assert (exc.stream, exc.event_type, exc.size, exc.limit) == (
        "session-s",
        "UserMessageReceived",
        size,
        limit,
    )
    assert str(exc) == (
        f"event UserMessageReceived for stream 'session-s' is {size} bytes encoded, "
        f"over the limit of {limit} bytes (store.max_event_bytes)"
    )


async def test_append_of_unknown_event_type_raises_and_writes_nothing(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(UnknownEventType) as info:
            await store.append("s", [started(1), NewEvent(type="NoSuchEvent", data={})])
        assert info.value.event_type == "NoSuchEvent"
        assert info.value.position is None
        await assert_nothing_written(store, 0, 0)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        pytest.param([], "append needs a non-empty sequence of events", id="no-events"),
        pytest.param(started(1), "append needs a non-empty sequence of events", id="bare-event"),
        pytest.param(new(1), "append needs a non-empty sequence of events", id="bare-new-event"),
        pytest.param(iter([]), "append needs a non-empty sequence of events", id="empty-iterator"),
        pytest.param(7, "append needs a non-empty sequence of events", id="not-iterable"),
        pytest.param([{"type": "x"}], "cannot append dict: not an Event or NewEvent", id="dict"),
        pytest.param(
            [NewEvent(type="SessionStarted", data={"session_id": "s"}, id="abc")],  # type: ignore[arg-type]
            "event id must be a UUID",
            id="string-id",
        ),
    ],
)
async def test_malformed_append_raises_invalid_append(
    store: EventStore, events: Any, message: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(InvalidAppend, match=message):
            await store.append("s", events)
        await assert_nothing_written(store, 0, 0)


async def test_events_given_as_any_iterable_are_appended_in_order(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        one = await store.append("s", (started(i) for i in range(1)))
        two = await store.append("s", (started(i) for i in range(1, 3)))
        assert (one.positions, two.positions) == ((1,), (2, 3))
        assert [r.data["session_id"] for r in await store.read_stream("s")] == [
            "session-0",
            "session-1",
            "session-2",
        ]


# --- reads ----------------------------------------------------------------------------


async def test_read_by_position_range_honours_after_and_limit(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        for i in range(10):
            await append_n(store, f"s-{i % 3}", 1)

        assert [r.position for r in await store.read(after=3, limit=4)] == [4, 5, 6, 7]
        assert [r.position for r in await store.read(after=8)] == [9, 10]
        assert await store.read(after=10) == []
        assert await store.read(after=50) == []
        assert [r.position for r in await store.read(limit=2)] == [1, 2]
        assert [r.position async for r in store.iterate(after=2, until=5)] == [3, 4, 5]


async def test_iterate_reads_past_one_read_batch(open_store: OpenStore) -> None:
    options = StoreOptions(sync=False, map_size_mb=16, read_batch=7)
    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            for _ in range(5):
                await append_n(store, "s", 5)
            assert [r.position async for r in store.iterate()] == list(range(1, 26))
            assert len(await store.read()) == 7


async def test_read_whole_stream_reads_past_one_read_batch(open_store: OpenStore) -> None:
    options = StoreOptions(sync=False, map_size_mb=16, read_batch=7)
    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            for _ in range(5):
                await append_n(store, "s", 5)
                await append_n(store, "t", 1)
            whole = await store.read_whole_stream("s")
            assert [r.version for r in whole] == list(range(1, 26))
            assert [r.stream for r in whole] == ["s"] * 25
            assert [r.version for r in await store.read_whole_stream("s", 20)] == [
                21,
                22,
                23,
                24,
                25,
            ]
            assert await store.read_whole_stream("missing") == []


async def test_read_stream_honours_after_version_and_limit(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        for i in range(12):
            await append_n(store, f"s-{i % 2}", 1)

        stream = await store.read_stream("s-1")
        assert [(r.version, r.position) for r in stream] == [(v, 2 * v) for v in range(1, 7)]
        window = await store.read_stream("s-1", after_version=2, limit=3)
        assert [r.version for r in window] == [3, 4, 5]
        assert await store.read_stream("s-1", after_version=6) == []
        assert await store.read_stream("missing") == []
        # A stream whose name extends another's is a different stream.
        await append_n(store, "s-10", 1)
        assert len(await store.read_stream("s-1")) == 6


async def test_read_type_honours_after_and_limit(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        for i in range(6):
            await store.append("run-1", [StepStarted(run_id="1", step_id=str(i)), started(i)])

        steps = await store.read_type("StepStarted")
        assert [r.position for r in steps] == [1, 3, 5, 7, 9, 11]
        assert all(isinstance(typed_event(r), StepStarted) for r in steps)
        assert [r.position for r in await store.read_type("StepStarted", after=5, limit=2)] == [
            7,
            9,
        ]
        assert [r.position for r in await store.read_type("SessionStarted", after=11)] == [12]
        assert await store.read_type("RunCompleted") == []


async def test_stream_version_counts_events_of_the_stream(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        assert await store.stream_version("s") == 0
        await append_n(store, "s", 3)
        await append_n(store, "t", 1)
        await append_n(store, "s", 2)
        assert await store.stream_version("s") == 5
        assert await store.stream_version("t") == 1
        assert await store.stream_version("s-") == 0


async def test_log_streams_lists_streams_by_prefix(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        for stream, n in [("run-2", 2), ("session-1", 1), ("run-1", 3), ("runner", 1)]:
            await append_n(store, stream, n)

        streams = await trio.to_thread.run_sync(store.log.streams)
        assert streams == [("run-1", 3), ("run-2", 2), ("runner", 1), ("session-1", 1)]
        by_prefix = await trio.to_thread.run_sync(store.log.streams, "run-")
        assert by_prefix == [("run-1", 3), ("run-2", 2)]
        assert await trio.to_thread.run_sync(store.log.streams, "zzz") == []
        stats = await store.log_statistics()
        assert (stats.head_position, stats.streams) == (7, 4)


async def test_log_type_counts_counts_records_per_type(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        assert await trio.to_thread.run_sync(store.log.type_counts) == {}
        for i in range(3):
            await store.append("run-1", [StepStarted(run_id="1", step_id=str(i)), started(i)])
        await store.append("run-1", [StepStarted(run_id="1", step_id="x")])
        counts = await trio.to_thread.run_sync(store.log.type_counts)
    assert counts == {"SessionStarted": 3, "StepStarted": 4}


# --- compression, audit, closing ------------------------------------------------------


async def test_large_payload_is_compressed_and_round_trips(open_store: OpenStore) -> None:
    options = StoreOptions(sync=False, map_size_mb=16, compress_over_bytes=1024)
    text = "the quick brown fox jumps over the lazy dog. " * 2000
    event = UserMessageReceived(session_id="s", message_id="m", text=text)
    raw_size = len(msgpack.packb(event.to_data(), use_bin_type=True))

    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            await store.append("session-s", [started(1), event, started(2)])
            records = await store.read()
            [(position, value)] = await trio.to_thread.run_sync(store.log.read_raw, 1, 1)
            [(_, small_value)] = await trio.to_thread.run_sync(store.log.read_raw, 0, 1)

    assert typed_event(records[1]) == event
    assert [typed_event(r) for r in (records[0], records[2])] == [started(1), started(2)]
    assert position == 2
    assert len(value) < raw_size / 10
    assert text.encode() not in value
    assert b"session-1" in small_value  # under the threshold: stored as is


async def test_audit_passes_on_a_good_log(open_store: OpenStore) -> None:
    options = StoreOptions(sync=False, map_size_mb=16, compress_over_bytes=256)
    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            assert audit_log(store.log).ok
            for i in range(30):
                await store.append(
                    f"s-{i % 4}",
                    [started(i), UserMessageReceived("s", str(i), "y" * (i * 20))],
                )
            progress: list[tuple[int, int]] = []
            report = audit_log(store.log, batch=7, progress=lambda n, h: progress.append((n, h)))

    assert report.ok
    assert (report.checked, report.head_position) == (60, 60)
    assert (report.first_bad_position, report.problem) == (None, None)
    assert progress[-1] == (60, 60)
    assert [n for n, _ in progress] == sorted(n for n, _ in progress)


async def test_append_after_close_raises_store_closed(open_store: OpenStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_store() as store:
            await append_n(store, "s", 1)
        with pytest.raises(StoreClosed):
            await store.append("s", [started(2)])


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("read", id="read"),
        pytest.param("read_stream", id="read_stream"),
        pytest.param("read_type", id="read_type"),
        pytest.param("stream_version", id="stream_version"),
    ],
)
async def test_read_after_close_raises_store_closed(open_store: OpenStore, method: str) -> None:
    args = {
        "read": (),
        "read_stream": ("s",),
        "read_type": ("SessionStarted",),
        "stream_version": ("s",),
    }[method]
    with trio.fail_after(TIMEOUT_S):
        async with open_store() as store:
            await append_n(store, "s", 1)
        with pytest.raises(StoreClosed):
            await getattr(store, method)(*args)
