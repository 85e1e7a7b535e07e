"""Event log benchmark: durable appends, full replay, and the per-save file rewrite it replaces.

From the project root:

    .venv/bin/python -m tests.performance.bench_eventlog [--quick] [--out PATH] [--work-dir DIR]

Three measurements, each over fresh stores in a temporary directory under `--work-dir`
(default: the system temp dir; it must be a real disk, fsync on tmpfs costs nothing):

1. appends: N concurrent producers (Trio tasks), one event per `store.append`, sync on,
   against raw py-lmdb puts with one synced transaction per event and per 100 events;
2. replay: every event decoded through `EventStore.iterate()` and `log.read()`, against
   a raw LMDB cursor plus `msgpack.unpackb` over the same data file;
3. session saves: a session rewritten whole (JSON or msgpack, fsync) on every save,
   against one append per interaction, at growing session sizes.

Peer, in the same run right after 1 and 2 (`--peers`, the default; `--no-peers`; off
with `--quick`): the `eventsourcing` library with its SQLite recorder (WAL,
synchronous=FULL), in its own venv under the temp dir (`_peers.py`), running
`peer_eventsourcing.py` with the same producers, window and replay size: one event
per `Application.save` from producer threads, and a replay of every event back.

Writes JSON (default `tests/performance/results/bench_eventlog.json`) and prints tables.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import trio

from events import (
    AssistantMessageSent,
    EventStore,
    SessionStarted,
    StepCompleted,
    StoreOptions,
    UserMessageReceived,
    open_event_store,
)
from events._lmdb_log import INDEX_EVERY

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import (
    ASSISTANT_TEXT,
    RESULTS_DIR,
    USER_TEXT,
    Table,
    median,
    percentile,
    python_default_collector,
    shipped_collector,
    timed,
)
from ._logs import U64, TimedCommits, check_scan, open_timed_log, scan_log, scan_raw
from ._peers import EVENTSOURCING, add_peers_flag, peers_wanted, run_peer

DEFAULT_OUT = RESULTS_DIR / "bench_eventlog.json"
PRODUCERS = (1, 16, 256)
RAW_VALUE_BYTES = 300
TARGET_APPENDS_PER_S = 50_000
TARGET_SCALING = 10.0
TARGET_P50_VS_RAW = 1.5
TARGET_REPLAY_PER_S = 250_000
PEER_TIMEOUT_S = 900.0

# ~200 characters of text: a step result (a chat interaction is USER_TEXT + ASSISTANT_TEXT).
STEP_RESULT = ("Fetched 12 rows from the orders table; 3 are overdue by more than 30 days. " * 3)[
    :200
]


@dataclass(frozen=True, slots=True)
class Sizes:
    append_seconds: float
    append_warmup_seconds: float
    raw_seconds: float
    replay_events: int
    replay_runs: int
    session_sizes: tuple[int, ...]
    session_saves: int


FULL = Sizes(
    append_seconds=4.0,
    append_warmup_seconds=0.5,
    raw_seconds=2.0,
    replay_events=200_000,
    replay_runs=3,
    session_sizes=(100, 1_000, 10_000),
    session_saves=9,
)
QUICK = Sizes(
    append_seconds=1.0,
    append_warmup_seconds=0.5,
    raw_seconds=0.2,
    replay_events=10_000,
    replay_runs=1,
    session_sizes=(100, 1_000),
    session_saves=3,
)


# --- 1. durable appends ------------------------------------------------------------


@dataclass
class _AppendRun:
    """What the producers of one configuration record (trio clock, seconds).

    `latencies` holds every append acknowledged inside [begin, end]: their count over
    the window is the throughput; `completed` counts all, for the final check.
    """

    begin: float
    end: float
    latencies: list[float] = field(default_factory=list)
    completed: int = 0


async def _producer(store: EventStore, index: int, run: _AppendRun) -> None:
    stream = f"run-{index}"
    step = 0
    while (start := trio.current_time()) < run.end:
        step += 1
        event = StepCompleted(
            run_id=stream, step_id=f"step-{step}", result=STEP_RESULT, duration_s=0.25
        )
        await store.append(stream, [event])
        done = trio.current_time()
        run.completed += 1
        if run.begin <= done <= run.end:
            run.latencies.append(done - start)


async def _append_config(work: Path, producers: int, sizes: Sizes) -> dict[str, Any]:
    options = StoreOptions(sync=True)
    log = open_timed_log(work / f"append-{producers}", options)
    return await append_row(log, producers, sizes, options)


async def append_row(
    log: TimedCommits, producers: int, sizes: Sizes, options: StoreOptions
) -> dict[str, Any]:
    """One producer row over `log` (any backend, counting its commit time): `producers`
    tasks append one event at a time, awaited, and the window's figures."""
    async with open_event_store(options=options, log=log) as store:
        now = trio.current_time()
        run = _AppendRun(
            begin=now + sizes.append_warmup_seconds,
            end=now + sizes.append_warmup_seconds + sizes.append_seconds,
        )
        async with trio.open_nursery() as nursery:
            for index in range(producers):
                nursery.start_soon(_producer, store, index, run)
            await trio.sleep_until(run.begin)
            stats0, commit0 = store.statistics(), log.commit_seconds
            await trio.sleep_until(run.end)
            stats1, commit1 = store.statistics(), log.commit_seconds
        head = store.head_position
        first = await trio.to_thread.run_sync(log.read_raw, 0, 1)
    if head != run.completed:
        raise AssertionError(f"{run.completed} appends acknowledged but head is {head}")
    seconds = run.end - run.begin
    commits = stats1.commits - stats0.commits
    appends = stats1.appends - stats0.appends
    lat_ms = [x * 1000 for x in run.latencies]
    return {
        "producers": producers,
        "events": len(run.latencies),
        "seconds": round(seconds, 3),
        "events_per_s": len(run.latencies) / seconds,
        "latency_ms": {
            "p50": percentile(lat_ms, 50),
            "p99": percentile(lat_ms, 99),
            "mean": sum(lat_ms) / len(lat_ms) if lat_ms else float("nan"),
            "max": max(lat_ms, default=float("nan")),
        },
        "mean_batch": appends / commits if commits else 0.0,
        "mean_batch_whole_run": stats1.mean_batch_requests,
        "commits": commits,
        "commit_ms_mean": (commit1 - commit0) / commits * 1000 if commits else float("nan"),
        "commit_thread_share": (commit1 - commit0) / seconds,
        "record_bytes": len(first[0][1]) if first else 0,
        "events_total": head,
    }


