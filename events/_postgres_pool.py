"""What every PostgreSQL-backed store of autoagent opens the same way: the event log,
the sealing keys, each node's projection state and the run leases.

- `first_postgres_connection(url, timeout_s)`: one autocommit connection for the start-up work
  (creating or checking tables), so an unreachable server is an error at start-up;
- `open_postgres_pool(url, ...)`: a pool of autocommit connections that checks a connection
  before lending it (one the server closed, after a restart or an idle timeout, is
  replaced instead of failing the call); `PoolUnreachable` when none opens in time;
- `describe_postgres_url(url)` names where a URL points without its password, and
  `postgres_error_line` folds a driver message into one line, for errors a user reads.
"""

from __future__ import annotations

import warnings
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from events.errors import PoolUnreachable


def first_postgres_connection(url: str, timeout_s: float) -> psycopg.Connection[Any]:
    """An autocommit connection, given up after `timeout_s` (whole seconds, at least 1:
    libpq's unit)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout_s)))


def open_postgres_pool(
    url: str, *, name: str, max_size: int, timeout_s: float
) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=max(1, max_size),
        kwargs={"autocommit": True},
        open=False,
        name=name,
        timeout=timeout_s,
        check=ConnectionPool.check_connection,
    )
    try:
        pool.open(wait=True, timeout=timeout_s)
    except PoolTimeout as exc:
        pool.close()
        raise PoolUnreachable("no connection within the timeout") from exc
    return pool


def describe_postgres_url(url: str) -> str:
    """Where a URL points (host, port, database, user), never its password."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "a PostgreSQL URL that does not parse"
    shown = [f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if parts.get(k)]
    return "postgresql " + (" ".join(shown) if shown else "(libpq defaults)")


def postgres_error_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
