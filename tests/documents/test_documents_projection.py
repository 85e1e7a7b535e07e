"""The `documents` projection: chunks of each file in a per-collection FAISS index,
replaced when the file changes and removed with it, flat -> IVF, snapshots that equal a
rebuild from the log (which needs no model: the embeddings are in the events)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from events import DocumentIndexed, DocumentRemoved, LmdbEventLog
from projections import (
    CollectionModelMismatch,
    DocumentsProjection,
    IndexOptions,
    LmdbStateStore,
    MemoryStateStore,
    ProjectionRunner,
    Trainer,
    build_projections,
    projection_factories,
    read_passages,
    verify,
)
from tests.projections.helpers import EventWriter, open_log

from .conftest import hash_vector

MODEL = "test-hash"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LmdbEventLog]:
    opened = open_log(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def writer(log: LmdbEventLog) -> EventWriter:
    return EventWriter(log)


def indexed(
    collection: str, path: str, texts: list[str], sha256: str = "", model: str = MODEL
) -> DocumentIndexed:
    offsets = np.cumsum([0] + [len(t) + 2 for t in texts[:-1]]).tolist()
    chunks = [
        {"text": t, "offset": o, "embedding": hash_vector(t)[0].astype("<f4").tobytes()}
        for t, o in zip(texts, offsets, strict=True)
    ]
    digest = sha256 or f"sha-{path}-{len(texts)}"
    return DocumentIndexed(collection, path, digest, chunks, model=model, size=sum(map(len, texts)))


def index_file(writer: EventWriter, collection: str, path: str, *texts: str, **kw: str) -> int:
    return writer.add(f"docs-{collection}", indexed(collection, path, list(texts), **kw))


def caught_up(
    log: LmdbEventLog,
    options: IndexOptions | None = None,
    state: MemoryStateStore | LmdbStateStore | None = None,
    snapshot_every: int = 1 << 40,
) -> tuple[DocumentsProjection, ProjectionRunner]:
    projection = DocumentsProjection(options, Trainer(inline=True))
    runner = ProjectionRunner(
        log, state or MemoryStateStore(), [projection], snapshot_every=snapshot_every
    )
    runner.prepare()
    runner.catch_up()
    return projection, runner


def top(
    projection: DocumentsProjection, query: str, k: int = 3, collection: str | None = None
) -> list[tuple[str, int]]:
    """(path, chunk) of the best hits."""
    return [(h.path, h.chunk) for h in projection.search(hash_vector(query)[0], k, collection)]


def test_chunks_are_found_by_the_words_they_share_and_read_back_from_the_log(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    position = index_file(
        writer, "default", "docs/report.md", "revenue grew in europe", "costs stayed flat"
    )
    index_file(writer, "default", "docs/recipe.txt", "pancakes need flour and milk")
    projection, _ = caught_up(log)
    assert top(projection, "how much did revenue grow in europe", 1) == [("docs/report.md", 0)]
    assert top(projection, "flour milk pancakes", 1) == [("docs/recipe.txt", 0)]
    hits = projection.search(hash_vector("costs stayed flat")[0], 1)
    assert (hits[0].position, hits[0].score) == (position, pytest.approx(1.0, abs=1e-5))
    (passage,) = read_passages(log, hits)
    assert passage is not None
    assert (passage.path, passage.offset, passage.text) == (
        "docs/report.md",
        len("revenue grew in europe") + 2,
        "costs stayed flat",
    )


def test_reindexing_a_changed_file_replaces_its_old_chunks(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    index_file(writer, "default", "a.md", "old words about tigers", "more on tigers", sha256="v1")
    index_file(writer, "default", "b.md", "lions in the savanna", sha256="b1")
    index_file(writer, "default", "a.md", "new words about zebras", sha256="v2")
    projection, _ = caught_up(log)
    hits = projection.search(hash_vector("old words about tigers")[0], 5)
    assert sorted((h.path, h.chunk) for h in hits) == [("a.md", 0), ("b.md", 0)]
    assert max(h.score for h in hits) < 0.9  # the old chunk would score 1.0
    assert [p.text for p in read_passages(log, hits) if p and p.path == "a.md"] == [
        "new words about zebras"
    ]
    assert projection.sha256_of("default", "a.md") == "v2"
    assert [(f.path, f.chunks) for f in projection.files()] == [("a.md", 1), ("b.md", 1)]
    assert projection.statistics().chunks == 2


def test_a_removed_file_is_no_longer_found_and_an_empty_collection_is_dropped(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    index_file(writer, "default", "a.md", "alpha beta")
    index_file(writer, "default", "b.md", "gamma delta")
    index_file(writer, "other", "c.md", "epsilon")
    writer.add("docs-default", DocumentRemoved("default", "a.md"))
    projection, runner = caught_up(log)
    assert top(projection, "alpha beta", 3, "default") == [("b.md", 0)]
    assert projection.sha256_of("default", "a.md") is None
    writer.add("docs-other", DocumentRemoved("other", "c.md"))
    writer.add("docs-other", DocumentRemoved("other", "never-indexed.md"))
    runner.catch_up()
    assert projection.collections() == ["default"]
    assert projection.model_of("other") is None


def test_collections_are_searched_apart_or_together(log: LmdbEventLog, writer: EventWriter) -> None:
    index_file(writer, "work", "w.md", "budget forecast for the year")
    index_file(writer, "home", "h.md", "budget for the holidays")
    projection, _ = caught_up(log)
    assert top(projection, "budget", 5, "home") == [("h.md", 0)]
    assert sorted(top(projection, "budget", 5)) == [("h.md", 0), ("w.md", 0)]
    assert top(projection, "budget", 5, "nowhere") == []


def test_another_models_vectors_are_skipped_and_a_query_from_it_refused(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    index_file(writer, "default", "a.md", "alpha")
    index_file(writer, "default", "b.md", "beta", model="other-model")
    projection, _ = caught_up(log)
    assert [f.path for f in projection.files()] == ["a.md"]
    assert projection.statistics().skipped == 1
    with pytest.raises(CollectionModelMismatch, match="embedded with 'test-hash'"):
        projection.search(hash_vector("alpha")[0], 3, "default", model="other-model")
    assert projection.search(hash_vector("alpha")[0], 3, None, model="other-model") == []


def test_chunks_without_a_usable_embedding_are_left_out(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    event = indexed("default", "a.md", ["kept words", "zero vector", "short"])
    event.chunks[1]["embedding"] = np.zeros(256, dtype="<f4").tobytes()
    event.chunks[2]["embedding"] = b"\x00\x01\x02"
    writer.add("docs-default", event)
    projection, _ = caught_up(log)
    ((file),) = projection.files()
    assert (file.chunks, projection.statistics().skipped_chunks) == (1, 2)
    assert top(projection, "kept words") == [("a.md", 0)]


def many(writer: EventWriter, files: int, chunks: int = 3, collection: str = "default") -> None:
    for i in range(files):
        texts = [f"file {i} part {j} w{(i * 7919 + j) % 1009} z{i % 13}" for j in range(chunks)]
        index_file(writer, collection, f"f{i:03}.md", *texts, sha256=f"s{i}")


def test_the_index_switches_to_ivf_past_the_threshold_and_keeps_finding(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    options = IndexOptions(ivf_threshold=50, nprobe=4)
    many(writer, 16)  # 48 chunks: flat
    projection, runner = caught_up(log, options)
    assert projection.statistics().ivf_collections == 0
    many(writer, 20)  # 16 files replaced, 4 new: 60 chunks
    runner.catch_up()
    stats = projection.statistics()
    assert (stats.ivf_collections, stats.trainings, stats.chunks) == (1, 1, 60)
    assert top(projection, f"file 17 part 2 w{(17 * 7919 + 2) % 1009} z{17 % 13}", 1) == [
        ("f017.md", 2)
    ]
    for i in range(20):
        writer.add("docs-default", DocumentRemoved("default", f"f{i:03}.md"))
    runner.catch_up()
    assert projection.statistics().chunks == 0 and projection.collections() == []


def factories(options: IndexOptions) -> dict[str, Callable[[], DocumentsProjection]]:
    return {"documents": lambda: DocumentsProjection(options, Trainer(inline=True))}


def history(writer: EventWriter) -> None:
    """IVF in one collection, replacements, removals, a flat second collection."""
    many(writer, 30)
    many(writer, 10, chunks=2)  # replaces f000..f009 with fewer chunks
    for i in range(0, 30, 7):
        writer.add("docs-default", DocumentRemoved("default", f"f{i:03}.md"))
    many(writer, 4, collection="small")


def test_a_snapshot_equals_a_rebuild_from_the_log(log: LmdbEventLog, writer: EventWriter) -> None:
    options = IndexOptions(ivf_threshold=50)
    state = MemoryStateStore()
    history(writer)
    live, runner = caught_up(log, options, state=state, snapshot_every=13)
    runner.flush_snapshots()
    assert live.statistics().ivf_collections == 1
    assert verify(log, state, factories(options)) == []
    restored = DocumentsProjection(options, Trainer(inline=True))
    restored.restore(state.snapshot("documents"))
    assert restored.files() == live.files()
    for query in ("file 11 part 1", "file 3 part 0 z3", "part 2"):
        assert top(restored, query, 10) == top(live, query, 10)


def test_verify_finds_a_snapshot_that_differs_from_a_rebuild(
    log: LmdbEventLog, writer: EventWriter
) -> None:
    options = IndexOptions(ivf_threshold=50)
    state = MemoryStateStore()
    history(writer)
    live, runner = caught_up(log, options, state=state)
    live.restore_state(None)  # the live state lost every document
    runner.flush_snapshots()
    (difference,) = verify(log, state, factories(options))
    assert (difference.projection, difference.key) == ("documents", "<snapshot>")


def test_a_restart_loads_the_snapshot_and_applies_only_the_tail(
    tmp_path: Path, log: LmdbEventLog, writer: EventWriter
) -> None:
    many(writer, 10)
    state = LmdbStateStore.open(tmp_path / "projections", sync=False)
    try:
        first, runner = caught_up(log, state=state, snapshot_every=1)
        runner.flush_snapshots()
        head = log.head()[0]
        index_file(writer, "default", "late.md", "a late arrival")
        writer.add("docs-default", DocumentRemoved("default", "f000.md"))
        projection = DocumentsProjection(None, Trainer(inline=True))
        restarted = ProjectionRunner(log, state, [projection], snapshot_every=1 << 40)
        restarted.prepare()
        assert restarted.position == head
        assert len(projection.files()) == 10  # from the snapshot, before any event
        assert restarted.catch_up() == 2  # the tail only
    finally:
        state.close()
    assert top(projection, "a late arrival", 1) == [("late.md", 0)]
    assert [f.path for f in projection.files()][-1] == "late.md"
    assert projection.sha256_of("default", "f000.md") is None
    assert first.statistics().files == 10


def test_documents_is_a_projection_the_server_runs_and_replay_knows() -> None:
    assert "documents" in projection_factories()
    names = [p.name for p in build_projections(["documents"])]
    assert names == ["documents"]
