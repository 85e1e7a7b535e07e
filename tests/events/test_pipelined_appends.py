"""Pipelined appends (`EventStore.submit`): queued without waiting, committed in order.

Runs on every backend of the conformance fixture.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from events import (
    NO_STREAM,
    EventStore,
    InvalidAppend,
    RunCompleted,
    StepCompleted,
    StepStarted,
    UserMessageReceived,
    WrongExpectedVersion,
)

from .conftest import TEST_OPTIONS, TIMEOUT_S, OpenStore


async def test_submitted_appends_and_an_awaited_one_go_into_one_commit(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append("run-0", [StepStarted("0", "warm", 1)])
        before = store.statistics()
        first = await store.submit("run-1", [StepStarted("1", "a", 1)], correlation="1")
        second = await store.submit("session-1", [UserMessageReceived("1", "1", "hi")])
        third = await store.append("run-1", [RunCompleted("1", "done")], correlation="1")
        after = store.statistics()
        assert after.commits - before.commits == 1
        assert after.appends - before.appends == 3
        one, two = await first.durable(), await second.durable()
        assert one.positions[0] < two.positions[0] < third.positions[0]
        records = await store.read_stream("run-1")
        assert [r.type for r in records] == ["StepStarted", "RunCompleted"]
        assert records[0].correlation == "1"


async def test_a_submitted_append_is_written_without_anyone_awaiting_it(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        ticket = await store.submit("run-1", [StepCompleted("1", "a", {"n": 1}, 0.1)])
        await store.wait_for_position(1)  # the writer commits it on its own
        assert (await ticket.durable()).positions == (1,)
        assert [r.data["result"] for r in await store.read_stream("run-1")] == [{"n": 1}]


async def test_a_later_durable_append_means_every_earlier_submit_is_durable(
    store: EventStore,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        tickets = [await store.submit(f"run-{i}", [StepStarted(str(i), "a", 1)]) for i in range(50)]
        last = await store.append("run-last", [StepStarted("last", "a", 1)])
        # Commits are in queue order: when the last one is acknowledged, every earlier
        # one is settled already.
        assert all(ticket.settled for ticket in tickets)
        for ticket in tickets:
            assert (await ticket.durable()).positions[0] < last.positions[0]
        assert store.head_position == 51


async def test_submit_takes_only_typed_events(store: EventStore) -> None:
    with pytest.raises(InvalidAppend):
        await store.submit("run-1", StepStarted("1", "a", 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidAppend):  # a NewEvent may carry an id seen before
        await store.submit("run-1", [StepStarted("1", "a", 1).new()])  # type: ignore[list-item]
    assert store.head_position == 0


async def test_a_submitted_append_refused_says_so_through_its_ticket(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append("session-1", [UserMessageReceived("1", "m", "hi")])
        refused = await store.submit(
            "session-1", [UserMessageReceived("1", "n", "again")], expected_version=NO_STREAM
        )
        taken = await store.append("session-2", [UserMessageReceived("2", "m", "hi")])
        with pytest.raises(WrongExpectedVersion):
            await refused.durable()
        assert taken.positions == (2,)
        assert [r.data["message_id"] for r in await store.read_stream("session-1")] == ["m"]


async def test_an_append_by_a_caller_already_cancelled_queues_nothing(store: EventStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.append("run-1", [StepStarted("1", "a", 1)])
        await store.append("run-2", [StepStarted("2", "a", 1)])
        assert [r.stream for r in await store.read()] == ["run-2"]


# --- the writer's linger (`StoreOptions.commit_linger_s`) --------------------------------

HELD = replace(TEST_OPTIONS, commit_linger_s=3600.0)  # longer than any test: never runs out


async def test_submits_queued_apart_share_one_commit_while_the_writer_lingers(
    open_store: OpenStore,
) -> None:
    async with open_store(HELD) as store:
        with trio.fail_after(TIMEOUT_S):
            before = store.statistics()
            first = await store.submit("run-1", [StepStarted("1", "a", 1)])
            await trio.sleep(0.05)  # the writer has long taken it: it holds it back
            second = await store.submit("run-1", [StepCompleted("1", "a", {"n": 1}, 0.1)])
            await trio.sleep(0.05)
            assert not first.settled and not second.settled
            await store.flush()  # someone waits now: the held batch is committed
            assert store.statistics().commits - before.commits == 1
            assert (await first.durable()).positions[0] < (await second.durable()).positions[0]


async def test_an_awaited_append_is_never_held_back(open_store: OpenStore) -> None:
    async with open_store(HELD) as store:
        with trio.fail_after(TIMEOUT_S):  # held back, it would wait an hour
            queued = await store.submit("run-1", [StepStarted("1", "a", 1)])
            await trio.sleep(0.05)
            done = await store.append("run-1", [RunCompleted("1", "done")])
            assert queued.settled
            assert (await queued.durable()).positions[0] < done.positions[0]


async def test_awaiting_a_held_submit_ends_the_linger(open_store: OpenStore) -> None:
    async with open_store(HELD) as store:
        with trio.fail_after(TIMEOUT_S):
            queued = await store.submit("run-1", [StepStarted("1", "a", 1)])
            await trio.sleep(0.05)
            assert (await queued.durable()).positions == (1,)


async def test_a_full_queue_is_not_held_back(open_store: OpenStore) -> None:
    async with open_store(replace(HELD, queue_size=2)) as store:
        with trio.fail_after(TIMEOUT_S):  # a producer blocked on the queue would wait an hour
            tickets = [
                await store.submit(f"run-{i}", [StepStarted(str(i), "a", 1)]) for i in range(9)
            ]
            await store.flush()
            assert [(await t.durable()).positions[0] for t in tickets] == list(range(1, 10))


async def test_closing_the_store_commits_a_held_batch(open_store: OpenStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_store(HELD) as store:
            queued = await store.submit("run-1", [StepStarted("1", "a", 1)])
            await trio.sleep(0.05)
        assert (await queued.durable()).positions == (1,)