def _raw_lmdb_appends(path: Path, per_txn: int, seconds: float) -> dict[str, Any]:
    """Plain puts of 300-byte values under 8-byte big-endian keys, synced commits."""
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)
    value = os.urandom(RAW_VALUE_BYTES)
    key = 0
    latencies: list[float] = []
    try:
        warm_until = time.perf_counter() + min(0.2, seconds / 4)
        begin = end = 0.0
        while (start := time.perf_counter()) < warm_until + seconds:
            with env.begin(write=True) as txn:
                for _ in range(per_txn):
                    key += 1
                    txn.put(U64.pack(key), value, append=True)
            done = time.perf_counter()
            if start >= warm_until:
                begin = begin or start
                end = done
                latencies.append(done - start)
    finally:
        env.close()
    lat_ms = [x * 1000 for x in latencies]
    events = len(latencies) * per_txn
    return {
        "events_per_txn": per_txn,
        "events": events,
        "seconds": round(end - begin, 3),
        "events_per_s": events / (end - begin) if end > begin else float("nan"),
        "txn_latency_ms": {"p50": percentile(lat_ms, 50), "p99": percentile(lat_ms, 99)},
    }


def _time_ordered_id() -> bytes:
    return (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)


def _raw_store_schema(
    path: Path, streams: int, per_txn: int, value_bytes: int, seconds: float
) -> dict[str, Any]:
    """Diagnostic: the store's on-disk layout written by raw py-lmdb, no Python codec.

    The same keys as events/_lmdb_log.py in batches shaped like the 256-producer run:
    each commit puts its records into `events`; the commit that brings the unindexed
    tail to `INDEX_EVERY` records also writes their `streams`, `ids` and `types` entries
    and `meta.indexed`. The ceiling the on-disk layout allows.
    """
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True, max_dbs=8)
    names = (b"events", b"streams", b"ids", b"types", b"meta")
    dbs = {name: env.open_db(name) for name in names}
    value = os.urandom(value_bytes)
    versions = [0] * streams
    prefixes = [f"run-{i}".encode() + b"\x00" for i in range(streams)]
    position = txns = 0
    tail: list[tuple[bytes, int]] = []
    try:
        warm_until = time.perf_counter() + min(0.3, seconds / 4)
        begin = end = 0.0
        while (start := time.perf_counter()) < warm_until + seconds:
            with env.begin(write=True) as txn:
                for i in range(per_txn):
                    position += 1
                    key = U64.pack(position)
                    txn.put(key, value, append=True, db=dbs[b"events"])
                    tail.append((key, i % streams))
                if len(tail) >= INDEX_EVERY:
                    for key, s in tail:
                        versions[s] += 1
                        txn.put(prefixes[s] + U64.pack(versions[s]), key, db=dbs[b"streams"])
                        txn.put(_time_ordered_id(), key + U64.pack(versions[s]), db=dbs[b"ids"])
                        txn.put(b"StepCompleted\x00" + key, b"", db=dbs[b"types"])
                    txn.put(b"indexed", key, db=dbs[b"meta"])
                    tail.clear()
            done = time.perf_counter()
            if start >= warm_until:
                begin = begin or start
                end = done
                txns += 1
    finally:
        env.close()
    events = txns * per_txn
    return {
        "streams": streams,
        "events_per_txn": per_txn,
        "value_bytes": value_bytes,
        "index_every": INDEX_EVERY,
        "events": events,
        "seconds": round(end - begin, 3),
        "events_per_s": events / (end - begin) if end > begin else float("nan"),
        "commit_ms_mean": (end - begin) / txns * 1000 if txns else float("nan"),
    }


