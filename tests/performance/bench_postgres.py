"""PostgreSQL event log benchmark (issue 17): durable appends on PostgreSQL, LMDB and a peer.

From the project root:

    .venv/bin/python -m tests.performance.bench_postgres [--quick] [--out PATH]
        [--work-dir DIR] [--peers | --no-peers] [--markdown]

A real PostgreSQL cluster (`pgserver`, unix socket only) is started with its data
directory under `--work-dir` (default: the system temp dir; it must be a real disk,
fsync on tmpfs costs nothing), keeping PostgreSQL's durable defaults: fsync on,
synchronous_commit on (the tests turn both off for speed; this benchmark refuses to run
without them). Those settings, read back from the server, go into the JSON.

Rows, at 1, 16 and 256 concurrent producers, each on a fresh database after a CHECKPOINT
(PostgreSQL) or a fresh directory (LMDB); the producers, window and figures are
bench_eventlog's: each producer (a Trio task) appends one ~300-byte event at a time to
its own stream with `await store.append(stream, [event])`, awaiting durability;
events/s counts the appends acknowledged inside the timed window, after a warm-up.

1. postgres: the `EventStore` over `PostgresEventLog`, opened as the server opens it
   (`store.backend = "postgres"`: pool of 4, the store's writer batching every pending
   append into one commit, i.e. one transaction);
2. lmdb: the `EventStore` over LMDB with the shipped options (sync on), as bench_eventlog;
3. peer (`--peers`, the default; `--no-peers`; off with `--quick`): the `eventsourcing`
   library's PostgreSQL recorder (psycopg 3, its default pool) against the same server,
   in its own venv under the temp dir (`_peers.py`), running `peer_eventsourcing.py
   --postgres`: N threads, each saving one event of its own aggregate per
   `Application.save` (one committed transaction each), same window.

Target (issue 17): PostgreSQL appends at 256 producers >= 10x the peer recorder's, both
measured in this run; without the peer it is reported as not measured.

Writes JSON (default `tests/performance/results/bench_postgres.json`) and prints tables.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb
import psycopg
import trio
from psycopg import sql

from events import PostgresEventLog, StoreOptions

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, Table, filesystem_of, timed
from ._logs import TimedCommits, TimedLog, open_timed_log
from ._peers import EVENTSOURCING_POSTGRES, add_peers_flag, peers_wanted, run_peer
from .bench_eventlog import FULL as EVENTLOG_FULL
from .bench_eventlog import append_row

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

DEFAULT_OUT = RESULTS_DIR / "bench_postgres.json"
PRODUCERS = (1, 16, 256)
TARGET_VS_PEER = 10.0
PEER_TIMEOUT_S = 900.0
# What makes a commit durable on PostgreSQL (and what else a reader of the figures needs),
# as `SHOW` reports it; the first two must be on.
SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "server_version",
)
DURABLE = {"fsync": "on", "synchronous_commit": "on"}
# The pool `PostgresEventLog.open` gives the store when the server opens it (no argument).
STORE_POOL_SIZE = inspect.signature(PostgresEventLog.open).parameters["pool_size"].default
_SHOW = "SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name"


@dataclass(frozen=True, slots=True)
class Sizes:
    append_seconds: float
    append_warmup_seconds: float


# bench_eventlog's window, so its LMDB rows and these compare.
FULL = Sizes(EVENTLOG_FULL.append_seconds, EVENTLOG_FULL.append_warmup_seconds)
# Long enough that 256 producers started on a busy 2-core machine still see commits
# inside the window (0.3 s after 0.1 s of warm-up saw none once during the test suite).
QUICK = Sizes(append_seconds=1.0, append_warmup_seconds=0.5)


class TimedPostgresLog(TimedCommits, PostgresEventLog):
    """The PostgreSQL log, adding up the time the writer's worker thread spends in `commit`
    (the advisory lock, the reads, the insert and the durable COMMIT)."""


OpenLog = Callable[[], TimedLog | TimedPostgresLog]


# --- the server -------------------------------------------------------------------------


@contextmanager
def open_postgres_server(data_dir: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster in `data_dir` with the durable defaults checked; stopped after."""
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        server = get_server(data_dir, cleanup_mode="stop")
    try:
        settings = server_settings(server.get_uri())
        wrong = {k: settings[k] for k, v in DURABLE.items() if settings[k] != v}
        if wrong:
            raise RuntimeError(f"PostgreSQL is not durable here ({wrong}); refusing to measure")
        yield server
    finally:
        server.cleanup()


def server_settings(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_SHOW, (list(SETTINGS),)).fetchall()
    return {str(name): str(value) for name, value in rows}


def fresh_database(server: PostgresServer, name: str) -> str:
    """The URL of a new, empty database `name`, created after a CHECKPOINT, so every row
    starts with the same WAL state (full-page images, no checkpoint already due)."""
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute("CHECKPOINT")
    return str(server.get_uri(name))


