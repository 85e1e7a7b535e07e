"""Subscriptions over both backends: catch-up then live, by position, exactly once.

The writer and the subscribers run concurrently in one nursery; each test appends while
subscribers catch up, so the switch from reading the log to the in-memory window (and
back, for a slow subscriber) happens under load.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from events import EventStore, RecordedEvent, SessionStarted, StoreOptions, Subscription

from .conftest import TIMEOUT_S, OpenStore


def started(n: int) -> SessionStarted:
    return SessionStarted(session_id=f"session-{n}")


async def collect(sub: Subscription, until_position: int) -> list[RecordedEvent]:
    """Records from `sub` up to and including `until_position`."""
    out: list[RecordedEvent] = []
    if until_position <= sub.position:
        return out
    async for record in sub:
        out.append(record)
        if record.position >= until_position:
            break
    return out


async def append_many(store: EventStore, n: int, per_append: int = 1, stream: str = "s") -> int:
    """Append `n` events in appends of `per_append`; returns the last position."""
    last = store.head_position
    for start in range(0, n, per_append):
        count = min(per_append, n - start)
        result = await store.append(stream, [started(start + i) for i in range(count)])
        last = result.last_position
    return last


WINDOWS = [
    pytest.param(StoreOptions(sync=False, map_size_mb=16, read_batch=16), id="large-window"),
    pytest.param(
        StoreOptions(sync=False, map_size_mb=16, read_batch=16, recent_events=8),
        id="small-window",
    ),
]


@pytest.mark.parametrize("options", WINDOWS)
async def test_subscribe_from_zero_catches_up_then_goes_live_without_gap_or_duplicate(
    open_store: OpenStore, options: StoreOptions
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            await append_many(store, 200, per_append=3)
            received: list[RecordedEvent] = []

            async def subscriber() -> None:
                received.extend(await collect(store.subscribe(after=0), 400))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(subscriber)
                await append_many(store, 200, per_append=1)

            expected = await store.read(limit=1000)

    assert [r.position for r in received] == list(range(1, 401))
    assert [r.id for r in received] == [r.id for r in expected]
    assert [r.hash for r in received] == [r.hash for r in expected]


async def test_subscribe_after_a_position_starts_after_it(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 10)
        sub = store.subscribe(after=6)
        assert sub.position == 6
        async with trio.open_nursery() as nursery:
            nursery.start_soon(append_many, store, 5)
            received = await collect(sub, 15)
    assert [r.position for r in received] == list(range(7, 16))


async def test_next_batch_takes_what_one_commit_wrote_together_and_then_waits(
    store: EventStore,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 2)
        sub = store.subscribe(after=0, stream="s")
        # Caught up: what the log holds, at once.
        assert [r.position for r in await sub.next_batch()] == [1, 2]
        batches: list[list[int]] = []

        async def subscriber() -> None:
            while len(batches) < 2:
                batches.append([r.position for r in await sub.next_batch()])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscriber)
            await trio.testing.wait_all_tasks_blocked()
            assert batches == []  # nothing new: it waits
            await append_many(store, 3, per_append=3)  # one commit
            await trio.testing.wait_all_tasks_blocked()
            await store.append("other", [started(9)])  # another stream's: not for it
            await append_many(store, 1)
    assert batches == [[3, 4, 5], [7]]
    assert sub.position == 7


async def test_subscribe_after_the_head_waits_for_new_records(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 3)
        received: list[RecordedEvent] = []

        async def subscriber() -> None:
            received.extend(await collect(store.subscribe(after=3), 4))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscriber)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []
            await append_many(store, 1)
    assert [r.position for r in received] == [4]


@pytest.mark.parametrize("options", WINDOWS)
async def test_subscribe_to_a_stream_yields_only_that_stream(
    open_store: OpenStore, options: StoreOptions
) -> None:
    streams = ["b", "a", "b-1", "c"]  # "b-1" shares a prefix with "b"

    async def write_round(store: EventStore, rounds: int) -> int:
        last = 0
        for i in range(rounds):
            for stream in streams:
                result = await store.append(stream, [started(i)])
                if stream == "b":
                    last = result.last_position
        return last

    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            await write_round(store, 30)
            received: list[RecordedEvent] = []
            last_b = 0

            async def subscriber() -> None:
                sub = store.subscribe(stream="b")
                async for record in sub:
                    received.append(record)
                    if record.version == 60:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(subscriber)
                last_b = await write_round(store, 30)

    assert {r.stream for r in received} == {"b"}
    assert [r.version for r in received] == list(range(1, 61))
    assert received[-1].position == last_b
    positions = [r.position for r in received]
    assert positions == sorted(positions)


async def test_a_stream_subscriber_sleeps_through_other_streams_appends(
    store: EventStore,
) -> None:
    """Appends to other streams never wake a stream's subscriber (one follower per run
    would otherwise wake on every append of every run)."""
    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 3, stream="mine")
        sub = store.subscribe(after=store.head_position, stream="mine")
        received: list[RecordedEvent] = []

        async def follow() -> None:
            async for record in sub:
                received.append(record)
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            asleep_at = sub.position
            await append_many(store, 50, stream="others")
            await trio.testing.wait_all_tasks_blocked()
            assert sub.position == asleep_at  # not woken: it never looked at them
            last = await append_many(store, 1, stream="mine")
    assert [(r.stream, r.position) for r in received] == [("mine", last)]


async def test_subscribe_to_a_stream_created_later_yields_its_events(
    store: EventStore,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 20, stream="other")
        received: list[RecordedEvent] = []

        async def subscriber() -> None:
            async for record in store.subscribe(stream="late"):
                received.append(record)
                if record.version == 3:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscriber)
            await trio.testing.wait_all_tasks_blocked()
            await append_many(store, 20, stream="other")
            await append_many(store, 3, stream="late")

    assert [(r.stream, r.version, r.position) for r in received] == [
        ("late", 1, 41),
        ("late", 2, 42),
        ("late", 3, 43),
    ]


async def test_slow_subscriber_reads_the_log_and_gets_every_event_once(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = StoreOptions(sync=False, map_size_mb=16, recent_events=16, read_batch=50)
    total = 3000
    disk_reads: list[int] = []
    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            read = store.log.read

            def counting_read(after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
                disk_reads.append(after)
                return read(after, limit)

            monkeypatch.setattr(store.log, "read", counting_read)
            # Far more than the window holds is written before the subscriber starts.
            await append_many(store, 1500, per_append=10)
            received: list[RecordedEvent] = []

            async def slow_subscriber() -> None:
                async for record in store.subscribe():
                    received.append(record)
                    if record.position % 100 == 0:
                        await trio.sleep(0.001)  # fall behind the writer now and then
                    if record.position == total:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_subscriber)
                await append_many(store, 1500, per_append=5)

    assert [r.position for r in received] == list(range(1, total + 1))
    assert len(disk_reads) >= 1500 // 50, "the late subscriber did not read the log"


async def test_many_subscribers_get_the_same_sequence(store: EventStore) -> None:
    results: dict[int, list[tuple[int, Any]]] = {}

    async def subscriber(i: int, after: int) -> None:
        records = await collect(store.subscribe(after=after), 150)
        results[i] = [(r.position, r.id) for r in records]

    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 50, per_append=5)
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(subscriber, i, 0)
            nursery.start_soon(subscriber, 10, 25)
            for i in range(100):
                await store.append(f"s-{i % 7}", [started(i)])

    reference = results[0]
    assert [p for p, _ in reference] == list(range(1, 151))
    for i in range(1, 10):
        assert results[i] == reference
    assert results[10] == reference[25:]


async def test_wait_for_position_returns_once_the_log_holds_it(store: EventStore) -> None:
    reached: list[int] = []

    async def waiter(position: int) -> None:
        await store.wait_for_position(position)
        reached.append(position)

    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 2)
        await store.wait_for_position(0)
        await store.wait_for_position(2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, 5)
            nursery.start_soon(waiter, 3)
            await trio.testing.wait_all_tasks_blocked()
            assert reached == []
            await append_many(store, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert reached == [3]
            await store.append("s", [started(1), started(2)])
    assert reached == [3, 5]


async def test_a_cancelled_stream_subscriber_leaves_nothing_behind(store: EventStore) -> None:
    """A client that unsubscribes from a stream nobody writes again leaks no waiter."""
    with trio.fail_after(TIMEOUT_S):
        await append_many(store, 2, stream="quiet")
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for _ in store.subscribe(after=store.head_position, stream="quiet"):
                    pass

            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            assert "quiet" in store._stream_changed
            nursery.cancel_scope.cancel()
    assert store._stream_changed == {}


async def test_a_stream_subscriber_takes_more_new_records_than_one_batch_in_order(
    open_store: OpenStore,
) -> None:
    # The window holds 8 records, a subscriber takes 3 per batch: one commit of 6
    # records of its stream among others' is read from memory in two batches.
    options = StoreOptions(sync=False, map_size_mb=16, recent_events=8, read_batch=3)
    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            received: list[RecordedEvent] = []

            async def subscriber() -> None:
                received.extend(await collect(store.subscribe(after=0, stream="b"), 25))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(subscriber)
                await trio.testing.wait_all_tasks_blocked()
                for round_ in range(3):
                    await store.append("a", [started(round_)])
                    await store.append("b", [started(10 * round_ + i) for i in range(6)])
                    await store.append("c", [started(round_)])
                    await trio.testing.wait_all_tasks_blocked()
                    await store.append("a", [started(round_)])
            expected = await store.read_stream("b", limit=100)
    assert [r.position for r in received] == [r.position for r in expected]
    assert [r.id for r in received] == [r.id for r in expected]
    assert len(received) == 18


async def test_the_window_by_stream_holds_exactly_the_window(open_store: OpenStore) -> None:
    options = StoreOptions(sync=False, map_size_mb=16, recent_events=5, read_batch=4)
    with trio.fail_after(TIMEOUT_S):
        async with open_store(options) as store:
            for i in range(40):
                stream = "abcab"[i % 5] + str(i % 3)
                await store.append(stream, [started(i)] * (1 + i % 4))
                window = list(store._recent)
                assert [e.position for e in window] == list(
                    range(store.head_position - len(window) + 1, store.head_position + 1)
                )
                assert len(window) == min(5, store.head_position)
                by_stream = {s: [e.position for e in q] for s, q in store._recent_of.items()}
                expected: dict[str, list[int]] = {}
                for entry in window:
                    expected.setdefault(entry.stream, []).append(entry.position)
                assert by_stream == expected
