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
from .errors import (
    CheckpointMoved,
    ProjectionError,
    ProjectionMismatch,
    ProjectionStoreMissing,
    UnknownProjection,
)
from .histogram import LatencyHistogram
from .metrics import MetricsProjection
from .replay import Difference, compare, rebuild, verify
from .runner import ProjectionRunner, ProjectionStatus
from .runs import RunsProjection
from .sessions import SessionsProjection
from .state_store import Checkpoint, LmdbStateStore, MemoryStateStore, StateCommit, StateStore

__all__ = [
    "Checkpoint",
    "CheckpointMoved",
    "Difference",
    "LatencyHistogram",
    "LmdbStateStore",
    "MemoryStateStore",
    "MetricsProjection",
    "Projection",
    "ProjectionError",
    "ProjectionMismatch",
    "ProjectionRunner",
    "ProjectionStatus",
    "ProjectionStoreMissing",
    "RunsProjection",
    "SessionsProjection",
    "SnapshottingProjection",
    "StateCommit",
    "StateStore",
    "UnknownProjection",
    "build_projections",
    "compare",
    "get_run",
    "get_session",
    "list_runs",
    "list_sessions",
    "projection_factories",
    "rebuild",
    "verify",
]
