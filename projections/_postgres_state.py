"""The PostgreSQL backend of projection state: each node's projections in a shared database.

Two tables per database, every row keyed by the node that owns it (several server
nodes share one database, but each runs its own projections, beside its own FAISS
indexes, so no node ever reads or writes another's rows):

    autoagent_projection_state(node_id text, projection text, key bytea, value bytea,
                               PRIMARY KEY (node_id, projection, key))
    autoagent_projection_meta(node_id text, projection text, position bigint,
                              version bigint, snapshot bytea,
                              PRIMARY KEY (node_id, projection))

`value` is exactly what LMDB stores (`pack()`), and bytea compares byte by byte, so
`ORDER BY key` is LMDB's key order. A missing meta row reads as `Checkpoint(0, 0)`.

A commit is ONE transaction: it first upserts the meta rows of its projections (in
name order, so two commits never deadlock), which locks them and returns their
current positions; it checks every expected position against those before writing
anything, then writes all keys, snapshots and checkpoints. State and checkpoint are
committed together, so each event is applied exactly once across crashes, and a
second writer of the same node (`autoagent replay` beside a server) meets
`CheckpointMoved` instead of interleaving with it. The keys of a commit travel as
arrays in one `unnest` statement for the upserts and one for the deletes: a batch of
ten thousand keys is a handful of round trips, not ten thousand.

Threading: methods are called from worker threads; each borrows its own connection
from a pool that checks it before lending it (as `PostgresEventLog` does). `pinned()`
holds one connection in a REPEATABLE READ, READ ONLY transaction for its duration.
`open(readonly=True)` runs no DDL and refuses a database without the tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from events import (
    PoolUnreachable,
    describe_postgres_url,
    first_postgres_connection,
    open_postgres_pool,
    postgres_error_line,
)
from projections._state_store import (
    Checkpoint,
    PinnedView,
    StateCommit,
    StateStore,
    pack,
    unpack,
)
from projections.errors import (
    CheckpointMoved,
    ProjectionStoreFailed,
    ProjectionStoreMissing,
    ProjectionStoreUnreachable,
)

STATE_TABLE = "autoagent_projection_state"
META_TABLE = "autoagent_projection_meta"
# Held while creating the tables: two nodes starting at once would otherwise race on
# `CREATE TABLE IF NOT EXISTS`. The bytes "autoproj" as a bigint (the event log's
# schema lock is another key, so the two never wait for each other).
SCHEMA_LOCK_KEY = int.from_bytes(b"autoproj", "big") & 0x7FFF_FFFF_FFFF_FFFF

T = TypeVar("T")
Conn = psycopg.Connection[Any]

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
        node_id text COLLATE "C" NOT NULL,
        projection text COLLATE "C" NOT NULL,
        key bytea NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (node_id, projection, key)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {META_TABLE} (
        node_id text COLLATE "C" NOT NULL,
        projection text COLLATE "C" NOT NULL,
        position bigint NOT NULL,
        version bigint NOT NULL,
        snapshot bytea,
        PRIMARY KEY (node_id, projection)
    )""",
)
_CHECKPOINT = f"SELECT position, version FROM {META_TABLE} WHERE node_id = %s AND projection = %s"
_SNAPSHOT = f"SELECT snapshot FROM {META_TABLE} WHERE node_id = %s AND projection = %s"
_GET = f"SELECT value FROM {STATE_TABLE} WHERE node_id = %s AND projection = %s AND key = %s"
_ITEMS = (
    f"SELECT key, value FROM {STATE_TABLE} WHERE node_id = %s AND projection = %s "
    "AND key >= %s ORDER BY key"
)
_ITEMS_BELOW = (
    f"SELECT key, value FROM {STATE_TABLE} WHERE node_id = %s AND projection = %s "
    "AND key >= %s AND key < %s ORDER BY key"
)
# Creates missing meta rows at 0 and locks every row (in name order), returning the
# positions as committed by whoever held the lock before: READ COMMITTED's ON CONFLICT
# DO UPDATE works on the latest committed row version, not this statement's snapshot.
_LOCK = (
    f"INSERT INTO {META_TABLE} AS m (node_id, projection, position, version) "
    "SELECT %s, p, 0, 0 FROM unnest(%s::text[]) AS p ORDER BY p "
    "ON CONFLICT (node_id, projection) DO UPDATE SET position = m.position "
    "RETURNING m.projection, m.position"
)
_DELETE = (
    f"DELETE FROM {STATE_TABLE} AS s USING unnest(%s::text[], %s::bytea[]) AS d(p, k) "
    "WHERE s.node_id = %s AND s.projection = d.p AND s.key = d.k"
)
_UPSERT = (
    f"INSERT INTO {STATE_TABLE} (node_id, projection, key, value) "
    "SELECT %s, u.p, u.k, u.v FROM unnest(%s::text[], %s::bytea[], %s::bytea[]) AS u(p, k, v) "
    "ON CONFLICT (node_id, projection, key) DO UPDATE SET value = EXCLUDED.value"
)
_ADVANCE = (
    f"UPDATE {META_TABLE} AS m SET position = u.pos, version = u.ver, "
    "snapshot = coalesce(u.snap, m.snapshot) "
    "FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bytea[]) AS u(p, pos, ver, snap) "
    "WHERE m.node_id = %s AND m.projection = u.p"
)
_CLEAR = f"DELETE FROM {STATE_TABLE} WHERE node_id = %s AND projection = %s"
_PUT_META = (
    f"INSERT INTO {META_TABLE} (node_id, projection, position, version, snapshot) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (node_id, projection) DO UPDATE SET "
    "position = EXCLUDED.position, version = EXCLUDED.version, snapshot = EXCLUDED.snapshot"
)


