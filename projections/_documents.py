"""The `documents` projection: one FAISS index per collection over its chunks' embeddings.

Events (stream `docs-<collection>`): `DocumentIndexed` replaces everything a file had
in its collection by its new chunks (a changed file loses its old vectors);
`DocumentRemoved` removes the file's vectors. A collection holds the vectors of one
embedding model: an event from another model (or of another length) is skipped and
counted, since its vectors cannot be compared with the others. A collection whose last
file is removed is dropped, so it may start again with another model.

The embeddings travel in the events, so a rebuild needs no model. The projection keeps
vectors and per-file metadata only, never text: a chunk's FAISS id is its record's log
position shifted left by `CHUNK_BITS`, plus its index in the record's chunk list, and
`read_passages` reads the hit's text back from the log.

Snapshots hold each collection's index (`VectorIndex.dump`) with its file table;
`comparable_state` reduces each index to its canonical contents for `replay --verify`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from events import EventLog, RecordedEvent
from projections._base import SnapshottingProjection
from projections._state_store import unpack
from projections._vector_index import IndexOptions, Trainer, VectorIndex
from projections.errors import CollectionModelMismatch

# A file's chunks get ids below 2**20 inside its record: (position << 20) | chunk.
# One event holds far fewer chunks (store.max_event_bytes), and positions stay below
# 2**43, so every id fits an int64.
CHUNK_BITS = 20
CHUNK_MASK = (1 << CHUNK_BITS) - 1
MAX_POSITION = 1 << (63 - CHUNK_BITS)


@dataclass(frozen=True, slots=True)
class DocumentHit:
    collection: str
    path: str
    position: int  # of the `DocumentIndexed` record in the log
    chunk: int  # index in the record's chunk list
    score: float  # cosine similarity


@dataclass(frozen=True, slots=True)
class DocumentPassage:
    """A hit with its chunk's text and offset, read back from the log."""

    collection: str
    path: str
    offset: int
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class IndexedFile:
    collection: str
    path: str
    sha256: str
    chunks: int  # chunks searchable (those with a usable embedding)
    size: int
    position: int


@dataclass(frozen=True, slots=True)
class DocumentsStatistics:
    collections: int
    files: int
    chunks: int
    ivf_collections: int
    training: int
    trainings: int
    skipped: int  # DocumentIndexed events not applied: another model or vector length
    skipped_chunks: int  # chunks without a usable embedding


@dataclass(slots=True)
class _File:
    sha256: str
    position: int
    chunks: int  # searchable chunks
    size: int
    span: int  # chunks in the record, searchable or not: ids below position << 20 | span

    def dump(self) -> list[Any]:
        return [self.sha256, self.position, self.chunks, self.size, self.span]

    def ids(self) -> NDArray[np.int64]:
        return chunk_ids(self.position, np.arange(self.span, dtype=np.int64))


class _Collection:
    """One collection's index, its files, and which record holds each file's chunks."""

    __slots__ = ("by_position", "files", "index", "model")

    def __init__(self, model: str, index: VectorIndex | None = None) -> None:
        self.model = model
        self.index = index
        self.files: dict[str, _File] = {}
        self.by_position: dict[int, str] = {}

    def accepts(self, model: str, dim: int | None) -> bool:
        if model != self.model:
            return False
        return dim is None or self.index is None or self.index.dim == dim

    def dump(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "index": None if self.index is None else self.index.dump(),
            "files": {path: file.dump() for path, file in self.files.items()},
        }


def chunk_ids(position: int, chunks: NDArray[np.int64]) -> NDArray[np.int64]:
    """The FAISS ids of a record's chunks (see module docstring)."""
    if not 0 < position < MAX_POSITION:
        raise ValueError(f"log position {position} does not fit a chunk id")
    ids: NDArray[np.int64] = (np.int64(position) << np.int64(CHUNK_BITS)) | chunks
    return ids


def chunk_vectors(chunks: Sequence[Any]) -> tuple[NDArray[np.int64], NDArray[np.float32], int]:
    """(chunk indexes, unit rows, chunks dropped) of an event's chunk list.

    A chunk is dropped when its embedding is missing, not float32 bytes, zero, not
    finite, or of another length than the event's first usable one.
    """
    kept: list[int] = []
    rows: list[NDArray[np.float32]] = []
    for i, chunk in enumerate(chunks):
        raw = chunk.get("embedding") if isinstance(chunk, dict) else None
        if not isinstance(raw, bytes) or not raw or len(raw) % 4:
            continue
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0 or (rows and len(vector) != len(rows[0])):
            continue
        kept.append(i)
        rows.append(vector / np.float32(norm))
    matrix = np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    return np.asarray(kept, dtype=np.int64), matrix, len(chunks) - len(kept)


