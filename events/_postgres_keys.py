"""The PostgreSQL backend of the key store: every node of one PostgreSQL event log sees
the same sealing keys.

One table per database:

    autoagent_keys(owner text PRIMARY KEY, key_id text, secret bytea,
                   wrapped_by text NULL, wrapper_id text NULL)

A row is exactly a `KeyRecord`: `secret` is the key itself for a principal, or the key
sealed with the key `wrapper_id` of principal `wrapped_by` for a session.

Creating a key is race-free across nodes. The new row goes in with
`INSERT ... ON CONFLICT (owner) DO UPDATE ... WHERE key_id = <the dead key it
replaces>`: when another node inserted a row for the owner first, nothing is written
(the conflicting row is only locked) and the row read back in the same transaction is
the other node's, which this node then uses too. So two nodes calling
`current_or_create(user)` at once end with one key. A live key is never updated in
place: the only update replaces a session key that no longer opens (its principal was
forgotten), and only if it is still the very record this node found dead.

Forgetting (`destroy`) DELETEs the row and then runs `VACUUM autoagent_keys` (outside
any transaction, on an autocommit connection) so the dead row is pruned at once rather
than at the next autovacuum. What that guarantees: no query started after `destroy`
returns, from any node, reads the key (another node may still hold a cached copy for
up to its `revalidate_s`, see below). What it does not: VACUUM may be unable to
prune the row while an older transaction is still open, a role that does not own the
table skips it, and pruning compacts the page without zeroing the space it frees (a row
at the edge of that space keeps its bytes in the data file until the space is reused).
Copies outside the table survive a forget too: the WAL (the INSERT's record, full-page
images) until it is recycled, WAL archives, base backups, `pg_dump` files, and physical
replicas until they replay the delete. A failed VACUUM is not an error (the key is gone
from every reader). So this is erasure from every reader, not physical erasure: keep
the keys in a database whose WAL archives and backups do not outlive a forget - a URL
of its own if the event log's backups are kept longer.

Caching is the base class's: a key destroyed by another node is noticed here the next
time the cached copy is older than `revalidate_s`. Methods are called from worker
threads; each borrows its own connection from a pool that checks it before lending it.
`open(readonly=True)` runs no DDL: a database without the table is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from events._keys import DEFAULT_REVALIDATE_S, KEY_BYTES, KeyRecord, KeyStore
from events._postgres_pool import (
    describe_postgres_url,
    first_postgres_connection,
    open_postgres_pool,
    postgres_error_line,
)
from events.errors import KeyStoreError, KeyStoreMissing, KeyStoreUnreachable, PoolUnreachable

TABLE = "autoagent_keys"
# The advisory lock of the schema creation, so two nodes starting at once do not race
# on `CREATE TABLE IF NOT EXISTS`: the bytes "autokeys" as a bigint.
SCHEMA_LOCK_KEY = int.from_bytes(b"autokeys", "big") & 0x7FFF_FFFF_FFFF_FFFF

_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    owner text COLLATE "C" PRIMARY KEY,
    key_id text NOT NULL,
    secret bytea NOT NULL,
    wrapped_by text,
    wrapper_id text,
    CHECK ((wrapped_by IS NULL) = (wrapper_id IS NULL))
)"""
_COLUMNS = "owner, key_id, secret, wrapped_by, wrapper_id"
_SELECT = f"SELECT {_COLUMNS} FROM {TABLE} WHERE owner = %s"
_SELECT_ALL = f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY owner"
# Inserts, or replaces the row whose key is `replacing` (NULL: replaces nothing); when
# another row is there it is locked, left as it is, and no row is returned.
_INSERT = (
    f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (owner) DO UPDATE SET key_id = excluded.key_id, secret = excluded.secret, "
    "wrapped_by = excluded.wrapped_by, wrapper_id = excluded.wrapper_id "
    f"WHERE {TABLE}.key_id = %s::text RETURNING owner"
)
_DELETE = f"DELETE FROM {TABLE} WHERE owner = %s"
_VACUUM = f"VACUUM {TABLE}"

T = TypeVar("T")


