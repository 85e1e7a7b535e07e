"""The PostgreSQL backend of the event log: several server nodes append to one log.

One table per database:

    autoagent_events(position bigint PRIMARY KEY, stream text, version bigint, type text,
                     id bytea UNIQUE, value bytea, UNIQUE (stream, version))
    + indexes (stream, position) and (type, position)

`value` is exactly the value LMDB stores (hash + msgpack body, `events._codec`), so the
decoder, the audit and the hash chain are shared by every backend; the other columns
are copies of envelope fields, kept for the indexes.

Positions are gap-free and in commit order, whatever the number of nodes. Every commit
is one READ COMMITTED transaction that first takes a transaction-level advisory lock
(`pg_advisory_xact_lock`, one key per database) and only then reads the head, the
stream versions and the ids it plans against; it inserts positions head+1..., and the
lock is released only after the commit is visible. So writers commit one at a time,
each planning against everything committed before it: no sequence, so no hole left
by a rolled-back transaction, and no transaction ever commits a position below one
that another, still running, will commit later. A reader's snapshot therefore always
holds a prefix 1..n of the log: "position > after" never skips a record that becomes
visible later (the skipped-event bug of event stores that take positions from a
sequence and read up to a high-water mark). Group commit still applies per node: the
store's writer sends every pending append of the node in one `commit`.

Other nodes' appends reach this node's store through its watcher (`shared`): every
commit sends `NOTIFY autoagent_events, '<head>'`, and the watcher blocks in
`wait_for_append` (LISTEN, in a worker thread) until one arrives or
`watch_interval_s` passes, then reads the head (one indexed query) and what is new
from the table.

Threading: methods are called from worker threads. Each borrows its own connection
from a pool (a psycopg connection is never used by two threads at once); the pool
checks a connection before lending it, so one the server closed (a restart, an idle
timeout) is replaced rather than failing the call. A commit that fails still stops the
store's writer, as on LMDB.

`open(readonly=True)` (the CLI's readers, `migrate`'s source) runs no DDL and takes no
lock: a role allowed only to SELECT can read, and a URL naming a database without the
table is refused instead of getting an empty one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from events._codec import GENESIS_HASH, HASH_SIZE, decode_record
from events._log import (
    AppendRequest,
    EventLog,
    LogStatistics,
    Outcome,
    PlannedWrite,
    parse_import,
    plan_batch,
    plan_import,
)
from events._model import RecordedEvent
from events._postgres_pool import (
    describe_postgres_url,
    first_postgres_connection,
    open_postgres_pool,
    postgres_error_line,
)
from events.errors import (
    EventStoreError,
    NotAnEventStore,
    PoolUnreachable,
    StoreClosed,
    StoreUnreachable,
)

TABLE = "autoagent_events"
# Bound on opening the LISTEN connection: the watcher's thread must not hang on a server
# that stopped answering (the store's shutdown waits for that thread).
LISTEN_CONNECT_TIMEOUT_S = 5
CHANNEL = "autoagent_events"
# The advisory lock every commit (and the schema creation) of a database holds: the
# bytes "autoagnt" as a bigint. Advisory locks are per database.
LOCK_KEY = int.from_bytes(b"autoagnt", "big") & 0x7FFF_FFFF_FFFF_FFFF

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        position bigint PRIMARY KEY,
        stream text COLLATE "C" NOT NULL,
        version bigint NOT NULL,
        type text COLLATE "C" NOT NULL,
        id bytea NOT NULL UNIQUE,
        value bytea NOT NULL,
        UNIQUE (stream, version)
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_stream_position ON {TABLE} (stream, position)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_type_position ON {TABLE} (type, position)",
)
_HEAD = (
    f"SELECT position, substring(value FROM 1 FOR {HASH_SIZE}) FROM {TABLE} "
    "ORDER BY position DESC LIMIT 1"
)
# One index probe per stream (max over the (stream, version) index), not a group-by
# over every record of the batch's streams.
_VERSIONS = (
    f"SELECT s, (SELECT max(version) FROM {TABLE} WHERE stream = s) FROM unnest(%s::text[]) AS s"
)
_IDS = f"SELECT id, position, version, stream FROM {TABLE} WHERE id = ANY(%s)"
_COPY = f"COPY {TABLE} (position, stream, version, type, id, value) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ["bigint", "text", "bigint", "text", "bytea", "bytea"]


class _BatchView:
    """The planner's `LogView` of one commit: what the table held, inside the commit's
    transaction after the lock, for the streams and callers' ids of the batch (read in
    one or two queries rather than one per request)."""

    def __init__(self, versions: dict[str, int], ids: dict[bytes, tuple[int, int, str]]):
        self._versions = versions
        self._ids = ids

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], requests: Sequence[AppendRequest]) -> _BatchView:
        streams = sorted({r.stream for r in requests})
        # The planner looks up only callers' ids (`PreparedEvent.fresh_id`): a batch of
        # typed events asks the table for none, one query less per commit.
        ids = [e.id_bytes for r in requests for e in r.events if not e.fresh_id]
        return cls.of(conn, streams, ids)

    @classmethod
    def of(cls, conn: psycopg.Connection[Any], streams: list[str], ids: list[bytes]) -> _BatchView:
        # Both queries are sent before either result is read, so in pipeline mode (a
        # commit's) they share the commit's round trip; otherwise each waits for its rows.
        version_rows = conn.execute(_VERSIONS, (streams,))
        id_rows = conn.execute(_IDS, (ids,)) if ids else None
        versions = {s: v or 0 for s, v in version_rows.fetchall()}
        found = {
            bytes(i): (int(p), int(v), s)
            for i, p, v, s in (id_rows.fetchall() if id_rows is not None else [])
        }
        return cls(versions, found)

    def stream_version(self, stream: str) -> int:
        return self._versions.get(stream, 0)

    def find_id(self, id_bytes: bytes) -> tuple[int, int, str] | None:
        return self._ids.get(id_bytes)


class PostgresEventLog(EventLog):
    """Event log in one PostgreSQL table, shared by every node that opens its URL."""

    shared: ClassVar[bool] = True
    announces_appends: ClassVar[bool] = True

    def __init__(self, url: str, pool: ConnectionPool[Any], compress_over: int) -> None:
        self.url = url
        self._pool = pool
        self._compress_over = compress_over
        self._closed = False
        # The LISTEN connection, opened by the first `wait_for_append`.
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()

    # --- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        compress_over: int = 4096,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        readonly: bool = False,
    ) -> PostgresEventLog:
        """Connect to `url` (a libpq URL or conninfo) and create the table if missing
        (with `readonly`: require it, create nothing; see module docstring).

        A server that cannot be reached raises `StoreUnreachable` here, at start-up,
        rather than at the first append.
        """
        try:
            with first_postgres_connection(url, connect_timeout_s) as conn:
                if not readonly:
                    _create_schema(conn)
                    found = True
                else:
                    row = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
                    found = row is not None and row[0] is not None
        except psycopg.Error as exc:
            raise StoreUnreachable(describe_postgres_url(url), postgres_error_line(exc)) from exc
        if not found:
            raise NotAnEventStore(
                f"{describe_postgres_url(url)}: no event log there (no table {TABLE})"
            )
        try:
            pool = open_postgres_pool(
                url, name="autoagent-events", max_size=pool_size, timeout_s=connect_timeout_s
            )
        except PoolUnreachable as exc:
            raise StoreUnreachable(describe_postgres_url(url), str(exc)) from exc
        return cls(url, pool, compress_over)

    # --- writing -------------------------------------------------------------------

    def commit(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        """Plan and write a batch in one transaction, serialised across nodes by the
        advisory lock (see module docstring for why that keeps positions gap-free)."""
        self._check_open()
        try:
            with self._pool.connection() as conn, conn.transaction():
                # Invariant: nothing is read before the lock is held. READ COMMITTED takes
                # a new snapshot per statement, so the reads below see every commit of
                # the previous holder (it releases the lock after its commit is visible).
                # The lock and the reads are sent together (pipeline mode; leaving it waits
                # for one more reply): two round trips instead of three or four. The server
                # runs them in the order sent, each read only once the lock is held.
                with conn.pipeline():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                    head_rows = conn.execute(_HEAD)
                    view = _BatchView.read(conn, requests)
                    head = _head_of(head_rows.fetchone())
                plan = plan_batch(view, head, requests, ts, self._compress_over)
                if plan.writes:
                    _insert(conn, plan.writes)
                    # Delivered to listeners when (and only if) the transaction commits.
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(plan.head_position)))
        except psycopg.Error as exc:
            raise EventStoreError(
                f"commit to {describe_postgres_url(self.url)} failed: {exc}"
            ) from exc
        return plan.outcomes, plan.writes

    def import_records(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Insert copied records in one transaction, under the commit's advisory lock
        (the head they must continue is read after it, like a commit's)."""
        self._check_open()
        writes = parse_import(records)
        if not writes:
            return
        streams, ids = sorted({w.stream for w in writes}), [w.id_bytes for w in writes]
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                view = _BatchView.of(conn, streams, ids)
                plan_import(view, _head(conn), writes)
                _insert(conn, writes)
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(writes[-1].position)))
        except psycopg.Error as exc:
            raise EventStoreError(
                f"import to {describe_postgres_url(self.url)} failed: {exc}"
            ) from exc

    # --- wake-ups ------------------------------------------------------------------

    def wait_for_append(self, timeout: float) -> bool:
        """Block until some node commits to this log (NOTIFY), at most `timeout` seconds.

        True when a commit was announced. For a watcher in a worker thread: a wake-up
        within milliseconds of another node's commit, instead of a poll interval later.
        The caller reads the head after it returns either way, so a notice that came
        between two waits delays nothing by more than `timeout`. The first call opens
        the LISTEN connection.
        """
        self._check_open()
        with self._listen_lock:
            try:
                listener = self._listening()
                return any(True for _ in listener.notifies(timeout=timeout, stop_after=1))
            except psycopg.Error as exc:
                self._drop_listener()
                raise EventStoreError(
                    f"listening on {describe_postgres_url(self.url)} failed: {exc}"
                ) from exc

    def _listening(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(
                self.url, autocommit=True, connect_timeout=LISTEN_CONNECT_TIMEOUT_S
            )
            self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        return self._listener

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # --- reading -------------------------------------------------------------------

    def head(self) -> tuple[int, bytes]:
        head: tuple[int, bytes] = self._query(_head)
        return head

    def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return _decoded(self._rows(_READ, (after, limit)))

    def read_raw(self, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        return [(int(p), bytes(v)) for p, v in self._rows(_READ, (after, limit))]

    def read_stream(
        self, stream: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        return _decoded(self._rows(_READ_STREAM, (stream, after_version, limit)))

    def read_stream_after(self, stream: str, after: int, limit: int = 1000) -> list[RecordedEvent]:
        return _decoded(self._rows(_READ_STREAM_AFTER, (stream, after, limit)))

    def read_type(self, event_type: str, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return _decoded(self._rows(_READ_TYPE, (event_type, after, limit)))

    def stream_version(self, stream: str) -> int:
        [(version,)] = self._rows(f"SELECT max(version) FROM {TABLE} WHERE stream = %s", (stream,))
        return int(version or 0)

    def streams(self, prefix: str = "") -> list[tuple[str, int]]:
        rows = self._rows(
            f"SELECT stream, max(version) FROM {TABLE} WHERE starts_with(stream, %s) "
            "GROUP BY stream",
            (prefix,),
        )
        # Sorted here, by code point like the other backends, not by a collation.
        return sorted((s, int(v)) for s, v in rows)

    def type_counts(self) -> dict[str, int]:
        rows = self._rows(f"SELECT type, count(*) FROM {TABLE} GROUP BY type", ())
        return {t: int(n) for t, n in sorted(rows)}

    def statistics(self) -> LogStatistics:
        """Head, stream count and the table's size on disk (indexes included); a table
        has no map, so `map_size_bytes` is its size too."""
        [(streams, size)] = self._rows(
            f"SELECT count(DISTINCT stream), pg_total_relation_size(%s) FROM {TABLE}", (TABLE,)
        )
        head, _ = self.head()
        return LogStatistics(head, int(streams), int(size), int(size))

    def close(self) -> None:
        """Close the pool and the LISTEN connection (after a `wait_for_append` in progress
        returns, within its timeout); later calls raise `StoreClosed`."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        with self._listen_lock:
            self._drop_listener()

    # --- helpers -------------------------------------------------------------------

    def _query(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """Run `fn(conn)` on a pooled connection, translating driver errors."""
        self._check_open()
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except psycopg.Error as exc:
            raise EventStoreError(
                f"read from {describe_postgres_url(self.url)} failed: {exc}"
            ) from exc

    def _rows(self, query: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._query(lambda c: c.execute(query, params).fetchall())
        return rows

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the event log is closed")


_READ = f"SELECT position, value FROM {TABLE} WHERE position > %s ORDER BY position LIMIT %s"
_READ_STREAM = (
    f"SELECT position, value FROM {TABLE} WHERE stream = %s AND version > %s "
    "ORDER BY version LIMIT %s"
)
_READ_STREAM_AFTER = (
    f"SELECT position, value FROM {TABLE} WHERE stream = %s AND position > %s "
    "ORDER BY position LIMIT %s"
)
_READ_TYPE = (
    f"SELECT position, value FROM {TABLE} WHERE type = %s AND position > %s "
    "ORDER BY position LIMIT %s"
)


def _create_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the table and indexes unless present; under the commit lock, as two nodes
    starting at once would otherwise race on `CREATE TABLE IF NOT EXISTS`."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        for statement in _SCHEMA:
            conn.execute(statement)


def _head(conn: psycopg.Connection[Any]) -> tuple[int, bytes]:
    return _head_of(conn.execute(_HEAD).fetchone())


def _head_of(row: tuple[Any, ...] | None) -> tuple[int, bytes]:
    if row is None:
        return 0, GENESIS_HASH
    return int(row[0]), bytes(row[1])


def _insert(conn: psycopg.Connection[Any], writes: Iterable[PlannedWrite]) -> None:
    """Write the planned records with one binary COPY."""
    with conn.cursor().copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for w in writes:
            copy.write_row((w.position, w.stream, w.version, w.type, w.id_bytes, w.value))


def _decoded(rows: Iterable[tuple[Any, ...]]) -> list[RecordedEvent]:
    return [decode_record(bytes(value), int(position)) for position, value in rows]
