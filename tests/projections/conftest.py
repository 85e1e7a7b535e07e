"""Fixtures of the projection tests.

`state` is the conformance fixture: a `StateStore` over LMDB (a real environment in
`tmp_path`) and in memory, so every test taking it runs on both. `log` is a real LMDB
event log. Durability is not under test here: both run with `sync=False`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from events import LmdbEventLog
from projections import MemoryStateStore, StateStore

from .helpers import EventWriter, open_log, open_state


@pytest.fixture(params=["lmdb", "memory"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    store: StateStore = (
        open_state(tmp_path / "projections") if request.param == "lmdb" else MemoryStateStore()
    )
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