class DocumentsProjection(SnapshottingProjection):
    name = "documents"
    version = 1

    def __init__(self, options: IndexOptions | None = None, trainer: Trainer | None = None) -> None:
        super().__init__()
        self.options = options or IndexOptions()
        self.trainer = trainer or Trainer()
        self._collections: dict[str, _Collection] = {}
        self._skipped = 0
        self._skipped_chunks = 0

    def close(self) -> None:
        """Stop the training thread (a pending training is planned again on restore)."""
        self.trainer.close()

    # --- snapshots --------------------------------------------------------------------

    def snapshot_state(self) -> Any:
        with self.lock:
            return {
                "collections": {name: c.dump() for name, c in self._collections.items()},
                "skipped": [self._skipped, self._skipped_chunks],
            }

    def restore_state(self, state: Any) -> None:
        with self.lock:
            self._collections = {}
            state = state or {}
            self._skipped, self._skipped_chunks = state.get("skipped") or (0, 0)
            for name, data in (state.get("collections") or {}).items():
                self._collections[name] = self._load_collection(data, plan=True)

    def _load_collection(self, data: dict[str, Any], *, plan: bool) -> _Collection:
        index = None
        if data["index"] is not None:
            index = VectorIndex.load(data["index"], self.options, self.trainer, plan=plan)
        collection = _Collection(data["model"], index)
        for path, fields in data["files"].items():
            collection.files[path] = file = _File(*fields)
            collection.by_position[file.position] = path
        return collection

    def comparable_state(self, blob: bytes) -> Any:
        """Each collection's model, sorted file table and canonical index contents."""
        state = unpack(blob)
        collections: dict[str, Any] = {}
        for name, data in sorted(state["collections"].items()):
            collection = self._load_collection(data, plan=False)
            index = {} if collection.index is None else collection.index.canonical()
            collections[name] = {
                "model": collection.model,
                "files": {p: f.dump() for p, f in sorted(collection.files.items())},
                **index,
            }
        return {"collections": collections, "skipped": state["skipped"]}

    # --- events -----------------------------------------------------------------------

    def _on_DocumentIndexed(self, record: RecordedEvent) -> None:
        data = record.data
        name, path, model = data["collection"], data["path"], data.get("model", "")
        kept, vectors, dropped = chunk_vectors(data["chunks"])
        dim = vectors.shape[1] if len(kept) else None
        collection = self._collections.get(name)
        if collection is not None and not collection.accepts(model, dim):
            self._skipped += 1
            return
        if collection is None:
            collection = self._collections[name] = _Collection(model)
        self._remove_file(collection, path)
        if dim is not None:
            if collection.index is None:
                collection.index = VectorIndex(dim, self.options, self.trainer)
            collection.index.add(chunk_ids(record.position, kept), vectors)
        size, span = int(data.get("size", 0)), len(data["chunks"])
        collection.files[path] = _File(data["sha256"], record.position, len(kept), size, span)
        collection.by_position[record.position] = path
        self._skipped_chunks += dropped

    def _on_DocumentRemoved(self, record: RecordedEvent) -> None:
        name = record.data["collection"]
        collection = self._collections.get(name)
        if collection is None:
            return
        self._remove_file(collection, record.data["path"])
        if not collection.files:
            del self._collections[name]

    @staticmethod
    def _remove_file(collection: _Collection, path: str) -> None:
        file = collection.files.pop(path, None)
        if file is None:
            return
        del collection.by_position[file.position]
        if collection.index is not None and file.chunks:
            collection.index.remove(int(i) for i in file.ids())

    # --- reads (any thread) -----------------------------------------------------------

    def search(
        self,
        query: NDArray[np.float32],
        k: int,
        collection: str | None = None,
        model: str | None = None,
    ) -> list[DocumentHit]:
        """The `k` chunks closest to `query` in one collection, or in every collection
        embedded by `model` (blocking: call from a thread)."""
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        with self.lock:
            targets = self._targets(collection, model, query.shape[1])
            hits = [hit for name, c in targets for hit in self._search_one(name, c, query, k)]
        hits.sort(key=lambda h: (-h.score, h.collection, h.path, h.chunk))
        return hits[:k]

    @staticmethod
    def _search_one(
        name: str, target: _Collection, query: NDArray[np.float32], k: int
    ) -> list[DocumentHit]:
        assert target.index is not None
        scores, ids = target.index.search(query, min(k, len(target.index)))
        hits = []
        for score, key in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            position, chunk = key >> CHUNK_BITS, key & CHUNK_MASK
            path = target.by_position.get(position) if key >= 0 else None
            if path is not None:
                hits.append(DocumentHit(name, path, position, chunk, score))
        return hits

    def _targets(
        self, collection: str | None, model: str | None, dim: int
    ) -> list[tuple[str, _Collection]]:
        """The collections a search looks in; a named one of another model is an error."""
        if collection is not None:
            target = self._collections.get(collection)
            if target is None or target.index is None or not len(target.index):
                return []
            if (model is not None and model != target.model) or target.index.dim != dim:
                raise CollectionModelMismatch(collection, target.model, model or f"{dim}-d")
            return [(collection, target)]
        return [
            (name, c)
            for name, c in sorted(self._collections.items())
            if c.index is not None and len(c.index) and c.index.dim == dim
            if model is None or c.model == model
        ]

    def sha256_of(self, collection: str, path: str) -> str | None:
        """The sha256 the file was last indexed with (None: not indexed there)."""
        with self.lock:
            target = self._collections.get(collection)
            file = None if target is None else target.files.get(path)
            return None if file is None else file.sha256

    def model_of(self, collection: str) -> str | None:
        """The embedding model of a collection (None: no such collection)."""
        with self.lock:
            target = self._collections.get(collection)
            return None if target is None else target.model

    def files(self, collection: str | None = None) -> list[IndexedFile]:
        """Every indexed file, of one collection or all, by collection then path."""
        with self.lock:
            return [
                IndexedFile(name, path, f.sha256, f.chunks, f.size, f.position)
                for name, c in sorted(self._collections.items())
                if collection is None or name == collection
                for path, f in sorted(c.files.items())
            ]

    def collections(self) -> list[str]:
        with self.lock:
            return sorted(self._collections)

    def wait_for_training(self) -> None:
        """Block until every pending IVF training is swapped in (tests, benchmarks)."""
        with self.lock:
            for collection in self._collections.values():
                if collection.index is not None:
                    collection.index.wait()

    def statistics(self) -> DocumentsStatistics:
        with self.lock:
            indexes = [c.index for c in self._collections.values() if c.index is not None]
            return DocumentsStatistics(
                collections=len(self._collections),
                files=sum(len(c.files) for c in self._collections.values()),
                chunks=sum(len(i) for i in indexes),
                ivf_collections=sum(i.kind == "ivf" for i in indexes),
                training=sum(i.training for i in indexes),
                trainings=sum(i.trainings for i in indexes),
                skipped=self._skipped,
                skipped_chunks=self._skipped_chunks,
            )


def read_passages(log: EventLog, hits: Sequence[DocumentHit]) -> list[DocumentPassage | None]:
    """Each hit's chunk text and offset from its log record (blocking: one thread call).

    None for a hit whose record is not the `DocumentIndexed` it names (it cannot be,
    unless the log is not the one the projection was built from).
    """
    records: dict[int, RecordedEvent | None] = {}
    for position in sorted({hit.position for hit in hits}):
        batch = log.read(position - 1, 1)
        records[position] = batch[0] if batch and batch[0].position == position else None
    return [_passage(hit, records[hit.position]) for hit in hits]


def _passage(hit: DocumentHit, record: RecordedEvent | None) -> DocumentPassage | None:
    if record is None or record.type != "DocumentIndexed":
        return None
    data = record.data
    if (data.get("collection"), data.get("path")) != (hit.collection, hit.path):
        return None
    chunks = data.get("chunks") or []
    if hit.chunk >= len(chunks):
        return None
    chunk = chunks[hit.chunk]
    return DocumentPassage(
        hit.collection, hit.path, int(chunk.get("offset", 0)), str(chunk["text"]), hit.score
    )
