"""Projections: state rebuilt incrementally from the event log, with checkpoints.

Public API; everything else in this package is private.
"""

from .base import Projection, SnapshottingProjection
from .catalog import (
    build_projections,
    get_run,
    get_session,
    list_runs,
    list_sessions,
    projection_factories,
)
from .documents import (
    DocumentHit,
    DocumentPassage,
    DocumentsProjection,
    DocumentsStatistics,
    IndexedFile,
    read_passages,
)
from .errors import (
    CheckpointMoved,
    CollectionModelMismatch,
    EmbeddingModelMismatch,
    KeyStoreError,
    KeyStoreReadOnly,
    ProjectionError,
    ProjectionMismatch,
    ProjectionStoreMissing,
    SealBroken,
    UnknownProjection,
)
from .histogram import LatencyHistogram
from .keystore import FileKeyStore, KeyStore, MemoryKeyStore, UserKey
from .memory import (
    MemoryHit,
    MemoryProjection,
    MemoryStatistics,
    open_content,
    open_embedding,
    seal_memory,
)
from .metrics import MetricsProjection
from .replay import Difference, compare, rebuild, verify
from .runner import ProjectionRunner, ProjectionStatus
from .runs import RunsProjection
from .sessions import SessionsProjection
from .state_store import Checkpoint, LmdbStateStore, MemoryStateStore, StateCommit, StateStore
from .vector_index import IndexOptions, Trainer, VectorIndex

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
    "Projection",
    "ProjectionError",
    "ProjectionMismatch",
    "ProjectionRunner",
    "ProjectionStatus",
    "ProjectionStoreMissing",
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
    "projection_factories",
    "read_passages",
    "rebuild",
    "seal_memory",
    "verify",
]