def connection_variables(url: str) -> dict[str, str]:
    """The POSTGRES_* variables `eventsourcing.postgres` reads, for the database at `url`
    (host: the unix socket's directory), as a live connection reports them."""
    with psycopg.connect(url) as conn:
        info = conn.info
        return {
            "POSTGRES_DBNAME": info.dbname,
            "POSTGRES_HOST": info.host,
            "POSTGRES_PORT": str(info.port),
            "POSTGRES_USER": info.user,
            "POSTGRES_PASSWORD": info.password or "",
        }


# --- 1 and 2. durable appends through the EventStore ------------------------------------


async def _append_config(open_log: OpenLog, producers: int, sizes: Sizes) -> dict[str, Any]:
    """bench_eventlog's producer row, over the log `open_log` opens (with the shipped options)."""
    log = await trio.to_thread.run_sync(open_log)
    return await append_row(log, producers, sizes, StoreOptions())


def bench_backend(open_logs: Callable[[int], OpenLog], sizes: Sizes) -> dict[str, Any]:
    """One row per producer count, each on the fresh log `open_logs(producers)` opens."""
    configs = [trio.run(_append_config, open_logs(p), p, sizes) for p in PRODUCERS]
    for config in configs:
        config["ratio_vs_1_producer"] = config["events_per_s"] / configs[0]["events_per_s"]
    return {"configs": configs}


def postgres_logs(server: PostgresServer) -> Callable[[int], OpenLog]:
    compress_over = StoreOptions().compress_over_bytes

    def open_logs(producers: int) -> OpenLog:
        url = fresh_database(server, f"autoagent_{producers}")

        def open_log() -> TimedPostgresLog:
            log = TimedPostgresLog.open(url, compress_over=compress_over)
            assert isinstance(log, TimedPostgresLog)
            return log

        return open_log

    return open_logs


def lmdb_logs(work: Path) -> Callable[[int], OpenLog]:
    def open_logs(producers: int) -> OpenLog:
        return partial(open_timed_log, work / f"lmdb-{producers}", StoreOptions())

    return open_logs


# --- 3. the peer: eventsourcing's PostgreSQL recorder, same server ------------------------


def bench_peer(server: PostgresServer, work: Path, sizes: Sizes) -> dict[str, Any]:
    """`peer_eventsourcing.py --postgres` in its venv, once per producer count, each run on
    a fresh database of the same server; `{"peer", "error"}` at the first run that fails."""
    runs: list[dict[str, Any]] = []
    for producers in PRODUCERS:
        url = fresh_database(server, f"peer_{producers}")
        args = [
            "--postgres",
            f"--producers={producers}",
            f"--seconds={sizes.append_seconds}",
            f"--warmup={sizes.append_warmup_seconds}",
        ]
        env = connection_variables(url)
        peer_work = work / f"peer-{producers}"
        result = run_peer(EVENTSOURCING_POSTGRES, peer_work, args, timeout=PEER_TIMEOUT_S, env=env)
        if "error" in result:
            return result
        runs.append(result)
    configs = [c for r in runs for c in r["append"]["configs"]]
    one = configs[0]["events_per_s"]
    for config in configs:
        config["ratio_vs_1_producer"] = config["events_per_s"] / one if one else float("nan")
    first = runs[0]
    return {key: first[key] for key in ("peer", "description", "versions", "settings", "venv")} | {
        "requirements": first["requirements"],
        "setup_seconds": [r["setup_seconds"] for r in runs],
        "run_seconds": [r["seconds"] for r in runs],
        "append": {"configs": configs},
    }


