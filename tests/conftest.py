"""Fixtures every test package may use: a real PostgreSQL (`pgserver`), started only
by the tests that ask for it; and the garbage collector's thresholds and the threads'
switch interval as each test found them (a benchmark's `main` sets them as the server
does)."""

from __future__ import annotations

import gc
import itertools
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One PostgreSQL cluster for the session (pgserver: started in about a second,
    also as root; unix socket only), stopped at the end."""
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    server.psql("ALTER SYSTEM SET fsync = off;")
    server.psql("ALTER SYSTEM SET synchronous_commit = off;")
    server.psql("SELECT pg_reload_conf();")
    try:
        yield server
    finally:
        server.cleanup()


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_cluster: Any) -> str:
    """The URL of a fresh, empty database of the session's cluster."""
    name = f"events_{next(_databases)}"
    postgres_cluster.psql(f"CREATE DATABASE {name};")
    return str(postgres_cluster.get_uri(name))
