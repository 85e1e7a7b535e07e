"""Projections: state rebuilt incrementally from the event log, with checkpoints.

Public API; everything else in this package is private.
"""

import typing as _typing

from events import FileKeyStore, KeyStore, MemoryKeyStore, UserKey
from events import lazy_attributes as _lazy_attributes
from projections._base import Projection, SnapshottingProjection
from projections._catalog import (
    build_projections,
    get_run,
    get_session,
    list_runs,
    list_sessions,
    opened_run,
    opened_session,
    projection_factories,
)
from projections._documents import (
    DocumentHit,
    DocumentPassage,
    DocumentsProjection,
    DocumentsStatistics,
    IndexedFile,
    read_passages,
)
from projections._histogram import LatencyHistogram
from projections._memory import (
    MemoryHit,
    MemoryProjection,
    MemoryStatistics,
    open_content,
    open_embedding,
    seal_memory,
)
from projections._metrics import MetricsProjection
from projections._replay import Difference, compare, rebuild, verify
from projections._runner import ProjectionRunner, ProjectionStatus
from projections._runs import RunsProjection
from projections._sessions import SessionsProjection
from projections._state_store import (
    Checkpoint,
    LmdbStateStore,
    MemoryStateStore,
    StateCommit,
    StateStore,
)
from projections._vector_index import IndexOptions, Trainer, VectorIndex
from projections.errors import (
    CheckpointMoved,
    CollectionModelMismatch,
    EmbeddingModelMismatch,
    KeyStoreError,
    KeyStoreReadOnly,
    ProjectionError,
    ProjectionMismatch,
    ProjectionStoreFailed,
    ProjectionStoreMissing,
    ProjectionStoreUnreachable,
    SealBroken,
    UnknownProjection,
)

if _typing.TYPE_CHECKING:
    from projections._postgres_state import PostgresStateStore


# The PostgreSQL backend is imported when first named, not with the package: psycopg
# and its pool cost ~9 MB and part of every start of a server that uses LMDB.
_LAZY = {"PostgresStateStore": "projections._postgres_state"}

if not _typing.TYPE_CHECKING:  # mypy sees the names above, not a catch-all for any name
    __getattr__ = _lazy_attributes(__name__, _LAZY)


__all__ = [
    "Checkpoint",
    "CheckpointMoved",
    "CollectionModelMismatch",
    "Difference",
    "DocumentHit",
    "DocumentPassage",
    "DocumentsProjection",
    "DocumentsStatistics",
    "EmbeddingModelMismatch",
    "FileKeyStore",
    "IndexOptions",
    "IndexedFile",
    "KeyStore",
    "KeyStoreError",
    "KeyStoreReadOnly",
    "LatencyHistogram",
    "LmdbStateStore",
    "MemoryHit",
    "MemoryKeyStore",
    "MemoryProjection",
    "MemoryStateStore",
    "MemoryStatistics",
    "MetricsProjection",
    "PostgresStateStore",
    "Projection",
    "ProjectionError",
    "ProjectionMismatch",
    "ProjectionRunner",
    "ProjectionStatus",
    "ProjectionStoreFailed",
    "ProjectionStoreMissing",
    "ProjectionStoreUnreachable",
    "RunsProjection",
    "SealBroken",
    "SessionsProjection",
    "SnapshottingProjection",
    "StateCommit",
    "StateStore",
    "Trainer",
    "UnknownProjection",
    "UserKey",
    "VectorIndex",
    "build_projections",
    "compare",
    "get_run",
    "get_session",
    "list_runs",
    "list_sessions",
    "open_content",
    "open_embedding",
    "opened_run",
    "opened_session",
    "projection_factories",
    "read_passages",
    "rebuild",
    "seal_memory",
    "verify",
]