def bench_appends(work: Path, sizes: Sizes) -> dict[str, Any]:
    configs = [trio.run(_append_config, work, p, sizes) for p in PRODUCERS]
    one = configs[0]["events_per_s"]
    for config in configs:
        config["ratio_vs_1_producer"] = config["events_per_s"] / one
    record_bytes = configs[0]["record_bytes"]
    baselines = {
        "raw_lmdb_1_per_txn": _raw_lmdb_appends(work / "raw-1", 1, sizes.raw_seconds),
        "raw_lmdb_100_per_txn": _raw_lmdb_appends(work / "raw-100", 100, sizes.raw_seconds),
    }
    diagnostic = _raw_store_schema(
        work / "raw-schema", PRODUCERS[-1], PRODUCERS[-1], record_bytes, sizes.raw_seconds
    )
    top = configs[-1]
    p50_ratio = (
        configs[0]["latency_ms"]["p50"] / baselines["raw_lmdb_1_per_txn"]["txn_latency_ms"]["p50"]
    )
    return {
        "configs": configs,
        "baselines": baselines,
        "diagnostic_raw_store_schema": diagnostic,
        "targets": {
            "events_per_s_at_256": _target(top["events_per_s"], TARGET_APPENDS_PER_S),
            "ratio_256_vs_1": _target(top["ratio_vs_1_producer"], TARGET_SCALING),
            # One producer's durable append against one raw synced LMDB transaction.
            "p50_1_producer_vs_raw_txn": {
                "target": TARGET_P50_VS_RAW,
                "measured": p50_ratio,
                "met": p50_ratio <= TARGET_P50_VS_RAW,
            },
        },
    }