def target_vs_peer(result: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL at 256 producers over the peer's, from this run's figures only."""
    ours = result["append"]["postgres"]["configs"][-1]["events_per_s"]
    peer = result.get("peers", {}).get(EVENTSOURCING_POSTGRES.name)
    theirs = None
    if peer is not None and "error" not in peer:
        theirs = peer["append"]["configs"][-1]["events_per_s"]
    measured = ours / theirs if theirs else None
    return {
        "target": TARGET_VS_PEER,
        "producers": PRODUCERS[-1],
        "postgres_events_per_s": ours,
        "peer_events_per_s": theirs,
        "measured": measured,
        "met": None if measured is None else measured >= TARGET_VS_PEER,
    }


# --- report ------------------------------------------------------------------------------


def report_tables(result: dict[str, Any]) -> list[Table]:
    return [
        Table(
            "PostgreSQL settings (read back from the server)",
            ["setting", "value"],
            list(result["postgres"]["settings"].items()),
        ),
        _appends_table(result),
        *_peer_tables(result),
        _targets_table(result),
    ]


def _appends_table(result: dict[str, Any]) -> Table:
    rows = []
    for backend in ("postgres", "lmdb"):
        for c in result["append"][backend]["configs"]:
            rows.append(
                [
                    backend,
                    c["producers"],
                    c["events_per_s"],
                    c["ratio_vs_1_producer"],
                    c["latency_ms"]["p50"],
                    c["latency_ms"]["p99"],
                    c["mean_batch"],
                    c["commit_ms_mean"],
                    c["commit_thread_share"],
                ]
            )
    return Table(
        "Durable appends through the EventStore (one ~300-byte event per append, own stream)",
        [
            "backend",
            "producers",
            "events/s",
            "x 1 producer",
            "p50 ms",
            "p99 ms",
            "mean batch",
            "commit ms",
            "commit thread share",
        ],
        rows,
    )


def _peer_tables(result: dict[str, Any]) -> list[Table]:
    peer = result.get("peers", {}).get(EVENTSOURCING_POSTGRES.name)
    if peer is None:
        return []
    if "error" in peer:
        return [Table("Peer not measured", ["peer", "error"], [[peer["peer"], peer["error"]]])]
    ours = {c["producers"]: c for c in result["append"]["postgres"]["configs"]}
    lmdb_rows = {c["producers"]: c for c in result["append"]["lmdb"]["configs"]}
    rows = []
    for theirs in peer["append"]["configs"]:
        mine = ours[theirs["producers"]]
        rows.append(
            [
                theirs["producers"],
                mine["events_per_s"],
                theirs["events_per_s"],
                mine["events_per_s"] / theirs["events_per_s"] if theirs["events_per_s"] else "-",
                lmdb_rows[theirs["producers"]]["events_per_s"],
                mine["latency_ms"]["p50"],
                theirs["latency_ms"]["p50"],
                mine["latency_ms"]["p99"],
                theirs["latency_ms"]["p99"],
                f"{mine['record_bytes']} / {theirs['record_bytes']}",
                theirs["errors"],
            ]
        )
    pool = peer["settings"]["pool"]
    return [
        Table(
            "Side by side on the same PostgreSQL server, one event per call: autoagent"
            f" (EventStore, Trio tasks) vs eventsourcing {peer['versions']['eventsourcing']}"
            f" (PostgreSQL recorder, threads, pool {pool['min_size']}..{pool['max_size']})",
            [
                "producers",
                "autoagent events/s",
                "eventsourcing events/s",
                "autoagent / eventsourcing",
                "autoagent LMDB events/s",
                "autoagent p50 ms",
                "eventsourcing p50 ms",
                "autoagent p99 ms",
                "eventsourcing p99 ms",
                "record bytes (ours / theirs)",
                "eventsourcing errors",
            ],
            rows,
        )
    ]


def _targets_table(result: dict[str, Any]) -> Table:
    t = result["targets"]["postgres_vs_peer_at_256"]
    return Table(
        "Target (issue 17)",
        ["target", "measured", "goal", "met"],
        [
            [
                f"PostgreSQL appends at {t['producers']} producers / peer recorder's",
                "-" if t["measured"] is None else t["measured"],
                f">= {t['target']:g}",
                "not measured" if t["met"] is None else t["met"],
            ]
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, work_dir_help="where the cluster and stores go")
    add_peers_flag(parser, EVENTSOURCING_POSTGRES)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    result = result_header("bench_postgres", args.quick, argv, args.work_dir) | {
        "versions": {
            "psycopg": psycopg.__version__,
            "pgserver": version("pgserver"),
            "lmdb": lmdb.__version__,
            "trio": trio.__version__,
        },
        "sizes": {
            "producers": list(PRODUCERS),
            "seconds": sizes.append_seconds,
            "warmup_s": sizes.append_warmup_seconds,
        },
    }
    with (
        timed() as total,
        scratch_dir(args.work_dir, "bench-postgres-") as work,
        open_postgres_server(work / "pgdata") as server,
    ):
        result["postgres"] = {
            "settings": server_settings(server.get_uri()),
            "data_dir": str(work / "pgdata"),
            "data_dir_filesystem": filesystem_of(work / "pgdata"),
            "store_pool_size": STORE_POOL_SIZE,
        }
        result["versions"]["postgres"] = result["postgres"]["settings"]["server_version"]
        result["append"] = {"postgres": bench_backend(postgres_logs(server), sizes)}
        if peers_wanted(args.peers, args.quick):
            result["peers"] = {EVENTSOURCING_POSTGRES.name: bench_peer(server, work, sizes)}
        result["append"]["lmdb"] = bench_backend(lmdb_logs(work), sizes)
    result["targets"] = {"postgres_vs_peer_at_256": target_vs_peer(result)}
    finish(result, args.out, report_tables, seconds=total.seconds, markdown=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
