"""StateStore conformance over LMDB and memory, and the memory overlay over a base.

Every test taking `state` runs on both backends. The contract: values are msgpack
data read back as copies; a commit writes changes (None deletes), snapshot and
checkpoint of several projections atomically, and refuses a stale expected position
(`CheckpointMoved`) without writing anything; reset and replace swap a projection's
whole state at once.

The interface is synchronous and local (the runner calls it from worker threads), so
these tests call it directly: nothing in them waits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from projections import (
    Checkpoint,
    CheckpointMoved,
    LmdbStateStore,
    MemoryStateStore,
    ProjectionStoreMissing,
    StateCommit,
    StateStore,
)

from .helpers import open_state


def commit(
    store: StateStore,
    name: str,
    changes: dict[bytes, Any],
    *,
    expected: int | None = None,
    position: int | None = None,
    version: int = 1,
    snapshot: bytes | None = None,
) -> None:
    """Commit `changes` moving the checkpoint by one (or to `position`)."""
    current = store.checkpoint(name).position
    expected = current if expected is None else expected
    position = current + 1 if position is None else position
    store.commit([StateCommit(name, version, expected, position, changes, snapshot)])


def dump(store: StateStore, name: str) -> tuple[Checkpoint, list[tuple[bytes, Any]], bytes | None]:
    return store.checkpoint(name), store.items(name), store.snapshot(name)


# --- the StateStore contract, on every backend ---------------------------------------


def test_empty_store_has_nothing_and_checkpoint_zero(state: StateStore) -> None:
    assert state.checkpoint("p") == Checkpoint(0, 0)
    assert state.get("p", b"k") is None
    assert state.items("p") == []
    assert state.snapshot("p") is None


def test_commit_writes_values_and_checkpoint(state: StateStore) -> None:
    value = {"n": 1, "list": [1, "two", None], "nested": {"x": b"\x00\xff"}, "f": 0.25}
    state.commit([StateCommit("p", 3, 0, 17, {b"k": value, b"j": "plain"})])
    assert state.get("p", b"k") == value
    assert state.get("p", b"j") == "plain"
    assert state.checkpoint("p") == Checkpoint(17, 3)


def test_commit_with_none_value_deletes_key(state: StateStore) -> None:
    commit(state, "p", {b"a": 1, b"b": 2})
    commit(state, "p", {b"a": None, b"c": 3})
    assert state.get("p", b"a") is None
    assert state.items("p") == [(b"b", 2), (b"c", 3)]


def test_deleting_a_missing_key_is_harmless(state: StateStore) -> None:
    commit(state, "p", {b"never": None})
    assert state.items("p") == []
    assert state.checkpoint("p").position == 1


def test_items_returns_keys_under_prefix_in_key_order(state: StateStore) -> None:
    commit(state, "p", {b"r/b": 2, b"s/x": 9, b"r/a": 1, b"r/c": 3, b"r": 0})
    assert state.items("p", b"r/") == [(b"r/a", 1), (b"r/b", 2), (b"r/c", 3)]
    assert [k for k, _ in state.items("p")] == [b"r", b"r/a", b"r/b", b"r/c", b"s/x"]
    assert state.items("p", b"zzz") == []


def test_projections_do_not_see_each_others_keys(state: StateStore) -> None:
    state.commit(
        [
            StateCommit("run", 1, 0, 5, {b"k": "run"}),
            StateCommit("runs", 1, 0, 6, {b"k": "runs"}),
        ]
    )
    assert state.items("run") == [(b"k", "run")]
    assert state.items("runs") == [(b"k", "runs")]
    assert state.get("ru", b"k") is None
    assert state.checkpoint("run") == Checkpoint(5, 1)
    assert state.checkpoint("runs") == Checkpoint(6, 1)


def test_commit_with_stale_expected_position_raises_and_writes_nothing(
    state: StateStore,
) -> None:
    commit(state, "p", {b"k": "before"}, position=10, snapshot=b"snap-10")
    with pytest.raises(CheckpointMoved) as raised:
        commit(state, "p", {b"k": "after", b"new": 1}, expected=7, snapshot=b"snap-11")
    assert (raised.value.name, raised.value.expected, raised.value.actual) == ("p", 7, 10)
    assert dump(state, "p") == (Checkpoint(10, 1), [(b"k", "before")], b"snap-10")


def test_commit_of_several_projections_is_all_or_nothing(state: StateStore) -> None:
    commit(state, "b", {b"k": "b0"}, position=4)
    with pytest.raises(CheckpointMoved):
        state.commit(
            [
                StateCommit("a", 1, 0, 9, {b"k": "a1"}, b"snap"),
                StateCommit("b", 1, 3, 9, {b"k": "b1"}),  # stale: b is at 4
            ]
        )
    assert dump(state, "a") == (Checkpoint(0, 0), [], None)
    assert dump(state, "b") == (Checkpoint(4, 1), [(b"k", "b0")], None)


def test_snapshot_is_saved_with_its_checkpoint_and_kept_until_replaced(
    state: StateStore,
) -> None:
    commit(state, "p", {}, position=100, snapshot=b"state at 100")
    assert state.snapshot("p") == b"state at 100"
    commit(state, "p", {b"k": 1}, position=150)  # no snapshot in this commit
    assert state.snapshot("p") == b"state at 100"
    commit(state, "p", {}, position=200, snapshot=b"state at 200")
    assert (state.snapshot("p"), state.checkpoint("p")) == (b"state at 200", Checkpoint(200, 1))


def test_reset_forgets_state_snapshot_and_checkpoint(state: StateStore) -> None:
    commit(state, "p", {b"a": 1, b"b": 2}, position=50, version=3, snapshot=b"s")
    commit(state, "other", {b"a": "kept"}, position=8)
    state.reset("p")
    assert dump(state, "p") == (Checkpoint(0, 0), [], None)
    assert state.get("p", b"a") is None
    assert dump(state, "other") == (Checkpoint(8, 1), [(b"a", "kept")], None)
    commit(state, "p", {b"c": 3}, expected=0, position=1)  # usable again from 0
    assert state.items("p") == [(b"c", 3)]


def test_replace_swaps_state_snapshot_and_checkpoint_at_once(state: StateStore) -> None:
    commit(state, "p", {b"old": 1, b"both": "old"}, position=30, snapshot=b"old snap")
    commit(state, "other", {b"x": 1}, position=2)
    state.replace("p", 2, 77, [(b"both", "new"), (b"fresh", [1, 2])], b"new snap")
    assert dump(state, "p") == (
        Checkpoint(77, 2),
        [(b"both", "new"), (b"fresh", [1, 2])],
        b"new snap",
    )
    assert state.get("p", b"old") is None
    assert dump(state, "other") == (Checkpoint(2, 1), [(b"x", 1)], None)


def test_replace_without_snapshot_drops_the_old_one(state: StateStore) -> None:
    commit(state, "p", {}, position=5, snapshot=b"old snap")
    state.replace("p", 1, 9, [(b"k", 1)])
    assert dump(state, "p") == (Checkpoint(9, 1), [(b"k", 1)], None)


def test_commit_after_replace_expects_the_replaced_position(state: StateStore) -> None:
    commit(state, "p", {b"k": 1}, position=40)
    state.replace("p", 1, 25, [(b"k", 0)])
    with pytest.raises(CheckpointMoved) as raised:
        commit(state, "p", {b"k": 2}, expected=40, position=41)
    assert raised.value.actual == 25
    commit(state, "p", {b"k": 2}, expected=25, position=26)
    assert dump(state, "p") == (Checkpoint(26, 1), [(b"k", 2)], None)


def test_values_read_back_are_copies_not_the_stored_state(state: StateStore) -> None:
    # Handlers mutate what they load in place (runs, sessions); a batch that is then not
    # committed (CheckpointMoved, a crash) must leave no trace in the store.
    state.replace("p", 1, 1, [(b"r", {"steps": {}, "n": 0})])
    commit(state, "p", {b"s": {"steps": {}, "n": 0}})
    for key in (b"r", b"s"):
        loaded = state.get("p", key)
        loaded["n"] += 1
        loaded["steps"]["a"] = "running"
        listed = dict(state.items("p"))[key]
        listed["n"] += 10
    assert state.items("p") == [(b"r", {"steps": {}, "n": 0}), (b"s", {"steps": {}, "n": 0})]


# --- LMDB specifics -------------------------------------------------------------------


def test_lmdb_state_survives_reopen(tmp_path: Path) -> None:
    store = open_state(tmp_path / "p")
    commit(store, "p", {b"k": {"v": 1}}, position=12, version=4, snapshot=b"snap")
    store.close()
    reopened = LmdbStateStore.open(tmp_path / "p", readonly=True)
    try:
        assert dump(reopened, "p") == (Checkpoint(12, 4), [(b"k", {"v": 1})], b"snap")
    finally:
        reopened.close()


def test_lmdb_readonly_open_of_missing_state_raises_store_missing(tmp_path: Path) -> None:
    with pytest.raises(ProjectionStoreMissing):
        LmdbStateStore.open(tmp_path / "nothing-here", readonly=True)


def test_lmdb_commit_grows_a_full_map(tmp_path: Path) -> None:
    store = LmdbStateStore.open(tmp_path / "p", sync=False, map_size=1 << 16)
    try:
        big = {b"k%d" % i: "x" * 50_000 for i in range(20)}
        commit(store, "p", big)
        assert len(store.items("p")) == 20
    finally:
        store.close()


# --- MemoryStateStore(base=...): an overlay that never writes to its base -------------


@pytest.fixture
def base(state: StateStore) -> StateStore:
    """A base holding projection p at position 10 (with a snapshot) and q at 3."""
    commit(state, "p", {b"a": 1, b"b": 2, b"c": 3}, position=10, version=2, snapshot=b"base snap")
    commit(state, "q", {b"x": "q"}, position=3)
    return state


def test_overlay_reads_fall_through_to_the_base(base: StateStore) -> None:
    overlay = MemoryStateStore(base=base)
    assert dump(overlay, "p") == dump(base, "p")
    assert overlay.get("p", b"b") == 2
    assert overlay.items("p", b"c") == [(b"c", 3)]


def test_overlay_commit_checks_the_base_checkpoint(base: StateStore) -> None:
    overlay = MemoryStateStore(base=base)
    with pytest.raises(CheckpointMoved):
        commit(overlay, "p", {b"a": 100}, expected=0, position=11, version=2)
    commit(overlay, "p", {b"a": 100}, expected=10, position=11, version=2)
    assert overlay.checkpoint("p") == Checkpoint(11, 2)


def test_overlay_values_win_and_deletes_hide_base_keys(base: StateStore) -> None:
    before = dump(base, "p")
    overlay = MemoryStateStore(base=base)
    commit(overlay, "p", {b"a": 100, b"b": None, b"d": 4}, position=12, version=2)
    assert overlay.get("p", b"a") == 100
    assert overlay.get("p", b"b") is None
    assert overlay.items("p") == [(b"a", 100), (b"c", 3), (b"d", 4)]
    assert overlay.checkpoint("p") == Checkpoint(12, 2)
    assert overlay.snapshot("p") == b"base snap"
    commit(overlay, "p", {}, position=13, version=2, snapshot=b"overlay snap")
    assert overlay.snapshot("p") == b"overlay snap"
    assert dump(base, "p") == before


def test_overlay_reset_hides_the_whole_base(base: StateStore) -> None:
    before = dump(base, "p")
    overlay = MemoryStateStore(base=base)
    overlay.reset("p")
    assert dump(overlay, "p") == (Checkpoint(0, 0), [], None)
    assert overlay.get("p", b"a") is None
    commit(overlay, "p", {b"z": 26}, expected=0, position=1)
    assert overlay.items("p") == [(b"z", 26)]
    assert overlay.get("p", b"a") is None
    assert dump(overlay, "q") == dump(base, "q")  # other projections still fall through
    assert dump(base, "p") == before


def test_overlay_replace_hides_the_base_and_writes_nothing_to_it(base: StateStore) -> None:
    before = dump(base, "p"), dump(base, "q")
    overlay = MemoryStateStore(base=base)
    overlay.replace("p", 3, 20, [(b"b", "new")], b"new snap")
    assert dump(overlay, "p") == (Checkpoint(20, 3), [(b"b", "new")], b"new snap")
    assert overlay.get("p", b"a") is None
    commit(overlay, "q", {b"x": None}, position=4)
    assert overlay.items("q") == []
    assert (dump(base, "p"), dump(base, "q")) == before
