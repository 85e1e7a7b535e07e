"""Peer for bench_eventlog and bench_postgres: the `eventsourcing` library's recorders, alike.

Runs inside its own venv (see `_peers.py`), never the project's: it imports nothing from
the project. Usage:

    python peer_eventsourcing.py WORK_DIR [--quick] [--seconds S] [--warmup S]
        [--producers 1,16,256] [--replay-events N] [--replay-runs N]
    POSTGRES_DBNAME=... POSTGRES_HOST=... POSTGRES_PORT=... POSTGRES_USER=...
        POSTGRES_PASSWORD=... python peer_eventsourcing.py WORK_DIR --postgres
        --producers N [--seconds S] [--warmup S]

1. appends: N producer threads, each saving one `StepCompleted` (a ~200-character
   result, like the project's STEP_RESULT) of its own aggregate per `Application.save`;
   SQLite in WAL mode with synchronous=FULL, so each save is one fsynced commit.
   Throughput counts the saves acknowledged inside the timed window, after a warm-up.
2. replay: a database of N events (32 aggregates, 100 events per save), read back
   whole in pages of 1,000 notifications, as stored records and decoded to domain events.

With `--postgres`, appends only (1.), through `eventsourcing.postgres` (its application
recorder: each save one transaction that locks the table and inserts, committed with
the server's own durability settings, read back into the result) to the database the
POSTGRES_* variables name, as the library reads them. One `--producers` value per run:
the rows stored are checked against the saves, so each row needs a fresh database.

Prints one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool

# The same ~200 characters as the project's STEP_RESULT (bench_eventlog.py).
STEP_RESULT = ("Fetched 12 rows from the orders table; 3 are overdue by more than 30 days. " * 3)[
    :200
]
PAGE = 1_000
FILL_AGGREGATES = 32
FILL_PER_SAVE = 100
# The pool's default 5 s wait for the writer lock is shorter than 256 threads queueing
# for one fsynced commit each on a slow disk; a timeout would drop saves, not measure them.
POOL_TIMEOUT_S = 600.0
# What makes a commit durable on PostgreSQL, as `SHOW` reports it in the recorder's session.
POSTGRES_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "server_version",
)
FULL = {"seconds": 4.0, "warmup": 0.5, "replay_events": 200_000, "replay_runs": 3}
QUICK = {"seconds": 1.0, "warmup": 0.5, "replay_events": 10_000, "replay_runs": 1}


class Run(Aggregate):
    """One producer's stream: a run that completes steps."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    @event("StepCompleted")
    def complete_step(self, step_id: str, result: str, duration_s: float) -> None:
        self.steps += 1


# PRAGMA synchronous as read back on each connection the recorder opened (2 is FULL).
SYNCHRONOUS_SEEN: set[int] = set()


def _full_sync_connections() -> None:
    """Every connection the recorder opens runs with synchronous=FULL (set, not assumed:
    the default depends on how SQLite was compiled)."""
    create = SQLiteConnectionPool._create_connection

    def create_full(pool: SQLiteConnectionPool) -> SQLiteConnection:
        connection = create(pool)
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=FULL;")
        cursor.execute("PRAGMA synchronous;")
        SYNCHRONOUS_SEEN.add(int(cursor.fetchone()[0]))
        return connection

    SQLiteConnectionPool._create_connection = create_full  # type: ignore[method-assign,assignment]


def open_app(path: Path) -> Application[UUID]:
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    app: Application[UUID] = Application(env=env)
    app.factory.datastore.pool.pool_timeout = POOL_TIMEOUT_S  # type: ignore[attr-defined]
    return app


