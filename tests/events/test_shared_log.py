"""Several processes, one LMDB log: a second writer process beside an open store.

The other process is `append_child` (a real subprocess: py-lmdb cannot open one
environment twice in a process). Properties under test:

- a write transaction never trusts what this process cached: stream versions continue
  after the other process's records, and an expected version checks against them;
- the store's head, `wait_for_position` and subscribers (of every position and of one
  stream) follow the other process's records, each exactly once and in order (how soon
  is a benchmark's figure: `tests/performance/bench_shared_log.py`);
- records of the other process that this one has not seen yet when it commits leave no
  gap for its subscribers; more of them than the in-memory window holds are read from
  disk;
- a map grown by the other process is adopted by this process's writer;
- the store finds the other process's records whether its commit thread watches the
  log's file (inotify) or its watcher polls, and neither an idle store nor its own
  commits cost a look (a worker-thread call): the log's change marker says nothing
  new was committed; an idle store watching the file does not even wake.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from events import (
    EventStore,
    RecordedEvent,
    StepStarted,
    StoreOptions,
    WrongExpectedVersion,
    audit_log,
    open_event_store,
)

from .conftest import TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
# Options of the test's own store whose watcher must not run during the test.
NO_WATCH = StoreOptions(sync=False, map_size_mb=16, watch_interval_s=3600, watch_file_changes=False)
# The two ways the watcher learns of other processes' commits: the commit thread
# watching the log's file (shipped; nothing polls then), or polling every 50 ms.
WATCHING = {
    "file": StoreOptions(sync=False, map_size_mb=16),
    "poll": StoreOptions(
        sync=False, map_size_mb=16, watch_interval_s=0.05, watch_file_changes=False
    ),
}


@pytest.fixture(params=sorted(WATCHING))
def watching(request: pytest.FixtureRequest) -> StoreOptions:
    return WATCHING[request.param]


async def other_process(data_dir: Path, stream: str, count: int, *flags: str) -> list[str]:
    """Run `append_child` to completion; its `ack` lines."""
    argv = [sys.executable, "-m", "tests.events.append_child", str(data_dir), stream, str(count)]
    done = await trio.run_process(
        [*argv, *flags], cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


async def append(store: EventStore, stream: str, count: int) -> int:
    """`count` events to `stream` in one append; its last position."""
    events = [StepStarted(run_id=stream, step_id=f"p{i}") for i in range(count)]
    return (await store.append(stream, events)).last_position


class Collector:
    """Everything one subscription yields, with the monotonic time it arrived."""

    def __init__(self, store: EventStore, after: int, stream: str | None = None) -> None:
        self.subscription = store.subscribe(after=after, stream=stream)
        self.records: list[RecordedEvent] = []
        self.arrived: dict[int, float] = {}

    async def run(self, until_position: int) -> None:
        async for record in self.subscription:
            self.records.append(record)
            self.arrived[record.position] = time.monotonic()
            if record.position >= until_position:
                return

    @property
    def positions(self) -> list[int]:
        return [r.position for r in self.records]


async def follow(
    store: EventStore, stream: str, count: int, into: list[RecordedEvent], done: trio.Event
) -> None:
    """The first `count` records of `stream` into `into` as they come; then `done`."""
    async for record in store.subscribe(after=0, stream=stream):
        into.append(record)
        if len(into) == count:
            done.set()
            return


async def test_stream_versions_continue_after_another_processes_appends(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, NO_WATCH) as store:
            await append(store, "run-shared", 2)  # this process caches version 2
            await other_process(data, "run-shared", 3)  # versions 3-5
            with pytest.raises(WrongExpectedVersion) as stale:
                await store.append("run-shared", [StepStarted(run_id="x", step_id="y")], 2)
            result = await store.append("run-shared", [StepStarted(run_id="x", step_id="z")])
            records = await store.read_stream("run-shared")
            report = await trio.to_thread.run_sync(audit_log, store.log)
    assert (stale.value.expected, stale.value.actual) == (2, 5)
    assert (result.version, result.last_position) == (6, 6)
    assert [(r.position, r.version) for r in records] == [(p, p) for p in range(1, 7)]
    assert report.ok, report


async def test_head_and_subscribers_follow_another_processes_appends(
    tmp_path: Path, watching: StoreOptions
) -> None:
    data = tmp_path / "data"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, watching) as store:
            await append(store, "run-mine", 2)
            everything = Collector(store, after=2)
            theirs = Collector(store, after=0, stream="run-theirs")
            mine = Collector(store, after=0, stream="run-mine")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(everything.run, 12)
                nursery.start_soon(theirs.run, 12)
                nursery.start_soon(mine.run, 2)
                acks = await other_process(data, "run-theirs", 10, "--every", "0.12")
                await store.wait_for_position(12)
            head = store.head_position
    assert head == 12
    assert everything.positions == list(range(3, 13))
    assert theirs.positions == list(range(3, 13))
    assert [r.version for r in theirs.records] == list(range(1, 11))
    assert mine.positions == [1, 2]
    assert sorted(int(line.split()[2]) for line in acks) == list(range(3, 13))


async def test_a_commit_after_unseen_records_of_another_process_leaves_no_gap(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, NO_WATCH) as store:
            await append(store, "run-a", 2)
            everything = Collector(store, after=0)
            theirs = Collector(store, after=2, stream="run-b")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(everything.run, 6)
                nursery.start_soon(theirs.run, 5)
                await trio.testing.wait_all_tasks_blocked()
                await other_process(data, "run-b", 3)  # 3-5, unseen: no watcher here
                assert store.head_position == 2
                assert await append(store, "run-a", 1) == 6  # after theirs, not over them
    assert everything.positions == [1, 2, 3, 4, 5, 6]
    assert theirs.positions == [3, 4, 5]
    assert [r.stream for r in everything.records] == ["run-a"] * 2 + ["run-b"] * 3 + ["run-a"]


async def test_more_records_than_the_window_from_another_process_are_read_from_disk(
    tmp_path: Path, watching: StoreOptions
) -> None:
    data = tmp_path / "data"
    options = replace(watching, recent_events=4, read_batch=3)
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, options) as store:
            await append(store, "run-a", 1)
            everything = Collector(store, after=1)
            theirs = Collector(store, after=0, stream="run-b")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(everything.run, 23)
                nursery.start_soon(theirs.run, 21)
                # One append of 10 (over the window), then 10 single ones.
                await other_process(data, "run-b", 10, "--per-append", "10")
                await other_process(data, "run-b", 10)
                await store.wait_for_position(21)
                assert await append(store, "run-a", 2) == 23
    assert everything.positions == list(range(2, 24))
    assert theirs.positions == list(range(2, 22))


async def test_a_map_grown_by_another_process_is_adopted_by_this_writer(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    small = StoreOptions(sync=False, map_size_mb=1)
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, small) as store:
            await append(store, "run-a", 1)
            # ~3 MB of incompressible payloads: the other process grows the map past 1 MB.
            acks = await other_process(
                data, "run-big", 30, "--map-mb", "64", "--payload-bytes", "100000"
            )
            assert await append(store, "run-a", 1) == 32
            await store.wait_for_position(32)
            records = [r async for r in store.iterate()]
            report = await trio.to_thread.run_sync(audit_log, store.log)
    assert len(acks) == 30
    assert [r.position for r in records] == list(range(1, 33))
    assert report.ok, report


async def test_the_watcher_follows_another_process_while_this_one_commits_and_after(
    tmp_path: Path, watching: StoreOptions
) -> None:
    # This process commits every few milliseconds, so its watcher mostly leaves the
    # looking to those commits; once they stop, the watcher alone must find the rest.
    data = tmp_path / "data"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, watching) as store:
            theirs: list[RecordedEvent] = []

            async def commit_steadily(task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                while True:
                    await append(store, "run-mine", 1)
                    await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow, store, "run-theirs", 8, theirs, trio.Event())
                async with trio.open_nursery() as busy:
                    await busy.start(commit_steadily)
                    await other_process(data, "run-theirs", 5, "--every", "0.05")
                    busy.cancel_scope.cancel()
                await other_process(data, "run-theirs", 3, "--every", "0.05")
    assert [r.version for r in theirs] == list(range(1, 9))


async def test_commits_that_write_nothing_leave_the_looking_to_the_watcher(
    tmp_path: Path, watching: StoreOptions
) -> None:
    # Every append of this process is refused (or a duplicate): its commits publish
    # nothing, so they must not spare the watcher its look.
    data = tmp_path / "data"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, watching) as store:
            await append(store, "run-mine", 1)
            theirs: list[RecordedEvent] = []
            all_theirs = trio.Event()

            async def refused_steadily(task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                while True:
                    with pytest.raises(WrongExpectedVersion):
                        await store.append("run-mine", [StepStarted(run_id="m", step_id="x")], 0)
                    await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow, store, "run-theirs", 3, theirs, all_theirs)
                await nursery.start(refused_steadily)
                await other_process(data, "run-theirs", 3)
                await all_theirs.wait()
                nursery.cancel_scope.cancel()
    assert [r.version for r in theirs] == [1, 2, 3]


async def test_neither_idleness_nor_own_commits_cost_the_watcher_a_look(
    tmp_path: Path, watching: StoreOptions
) -> None:
    data = tmp_path / "data"
    options = replace(watching, commit_linger_s=0.002)
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, options) as store:
            for i in range(20):  # awaited appends, and queued ones sharing commits
                await append(store, "run-mine", 1)
                await store.submit("run-mine", [StepStarted(run_id="m", step_id=f"q{i}")])
            await store.flush()
            if watching.watch_file_changes:  # a wake-up for them would have come by now
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            settled = store.statistics()
            await trio.sleep(0.3)
            idle = store.statistics()
            await other_process(data, "run-theirs", 2)
            await store.wait_for_position(42)
            found = store.statistics()
    assert settled.commits >= 20
    assert settled.watcher_looks == idle.watcher_looks == 0
    if watching.watch_file_changes:  # never woken by its own commits, nor while idle
        assert idle.watcher_checks == settled.watcher_checks == 0
    else:  # a check every 50 ms, each answered by the marker alone
        assert idle.watcher_checks - settled.watcher_checks >= 2
    assert found.watcher_looks >= 1  # the other process's commits are looked for


async def test_the_change_marker_counts_the_commits_of_every_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(data, NO_WATCH) as store:
            log = store.log
            first = log.change_marker()
            await append(store, "run-mine", 3)  # one commit
            mine = log.change_marker()
            await other_process(data, "run-theirs", 2)  # two commits
            theirs = log.change_marker()
            seen = await trio.to_thread.run_sync(log.seen_head)  # what a read sees
            with pytest.raises(WrongExpectedVersion):  # a commit that writes nothing
                await store.append("run-mine", [StepStarted(run_id="m", step_id="x")], 0)
            refused = log.change_marker()
            after_refusal = log.last_commit_marker()
            await append(store, "run-mine", 1)
            last = log.last_commit_marker()
    assert first is not None
    assert (mine, theirs, refused) == (first + 1, first + 3, first + 3)
    assert seen == (first + 3, 5)
    assert after_refusal is None
    assert last == first + 4
