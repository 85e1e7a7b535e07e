"""Index a folder (or one file) of the workspace into a documents collection.

One pass: walk the folder (no symlinks followed, hidden names ignored), read each
supported file and hash it; a file whose sha256 equals the one the `documents`
projection holds is unchanged and costs nothing more. Changed files are extracted and
chunked (`_document_text.py`, in `trio.to_thread`), their chunks gathered across files and
embedded in large batches (one `Embedder.embed` call per `embed_batch` chunks, which
the embedder sends as few requests as its batch size allows), then appended as one
`DocumentIndexed` per file. Files indexed before under the folder and now gone get a
`DocumentRemoved`. Unsupported types are skipped with a note, unreadable files listed
with the reason; neither stops the rest.

A collection holds one embedding model's vectors: indexing into a collection embedded
by another model is refused before anything is embedded.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from agents.embeddings import Embedder, EmbeddingError
from agents.errors import (
    CollectionModelConflict,
    DocumentUnreadable,
    FileTooLarge,
    InvalidCollection,
    NothingToIndex,
    ToolError,
    TooManyDocuments,
    UnsupportedDocument,
)
from agents.tools._document_text import (
    SUPPORTED_SUFFIXES,
    TextChunk,
    chunk_text,
    extract_text,
    is_supported,
)
from agents.tools._workspace import Workspace, read_bytes
from events import DocumentIndexed, DocumentRemoved, Event, EventStore, EventTooLarge
from projections import DocumentsProjection

DEFAULT_COLLECTION = "default"
DEFAULT_CHUNK_CHARS = 1200
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
DEFAULT_EMBED_BATCH = 512
# Cosine similarity below which a passage is not relevant to a query. With the default
# local model (all-MiniLM-L6-v2) a passage on the query's subject scores 0.4 and more,
# one about something else within about 0.15 of zero.
DEFAULT_MIN_SCORE = 0.2
MAX_FILES = 10_000
MAX_LISTED = 100
STREAM_PREFIX = "docs-"
_COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_collection(name: object) -> str:
    if not isinstance(name, str) or not _COLLECTION.fullmatch(name):
        raise InvalidCollection(name)
    return name


@dataclass(frozen=True, slots=True)
class IndexerOptions:
    """`[agents]` documents_chunk_chars, documents_max_file_bytes and
    documents_min_score (what search drops), and batch sizes."""

    chunk_chars: int = DEFAULT_CHUNK_CHARS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    min_score: float = DEFAULT_MIN_SCORE
    embed_batch: int = DEFAULT_EMBED_BATCH
    max_files: int = MAX_FILES

    @property
    def overlap(self) -> int:
        """Characters a chunk repeats of the one before: an eighth of a chunk."""
        return self.chunk_chars // 8


@dataclass(frozen=True, slots=True)
class IndexProgress:
    files_done: int
    files_total: int
    chunks_embedded: int


ProgressCallback = Callable[[IndexProgress], None]


@dataclass(frozen=True, slots=True)
class _Found:
    """What the walk found: supported files, and what it passed over with a reason."""

    exists: bool
    files: list[tuple[Path, str]] = field(default_factory=list)  # (real path, display)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # every file present, supported or not


@dataclass(frozen=True, slots=True)
class _Changed:
    """A changed file, extracted and chunked, waiting for its embeddings."""

    path: str
    sha256: str
    size: int
    chunks: list[TextChunk]


@dataclass
class IndexReport:
    """What one indexing pass did; `as_result` is the tool's result."""

    collection: str
    target: str
    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    embedding_requests: int = 0
    seconds: float = 0.0
    last_position: int = 0  # of the last event appended (0: none)

    def as_result(self) -> dict[str, Any]:
        lists: dict[str, list[Any]] = {
            "indexed": self.indexed,
            "removed": self.removed,
            "skipped": self.skipped,
            "unreadable": self.unreadable,
        }
        counts: dict[str, Any] = {name: len(items) for name, items in lists.items()}
        counts.update(
            unchanged=len(self.unchanged),
            chunks=self.chunks,
            embedding_requests=self.embedding_requests,
            seconds=round(self.seconds, 3),
        )
        return {
            "collection": self.collection,
            "target": self.target,
            "counts": counts,
            **{name: items[:MAX_LISTED] for name, items in lists.items()},
            "truncated": any(len(items) > MAX_LISTED for items in lists.values()),
        }


