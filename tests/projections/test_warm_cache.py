"""The warm cache of keyed projections: committed values are kept between batches, but
never a value that may differ from the store's (changed in place and not saved, or
taken for a commit that failed), and never more than `COMMITTED_KEYS` of them.
"""

from __future__ import annotations

from typing import Any

import pytest

from events import LmdbEventLog, RecordedEvent
from projections import ProjectionRunner, StateCommit, StateStore
from projections._base import COMMITTED_KEYS

from .helpers import CountingProjection, EventWriter, session_messages


class Toggled(CountingProjection):
    """Counts like `CountingProjection`; while `broken`, saves a value no store encodes."""

    name = "toggled"

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def apply(self, record: RecordedEvent) -> None:
        super().apply(record)
        if self.broken:
            self.save(b"bad", object())


def commit(state: StateStore, projection: CountingProjection, at: int, to: int) -> None:
    state.commit([StateCommit(projection.name, 1, at, to, projection.take_changes())])


def test_a_committed_value_is_served_from_memory(state: StateStore) -> None:
    projection = CountingProjection()
    projection.attach(state)
    value = {"n": 1}
    projection.save(b"k", value)
    commit(state, projection, 0, 1)

    assert projection.load(b"k") is value
    assert state.get("counter", b"k") == {"n": 1}


def test_a_value_changed_in_place_and_not_saved_is_read_again_from_the_store(
    state: StateStore,
) -> None:
    projection = CountingProjection()
    projection.attach(state)
    projection.save(b"k", {"n": 1})
    commit(state, projection, 0, 1)

    projection.load(b"k")["n"] = 99  # a handler's change it did not save
    commit(state, projection, 1, 2)

    assert projection.load(b"k") == {"n": 1}


def test_the_cache_keeps_the_latest_saved_keys_only(state: StateStore) -> None:
    projection = CountingProjection()
    projection.attach(state)
    old = [b"old%d" % i for i in range(COMMITTED_KEYS)]
    new = [b"new%d" % i for i in range(10)]
    for key in old:
        projection.save(key, 1)
    commit(state, projection, 0, 1)
    for key in new:
        projection.save(key, 1)
    commit(state, projection, 1, 2)
    # Change every key behind the projection's back: only what it evicted shows.
    state.commit([StateCommit("counter", 1, 2, 3, dict.fromkeys(old + new, -1))])

    assert [projection.load(key) for key in new] == [1] * 10
    assert sorted(projection.load(key) for key in old) == [-1] * 10 + [1] * (COMMITTED_KEYS - 10)


def test_after_a_failed_commit_the_batch_is_applied_again_on_the_stored_state(
    writer: EventWriter, log: LmdbEventLog, state: StateStore
) -> None:
    """`counter` takes its changes, `toggled` breaks the shared commit: the batch is read
    again, and `counter` must count it once, not on top of the changes it took."""
    head = session_messages(writer, "a", 19)
    counter, toggled = CountingProjection(), Toggled()
    runner = ProjectionRunner(log, state, [counter, toggled], batch_size=10)
    runner.prepare()
    runner.step()
    toggled.broken = True
    with pytest.raises(TypeError):
        runner.step()
    toggled.broken = False

    runner.catch_up()

    assert runner.position == head
    count: Any = state.get("counter", b"count")
    assert count == head
    assert state.get("toggled", b"count") == head


def test_a_key_saved_again_is_evicted_last(state: StateStore) -> None:
    projection = CountingProjection()
    projection.attach(state)
    projection.save(b"early", 1)  # committed first: the oldest
    commit(state, projection, 0, 1)
    later = [b"later%d" % i for i in range(COMMITTED_KEYS - 1)]
    for key in later:
        projection.save(key, 1)
    commit(state, projection, 1, 2)
    projection.save(b"early", 2)  # saved again: now the newest
    commit(state, projection, 2, 3)
    projection.save(b"one-more", 1)  # over the limit: the oldest must go
    commit(state, projection, 3, 4)
    # Change every key behind the projection's back: only what it evicted shows.
    state.commit([StateCommit("counter", 1, 4, 5, dict.fromkeys([b"early", *later], -1))])

    assert projection.load(b"early") == 2
    assert sorted(projection.load(key) for key in later) == [-1] + [1] * (COMMITTED_KEYS - 2)
