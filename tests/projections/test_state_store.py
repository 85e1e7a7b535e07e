"""StateStore conformance over LMDB, memory and PostgreSQL, and the memory overlay over a base.

Every test taking `state` runs on every backend ("postgres": a fresh database of the
session's `pgserver` cluster, started only by these tests). The contract: values are
msgpack data read back as copies; a commit writes changes (None deletes), snapshot and
checkpoint of several projections atomically, and refuses a stale expected position
(`CheckpointMoved`) without writing anything; reset and replace swap a projection's
whole state at once; a pinned view (LMDB, PostgreSQL) keeps one snapshot while commits
go on. PostgreSQL adds what only a shared database has: nodes that never see each
other's rows, a second writer of one node racing the first, and DDL only when writable.

The interface is synchronous and local (the runner calls it from worker threads), so
these tests call it directly; the one test that blocks a commit on a row lock runs it in
a thread joined with a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from projections import (
    Checkpoint,
    CheckpointMoved,
    LmdbStateStore,
    MemoryStateStore,
    PostgresStateStore,
    ProjectionStoreFailed,
    ProjectionStoreMissing,
    ProjectionStoreUnreachable,
    StateCommit,
    StateStore,
)

from .helpers import TIMEOUT_S, open_state

NODE = "node-1"


@pytest.fixture(params=["lmdb", "postgres"])
def pinnable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """A backend whose `pinned()` is a real snapshot (memory's is the store itself)."""
    store: StateStore = (
        PostgresStateStore.open(request.getfixturevalue("postgres_url"), NODE)
        if request.param == "postgres"
        else open_state(tmp_path / "projections")
    )
    yield store
    store.close()


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


def test_items_prefix_bounds_hold_for_zero_and_ff_bytes(state: StateStore) -> None:
    keys = [
        b"",
        b"\x00",
        b"a",
        b"a\x00",
        b"a\xff",
        b"a\xff\x00",
        b"a\xff\xff",
        b"b",
        b"\xff",
        b"\xff\xff",
    ]
    commit(state, "p", {key: i for i, key in enumerate(keys)})
    assert [k for k, _ in state.items("p")] == sorted(keys)
    assert [k for k, _ in state.items("p", b"a")] == [
        b"a",
        b"a\x00",
        b"a\xff",
        b"a\xff\x00",
        b"a\xff\xff",
    ]
    assert [k for k, _ in state.items("p", b"a\xff")] == [b"a\xff", b"a\xff\x00", b"a\xff\xff"]
    assert [k for k, _ in state.items("p", b"\xff")] == [b"\xff", b"\xff\xff"]
    assert [k for k, _ in state.items("p", b"\x00")] == [b"\x00"]


def test_commit_of_many_keys_writes_and_deletes_them_all(state: StateStore) -> None:
    # A catch-up batch changes thousands of keys in one commit.
    keys = [b"k/%05d" % i for i in range(5000)]
    commit(state, "p", {key: {"i": i} for i, key in enumerate(keys)})
    commit(state, "p", {**{key: None for key in keys[::2]}, b"k/new": "new"})
    items = state.items("p", b"k/")
    assert len(items) == 2501
    assert (items[0], items[-2], items[-1]) == (
        (b"k/00001", {"i": 1}),
        (b"k/04999", {"i": 4999}),
        (b"k/new", "new"),
    )


def test_pinned_view_keeps_its_snapshot_while_commits_go_on(pinnable: StateStore) -> None:
    commit(pinnable, "p", {b"a": 1}, position=5, snapshot=b"snap 5")
    with pinnable.pinned() as view:
        commit(pinnable, "p", {b"a": 2, b"b": 3}, position=6, snapshot=b"snap 6")
        pinnable.replace("q", 1, 9, [(b"x", 1)])
        assert dump(view, "p") == (Checkpoint(5, 1), [(b"a", 1)], b"snap 5")
        assert view.get("p", b"b") is None
        assert dump(view, "q") == (Checkpoint(0, 0), [], None)
        with pytest.raises(ProjectionStoreMissing, match="read-only"):
            commit(view, "p", {b"a": 3})
        with pytest.raises(ProjectionStoreMissing, match="read-only"):
            view.replace("p", 1, 1, [])
    assert dump(pinnable, "p") == (Checkpoint(6, 1), [(b"a", 2), (b"b", 3)], b"snap 6")


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


# --- PostgreSQL specifics --------------------------------------------------------------


def tables(url: str) -> list[str | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT to_regclass('autoagent_projection_state')::text, "
            "to_regclass('autoagent_projection_meta')::text"
        ).fetchone()
    assert row is not None
    return list(row)


def rows(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every row of both tables, as stored: (node, projection, key) and (node,
    projection, position, version, snapshot)."""
    with psycopg.connect(url) as conn:
        state = conn.execute(
            "SELECT node_id, projection, key FROM autoagent_projection_state ORDER BY 1, 2, 3"
        ).fetchall()
        meta = conn.execute(
            "SELECT node_id, projection, position, version, snapshot "
            "FROM autoagent_projection_meta ORDER BY 1, 2"
        ).fetchall()
    return state, meta


def test_postgres_state_survives_reopen(postgres_url: str) -> None:
    store = PostgresStateStore.open(postgres_url, NODE)
    commit(store, "p", {b"k": {"v": 1}}, position=12, version=4, snapshot=b"snap")
    store.close()
    reopened = PostgresStateStore.open(postgres_url, NODE, readonly=True)
    try:
        assert dump(reopened, "p") == (Checkpoint(12, 4), [(b"k", {"v": 1})], b"snap")
    finally:
        reopened.close()
    again = PostgresStateStore.open(postgres_url, NODE)  # tables exist: kept, not recreated
    try:
        commit(again, "p", {b"j": 2}, expected=12, position=13, version=4)
        assert dump(again, "p") == (Checkpoint(13, 4), [(b"j", 2), (b"k", {"v": 1})], b"snap")
    finally:
        again.close()


def test_postgres_nodes_do_not_see_each_others_state_or_checkpoints(postgres_url: str) -> None:
    a = PostgresStateStore.open(postgres_url, "node-a")
    b = PostgresStateStore.open(postgres_url, "node-b")
    try:
        commit(a, "p", {b"k": "a", b"only-a": 1}, position=7, snapshot=b"snap a")
        assert dump(b, "p") == (Checkpoint(0, 0), [], None)
        assert b.get("p", b"k") is None
        commit(b, "p", {b"k": "b"}, expected=0, position=3)  # b's own checkpoint, not a's
        a_state = (Checkpoint(7, 1), [(b"k", "a"), (b"only-a", 1)], b"snap a")
        assert dump(a, "p") == a_state
        assert dump(b, "p") == (Checkpoint(3, 1), [(b"k", "b")], None)
        b.reset("p")
        assert dump(a, "p") == a_state
        a.replace("p", 2, 9, [(b"z", 0)])
        assert dump(b, "p") == (Checkpoint(0, 0), [], None)
        assert (a.get("p", b"z"), b.get("p", b"z")) == (0, None)
    finally:
        a.close()
        b.close()


def test_postgres_readonly_open_without_tables_raises_store_missing_and_creates_nothing(
    postgres_url: str,
) -> None:
    with pytest.raises(ProjectionStoreMissing, match="no projection state yet"):
        PostgresStateStore.open(postgres_url, NODE, readonly=True)
    assert tables(postgres_url) == [None, None]
    PostgresStateStore.open(postgres_url, NODE).close()  # a writable open creates them
    assert tables(postgres_url) == ["autoagent_projection_state", "autoagent_projection_meta"]


def test_postgres_stale_commit_of_a_second_writer_writes_nothing(postgres_url: str) -> None:
    # `autoagent replay` beside a running server: two stores of one node.
    server = PostgresStateStore.open(postgres_url, NODE)
    replay = PostgresStateStore.open(postgres_url, NODE)
    try:
        commit(server, "b", {b"k": "b0"}, position=4)
        before = rows(postgres_url)
        with pytest.raises(CheckpointMoved) as raised:
            replay.commit(
                [
                    StateCommit("a", 1, 0, 9, {b"k": "a1", b"j": "a2"}, b"snap"),
                    StateCommit("b", 1, 0, 9, {b"k": None, b"new": 1}, b"snap"),
                ]
            )
        assert (raised.value.name, raised.value.expected, raised.value.actual) == ("b", 0, 4)
        # Not even the meta row the commit created for "a" to lock it remains.
        assert (
            rows(postgres_url)
            == before
            == (
                [(NODE, "b", b"k")],
                [(NODE, "b", 4, 1, None)],
            )
        )
        assert dump(replay, "b") == (Checkpoint(4, 1), [(b"k", "b0")], None)
    finally:
        server.close()
        replay.close()


def blocked_on_a_lock(url: str, committer: threading.Thread) -> bool:
    """Poll until some session of the database waits on a lock (the commit in
    `committer`: True), with a deadline; False if the thread ended instead."""
    deadline = time.monotonic() + TIMEOUT_S
    with psycopg.connect(url, autocommit=True) as observer:
        while committer.is_alive():
            row = observer.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] > 0:
                return True
            assert time.monotonic() < deadline, "the commit never waited for the lock"
            time.sleep(0.005)
    return False


@pytest.mark.parametrize("existing", [False, True], ids=["first-commit", "existing-row"])
def test_postgres_commit_waiting_for_another_writer_checks_what_it_committed(
    postgres_url: str, existing: bool
) -> None:
    # Another writer of the node holds the checkpoint row (or has inserted it,
    # uncommitted); a commit arriving meanwhile must wait, then meet the position that
    # writer committed, not the one its own snapshot would show.
    store = PostgresStateStore.open(postgres_url, NODE)
    expected = 3 if existing else 0
    if existing:
        commit(store, "p", {b"k": "kept"}, position=3)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            store.commit([StateCommit("p", 1, expected, 4, {b"k": "lost"})])
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    committer = threading.Thread(target=attempt)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as other, other.transaction():
            other.execute(
                "INSERT INTO autoagent_projection_meta (node_id, projection, position, version) "
                "VALUES (%s, 'p', 5, 1) ON CONFLICT (node_id, projection) "
                "DO UPDATE SET position = 5",
                (NODE,),
            )
            committer.start()
            assert blocked_on_a_lock(postgres_url, committer)
        committer.join(TIMEOUT_S)
        assert not committer.is_alive()
        [raised] = outcome
        assert isinstance(raised, CheckpointMoved), raised
        assert (raised.expected, raised.actual) == (expected, 5)
        assert dump(store, "p") == (Checkpoint(5, 1), [(b"k", "kept")] if existing else [], None)
    finally:
        store.close()


def test_postgres_readonly_store_refuses_writes_and_a_closed_one_every_call(
    postgres_url: str,
) -> None:
    writable = PostgresStateStore.open(postgres_url, NODE)
    commit(writable, "p", {b"k": 1}, position=2)
    writable.close()
    readonly = PostgresStateStore.open(postgres_url, NODE, readonly=True)
    with pytest.raises(ProjectionStoreMissing, match="opened read-only"):
        commit(readonly, "p", {b"k": 2})
    with pytest.raises(ProjectionStoreMissing, match="opened read-only"):
        readonly.reset("p")
    assert dump(readonly, "p") == (Checkpoint(2, 1), [(b"k", 1)], None)
    readonly.close()
    readonly.close()  # closing twice is harmless
    with pytest.raises(ProjectionStoreFailed, match="is closed"):
        readonly.checkpoint("p")
    with pytest.raises(ProjectionStoreFailed, match="is closed"):
        writable.commit([])


def test_postgres_unreachable_server_raises_without_the_password() -> None:
    with pytest.raises(ProjectionStoreUnreachable) as raised:
        PostgresStateStore.open(
            "postgresql://autoagent:s3cret@127.0.0.1:1/state", NODE, connect_timeout_s=1
        )
    assert raised.value.target == "postgresql host=127.0.0.1 port=1 dbname=state user=autoagent"
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("node_id", ["", "a\x00b"], ids=["empty", "nul"])
def test_postgres_node_id_must_be_a_non_empty_string(node_id: str) -> None:
    with pytest.raises(ValueError) as raised:
        PostgresStateStore.open("postgresql:///unused", node_id)
    assert str(raised.value) == "node_id must be a non-empty string without NUL characters"


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