def open_postgres_app() -> Application[UUID]:
    """The PostgreSQL recorder, connected as the POSTGRES_* variables say; the wait for a
    pooled connection raised like the SQLite pool's timeout, unless the variables set it."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.postgres"}
    if not os.environ.get("POSTGRES_CONNECT_TIMEOUT"):
        env["POSTGRES_CONNECT_TIMEOUT"] = str(int(POOL_TIMEOUT_S))
    app: Application[UUID] = Application(env=env)
    return app


def postgres_settings(app: Application[UUID]) -> dict[str, Any]:
    """The server's durability settings as the recorder's connections see them, and its pool."""
    datastore = app.factory.datastore  # type: ignore[attr-defined]
    query = "SELECT name, current_setting(name) AS value FROM unnest(%s::text[]) AS name"
    with datastore.get_connection() as conn:
        rows = conn.execute(query, (list(POSTGRES_SETTINGS),)).fetchall()
    pool = datastore.pool
    return {
        "settings": {row["name"]: row["value"] for row in rows},
        "pool": {"min_size": pool.min_size, "max_size": pool.max_size, "timeout_s": pool.timeout},
    }


def pragmas(path: Path) -> dict[str, Any]:
    """What the database file says about itself, read through a fresh connection."""
    with sqlite3.connect(path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    seen = sorted(names.get(level, str(level)) for level in SYNCHRONOUS_SEEN)
    return {"journal_mode": mode, "synchronous": "/".join(seen) or "?"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- 1. durable appends ---------------------------------------------------------------


class _Window:
    """The timed window and what the producers record in it (perf_counter seconds)."""

    def __init__(self, warmup: float, seconds: float) -> None:
        self.begin = time.perf_counter() + warmup
        self.end = self.begin + seconds
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.completed = 0
        self.errors: list[str] = []


def _producer(app: Application[UUID], run: Run, window: _Window) -> None:
    latencies: list[float] = []
    completed = step = 0
    try:
        while (start := time.perf_counter()) < window.end:
            step += 1
            run.complete_step(step_id=f"step-{step}", result=STEP_RESULT, duration_s=0.25)
            app.save(run)
            done = time.perf_counter()
            completed += 1
            if window.begin <= done <= window.end:
                latencies.append(done - start)
    except Exception as exc:  # a failed save ends this producer; the report says why
        with window.lock:
            window.errors.append(f"{type(exc).__name__}: {exc}")
    with window.lock:
        window.latencies += latencies
        window.completed += completed


def append_config(
    work: Path, producers: int, seconds: float, warmup: float, postgres: bool = False
) -> dict[str, Any]:
    path = work / f"append-{producers}.sqlite"
    app = open_postgres_app() if postgres else open_app(path)
    runs = [Run(name=f"run-{i}") for i in range(producers)]
    app.save(*runs)  # the creation events, before the clock starts
    window = _Window(warmup, seconds)
    threads = [threading.Thread(target=_producer, args=(app, r, window)) for r in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = app.recorder.max_notification_id() or 0
    sample = app.recorder.select_notifications(producers + 1, 1)
    storage = {"postgres": postgres_settings(app)} if postgres else {}
    app.close()
    if not window.errors and stored != producers + window.completed:
        raise AssertionError(f"{window.completed} saves acknowledged but {stored} rows stored")
    lat_ms = [x * 1000 for x in window.latencies]
    return {
        "producers": producers,
        "events": len(lat_ms),
        "seconds": round(seconds, 3),
        "events_per_s": len(lat_ms) / seconds,
        "latency_ms": {
            "p50": percentile(lat_ms, 50),
            "p99": percentile(lat_ms, 99),
            "mean": statistics.fmean(lat_ms) if lat_ms else float("nan"),
            "max": max(lat_ms, default=float("nan")),
        },
        "record_bytes": len(sample[0].state) + len(sample[0].topic) if sample else 0,
        "errors": len(window.errors),
        "first_error": window.errors[0] if window.errors else None,
        **(storage or {"sqlite": pragmas(path)}),
    }


# --- 2. replay --------------------------------------------------------------------------


def fill(path: Path, total: int) -> float:
    """`total` events: 32 aggregates (their creation events count), 100 events per save."""
    app = open_app(path)
    started = time.perf_counter()
    runs = [Run(name=f"run-{i}") for i in range(FILL_AGGREGATES)]
    app.save(*runs)
    remaining, step, index = total - FILL_AGGREGATES, 0, 0
    while remaining > 0:
        run = runs[index % FILL_AGGREGATES]
        for _ in range(min(FILL_PER_SAVE, remaining)):
            step += 1
            run.complete_step(step_id=f"step-{step}", result=STEP_RESULT, duration_s=0.25)
        remaining -= min(FILL_PER_SAVE, remaining)
        app.save(run)
        index += 1
    seconds = time.perf_counter() - started
    app.close()
    return seconds


def scan(app: Application[UUID], total: int, decode: bool) -> float:
    """Seconds to read every notification in pages; `decode`: to domain events as well."""
    recorder, mapper = app.recorder, app.mapper
    count = last = 0
    started = time.perf_counter()
    start = 1
    while True:
        page = recorder.select_notifications(start, PAGE)
        for notification in page:
            if decode:
                mapper.to_domain_event(notification)
            count += 1
            last = notification.id
        if len(page) < PAGE:
            break
        start = last + 1
    seconds = time.perf_counter() - started
    if count != total or last != total:
        raise AssertionError(f"scan read {count} events up to {last}, wanted {total}")
    return seconds


def replay(work: Path, total: int, runs: int) -> dict[str, Any]:
    path = work / "replay.sqlite"
    fill_s = fill(path, total)
    app = open_app(path)
    stored = [scan(app, total, decode=False) for _ in range(runs)]
    decoded = [scan(app, total, decode=True) for _ in range(runs)]
    app.close()
    size = sum(p.stat().st_size for p in work.glob("replay.sqlite*"))

    def summary(samples: list[float]) -> dict[str, Any]:
        return {
            "runs_s": [round(s, 4) for s in samples],
            "events_per_s": total / statistics.median(samples),
        }

    return {
        "events": total,
        "database_bytes": size,
        "fill_events_per_s": total / fill_s,
        "fill_note": f"{FILL_PER_SAVE} events per save, each save one fsynced commit",
        "stored_notifications": summary(stored),
        "decoded_domain_events": summary(decoded),
    }


def postgres_result(work: Path, producers: int, seconds: float, warmup: float) -> dict[str, Any]:
    """`--postgres`: one row of appends, on the database the POSTGRES_* variables name."""
    from psycopg import __version__ as psycopg_version

    config = append_config(work, producers, seconds, warmup, postgres=True)
    settings = config["postgres"]["settings"]
    return {
        "peer": "eventsourcing-postgres",
        "description": "eventsourcing Application + PostgreSQL recorder (psycopg 3, "
        f"synchronous_commit={settings.get('synchronous_commit')}, "
        f"fsync={settings.get('fsync')}), one event per Application.save, producer threads",
        "versions": {
            "python": platform.python_version(),
            "eventsourcing": version("eventsourcing"),
            "psycopg": psycopg_version,
            "postgres": settings.get("server_version"),
        },
        "settings": {"pool": config["postgres"]["pool"], "seconds": seconds, "warmup_s": warmup},
        "append": {"configs": [config]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="appends only, to the PostgreSQL database of the POSTGRES_* variables",
    )
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--producers", default="1,16,256")
    parser.add_argument("--replay-events", type=int)
    parser.add_argument("--replay-runs", type=int)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    seconds = args.seconds if args.seconds is not None else sizes["seconds"]
    warmup = args.warmup if args.warmup is not None else sizes["warmup"]
    replay_events = args.replay_events or int(sizes["replay_events"])
    replay_runs = args.replay_runs or int(sizes["replay_runs"])
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    if args.postgres:
        producers = [int(p) for p in args.producers.split(",") if p]
        if len(producers) != 1:
            parser.error("--postgres takes one --producers value (a fresh database per row)")
        json.dump(postgres_result(work, producers[0], seconds, warmup), sys.stdout)
        sys.stdout.write("\n")
        return 0
    _full_sync_connections()
    configs = [append_config(work, int(p), seconds, warmup) for p in args.producers.split(",") if p]
    for config in configs:
        config["ratio_vs_1_producer"] = config["events_per_s"] / configs[0]["events_per_s"]
    result = {
        "peer": "eventsourcing",
        "description": "eventsourcing Application + SQLite recorder (WAL, synchronous=FULL), "
        "one event per Application.save, producer threads",
        "versions": {
            "python": platform.python_version(),
            "eventsourcing": version("eventsourcing"),
            "sqlite": sqlite3.sqlite_version,
        },
        "settings": {"pool_timeout_s": POOL_TIMEOUT_S, "seconds": seconds, "warmup_s": warmup},
        "append": {"configs": configs},
        "replay": replay(work, replay_events, replay_runs),
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