class PostgresStateStore(StateStore):
    """Projection state of one node in two PostgreSQL tables (see module docstring)."""

    def __init__(self, url: str, node_id: str, pool: ConnectionPool[Any], readonly: bool) -> None:
        self.url = url
        self.node_id = node_id
        self.readonly = readonly
        self.target = describe_postgres_url(url)
        self._pool = pool
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str,
        node_id: str,
        *,
        readonly: bool = False,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
    ) -> PostgresStateStore:
        """Connect to `url` and create the tables if missing (with `readonly`: require
        them, create nothing, raising `ProjectionStoreMissing` like LMDB's readonly open
        of a directory without state). An unreachable server raises
        `ProjectionStoreUnreachable` here, at start-up, not at the first commit."""
        if not isinstance(node_id, str) or not node_id or "\x00" in node_id:
            raise ValueError("node_id must be a non-empty string without NUL characters")
        target = describe_postgres_url(url)
        try:
            with first_postgres_connection(url, connect_timeout_s) as conn:
                found = _has_tables(conn) if readonly else _create_schema(conn)
        except psycopg.Error as exc:
            raise ProjectionStoreUnreachable(target, postgres_error_line(exc)) from exc
        if not found:
            raise ProjectionStoreMissing(
                f"{target}: no projection state yet (no tables {STATE_TABLE}, {META_TABLE})"
            )
        try:
            pool = open_postgres_pool(
                url, name="autoagent-projections", max_size=pool_size, timeout_s=connect_timeout_s
            )
        except PoolUnreachable as exc:
            raise ProjectionStoreUnreachable(target, str(exc)) from exc
        return cls(url, node_id, pool, readonly)

    # --- reading -------------------------------------------------------------------

    def _read(self, fn: Callable[[Conn], T]) -> T:
        """Run `fn(conn)` on a pooled connection, translating driver errors."""
        self._check_open()
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except psycopg.Error as exc:
            raise self._failed("read from", exc) from exc

    def _row(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return self._read(lambda conn: conn.execute(query, params, binary=True).fetchone())

    def checkpoint(self, name: str) -> Checkpoint:
        row = self._row(_CHECKPOINT, (self.node_id, name))
        return Checkpoint(int(row[0]), int(row[1])) if row is not None else Checkpoint()

    def get(self, name: str, key: bytes) -> Any:
        row = self._row(_GET, (self.node_id, name, key))
        return None if row is None else unpack(row[0])

    def items(self, name: str, prefix: bytes = b"") -> list[tuple[bytes, Any]]:
        above = _after_prefix(prefix)
        query, params = (
            (_ITEMS, (self.node_id, name, prefix))
            if above is None
            else (_ITEMS_BELOW, (self.node_id, name, prefix, above))
        )
        rows = self._read(lambda conn: conn.execute(query, params, binary=True).fetchall())
        return [(bytes(key), unpack(value)) for key, value in rows]

    def snapshot(self, name: str) -> bytes | None:
        row = self._row(_SNAPSHOT, (self.node_id, name))
        return None if row is None or row[0] is None else bytes(row[0])

    @contextlib.contextmanager
    def pinned(self) -> Iterator[StateStore]:
        """A read-only view of this node's state as of now: one connection held in a
        REPEATABLE READ transaction, so several reads (verify, the CLI's overlay) see
        one snapshot even while a server commits beside them."""
        self._check_open()
        try:
            conn = self._pool.getconn()
        except psycopg.Error as exc:
            raise self._failed("pinning", exc) from exc
        try:
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # The snapshot is taken at the first query, not at BEGIN: take it now.
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                raise self._failed("pinning", exc) from exc
            yield _PinnedPostgresState(self, conn)
        finally:
            # A connection broken meanwhile fails here; the pool then discards it.
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            self._pool.putconn(conn)

    # --- writing -------------------------------------------------------------------

    def _write(self, what: str, fn: Callable[[Conn], None]) -> None:
        """Run `fn(conn)` in one transaction; `CheckpointMoved` from it rolls back."""
        self._check_writable()
        try:
            with self._pool.connection() as conn, conn.transaction():
                fn(conn)
        except psycopg.Error as exc:
            raise self._failed(f"{what} to", exc) from exc

    def commit(self, commits: list[StateCommit]) -> None:
        """Apply several projections' commits in one transaction (module docstring)."""
        if not commits:
            self._check_writable()
            return
        # Everything is encoded before the transaction: all or nothing, as in LMDB. A
        # key written by two commits of the list keeps the later value, as in LMDB.
        changes: dict[tuple[str, bytes], bytes | None] = {}
        for commit in commits:
            for key, value in commit.changes.items():
                changes[(commit.name, key)] = None if value is None else pack(value)
        self._write("commit", lambda conn: self._commit_in(conn, commits, changes))

    def _commit_in(
        self,
        conn: Conn,
        commits: list[StateCommit],
        changes: dict[tuple[str, bytes], bytes | None],
    ) -> None:
        names = sorted({c.name for c in commits})
        actual = {name: int(pos) for name, pos in conn.execute(_LOCK, (self.node_id, names))}
        for commit in commits:
            if actual[commit.name] != commit.expected_position:
                raise CheckpointMoved(commit.name, commit.expected_position, actual[commit.name])
            actual[commit.name] = commit.position
        deleted = [name_key for name_key, packed in changes.items() if packed is None]
        if deleted:
            conn.execute(_DELETE, ([n for n, _ in deleted], [k for _, k in deleted], self.node_id))
        written = [(n, k, v) for (n, k), v in changes.items() if v is not None]
        if written:
            _upsert(conn, self.node_id, written)
        conn.execute(_ADVANCE, (*_heads(commits), self.node_id))

    def replace(
        self,
        name: str,
        version: int,
        position: int,
        items: list[tuple[bytes, Any]],
        snapshot: bytes | None = None,
    ) -> None:
        """Swap in a whole state, snapshot and checkpoint in one transaction. The meta
        row is written first: its lock orders this after a commit in progress."""
        # A key listed twice keeps its later value, as LMDB's successive puts do.
        packed = {key: pack(value) for key, value in items}

        def write(conn: Conn) -> None:
            conn.execute(_PUT_META, (self.node_id, name, position, version, snapshot))
            conn.execute(_CLEAR, (self.node_id, name))
            if packed:
                _upsert(conn, self.node_id, [(name, k, v) for k, v in packed.items()])

        self._write("replace", write)

    def close(self) -> None:
        """Close the pool; later calls raise `ProjectionStoreFailed`."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    def _failed(self, what: str, exc: psycopg.Error) -> ProjectionStoreFailed:
        return ProjectionStoreFailed(f"{what} {self.target} failed: {postgres_error_line(exc)}")

    def _check_open(self) -> None:
        if self._closed:
            raise ProjectionStoreFailed(f"the projection state at {self.target} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ProjectionStoreMissing(f"{self.target}: projection state opened read-only")


class _PinnedPostgresState(PinnedView, PostgresStateStore):
    """A `PostgresStateStore` whose reads all go through one held transaction."""

    def __init__(self, store: PostgresStateStore, conn: Conn) -> None:
        super().__init__(store.url, store.node_id, store._pool, readonly=True)
        self._conn = conn

    def _read(self, fn: Callable[[Conn], T]) -> T:
        try:
            return fn(self._conn)
        except psycopg.Error as exc:
            raise self._failed("read from", exc) from exc

    @contextlib.contextmanager
    def pinned(self) -> Iterator[StateStore]:
        yield self

    def close(self) -> None:
        return None


def _create_schema(conn: Conn) -> bool:
    """Create the tables unless present, under the schema lock; True (they exist now)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        for statement in _SCHEMA:
            conn.execute(statement)
    return True


def _has_tables(conn: Conn) -> bool:
    row = conn.execute("SELECT to_regclass(%s), to_regclass(%s)", (STATE_TABLE, META_TABLE))
    found = row.fetchone()
    return found is not None and found[0] is not None and found[1] is not None


def _upsert(conn: Conn, node_id: str, rows: list[tuple[str, bytes, bytes]]) -> None:
    """Write many keys in one statement (three arrays), not one round trip per key."""
    names, keys, values = (list(column) for column in zip(*rows, strict=True))
    conn.execute(_UPSERT, (node_id, names, keys, values))


def _heads(commits: list[StateCommit]) -> tuple[list[Any], ...]:
    """The new checkpoint and snapshot (None: keep the stored one) of each projection,
    as four arrays. A projection committed twice in one list ends at its last commit
    and keeps its last snapshot, as successive LMDB puts would."""
    final: dict[str, tuple[str, int, int, bytes | None]] = {}
    for c in commits:
        kept = final[c.name][3] if c.name in final else None
        snapshot = kept if c.snapshot is None else c.snapshot
        final[c.name] = (c.name, c.position, c.version, snapshot)
    return tuple(list(column) for column in zip(*final.values(), strict=True))


def _after_prefix(prefix: bytes) -> bytes | None:
    """The least key above every key starting with `prefix`; None when there is none
    (an empty prefix, or one of 0xff bytes only), so an index range serves `items`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