def _target(measured: float, target: float) -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": measured >= target}


# --- 2. replay -----------------------------------------------------------------------


async def _fill(path: Path, total: int) -> float:
    """Append `total` events (100 per append, 32 producers) without fsync; returns s."""
    producers, per_append = 32, 100
    appends = -(-total // per_append)

    async def produce(store: EventStore, index: int) -> None:
        stream = f"run-{index}"
        for n in range(index, appends, producers):
            count = min(per_append, total - n * per_append)
            events = [
                StepCompleted(stream, f"step-{n}-{i}", STEP_RESULT, 0.25) for i in range(count)
            ]
            await store.append(stream, events)

    with timed() as watch:
        async with open_event_store(path, StoreOptions(sync=False)) as store:
            async with trio.open_nursery() as nursery:
                for index in range(producers):
                    nursery.start_soon(produce, store, index)
            if store.head_position != total:
                raise AssertionError(f"filled {store.head_position} events, wanted {total}")
    return watch.seconds


async def _scan_store(path: Path, total: int, runs: int) -> tuple[list[float], list[float]]:
    """Seconds per full scan through `EventStore.iterate()` and through `log.read()`."""
    iterate_s: list[float] = []
    read_s: list[float] = []
    async with open_event_store(path) as store:
        for _ in range(runs):
            count = last = 0
            with timed() as watch:
                async for record in store.iterate():
                    count += 1
                    last = record.position
            check_scan("iterate", count, last, total)
            iterate_s.append(watch.seconds)
        for _ in range(runs):
            clock = await trio.to_thread.run_sync(scan_log, store.log, total, 1000)
            read_s.append(clock.wall)
    return iterate_s, read_s


def bench_replay(work: Path, sizes: Sizes) -> dict[str, Any]:
    path = work / "replay"
    total = sizes.replay_events
    fill_s = trio.run(_fill, path, total)
    iterate_s, read_s = trio.run(_scan_store, path, total, sizes.replay_runs)
    with python_default_collector():  # diagnostic: what the collector setting is worth
        iterate_pygc_s, _ = trio.run(_scan_store, path, total, sizes.replay_runs)
    raw_s = [scan_raw(path, total).wall for _ in range(sizes.replay_runs)]
    size_bytes = (path / "data.mdb").stat().st_size

    def summary(runs: list[float]) -> dict[str, Any]:
        return {
            "runs_s": [round(s, 4) for s in runs],
            "events_per_s": total / median(runs),
            "ratio_vs_raw": median(raw_s) / median(runs),
        }

    through_store = summary(iterate_s)
    return {
        "events": total,
        "data_file_bytes": size_bytes,
        "fill_nosync_events_per_s": total / fill_s,
        "store_iterate": through_store,
        "log_read_batches": summary(read_s),
        "store_iterate_python_gc": summary(iterate_pygc_s),
        "raw_lmdb_msgpack": summary(raw_s),
        "targets": {
            "store_iterate_events_per_s": _target(
                through_store["events_per_s"], TARGET_REPLAY_PER_S
            )
        },
    }


# --- 3. session saves: rewrite the whole file vs one append ---------------------------


def _interaction(i: int) -> dict[str, Any]:
    return {
        "message_id": f"m-{i:06d}",
        "user": USER_TEXT,
        "assistant": ASSISTANT_TEXT,
        "ts": 1_700_000_000.0 + i,
    }


def _encode_json(session: dict[str, Any]) -> bytes:
    return json.dumps(session).encode()


def _encode_msgpack(session: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(session, use_bin_type=True)
    return data


def _save_rewrite(
    path: Path, session: dict[str, Any], encode: Callable[[dict[str, Any]], bytes]
) -> tuple[float, int]:
    """Encode the whole session, write a temp file, fsync, rename over; (encode s, bytes)."""
    with timed() as watch:
        data = encode(session)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    return watch.seconds, len(data)


def _time_rewrites(
    path: Path, size: int, saves: int, encode: Callable[[dict[str, Any]], bytes]
) -> dict[str, Any]:
    """The saves numbered size-saves+1 .. size, each after one more interaction."""
    first = size - saves
    interactions = [_interaction(i) for i in range(first)]
    session = {"session_id": "s-1", "user": "bench", "interactions": interactions}
    _save_rewrite(path, session, encode)
    samples: list[float] = []
    encodes: list[float] = []
    size_bytes = 0
    for i in range(first, size):
        interactions.append(_interaction(i))
        with timed() as watch:
            encode_s, size_bytes = _save_rewrite(path, session, encode)
        samples.append(watch.seconds)
        encodes.append(encode_s)
    return {
        "median_ms": median(samples) * 1000,
        "encode_median_ms": median(encodes) * 1000,
        "samples_ms": [round(s * 1000, 3) for s in samples],
        "file_bytes": size_bytes,
    }


def _interaction_events(i: int) -> list[UserMessageReceived | AssistantMessageSent]:
    return [
        UserMessageReceived(session_id="s-1", message_id=f"m-{i:06d}", text=USER_TEXT),
        AssistantMessageSent(session_id="s-1", text=ASSISTANT_TEXT),
    ]


async def _time_appends(path: Path, size: int, saves: int) -> dict[str, Any]:
    """One append (user + assistant event) per interaction, timed for the last `saves`."""
    stream = "session-s-1"
    first = size - saves
    samples: list[float] = []
    async with open_event_store(path, StoreOptions(sync=True)) as store:
        await store.append(stream, [SessionStarted(session_id="s-1", user="bench")])
        for start in range(0, first, 250):
            events = [
                e for i in range(start, min(first, start + 250)) for e in _interaction_events(i)
            ]
            await store.append(stream, events)
        for i in range(first, size):
            with timed() as watch:
                await store.append(stream, _interaction_events(i))
            samples.append(watch.seconds)
        version = await store.stream_version(stream)
    if version != 1 + 2 * size:
        raise AssertionError(f"session stream at version {version}, expected {1 + 2 * size}")
    return {
        "median_ms": median(samples) * 1000,
        "samples_ms": [round(s * 1000, 3) for s in samples],
    }


def bench_session_saves(work: Path, sizes: Sizes) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for size in sizes.session_sizes:
        saves = min(sizes.session_saves, size)
        json_rw = _time_rewrites(work / f"session-{size}.json", size, saves, _encode_json)
        msgpack_rw = _time_rewrites(work / f"session-{size}.msgpack", size, saves, _encode_msgpack)
        append = trio.run(_time_appends, work / f"session-store-{size}", size, saves)
        results.append(
            {
                "interactions": size,
                "timed_saves": saves,
                "json_rewrite": json_rw,
                "msgpack_rewrite": msgpack_rw,
                "event_append": append,
                "json_vs_append": json_rw["median_ms"] / append["median_ms"],
                "msgpack_vs_append": msgpack_rw["median_ms"] / append["median_ms"],
            }
        )
    first, last = results[0], results[-1]
    return {
        "sizes": list(sizes.session_sizes),
        "results": results,
        "growth_first_to_last": {
            "json_rewrite": last["json_rewrite"]["median_ms"] / first["json_rewrite"]["median_ms"],
            "msgpack_rewrite": last["msgpack_rewrite"]["median_ms"]
            / first["msgpack_rewrite"]["median_ms"],
            "event_append": last["event_append"]["median_ms"] / first["event_append"]["median_ms"],
        },
    }


# --- peer: eventsourcing + SQLite, same sizes ----------------------------------------------


def bench_peer(work: Path, sizes: Sizes) -> dict[str, Any]:
    """`peer_eventsourcing.py` in its venv with this run's producers, window and replay."""
    args = [
        f"--seconds={sizes.append_seconds}",
        f"--warmup={sizes.append_warmup_seconds}",
        "--producers=" + ",".join(str(p) for p in PRODUCERS),
        f"--replay-events={sizes.replay_events}",
        f"--replay-runs={sizes.replay_runs}",
    ]
    return run_peer(EVENTSOURCING, work / "peer-eventsourcing", args, timeout=PEER_TIMEOUT_S)


def peer_tables(result: dict[str, Any]) -> list[Table]:
    """The peer beside the project's figures, or one line saying why it is missing."""
    peer = result.get("peers", {}).get("eventsourcing")
    if peer is None:
        return []
    if "error" in peer:
        return [Table("Peer not measured", ["peer", "error"], [["eventsourcing", peer["error"]]])]
    return [_peer_appends(result, peer), _peer_replay(result, peer)]


def _peer_appends(result: dict[str, Any], peer: dict[str, Any]) -> Table:
    ours = {c["producers"]: c for c in result["append"]["configs"]}
    synchronous = peer["append"]["configs"][0]["sqlite"]["synchronous"]
    rows = []
    for theirs in peer["append"]["configs"]:
        mine = ours[theirs["producers"]]
        rows.append(
            [
                theirs["producers"],
                mine["events_per_s"],
                theirs["events_per_s"],
                mine["events_per_s"] / theirs["events_per_s"],
                mine["latency_ms"]["p50"],
                theirs["latency_ms"]["p50"],
                mine["latency_ms"]["p99"],
                theirs["latency_ms"]["p99"],
                f"{mine['record_bytes']} / {theirs['record_bytes']}",
                theirs["errors"],
            ]
        )
    return Table(
        "Side by side, durable appends of one event per call: autoagent (LMDB sync, Trio tasks)"
        f" vs eventsourcing {peer['versions']['eventsourcing']} (SQLite WAL,"
        f" synchronous={synchronous}, threads)",
        [
            "producers",
            "autoagent events/s",
            "eventsourcing events/s",
            "autoagent / eventsourcing",
            "autoagent p50 ms",
            "eventsourcing p50 ms",
            "autoagent p99 ms",
            "eventsourcing p99 ms",
            "record bytes (ours / theirs)",
            "eventsourcing errors",
        ],
        rows,
    )


def _peer_replay(result: dict[str, Any], peer: dict[str, Any]) -> Table:
    replay, theirs = result["replay"], peer["replay"]
    iterate = replay["store_iterate"]["events_per_s"]
    readers = (
        ("autoagent store.iterate() (decoded events)", replay["store_iterate"]),
        ("autoagent log.read() batches", replay["log_read_batches"]),
        ("eventsourcing: decoded domain events", theirs["decoded_domain_events"]),
        ("eventsourcing: stored notifications (not decoded)", theirs["stored_notifications"]),
    )
    return Table(
        f"Side by side, replay of {replay['events']:,} events (warm page cache)",
        ["reader", "events/s", "x autoagent store.iterate()"],
        [[name, r["events_per_s"], r["events_per_s"] / iterate] for name, r in readers],
    )


# --- report ------------------------------------------------------------------------------


def report_tables(result: dict[str, Any]) -> list[Table]:
    appends, replay, sessions = result["append"], result["replay"], result["session_save"]
    raw_one = appends["baselines"]["raw_lmdb_1_per_txn"]["events_per_s"]
    diag = appends["diagnostic_raw_store_schema"]
    return [
        Table(
            "Durable appends (sync on, one ~300-byte event per append)",
            [
                "producers",
                "events/s",
                "x 1 producer",
                "x raw 1/txn",
                "p50 ms",
                "p99 ms",
                "mean batch",
                "commit ms",
                "commit thread share",
            ],
            [
                [
                    c["producers"],
                    c["events_per_s"],
                    c["ratio_vs_1_producer"],
                    c["events_per_s"] / raw_one,
                    c["latency_ms"]["p50"],
                    c["latency_ms"]["p99"],
                    c["mean_batch"],
                    c["commit_ms_mean"],
                    c["commit_thread_share"],
                ]
                for c in appends["configs"]
            ],
        ),
        Table(
            "Raw py-lmdb baselines (sync on, 8-byte keys, append=True)",
            ["baseline", "events/s", "p50 commit ms", "p99 commit ms"],
            [
                [
                    f"{b['events_per_txn']} event(s) per synced txn",
                    b["events_per_s"],
                    b["txn_latency_ms"]["p50"],
                    b["txn_latency_ms"]["p99"],
                ]
                for b in appends["baselines"].values()
            ]
            + [
                [
                    f"diagnostic: store's layout (indexes every {diag['index_every']}),"
                    f" {diag['streams']} streams, {diag['events_per_txn']}/txn",
                    diag["events_per_s"],
                    diag["commit_ms_mean"],
                    "-",
                ]
            ],
        ),
        Table(
            f"Replay of {replay['events']:,} events (warm page cache)",
            ["reader", "events/s", "x raw"],
            [
                [name, replay[name]["events_per_s"], replay[name]["ratio_vs_raw"]]
                for name in (
                    "store_iterate",
                    "store_iterate_python_gc",
                    "log_read_batches",
                    "raw_lmdb_msgpack",
                )
            ],
        ),
        *peer_tables(result),
        Table(
            "Cost of the Nth session save, median ms (rewrite = encode + write + fsync + rename)",
            [
                "interactions",
                "JSON",
                "msgpack",
                "append",
                "JSON/append",
                "msgpack/append",
                "JSON encode ms",
                "JSON KB",
            ],
            [
                [
                    r["interactions"],
                    r["json_rewrite"]["median_ms"],
                    r["msgpack_rewrite"]["median_ms"],
                    r["event_append"]["median_ms"],
                    r["json_vs_append"],
                    r["msgpack_vs_append"],
                    r["json_rewrite"]["encode_median_ms"],
                    r["json_rewrite"]["file_bytes"] / 1024,
                ]
                for r in sessions["results"]
            ],
        ),
        Table(
            "Targets",
            ["target", "measured", "goal", "met"],
            [
                [name, t["measured"], f">= {t['target']:,.0f}", t["met"]]
                for name, t in (
                    ("append events/s, 256 producers", appends["targets"]["events_per_s_at_256"]),
                    ("append 256 vs 1 producer", appends["targets"]["ratio_256_vs_1"]),
                    (
                        "replay events/s, store.iterate()",
                        replay["targets"]["store_iterate_events_per_s"],
                    ),
                )
            ]
            + [
                [
                    "append p50, 1 producer / raw synced txn p50",
                    appends["targets"]["p50_1_producer_vs_raw_txn"]["measured"],
                    f"<= {TARGET_P50_VS_RAW}",
                    appends["targets"]["p50_1_producer_vs_raw_txn"]["met"],
                ]
            ],
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, work_dir_help="where stores go")
    add_peers_flag(parser, EVENTSOURCING)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    result = result_header("bench_eventlog", args.quick, argv, args.work_dir) | {
        "versions": {
            "lmdb": lmdb.__version__,
            "msgpack": msgpack.version,
            "trio": trio.__version__,
        },
        "collector": shipped_collector(),
    }
    with timed() as total, scratch_dir(args.work_dir, "bench-eventlog-") as work:
        result["append"] = bench_appends(work, sizes)
        result["replay"] = bench_replay(work, sizes)
        if peers_wanted(args.peers, args.quick):
            result["peers"] = {"eventsourcing": bench_peer(work, sizes)}
        result["session_save"] = bench_session_saves(work, sizes)
    finish(result, args.out, report_tables, seconds=total.seconds, markdown=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
