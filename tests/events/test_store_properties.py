"""Property test of the store: random rounds of concurrent appends, then the invariants.

Each example runs a fresh store (LMDB in a temporary directory, or memory) under its own
`trio.run`: the test is a sync function because hypothesis drives it, not pytest-trio.
A round starts its appends together in one nursery, so they share group commits and
race on expected versions; "stale" expectations are below the version the stream had
when the round started, so they must fail whatever the interleaving.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventStore,
    Expected,
    MemoryEventLog,
    NewEvent,
    RecordedEvent,
    StoreOptions,
    WrongExpectedVersion,
    audit_log,
    open_event_store,
)

from .conftest import TIMEOUT_S

STREAMS = ("run-a", "run-b", "session-c")
KINDS = ("any", "current", "stale", "no-stream", "exists", "retry")
OPTIONS = StoreOptions(sync=False, map_size_mb=8, compress_over_bytes=64)


@dataclass(frozen=True)
class Op:
    stream: str
    events: int
    kind: str


@dataclass
class Attempt:
    op: Op
    expected: Expected
    start_version: int
    events: list[NewEvent]
    must_fail: bool = False
    must_succeed: bool = False
    retry_of: Attempt | None = None
    result: AppendResult | None = None
    error: WrongExpectedVersion | None = None


@dataclass
class Run:
    attempts: list[Attempt] = field(default_factory=list)

    def acknowledged(self) -> list[Attempt]:
        return [a for a in self.attempts if a.result is not None]


ops = st.builds(
    Op,
    stream=st.sampled_from(STREAMS),
    events=st.integers(1, 3),
    kind=st.sampled_from(KINDS),
)
rounds_strategy = st.lists(st.lists(ops, min_size=1, max_size=6), min_size=1, max_size=6)


def plan_attempt(op: Op, start_version: int, run: Run, n: int) -> Attempt:
    def fresh() -> list[NewEvent]:
        return [
            NewEvent(type="StepStarted", data={"run_id": op.stream, "step_id": f"{n}.{i}"})
            for i in range(op.events)
        ]

    if op.kind == "retry":
        earlier = [a for a in run.acknowledged() if a.op.stream == op.stream]
        if earlier:
            original = earlier[-1]
            return Attempt(op, ANY, start_version, original.events, retry_of=original)
    if op.kind == "current":
        return Attempt(op, start_version, start_version, fresh())
    if op.kind == "stale" and start_version > 0:
        return Attempt(op, start_version - 1, start_version, fresh(), must_fail=True)
    if op.kind == "no-stream":
        return Attempt(op, NO_STREAM, start_version, fresh(), must_fail=start_version > 0)
    if op.kind == "exists":
        return Attempt(op, STREAM_EXISTS, start_version, fresh(), must_succeed=start_version > 0)
    return Attempt(op, ANY, start_version, fresh(), must_succeed=True)


async def perform(store: EventStore, attempt: Attempt) -> None:
    try:
        attempt.result = await store.append(
            attempt.op.stream, attempt.events, expected_version=attempt.expected
        )
    except WrongExpectedVersion as exc:
        attempt.error = exc


async def run_rounds(store: EventStore, rounds: list[list[Op]]) -> Run:
    run = Run()
    for round_ops in rounds:
        start = {s: await store.stream_version(s) for s in STREAMS}
        attempts = [
            plan_attempt(op, start[op.stream], run, len(run.attempts) + i)
            for i, op in enumerate(round_ops)
        ]
        run.attempts.extend(attempts)
        async with trio.open_nursery() as nursery:
            for attempt in attempts:
                nursery.start_soon(perform, store, attempt)
    return run


def check_invariants(store: EventStore, records: list[RecordedEvent], run: Run) -> None:
    head = store.head_position
    assert [r.position for r in records] == list(range(1, head + 1))
    by_id = {r.id: r for r in records}
    assert len(by_id) == len(records), "an event id was written twice"

    for stream in STREAMS:
        versions = [r.version for r in records if r.stream == stream]
        assert versions == list(range(1, len(versions) + 1)), stream

    written = 0
    for attempt in run.attempts:
        ids = [e.id for e in attempt.events]
        if attempt.must_fail:
            assert attempt.error is not None, attempt
        if attempt.must_succeed:
            assert attempt.result is not None, attempt
        if attempt.retry_of is not None:
            assert attempt.result is not None and attempt.result.duplicate, attempt
            assert attempt.retry_of.result is not None
            assert attempt.result.positions == attempt.retry_of.result.positions
            continue
        if attempt.error is not None:
            assert attempt.error.stream == attempt.op.stream
            assert not [i for i in ids if i in by_id], "a refused append wrote events"
            continue
        result = attempt.result
        assert result is not None and not result.duplicate
        written += len(ids)
        landed = [by_id[i] for i in ids]
        assert [r.position for r in landed] == list(result.positions)
        assert list(result.positions) == list(range(result.positions[0], result.last_position + 1))
        assert {r.stream for r in landed} == {attempt.op.stream}
        first = result.version - len(ids) + 1
        assert [r.version for r in landed] == list(range(first, result.version + 1))
        if isinstance(attempt.expected, int):
            assert first == attempt.expected + 1
        if attempt.expected is NO_STREAM:
            assert first == 1

    assert written == len(records)
    report = audit_log(store.log)
    assert report.ok, report
    assert report.checked == head


async def exercise(store: EventStore, rounds: list[list[Op]]) -> None:
    with trio.fail_after(TIMEOUT_S):
        run = await run_rounds(store, rounds)
        records = [r async for r in store.iterate()]
        counts = {s: sum(1 for r in records if r.stream == s) for s in STREAMS}
        for stream in STREAMS:
            assert await store.stream_version(stream) == counts[stream]
        check_invariants(store, records, run)


async def exercise_lmdb(rounds: list[list[Op]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_event_store(Path(tmp) / "store", OPTIONS) as store:
            await exercise(store, rounds)


async def exercise_lmdb_tail(rounds: list[list[Op]]) -> None:
    """LMDB writing its indexes every 2 records: checks meet the index and the tail."""
    with tempfile.TemporaryDirectory() as tmp:
        options = replace(OPTIONS, index_every=2)
        async with open_event_store(Path(tmp) / "store", options) as store:
            await exercise(store, rounds)


async def exercise_memory(rounds: list[list[Op]]) -> None:
    log = MemoryEventLog(compress_over=OPTIONS.compress_over_bytes)
    async with open_event_store(options=OPTIONS, log=log) as store:
        await exercise(store, rounds)


@pytest.mark.parametrize(
    "exercise_backend",
    [
        pytest.param(exercise_lmdb, id="lmdb"),
        pytest.param(exercise_lmdb_tail, id="lmdb-tail"),
        pytest.param(exercise_memory, id="memory"),
    ],
)
@settings(max_examples=50, deadline=None)
@given(rounds=rounds_strategy)
def test_concurrent_appends_keep_the_log_invariants(
    exercise_backend: Callable[[list[list[Op]]], Awaitable[None]], rounds: list[list[Op]]
) -> None:
    trio.run(exercise_backend, rounds)
