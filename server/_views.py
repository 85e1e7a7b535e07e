"""Projection state as the admin commands see it: always up to the log head.

The commands open the event log and the projection state read-only. When the state
lags the log (a stopped server, or one still catching up) the missing tail is applied
in memory over the on-disk state, so what is printed matches the log, and nothing is
written beside a running server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from events import EventLog, LmdbEventLog, PostgresEventLog
from projections import (
    FileKeyStore,
    IndexOptions,
    LmdbStateStore,
    MemoryStateStore,
    ProjectionRunner,
    ProjectionStoreMissing,
    StateStore,
    build_projections,
)
from server._render import Progress
from server.config import Config

PROJECTIONS_DIR = "projections"
KEYS_DIR = "keys"


def projections_path(config: Config) -> Path:
    return config.store.data_path / PROJECTIONS_DIR


_KEY_STORES: dict[tuple[Path, bool], FileKeyStore] = {}


def memory_keys(config: Config, *, readonly: bool = False) -> FileKeyStore:
    """The key store outside the log (`store.keys_dir`, default `<data_dir>/keys/`):
    memory keys, principal keys and session keys (crypto-shredding).

    One instance per directory and process: a `forget` through it drops the key from
    the one cache every part of the process (sealer, memory agent, projections) reads.
    """
    path = config.store.keys_path.resolve()
    store = _KEY_STORES.get((path, readonly))
    if store is None:
        store = _KEY_STORES[(path, readonly)] = FileKeyStore(path, readonly=readonly)
    return store


def memory_options(config: Config) -> IndexOptions:
    performance = config.performance
    return IndexOptions(
        ivf_threshold=performance.faiss_ivf_threshold, nprobe=performance.faiss_nprobe
    )


@dataclass
class LiveView:
    log: EventLog
    state: StateStore
    runner: ProjectionRunner


def open_base_state(config: Config) -> LmdbStateStore | None:
    try:
        return LmdbStateStore.open(projections_path(config), readonly=True)
    except ProjectionStoreMissing:
        return None


def open_configured_log(config: Config) -> EventLog:
    """The event log of `[store]` for a reader (blocking: a synchronous command or a
    worker thread): LMDB opened read-only, or the PostgreSQL log at `store.url`."""
    if config.store.backend == "lmdb":
        return LmdbEventLog.open(config.store.data_path, readonly=True)
    return PostgresEventLog.open(
        config.store.url, compress_over=config.store.compress_over_bytes, readonly=True
    )


@contextlib.contextmanager
def open_live_view(
    config: Config, names: list[str] | None = None, log: EventLog | None = None
) -> Iterator[LiveView]:
    """Read-only log + projection state brought up to the head in memory.

    Pass `log` when the caller already has the log open (LMDB allows one open
    environment per path and process).
    """
    owned = log is None
    log = log or open_configured_log(config)
    base = None
    try:
        base = open_base_state(config)
        with contextlib.ExitStack() as stack:
            # One read transaction for the whole view: a server committing meanwhile
            # cannot make the overlay apply an event twice.
            pinned = stack.enter_context(base.pinned()) if base is not None else None
            yield _caught_up(config, log, MemoryStateStore(base=pinned), names)
    finally:
        if base is not None:
            base.close()
        if owned:
            log.close()


def _caught_up(
    config: Config, log: EventLog, overlay: MemoryStateStore, names: list[str] | None
) -> LiveView:
    runner = ProjectionRunner(
        log,
        overlay,
        build_projections(
            names,
            config.performance.session_window,
            keys=memory_keys(config, readonly=True),
            memory=memory_options(config),
        ),
        snapshot_every=config.performance.snapshot_every,
    )
    runner.prepare()
    progress = Progress("catching up projections")
    runner.catch_up(progress=progress.update)
    progress.close()
    return LiveView(log, overlay, runner)
