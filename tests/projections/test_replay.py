"""replay: rebuild projections into scratch state and compare with the live state.

A good store verifies clean; any tampered key, snapshot or version is reported as a
difference; a rebuild over an altered record stops at its position instead of building
state from bad data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import trio

from events import LmdbEventLog, RunRequested, StoreCorrupted
from projections import (
    Difference,
    LmdbStateStore,
    MetricsProjection,
    ProjectionRunner,
    RunsProjection,
    SessionsProjection,
    StateCommit,
    build_projections,
    projection_factories,
    rebuild,
    verify,
)
from tests.workload import write_workload

from .helpers import MARKER, TIMEOUT_S, EventWriter, flip_every, in_thread, open_log, open_state

EVENTS = 1500


@pytest.fixture
def live(tmp_path: Path, log: LmdbEventLog) -> Iterator[LmdbStateStore]:
    """A workload log and its projections, built incrementally (with snapshots)."""
    write_workload(log, EVENTS, sessions=20)
    state = open_state(tmp_path / "projections")
    runner = ProjectionRunner(log, state, build_projections(), batch_size=300, snapshot_every=500)
    runner.prepare()
    runner.catch_up()
    runner.flush_snapshots()
    yield state
    state.close()


def tamper(
    state: LmdbStateStore, name: str, changes: dict[bytes, object], snapshot: bytes | None = None
) -> None:
    checkpoint = state.checkpoint(name)
    position = checkpoint.position
    state.commit([StateCommit(name, checkpoint.version, position, position, changes, snapshot)])


async def test_verify_of_good_state_finds_no_difference(
    log: LmdbEventLog, live: LmdbStateStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = log.head()[0]
        assert {n: live.checkpoint(n).position for n in ("sessions", "runs", "metrics")} == {
            "sessions": head,
            "runs": head,
            "metrics": head,
        }
        assert await in_thread(verify, log, live, projection_factories()) == []


async def test_rebuild_equals_the_incrementally_built_state(
    log: LmdbEventLog, live: LmdbStateStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = log.head()[0]
        for projection in (SessionsProjection(), RunsProjection()):
            scratch = await in_thread(rebuild, log, projection, head)
            assert scratch.checkpoint(projection.name).position == head
            assert scratch.items(projection.name) == live.items(projection.name)
        scratch = await in_thread(rebuild, log, MetricsProjection(), head)
        assert scratch.snapshot("metrics") == live.snapshot("metrics")


async def test_verify_reports_a_tampered_value(log: LmdbEventLog, live: LmdbStateStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        key, run = live.items("runs", b"r/")[5]
        tampered = {**run, "status": "cancelled"}
        tamper(live, "runs", {key: tampered})
        assert await in_thread(verify, log, live, projection_factories()) == [
            Difference("runs", key.decode(), tampered, run)
        ]


async def test_verify_reports_missing_and_extra_keys(
    log: LmdbEventLog, live: LmdbStateStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        key, session = live.items("sessions")[0]
        tamper(live, "sessions", {key: None, b"s/ghost": {"session_id": "ghost"}})
        differences = await in_thread(verify, log, live, {"sessions": SessionsProjection})
        assert differences == [
            Difference("sessions", key.decode(), None, session),
            Difference("sessions", "s/ghost", {"session_id": "ghost"}, None),
        ]


async def test_verify_reports_a_tampered_snapshot(log: LmdbEventLog, live: LmdbStateStore) -> None:
    with trio.fail_after(TIMEOUT_S):
        raw = live.snapshot("metrics")
        assert raw is not None
        good = msgpack.unpackb(raw, strict_map_key=False)
        bad = {**good, "counters": {**good["counters"], "llm_calls": 1}}
        tamper(live, "metrics", {}, msgpack.packb(bad, use_bin_type=True))
        (difference,) = await in_thread(verify, log, live, projection_factories())
        assert (difference.projection, difference.key) == ("metrics", "<snapshot>")
        assert (difference.live, difference.rebuilt) == (bad, good)


async def test_verify_reports_a_state_of_another_version(
    log: LmdbEventLog, live: LmdbStateStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        head = log.head()[0]
        live.replace("runs", 7, head, live.items("runs"))
        assert await in_thread(verify, log, live, {"runs": RunsProjection}) == [
            Difference("runs", "<version>", 7, RunsProjection.version)
        ]


async def test_verify_of_a_projection_not_yet_persisted_finds_no_difference(
    tmp_path: Path, log: LmdbEventLog
) -> None:
    # A server with fewer events than `snapshot_every` since its start has never
    # persisted `metrics` (checkpoint 0, version 0): nothing to compare, not a mismatch.
    with trio.fail_after(TIMEOUT_S):
        write_workload(log, 200, sessions=5)
        state = open_state(tmp_path / "projections")
        try:
            runner = ProjectionRunner(log, state, build_projections(), snapshot_every=10_000)
            runner.prepare()
            runner.catch_up()
            assert state.checkpoint("metrics").position == 0
            assert await in_thread(verify, log, state, projection_factories()) == []
        finally:
            state.close()


async def test_verify_beside_a_server_that_commits_during_the_rebuild(
    tmp_path: Path, log: LmdbEventLog, writer: EventWriter
) -> None:
    # `replay --verify` rebuilds up to the live checkpoint it read, which takes a while;
    # a running server keeps committing meanwhile. Its state is correct at every
    # commit, so verify must not report a difference.
    with trio.fail_after(TIMEOUT_S):
        for i in range(40):
            writer.add(f"run-{i % 4}", RunRequested(run_id=str(i % 4), session_id=str(i), goal="g"))
        state = open_state(tmp_path / "projections")
        try:
            server = ProjectionRunner(log, state, [RunsProjection()], batch_size=10)
            server.prepare()
            server.catch_up(until=20)

            def server_commits(_done: int, _total: int) -> None:
                server.catch_up()

            differences = await in_thread(
                verify, log, state, {"runs": RunsProjection}, progress=lambda _name: server_commits
            )
            assert state.checkpoint("runs").position == 40  # the server did commit
            assert differences == []
        finally:
            state.close()


async def test_rebuild_beyond_the_head_raises_store_corrupted(log: LmdbEventLog) -> None:
    with trio.fail_after(TIMEOUT_S):
        write_workload(log, 50, sessions=2)
        head = log.head()[0]
        with pytest.raises(StoreCorrupted) as raised:
            await in_thread(rebuild, log, RunsProjection(), head + 5)
        assert raised.value.position == head + 1


async def test_rebuild_over_an_altered_record_raises_naming_its_position(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        path = tmp_path / "altered"
        log = open_log(path)
        writer = EventWriter(log)
        writer.add("run-1", RunRequested(run_id="1", session_id="s", goal="first"))
        altered = writer.add("run-2", RunRequested(run_id="2", session_id="s", goal=MARKER))
        writer.add("run-3", RunRequested(run_id="3", session_id="s", goal="third"))
        log.close()
        assert flip_every(path / "data.mdb", MARKER.encode()) >= 1
        log = LmdbEventLog.open(path, readonly=True)
        try:
            for projection in (RunsProjection(), SessionsProjection(), MetricsProjection()):
                with pytest.raises(StoreCorrupted) as raised:
                    await in_thread(rebuild, log, projection, 3)
                assert raised.value.position == altered
        finally:
            log.close()