class PostgresKeyStore(KeyStore):
    """Keys in one PostgreSQL table, shared by every node that opens its URL."""

    def __init__(
        self,
        url: str,
        pool: ConnectionPool[Any],
        *,
        readonly: bool = False,
        revalidate_s: float = DEFAULT_REVALIDATE_S,
    ) -> None:
        super().__init__(revalidate_s=revalidate_s)
        self.url = url
        self.readonly = readonly
        self._pool = pool
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        readonly: bool = False,
        revalidate_s: float = DEFAULT_REVALIDATE_S,
        pool_size: int = 2,
        connect_timeout_s: float = 10.0,
    ) -> PostgresKeyStore:
        """Connect to `url` and create the table if missing (with `readonly`: require
        it, create nothing). A server that cannot be reached raises
        `KeyStoreUnreachable` here rather than at the first key; with `readonly`, a
        database without the table raises `KeyStoreMissing`."""
        target = describe_postgres_url(url)
        try:
            with first_postgres_connection(url, connect_timeout_s) as conn:
                found = _has_table(conn) if readonly else _create_schema(conn)
        except psycopg.Error as exc:
            raise KeyStoreUnreachable(target, postgres_error_line(exc)) from exc
        if not found:
            raise KeyStoreMissing(f"{target}: no key store there (no table {TABLE})")
        try:
            pool = open_postgres_pool(
                url, name="autoagent-keys", max_size=pool_size, timeout_s=connect_timeout_s
            )
        except PoolUnreachable as exc:
            raise KeyStoreUnreachable(target, str(exc)) from exc
        return cls(url, pool, readonly=readonly, revalidate_s=revalidate_s)

    def close(self) -> None:
        """Close the pool; later calls raise `KeyStoreError`."""
        self._closed = True
        self._pool.close()

    # --- backend ---------------------------------------------------------------------

    def _load(self, owner: str) -> KeyRecord | None:
        row = self._run(
            f"read the key of {owner!r}", lambda c: c.execute(_SELECT, (owner,)).fetchone()
        )
        return None if row is None else _record(owner, row)

    def _records(self) -> list[KeyRecord]:
        rows = self._run("list the keys", lambda c: c.execute(_SELECT_ALL).fetchall())
        return [_record(str(row[0]), row) for row in rows]

    def _save(self, record: KeyRecord) -> None:
        if self._save_new(record).key_id != record.key_id:
            raise KeyStoreError(f"cannot store a key for {record.owner!r}: it has one already")

    def _save_new(self, record: KeyRecord, replacing: str | None = None) -> KeyRecord:
        """Insert `record` unless the owner has a row (other than the dead key
        `replacing`); return the row now stored, read in the same transaction while
        the insert holds its lock, so it is the winner whichever node inserted it."""
        row = (record.owner, record.key_id, record.secret, record.wrapped_by, record.wrapper_id)

        def insert(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            with conn.transaction():
                _durable(conn)  # before anything is sealed with the key
                if conn.execute(_INSERT, (*row, replacing)).fetchone() is not None:
                    return row
                return conn.execute(_SELECT, (record.owner,)).fetchone()

        stored = self._run(f"store a key for {record.owner!r}", insert)
        if stored is None:  # cannot happen: the conflicting row is locked until commit
            raise KeyStoreError(f"cannot store a key for {record.owner!r}: the row vanished")
        return _record(record.owner, stored)

    def _erase(self, owner: str) -> bool:
        def delete(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction():
                _durable(conn)  # a crash right after a forget must not bring the key back
                return conn.execute(_DELETE, (owner,)).rowcount > 0

        erased = self._run(f"destroy the key of {owner!r}", delete)
        if erased:
            self._vacuum()
        return erased

    # --- helpers ---------------------------------------------------------------------

    def _vacuum(self) -> None:
        """Prune the deleted row now (see module docstring for what that promises); a
        failure leaves it to autovacuum, the key being unreadable either way."""
        with contextlib.suppress(psycopg.Error), self._pool.connection() as conn:
            conn.execute(_VACUUM)

    def _run(self, doing: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn(conn)` on a pooled connection, driver errors translated."""
        if self._closed:
            raise KeyStoreError("the key store is closed")
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except psycopg.Error as exc:
            raise KeyStoreError(
                f"cannot {doing} at {describe_postgres_url(self.url)}: {postgres_error_line(exc)}"
            ) from exc


def _create_schema(conn: psycopg.Connection[Any]) -> bool:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        conn.execute(_SCHEMA)
    return True


def _durable(conn: psycopg.Connection[Any]) -> None:
    """Commit this transaction synchronously whatever the server's default (inside it)."""
    conn.execute("SET LOCAL synchronous_commit TO on")


def _has_table(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
    return row is not None and row[0] is not None


def _record(owner: str, row: tuple[Any, ...]) -> KeyRecord:
    name, key_id, secret, wrapped_by, wrapper_id = row
    record = KeyRecord(str(name), str(key_id), bytes(secret), wrapped_by, wrapper_id)
    if record.owner != owner or (record.wrapped_by is None and len(record.secret) != KEY_BYTES):
        raise KeyStoreError(f"the key row of {owner!r} is damaged")
    return record