class DocumentIndexer:
    """One collection's indexing passes (see the module docstring)."""

    def __init__(
        self,
        workspace: Workspace,
        embedder: Embedder,
        index: DocumentsProjection,
        store: EventStore,
        options: IndexerOptions | None = None,
    ) -> None:
        self.workspace = workspace
        self.embedder = embedder
        self.index = index
        self.store = store
        self.options = options or IndexerOptions()

    async def run(
        self, path: str, collection: str, progress: ProgressCallback | None = None
    ) -> IndexReport:
        """Index `path` (a folder or a file inside the workspace) into `collection`.

        The caller makes sure the projection has applied the log first, so the sha256
        it holds for each file is current.
        """
        check_collection(collection)
        started = time.perf_counter()
        requests_before = self.embedder.statistics().requests
        real, target = await trio.to_thread.run_sync(self._locate, path)
        # Projection reads take its lock, which a batch being applied holds: off the loop.
        await trio.to_thread.run_sync(self._check_model, collection)
        found = await trio.to_thread.run_sync(self._walk, real, path)
        report = IndexReport(collection, target, skipped=found.skipped)
        known = await trio.to_thread.run_sync(self._known_under, collection, target)
        if not found.exists and not known:
            roots = ", ".join(str(root) for root in self.workspace.real_roots())
            raise NothingToIndex(path, f"{real}; the workspace is {roots}")
        await self._index_files(found.files, report, progress)
        await self._remove([p for p in known if p not in found.seen], report)
        report.embedding_requests = self.embedder.statistics().requests - requests_before
        report.seconds = time.perf_counter() - started
        return report

    def _locate(self, path: str) -> tuple[Path, str]:
        """The real path inside the workspace, and how results name it (blocking)."""
        real = self.workspace.resolve(path)
        return real, self.workspace.display(real)

    def _check_model(self, collection: str) -> None:
        indexed = self.index.model_of(collection)
        if indexed is not None and indexed != self.embedder.model:
            raise CollectionModelConflict(collection, indexed, self.embedder.model)

    # --- the walk (blocking) ----------------------------------------------------------

    def _walk(self, real: Path, given: str) -> _Found:
        if real.is_file():
            return self._classify([real])
        if not real.is_dir():
            return _Found(exists=real.exists())
        paths = []
        for path in _files_under(real):
            paths.append(path)
            if len(paths) > self.options.max_files:
                raise TooManyDocuments(given, self.options.max_files)
        return self._classify(paths)

    def _classify(self, paths: list[Path]) -> _Found:
        found = _Found(exists=True)
        for path in paths:
            display = self.workspace.display(path)
            found.seen.add(display)
            reason = _skip_reason(path)
            if reason is None:
                found.files.append((path, display))
            else:
                found.skipped.append({"path": display, "reason": reason})
        return found

    def _known_under(self, collection: str, target: str) -> list[str]:
        """Paths indexed in `collection` at or under the display path `target`."""
        return [file.path for file in self.index.files(collection) if _is_under(file.path, target)]

    # --- files -> chunks -> embeddings -> events --------------------------------------

    async def _index_files(
        self,
        files: list[tuple[Path, str]],
        report: IndexReport,
        progress: ProgressCallback | None,
    ) -> None:
        pending: list[_Changed] = []
        for done, (real, display) in enumerate(files, 1):
            changed = await trio.to_thread.run_sync(self._prepare, real, display, report)
            if changed is not None:
                pending.append(changed)
            if sum(len(c.chunks) for c in pending) >= self.options.embed_batch:
                await self._embed_and_append(pending, report)
                pending = []
            if progress is not None and (done < len(files) or not pending):
                progress(IndexProgress(done, len(files), report.chunks))
        if pending:
            await self._embed_and_append(pending, report)
            if progress is not None:
                progress(IndexProgress(len(files), len(files), report.chunks))

    def _prepare(self, real: Path, display: str, report: IndexReport) -> _Changed | None:
        """Read and hash a file; extract and chunk it when it changed (blocking).

        An unchanged or unreadable file is recorded in `report` (this runs in a worker
        thread, one file at a time, while the Trio side waits for it).
        """
        try:
            data, size = read_bytes(real, self.options.max_file_bytes + 1)
            if size > self.options.max_file_bytes:
                limit = self.options.max_file_bytes
                raise FileTooLarge(f"{display} ({size} bytes)", size, limit)
            sha256 = hashlib.sha256(data).hexdigest()
            if self.index.sha256_of(report.collection, display) == sha256:
                report.unchanged.append(display)
                return None
            text = extract_text(real, data)
        except (DocumentUnreadable, UnsupportedDocument) as exc:
            report.unreadable.append({"path": display, "reason": getattr(exc, "reason", str(exc))})
            return None
        except ToolError as exc:
            report.unreadable.append({"path": display, "reason": str(exc)})
            return None
        chunks = chunk_text(text, max_chars=self.options.chunk_chars, overlap=self.options.overlap)
        return _Changed(display, sha256, size, chunks)

    async def _embed_and_append(self, files: list[_Changed], report: IndexReport) -> None:
        rows = iter(await self._embed([chunk.text for file in files for chunk in file.chunks]))
        events: list[Event] = []
        for file in files:
            chunks = [
                {"text": c.text, "offset": c.offset, "embedding": next(rows)} for c in file.chunks
            ]
            events.append(
                DocumentIndexed(
                    report.collection,
                    file.path,
                    file.sha256,
                    chunks,
                    model=self.embedder.model,
                    size=file.size,
                )
            )
        await self._append(events, report)

    async def _embed(self, texts: list[str]) -> list[bytes]:
        """Each text's embedding as little-endian float32 bytes; no call for no text."""
        if not texts:
            await trio.lowlevel.checkpoint()
            return []
        try:
            vectors = await self.embedder.embed(texts)
        except EmbeddingError as exc:
            raise ToolError(f"embedding failed: {exc}", retryable=True) from exc
        return [row.tobytes() for row in vectors.astype("<f4", copy=False)]

    async def _append(self, events: list[Event], report: IndexReport) -> None:
        """All events in one append (one commit); one by one if one is too large."""
        stream = STREAM_PREFIX + report.collection
        try:
            appended = await self.store.append(stream, events)
        except EventTooLarge:
            for event in events:
                await self._append_one(stream, event, report)
            return
        report.last_position = max(report.last_position, appended.last_position)
        for event in events:
            self._count(event, report)

    async def _append_one(self, stream: str, event: Event, report: IndexReport) -> None:
        try:
            appended = await self.store.append(stream, [event])
        except EventTooLarge as exc:
            assert isinstance(event, DocumentIndexed)
            reason = f"too large to index: {exc}"
            report.unreadable.append({"path": event.path, "reason": reason})
            return
        report.last_position = max(report.last_position, appended.last_position)
        self._count(event, report)

    @staticmethod
    def _count(event: Event, report: IndexReport) -> None:
        if isinstance(event, DocumentIndexed):
            report.indexed.append(event.path)
            report.chunks += len(event.chunks)
        elif isinstance(event, DocumentRemoved):
            report.removed.append(event.path)

    async def _remove(self, gone: list[str], report: IndexReport) -> None:
        if gone:
            await self._append([DocumentRemoved(report.collection, p) for p in gone], report)


def _files_under(folder: Path) -> Iterator[Path]:
    """Every non-hidden entry but a real folder, in a stable order: links are not walked
    into, but yielded (to be listed as skipped)."""
    for directory, subdirectories, names in os.walk(folder, followlinks=False):
        visible = [d for d in subdirectories if not d.startswith(".")]
        links = {d for d in visible if os.path.islink(os.path.join(directory, d))}
        subdirectories[:] = sorted(set(visible) - links)
        for name in sorted([*names, *links]):
            if not name.startswith("."):
                yield Path(directory, name)


def _skip_reason(path: Path) -> str | None:
    """Why a walked entry is not indexed (None: it is a supported regular file)."""
    if path.is_symlink():
        return "a symbolic link (links are not followed)"
    if not path.is_file():
        return "not a regular file"
    if not is_supported(path):
        kind = repr(path.suffix.lower()) if path.suffix else "no suffix"
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        return f"unsupported type ({kind}); supported: {supported}"
    return None


def _is_under(path: str, target: str) -> bool:
    """Whether the display path `path` is `target` or inside it."""
    if target == ".":
        return not Path(path).is_absolute()
    return path == target or path.startswith(target.rstrip("/") + "/")
