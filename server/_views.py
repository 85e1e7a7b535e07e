"""Projection state as the admin commands see it: always up to the log head.

The commands open the event log and the projection state read-only. When the state
lags the log (a stopped server, or one still catching up) the missing tail is applied
in memory over the on-disk state, so what is printed matches the log, and nothing is
written beside a running server.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

# The PostgreSQL classes are named through their packages, which import psycopg when
# one is first named: a server on LMDB never loads it.
import events
import projections
from events import (
    EventLog,
    FileKeyStore,
    KeyStore,
    KeyStoreMissing,
    LmdbEventLog,
    MemoryKeyStore,
)
from projections import (
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


_KEY_STORES: dict[tuple[str, bool], KeyStore] = {}


def memory_keys(config: Config, *, readonly: bool = False) -> KeyStore:
    """The key store outside the log: memory keys, principal keys and session keys
    (crypto-shredding). With LMDB a directory (`store.keys_dir`, default
    `<data_dir>/keys/`); with `store.backend = "postgres"` a table in the log's database,
    so every node seals and opens with the same keys and a forget on one node reaches
    all (each node's cached copy is checked again after at most a second).

    One instance per place and process: a `forget` through it drops the key from the one
    cache every part of the process (sealer, memory agent, projections) reads. The first
    call for a PostgreSQL store connects: async callers make it in a worker thread
    (`open_configured_keys`).
    """
    if config.store.backend == "postgres":
        where = "postgres:" + config.store.url
    else:
        where = str(config.store.keys_path.resolve())
    store = _KEY_STORES.get((where, readonly))
    if store is None:
        if config.store.backend == "postgres":
            try:
                store = events.PostgresKeyStore.open(config.store.url, readonly=readonly)
            except KeyStoreMissing:
                # A reader of a database no server has sealed anything in: no key, so
                # nothing to open (not kept: a server may create the table later).
                return MemoryKeyStore()
        else:
            store = FileKeyStore(config.store.keys_path.resolve(), readonly=readonly)
        _KEY_STORES[(where, readonly)] = store
    return store


async def open_configured_keys(config: Config, *, readonly: bool = False) -> KeyStore:
    """`memory_keys`, its first connection made in a worker thread."""
    return await trio.to_thread.run_sync(functools.partial(memory_keys, config, readonly=readonly))


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


def open_configured_state(config: Config, *, readonly: bool = False) -> StateStore:
    """This node's projection state (blocking): LMDB in `<data_dir>/projections`, or
    this node's rows in the PostgreSQL database of `store.url` (`store.backend`).
    `ProjectionStoreMissing` for a read-only open of a state never written."""
    if config.store.backend == "lmdb":
        path, sync = projections_path(config), config.store.sync
        return LmdbStateStore.open(path, readonly=readonly, sync=sync)
    node = config.server.node_name(config.store.data_path)
    return projections.PostgresStateStore.open(config.store.url, node, readonly=readonly)


def state_location(config: Config) -> str:
    """Where `open_configured_state` looks, for messages."""
    if config.store.backend == "lmdb":
        return str(projections_path(config))
    return f"node {config.server.node_name(config.store.data_path)!r} in the PostgreSQL database"


def open_base_state(config: Config) -> StateStore | None:
    try:
        return open_configured_state(config, readonly=True)
    except ProjectionStoreMissing:
        return None


def open_configured_log(config: Config) -> EventLog:
    """The event log of `[store]` for a reader (blocking: a synchronous command or a
    worker thread): LMDB opened read-only, or the PostgreSQL log at `store.url`."""
    if config.store.backend == "lmdb":
        return LmdbEventLog.open(config.store.data_path, readonly=True)
    return events.PostgresEventLog.open(
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
