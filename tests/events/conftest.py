"""Fixtures of the event log tests: one store per backend, so every test runs on both.

`store` is the conformance fixture: an `EventStore` over LMDB (a real environment in
`tmp_path`; "lmdb-tail" writes its indexes every 3 records, so reads and checks meet
records both in the indexes and in the unindexed tail), over `MemoryEventLog`, and over
`PostgresEventLog` ("postgres": a database of its own per test, in one PostgreSQL cluster
per session started by `pgserver` on a unix socket). Tests that need other options use
`open_store`, the same factory with explicit `StoreOptions`; opening it twice in one test
reopens the same log (the same directory, or the same database). Durability is not under
test here, so the LMDB environment runs with `sync=False` and a small map, and the
cluster with `fsync = off`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from events import EventStore, MemoryEventLog, PostgresEventLog, StoreOptions, open_event_store

# Upper bound on any single test's I/O; the whole events suite runs in seconds.
TIMEOUT_S = 15

TEST_OPTIONS = StoreOptions(sync=False, map_size_mb=16)

OpenStore = Callable[..., AbstractAsyncContextManager[EventStore]]


@pytest.fixture(params=["lmdb", "lmdb-tail", "memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def open_postgres_store(url: str, options: StoreOptions) -> AsyncIterator[EventStore]:
    """An `EventStore` over a `PostgresEventLog` of `url` (opened in a worker thread)."""
    log = await trio.to_thread.run_sync(
        lambda: PostgresEventLog.open(url, compress_over=options.compress_over_bytes)
    )
    async with open_event_store(options=options, log=log) as store:
        yield store


@pytest.fixture
def open_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> OpenStore:
    """`open_store(options=TEST_OPTIONS, path=None)`: open a store of this test's backend."""
    # The cluster is started only by the tests of the postgres backend.
    url = str(request.getfixturevalue("postgres_url")) if backend == "postgres" else ""

    def _open(
        options: StoreOptions = TEST_OPTIONS, path: Path | None = None
    ) -> AbstractAsyncContextManager[EventStore]:
        if backend == "lmdb":
            return open_event_store(path or tmp_path / "store", options)
        if backend == "lmdb-tail":
            return open_event_store(path or tmp_path / "store", replace(options, index_every=3))
        if backend == "postgres":
            return open_postgres_store(url, options)
        log = MemoryEventLog(compress_over=options.compress_over_bytes)
        return open_event_store(options=options, log=log)

    return _open


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[EventStore]:
    async with open_store() as opened:
        yield opened
