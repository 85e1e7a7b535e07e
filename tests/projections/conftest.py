"""Fixtures of the projection tests.

`state` is the conformance fixture: a `StateStore` over LMDB (a real environment in
`tmp_path`), in memory and on PostgreSQL (a real `pgserver` cluster), so every test
taking it runs on all three. `log` is a real LMDB event log. Durability is not under
test here: LMDB runs with `sync=False`, the test cluster with `fsync = off`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from events import LmdbEventLog
from projections import StateStore

from .helpers import STATE_KINDS, EventWriter, open_log, state_of_kind


@pytest.fixture(params=STATE_KINDS)
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """The conformance fixture; the PostgreSQL cluster starts only for its cases."""
    store = state_of_kind(request.param, tmp_path, lambda: request.getfixturevalue("postgres_url"))
    yield store
    store.close()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LmdbEventLog]:
    opened = open_log(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def writer(log: LmdbEventLog) -> EventWriter:
    return EventWriter(log)
