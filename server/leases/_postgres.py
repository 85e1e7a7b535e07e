"""Run leases in PostgreSQL: one row per running run, shared by every node on the log.

    autoagent_run_leases(run_id text PRIMARY KEY, node_id text, expires_at timestamptz)

Every decision uses the database's clock (`clock_timestamp()`), so nodes whose clocks
disagree still agree on who holds what. Taking a lease is one statement: insert the row,
or update it when it is this node's or has expired (`ON CONFLICT ... DO UPDATE ...
WHERE`). Two nodes racing for one expired lease serialize on the row lock; the second
re-checks the condition against the first one's row and gets nothing, so exactly one
wins. Renewing all of a node's leases is one UPDATE; a row another node took is simply
not in its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from events import (
    PoolUnreachable,
    first_postgres_connection,
    open_postgres_pool,
    postgres_error_line,
)
from server.errors import LeaseStoreError
from server.leases._base import NODE_KEY_PREFIX, Lease, RunLeases

TABLE = "autoagent_run_leases"
# The advisory lock the table's creation holds: the bytes "aaleases" as a bigint.
SCHEMA_LOCK_KEY = int.from_bytes(b"aaleases", "big") & 0x7FFF_FFFF_FFFF_FFFF
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id text COLLATE "C" PRIMARY KEY,
    node_id text NOT NULL,
    expires_at timestamptz NOT NULL
)"""
_UNTIL = "clock_timestamp() + %s * interval '1 second'"
_ACQUIRE = (
    f"INSERT INTO {TABLE} AS held (run_id, node_id, expires_at) VALUES (%s, %s, {_UNTIL}) "
    "ON CONFLICT (run_id) DO UPDATE SET node_id = EXCLUDED.node_id, "
    "expires_at = EXCLUDED.expires_at "
    "WHERE held.node_id = EXCLUDED.node_id OR held.expires_at <= clock_timestamp() "
    "RETURNING run_id"
)
_RENEW = (
    f"UPDATE {TABLE} SET expires_at = {_UNTIL} "
    "WHERE node_id = %s AND run_id = ANY(%s) RETURNING run_id"
)
_RELEASE = f"DELETE FROM {TABLE} WHERE run_id = %s AND node_id = %s"
_EXPIRE = f"UPDATE {TABLE} SET expires_at = clock_timestamp() WHERE run_id = %s AND node_id = %s"
_RUNS = f"run_id NOT LIKE '{NODE_KEY_PREFIX}%%'"  # not the nodes' presence rows
_LEASES = (
    f"SELECT run_id, node_id, expires_at <= clock_timestamp() FROM {TABLE} WHERE {_RUNS} "
    "ORDER BY run_id"
)
_EXPIRED = (
    f"SELECT run_id FROM {TABLE} WHERE expires_at <= clock_timestamp() AND {_RUNS} ORDER BY run_id"
)
_HOLDER = f"SELECT node_id FROM {TABLE} WHERE run_id = %s AND expires_at > clock_timestamp()"


class PostgresRunLeases(RunLeases):
    """This node's view of the lease table at `url` (created when missing)."""

    def __init__(
        self, node_id: str, ttl_s: float, pool: ConnectionPool[Any], *, owns_pool: bool = True
    ) -> None:
        super().__init__(node_id, ttl_s)
        self._pool = pool
        self._owns_pool = owns_pool

    @classmethod
    def open(
        cls, url: str, node_id: str, ttl_s: float, *, connect_timeout_s: float = 10.0
    ) -> PostgresRunLeases:
        """Connect and create the table if missing; `LeaseStoreError` when the server
        cannot be reached (at start-up, not at the first run)."""
        try:
            with first_postgres_connection(url, connect_timeout_s) as conn, conn.transaction():
                # Two nodes starting at once: CREATE ... IF NOT EXISTS alone can still
                # collide in the catalog, so the creation is serialised.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                conn.execute(_SCHEMA)
        except psycopg.Error as exc:
            raise LeaseStoreError(
                f"cannot open the run leases table: {postgres_error_line(exc)}"
            ) from exc
        try:
            pool = open_postgres_pool(
                url, name="autoagent-leases", max_size=2, timeout_s=connect_timeout_s
            )
        except PoolUnreachable as exc:
            raise LeaseStoreError(f"run leases: {exc}") from exc
        return cls(node_id, ttl_s, pool)

    def acquire(self, run_id: str) -> bool:
        rows = self._rows(_ACQUIRE, (run_id, self.node_id, self.ttl_s))
        return bool(rows)

    def renew(self, run_ids: Iterable[str]) -> set[str]:
        wanted = sorted(set(run_ids))
        if not wanted:
            return set()
        return {str(r) for (r,) in self._rows(_RENEW, (self.ttl_s, self.node_id, wanted))}

    def release(self, run_id: str) -> None:
        self._run(lambda conn: conn.execute(_RELEASE, (run_id, self.node_id)))

    def expire(self, run_id: str) -> None:
        self._run(lambda conn: conn.execute(_EXPIRE, (run_id, self.node_id)))

    def leases(self) -> list[Lease]:
        return [Lease(str(r), str(n), bool(e)) for r, n, e in self._rows(_LEASES, ())]

    def expired(self) -> list[str]:
        return [str(r) for (r,) in self._rows(_EXPIRED, ())]

    def holder(self, run_id: str) -> str | None:
        rows = self._rows(_HOLDER, (run_id,))
        return str(rows[0][0]) if rows else None

    def as_holder(self, holder: str) -> PostgresRunLeases:
        return PostgresRunLeases(holder, self.ttl_s, self._pool, owns_pool=False)

    def close(self) -> None:
        if self._owns_pool:
            self._pool.close()

    def _rows(self, query: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._run(lambda c: c.execute(query, params).fetchall())
        return rows

    def _run(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise LeaseStoreError(f"run leases: {postgres_error_line(exc)}") from exc
