"""The projections the server runs, by name, and read helpers over their state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from events import KeyStore, RecordedEvent
from projections._base import Projection
from projections._documents import DocumentsProjection
from projections._memory import MemoryProjection
from projections._metrics import MetricsProjection
from projections._runs import RunsProjection, run_key
from projections._sessions import DEFAULT_WINDOW, SessionsProjection, session_key
from projections._state_store import MemoryStateStore, StateStore
from projections._vector_index import IndexOptions
from projections.errors import UnknownProjection

ProjectionFactory = Callable[[], Projection]


def projection_factories(
    session_window: int = DEFAULT_WINDOW,
    *,
    keys: KeyStore | None = None,
    memory: IndexOptions | None = None,
) -> dict[str, ProjectionFactory]:
    """Name -> factory of every projection the server maintains.

    `memory` needs the memory key store: without `keys` it is left out. The `memory`
    index options (`[performance]` faiss_ivf_threshold, faiss_nprobe) apply to both
    vector projections, memory and documents.
    """
    factories: dict[str, ProjectionFactory] = {
        SessionsProjection.name: lambda: SessionsProjection(session_window),
        RunsProjection.name: RunsProjection,
        MetricsProjection.name: MetricsProjection,
    }
    if keys is not None:
        factories[MemoryProjection.name] = lambda: MemoryProjection(keys, memory)
    factories[DocumentsProjection.name] = lambda: DocumentsProjection(memory)
    return factories


def build_projections(
    names: list[str] | None = None,
    session_window: int = DEFAULT_WINDOW,
    *,
    keys: KeyStore | None = None,
    memory: IndexOptions | None = None,
) -> list[Projection]:
    factories = projection_factories(session_window, keys=keys, memory=memory)
    for name in names or []:
        if name not in factories:
            raise UnknownProjection(name, list(factories))
    return [factory() for name, factory in factories.items() if not names or name in names]


def get_session(state: StateStore, session_id: str) -> dict[str, Any] | None:
    value: dict[str, Any] | None = state.get(SessionsProjection.name, session_key(session_id))
    return value


def list_sessions(state: StateStore) -> list[dict[str, Any]]:
    return [value for _, value in state.items(SessionsProjection.name, b"s/")]


def get_run(state: StateStore, run_id: str) -> dict[str, Any] | None:
    value: dict[str, Any] | None = state.get(RunsProjection.name, run_key(run_id))
    return value


def list_runs(state: StateStore, status: str | None = None) -> list[dict[str, Any]]:
    runs = [value for _, value in state.items(RunsProjection.name, b"r/")]
    return [run for run in runs if status is None or run["status"] == status]


def opened_run(records: Iterable[RecordedEvent], window: int = DEFAULT_WINDOW) -> Any:
    """A run's view folded from its own records, in memory: with records opened by
    their keys, it shows the goal, parameters, results and answer that the stored
    projection (which only ever sees the sealed stubs) cannot hold."""
    records = list(records)
    return _fold(RunsProjection(), records, run_key(records[0].data["run_id"]) if records else b"")


def opened_session(records: Iterable[RecordedEvent], window: int = DEFAULT_WINDOW) -> Any:
    """A session's view (its message window) folded from its own opened records."""
    records = list(records)
    key = session_key(records[0].data["session_id"]) if records else b""
    return _fold(SessionsProjection(window), records, key)


def _fold(projection: Projection, records: list[RecordedEvent], key: bytes) -> Any:
    projection.attach(MemoryStateStore())
    for record in records:
        projection.apply(record)
    return projection.load(key) if records else None
