"""The `memory` projection: sealed embeddings in per-user FAISS indexes, forgetting,
shredded keys, the flat -> IVF switch, and snapshots that equal a rebuild."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from events import LmdbEventLog, MemoryForgotten, MemoryKeyDestroyed, NewEvent
from projections import (
    EmbeddingModelMismatch,
    IndexOptions,
    KeyStore,
    MemoryKeyStore,
    MemoryProjection,
    MemoryStateStore,
    ProjectionRunner,
    StateStore,
    Trainer,
    seal_memory,
    verify,
)
from projections._state_store import pack, unpack
from tests.projections.helpers import STATE_KINDS, EventWriter, open_log, state_of_kind

from .conftest import hash_vector

TEXTS = [
    "the cat sat on the mat",
    "stock prices fell sharply today",
    "my sister lives in lisbon",
    "the quarterly report is due on friday",
    "buy milk and eggs on the way home",
]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LmdbEventLog]:
    opened = open_log(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def writer(log: LmdbEventLog) -> EventWriter:
    return EventWriter(log)


@pytest.fixture
def keys() -> KeyStore:
    return MemoryKeyStore()


def remember(writer: EventWriter, keys: KeyStore, user: str, text: str, mid: str = "") -> int:
    key = keys.current_or_create(user)
    event = seal_memory(key, mid or uuid.uuid4().hex, text, hash_vector(text)[0], "test-hash")
    return writer.add(f"memory-{user}", event)


def caught_up(
    log: LmdbEventLog,
    keys: KeyStore,
    options: IndexOptions | None = None,
    trainer: Trainer | None = None,
    state: StateStore | None = None,
    snapshot_every: int = 1 << 40,
) -> tuple[MemoryProjection, ProjectionRunner]:
    projection = MemoryProjection(keys, options, trainer or Trainer(inline=True))
    runner = ProjectionRunner(
        log, state or MemoryStateStore(), [projection], snapshot_every=snapshot_every
    )
    runner.prepare()
    runner.catch_up()
    return projection, runner


def ranked(projection: MemoryProjection, user: str, query: str, k: int = 5) -> list[str]:
    return [hit.memory_id for hit in projection.search(user, hash_vector(query)[0], k)]


def test_memories_are_found_by_the_words_they_share(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    for i, text in enumerate(TEXTS):
        remember(writer, keys, "alice", text, f"m{i}")
    projection, _ = caught_up(log, keys)
    assert ranked(projection, "alice", "where does my sister live", 2)[0] == "m2"
    assert ranked(projection, "alice", "prices of stock", 1) == ["m1"]
    hits = projection.search("alice", hash_vector(TEXTS[0])[0], 1)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert projection.position_of("alice", "m0") == hits[0].position


def test_users_do_not_see_each_others_memories(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    remember(writer, keys, "alice", TEXTS[0], "a")
    remember(writer, keys, "bob", TEXTS[0], "b")
    projection, _ = caught_up(log, keys)
    assert ranked(projection, "alice", TEXTS[0]) == ["a"]
    assert ranked(projection, "bob", TEXTS[0]) == ["b"]
    assert ranked(projection, "carol", TEXTS[0]) == []


def test_forget_removes_one_memory_from_search(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    for i, text in enumerate(TEXTS):
        remember(writer, keys, "alice", text, f"m{i}")
    writer.add("memory-alice", MemoryForgotten("alice", "m1"))
    projection, _ = caught_up(log, keys)
    assert "m1" not in ranked(projection, "alice", TEXTS[1])
    assert projection.count("alice") == len(TEXTS) - 1
    assert projection.position_of("alice", "m1") is None


def test_memories_sealed_with_a_destroyed_key_are_skipped(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    for text in TEXTS:
        remember(writer, keys, "alice", text)
    remember(writer, keys, "bob", TEXTS[0], "b")
    keys.destroy("alice")
    projection, _ = caught_up(log, keys)
    assert projection.count("alice") == 0 and ranked(projection, "alice", TEXTS[0]) == []
    assert ranked(projection, "bob", TEXTS[0]) == ["b"]
    assert projection.statistics().skipped == len(TEXTS)


def test_key_destroyed_event_drops_the_users_index(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    remember(writer, keys, "alice", TEXTS[0])
    key = keys.current("alice")
    assert key is not None
    projection, runner = caught_up(log, keys)
    assert projection.count("alice") == 1
    writer.add("memory-alice", MemoryKeyDestroyed("alice", key.key_id))
    runner.catch_up()
    assert projection.count("alice") == 0


def test_a_new_key_replaces_what_the_old_one_sealed(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    remember(writer, keys, "alice", TEXTS[0], "old")
    projection, runner = caught_up(log, keys)
    keys.destroy("alice")  # the MemoryKeyDestroyed append never happened (a crash)
    remember(writer, keys, "alice", TEXTS[1], "new")
    runner.catch_up()
    assert ranked(projection, "alice", TEXTS[0]) == ["new"]
    rebuilt, _ = caught_up(log, keys)
    assert projection.comparable_state(projection.snapshot()) == rebuilt.comparable_state(
        rebuilt.snapshot()
    )


def test_a_schema_1_plaintext_memory_is_upcast_and_indexed(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    data = {
        "user": "alice",
        "memory_id": "legacy",
        "content": TEXTS[2],
        "embedding": hash_vector(TEXTS[2])[0].astype("<f4").tobytes(),
        "model": "test-hash",
    }
    writer.add("memory-alice", NewEvent(type="MemoryAdded", data=data, schema=1))  # type: ignore[arg-type]
    record = log.read(0, 1)[0]
    assert (
        record.schema == 2 and record.data["key_id"] == "" and record.data["sealed_content"] == b""
    )
    projection, _ = caught_up(log, keys)
    assert ranked(projection, "alice", TEXTS[2]) == ["legacy"]


def test_a_query_from_another_model_is_refused(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    remember(writer, keys, "alice", TEXTS[0])
    projection, _ = caught_up(log, keys)
    with pytest.raises(EmbeddingModelMismatch, match="embedded with 'test-hash'"):
        projection.search("alice", hash_vector(TEXTS[0])[0], 3, model="other-model")


def many(writer: EventWriter, keys: KeyStore, count: int, user: str = "alice") -> None:
    for i in range(count):
        remember(
            writer, keys, user, f"{TEXTS[i % len(TEXTS)]} number {i} w{i * 7919 % 1009}", f"m{i}"
        )


def test_the_index_switches_from_flat_to_ivf_past_the_threshold(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    many(writer, keys, 49)
    options = IndexOptions(ivf_threshold=50, nprobe=4)
    projection, runner = caught_up(log, keys, options)
    assert projection.statistics().ivf_users == 0
    remember(writer, keys, "alice", "one more memory", "m49")
    runner.catch_up()
    stats = projection.statistics()
    assert (stats.ivf_users, stats.trainings, stats.memories) == (1, 1, 50)
    assert ranked(projection, "alice", "one more memory", 1) == ["m49"]
    many(writer, keys, 200)  # replaces m0..m49 and grows to 200: 4x, trained again
    runner.catch_up()
    assert projection.statistics().trainings == 2
    assert ranked(projection, "alice", f"{TEXTS[3]} number 123 w{123 * 7919 % 1009}", 1) == ["m123"]


class GatedTrainer(Trainer):
    """Trains on a thread, but only once `release` is set: a training in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def submit(self, job: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        def gated() -> Any:
            assert self.release.wait(10)
            return job()

        return super().submit(gated)


def test_searches_use_the_flat_index_while_ivf_trains(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    many(writer, keys, 60)
    trainer = GatedTrainer()
    try:
        projection, _ = caught_up(log, keys, IndexOptions(ivf_threshold=50), trainer)
        stats = projection.statistics()
        assert (stats.ivf_users, stats.training) == (0, 1)
        assert ranked(projection, "alice", f"{TEXTS[0]} number 55 w{55 * 7919 % 1009}", 1) == [
            "m55"
        ]
        trainer.release.set()
        projection.wait_for_training()
        stats = projection.statistics()
        assert (stats.ivf_users, stats.training, stats.memories) == (1, 0, 60)
        assert ranked(projection, "alice", f"{TEXTS[0]} number 55 w{55 * 7919 % 1009}", 1) == [
            "m55"
        ]
    finally:
        trainer.release.set()
        trainer.close()


def live_history(writer: EventWriter, keys: KeyStore) -> None:
    """Two users, IVF for one, forgets, a shredded third user and a re-keyed fourth."""
    many(writer, keys, 130)
    for i in range(0, 130, 9):
        writer.add("memory-alice", MemoryForgotten("alice", f"m{i}"))
    many(writer, keys, 20, user="bob")
    many(writer, keys, 5, user="carol")
    key = keys.current("carol")
    assert key is not None
    keys.destroy("carol")
    writer.add("memory-carol", MemoryKeyDestroyed("carol", key.key_id))
    many(writer, keys, 3, user="carol")


def factories(keys: KeyStore, options: IndexOptions) -> dict[str, Callable[[], MemoryProjection]]:
    return {"memory": lambda: MemoryProjection(keys, options, Trainer(inline=True))}


@pytest.fixture(params=STATE_KINDS)
def snapshot_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """Where the index snapshots go: every state store, PostgreSQL's included (a node
    of several keeps its FAISS snapshots there)."""
    store = state_of_kind(request.param, tmp_path, lambda: request.getfixturevalue("postgres_url"))
    yield store
    store.close()


def test_snapshot_restore_equals_a_rebuild(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore, snapshot_state: StateStore
) -> None:
    options = IndexOptions(ivf_threshold=50)
    state = snapshot_state
    live_history(writer, keys)
    live, runner = caught_up(log, keys, options, state=state, snapshot_every=37)
    runner.flush_snapshots()
    assert verify(log, state, factories(keys, options)) == []
    restored = MemoryProjection(keys, options, Trainer(inline=True))
    restored.restore(state.snapshot("memory"))
    for user, query in [("alice", TEXTS[1]), ("bob", TEXTS[2]), ("carol", TEXTS[0])]:
        assert ranked(restored, user, query, 10) == ranked(live, user, query, 10)
    assert restored.statistics().memories == live.statistics().memories == 130 - 15 + 20 + 3
    assert restored.statistics().ivf_users == 1


def test_verify_finds_a_snapshot_that_differs_from_a_rebuild(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    options = IndexOptions(ivf_threshold=50)
    state = MemoryStateStore()
    live_history(writer, keys)
    live, runner = caught_up(log, keys, options, state=state)
    live.restore_state(None)  # the live state lost every memory
    runner.flush_snapshots()
    (difference,) = verify(log, state, factories(keys, options))
    assert (difference.projection, difference.key) == ("memory", "<snapshot>")


def test_a_snapshot_holds_no_plaintext_and_drops_shredded_users_on_restore(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    remember(writer, keys, "alice", TEXTS[0], "a")
    remember(writer, keys, "bob", TEXTS[1], "b")
    projection, _ = caught_up(log, keys)
    blob = projection.snapshot()
    for text in TEXTS[:2]:
        assert hash_vector(text)[0].astype("<f4").tobytes() not in blob
    assert b'"a"' not in blob and b"memory_ids" not in blob
    keys.destroy("alice")
    restored = MemoryProjection(keys, None, Trainer(inline=True))
    restored.restore(blob)
    assert (restored.count("alice"), restored.count("bob")) == (0, 1)
    sections = unpack(blob)["users"]
    assert set(sections) == {"alice", "bob"}
    assert set(unpack(pack(restored.snapshot_state()))["users"]) == {"bob"}


def test_a_pending_training_is_planned_again_after_a_restore(
    log: LmdbEventLog, writer: EventWriter, keys: KeyStore
) -> None:
    many(writer, keys, 60)
    trainer = GatedTrainer()
    try:
        projection, _ = caught_up(log, keys, IndexOptions(ivf_threshold=50), trainer)
        blob = projection.snapshot()
    finally:
        trainer.release.set()
        trainer.close()
    restored = MemoryProjection(keys, IndexOptions(ivf_threshold=50), Trainer(inline=True))
    restored.restore(blob)
    stats = restored.statistics()
    assert (stats.ivf_users, stats.training, stats.memories) == (1, 0, 60)
    assert restored.comparable_state(restored.snapshot()) == projection.comparable_state(blob)
    assert np.isfinite(restored.search("alice", hash_vector(TEXTS[0])[0], 3)[0].score)
