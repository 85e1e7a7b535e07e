"""Projection benchmark: rebuild throughput, start-up with and without persisted state,
and loading one long session from the projection, the log and a JSON/msgpack file.

From the project root:

    .venv/bin/python -m tests.performance.bench_projections [--quick] [--out PATH]
        [--cache-dir DIR] [--work-dir DIR] [--markdown]

The logs are generated with `tests.workload` straight into an LMDB log (no Trio, no
fsync; generation time is excluded from every figure) and cached under `--cache-dir`
(default /tmp/autoagent-bench-cache), keyed by size and seed; a cached log is reused
when its head matches what was generated. Projection state goes to fresh LMDB stores
in a temporary directory under `--work-dir`. Every figure is with a warm page cache.

1. rebuild: `sessions`+`runs` from position 1 into an `LmdbStateStore` with the
   server's defaults (sync on, batch 2000, snapshot every 10,000), and with sync off,
   through `catch_up` (far behind, it reads and commits `CATCH_UP_BATCH` records at a
   time, as a rebuild and `autoagent replay` do; a server's own start keeps 2000);
   against the bare log scan (`log.read` batches: decode only) and a raw LMDB cursor
   with `msgpack.unpackb`, the ceilings a rebuild cannot beat;
2. start-up of all three projections (sessions, runs, metrics) over a 100k-event and
   the big log: "with" = open the caught-up `LmdbStateStore`, `prepare()` (checkpoints,
   metrics snapshot) and `catch_up()` of an empty tail or of the last 5,000 events;
   "without" = rebuild from position 1 into a `MemoryStateStore`;
3. one session of 10,000 messages: `get_session` from the sessions projection (its
   bounded window plus counters), the full history through `log.read_stream`, and one
   JSON / msgpack file holding the same 10,000 messages, read and parsed.

Writes JSON (default `tests/performance/results/bench_projections.json`) and prints tables.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from events import (
    ANY,
    AssistantMessageSent,
    ContextUpdated,
    Event,
    LmdbEventLog,
    SessionStarted,
    UserMessageReceived,
)
from events._log import AppendRequest
from events._store import prepare_append
from projections import (
    LmdbStateStore,
    MemoryStateStore,
    ProjectionRunner,
    build_projections,
    get_session,
)
from projections._runner import CATCH_UP_BATCH
from server.config import PerformanceConfig, StoreConfig
from tests.workload import run_events, write_workload

from ._cli import make_parser, publish, result_header, scratch_dir
from ._common import (
    ASSISTANT_TEXT,
    RESULTS_DIR,
    USER_TEXT,
    Clock,
    Table,
    clocked,
    load_average,
    median,
    shipped_collector,
    timed,
)
from ._logs import HASH_BYTES, scan_log, scan_raw

DEFAULT_OUT = RESULTS_DIR / "bench_projections.json"
DEFAULT_CACHE = Path("/tmp/autoagent-bench-cache")
CACHE_FORMAT = 1  # bump when the generated content changes
SEED = 7
LOG_MAP_SIZE = 4 << 30

TARGET_REBUILD_PER_S = 100_000
TARGET_STARTUP_S = 1.0
# "Independent of log length": the big log's start-up within 1.5x of the 100k log's, or
# within 50 ms of it (start-ups of a few ms are too noisy for a ratio alone).
INDEPENDENCE_RATIO = 1.5
INDEPENDENCE_SLACK_S = 0.05

# Server defaults: what `autoagent serve` uses with an empty config.
STATE_SYNC = StoreConfig().sync
BATCH_SIZE = 2000  # ProjectionRunner's default; serve does not override it
SNAPSHOT_EVERY = PerformanceConfig().snapshot_every
SESSION_WINDOW = PerformanceConfig().session_window
REBUILT = ["sessions", "runs"]
LONG_SESSION = "long"


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int  # the big log
    small_events: int  # the log start-up is compared against
    sessions: int  # concurrent sessions in the workload
    tail: int  # events after the checkpoints in the "with tail" start-up
    session_messages: int
    scan_runs: int
    startup_runs: int
    without_small_runs: int
    read_runs: int
    get_runs: int
    calibration_rounds: int


FULL = Sizes(
    events=1_000_000,
    small_events=100_000,
    sessions=200,
    tail=5_000,
    session_messages=10_000,
    scan_runs=1,
    startup_runs=5,
    without_small_runs=2,
    read_runs=7,
    get_runs=200,
    calibration_rounds=100_000,
)
QUICK = Sizes(
    events=10_000,
    small_events=2_500,
    sessions=50,
    tail=250,
    session_messages=500,
    scan_runs=1,
    startup_runs=2,
    without_small_runs=1,
    read_runs=2,
    get_runs=20,
    calibration_rounds=5_000,
)


def _target(measured: float, target: float, at_most: bool = False) -> dict[str, Any]:
    met = measured <= target if at_most else measured >= target
    goal = f"{'<=' if at_most else '>='} {target:,}"
    return {"target": target, "measured": measured, "met": met, "goal": goal}


def _sig(value: float) -> str:
    """A table cell with about three significant digits (figures span us to minutes)."""
    for limit, digits in ((100, 0), (10, 1), (1, 2), (0.1, 3)):
        if abs(value) >= limit:
            return f"{value:,.{digits}f}"
    return f"{value:.4f}"


def calibrate(rounds: int) -> dict[str, Any]:
    """How fast this machine decodes right now: `msgpack.unpackb` of one 200-byte record.

    Compare it between runs (and between the start and the end of one) before comparing
    any other figure: a loaded machine slows everything down.
    """
    data = {"run_id": "1-0", "step_id": "s1", "result": {"value": 1.5}, "duration_s": 0.1}
    envelope = [1, "run-1-0", 3, "StepCompleted", 1, bytes(16), 1_700_000_000_000_000_000]
    record = msgpack.packb([*envelope, None, None, 0, bytes(HASH_BYTES), data], use_bin_type=True)
    with clocked() as clock:
        for _ in range(rounds):
            msgpack.unpackb(record, raw=False)
    return {
        "unpack_us": clock.wall / rounds * 1e6,
        "unpack_cpu_us": clock.cpu / rounds * 1e6,
        "loadavg": load_average(),
    }


# --- generated logs, cached between runs -----------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedLog:
    name: str
    path: Path  # the LMDB directory
    events: int
    data_file_bytes: int
    generated_now: bool
    generation_seconds: float

    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "events": self.events,
            "data_file_bytes": self.data_file_bytes,
            "generated_now": self.generated_now,
            "generation_seconds": round(self.generation_seconds, 2),
            "generation_events_per_s": self.events / self.generation_seconds
            if self.generation_seconds
            else None,
        }

    def open(self) -> LmdbEventLog:
        return LmdbEventLog.open(self.path, readonly=True, map_size=LOG_MAP_SIZE)


def cached_log(cache_dir: Path, name: str, generate: Callable[[LmdbEventLog], int]) -> CachedLog:
    """The log `name` under `cache_dir`, generated (and cached) unless already there.

    Generated into a temporary directory, flushed to disk, then renamed into place, so
    a half-written log is never reused; a cached one must have the recorded head.
    """
    final = cache_dir / name
    meta_path = final / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        try:
            log = LmdbEventLog.open(final / "log", readonly=True, map_size=LOG_MAP_SIZE)
            try:
                head = log.head()[0]
            finally:
                log.close()
        except Exception:
            head = -1
        if head == meta["events"]:
            return CachedLog(
                name,
                final / "log",
                head,
                (final / "log" / "data.mdb").stat().st_size,
                False,
                meta["generation_seconds"],
            )
        shutil.rmtree(final, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}-"))
    log = LmdbEventLog.open(tmp / "log", sync=False, map_size=LOG_MAP_SIZE)
    try:
        with timed() as watch:
            written = generate(log)
        head = log.head()[0]
    finally:
        log.close()
    if head != written:
        raise AssertionError(f"{name}: generated {written} events but the head is {head}")
    with open(tmp / "log" / "data.mdb", "rb") as file:
        os.fsync(file.fileno())  # written without sync: flush once before caching it
    meta = {"events": head, "generation_seconds": watch.seconds, "format": CACHE_FORMAT}
    (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
    try:
        tmp.rename(final)
    except OSError:  # another run cached it meanwhile: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return cached_log(cache_dir, name, generate)
    return CachedLog(
        name,
        final / "log",
        head,
        (final / "log" / "data.mdb").stat().st_size,
        True,
        watch.seconds,
    )


def workload_log(cache_dir: Path, events: int, sessions: int) -> CachedLog:
    return cached_log(
        cache_dir,
        f"workload-v{CACHE_FORMAT}-{events}-s{sessions}-seed{SEED}",
        lambda log: write_workload(log, events, sessions=sessions, seed=SEED),
    )


def write_long_session(log: LmdbEventLog, messages: int) -> int:
    """One session of `messages` messages: per turn a question, its run, the answer."""
    rng = random.Random(SEED)
    stream = f"session-{LONG_SESSION}"
    pending: list[AppendRequest] = []
    written = 0

    def add(target: str, events: list[Event]) -> None:
        nonlocal written
        pending.append(prepare_append(target, events, ANY, 1 << 22))
        written += len(events)

    add(stream, [SessionStarted(session_id=LONG_SESSION, user="bench")])
    for turn in range(messages // 2):
        run_id = f"{LONG_SESSION}-{turn}"
        question = UserMessageReceived(session_id=LONG_SESSION, message_id=run_id, text=USER_TEXT)
        add(stream, [question])
        add(f"run-{run_id}", run_events(run_id, LONG_SESSION, rng))
        reply: list[Event] = [
            AssistantMessageSent(session_id=LONG_SESSION, text=ASSISTANT_TEXT, run_id=run_id)
        ]
        if turn % 10 == 0:
            reply.append(ContextUpdated(session_id=LONG_SESSION, values={"last_turn": turn}))
        add(stream, reply)
        if len(pending) >= 500:
            log.commit(pending, time.time_ns())
            pending = []
    if pending:
        log.commit(pending, time.time_ns())
    return written


def session_log(cache_dir: Path, messages: int) -> CachedLog:
    return cached_log(
        cache_dir,
        f"session-v{CACHE_FORMAT}-{messages}-seed{SEED}",
        lambda log: write_long_session(log, messages),
    )


# --- 1. rebuild throughput -----------------------------------------------------------


def _rate(total: int, clock: Clock) -> dict[str, Any]:
    return {
        "seconds": round(clock.wall, 3),
        "cpu_seconds": round(clock.cpu, 3),
        "events_per_s": total / clock.wall,
        "cpu_events_per_s": total / clock.cpu,
        "cpu_share": clock.cpu / clock.wall,
    }


class _CountingStore(LmdbStateStore):
    """The LMDB state store, counting commits and the time spent in them."""

    commits = 0
    commit_seconds = 0.0

    def commit(self, commits: Any) -> None:
        with timed() as watch:
            super().commit(commits)
        self.commits += 1
        self.commit_seconds += watch.seconds


def _open_state(path: Path, sync: bool) -> _CountingStore:
    state = _CountingStore.open(path, sync=sync)
    assert isinstance(state, _CountingStore)
    return state


def _runner(log: LmdbEventLog, state: Any, names: list[str] | None) -> ProjectionRunner:
    return ProjectionRunner(
        log,
        state,
        build_projections(names, SESSION_WINDOW),
        batch_size=BATCH_SIZE,
        snapshot_every=SNAPSHOT_EVERY,
    )


def rebuild_into_lmdb(
    log: LmdbEventLog, path: Path, names: list[str] | None, sync: bool, total: int
) -> dict[str, Any]:
    """Rebuild `names` from position 1 into a fresh LMDB state store (open included)."""
    with clocked() as clock:
        state = _open_state(path, sync)
        try:
            runner = _runner(log, state, names)
            runner.prepare()
            applied = runner.catch_up()
            runner.flush_snapshots()
        finally:
            state.close()
    if applied != total or runner.position != total:
        raise AssertionError(f"rebuild applied {applied} events to {runner.position}/{total}")
    return {
        "projections": names or "all",
        "sync": sync,
        **_rate(total, clock),
        "commits": state.commits,
        "commit_seconds": round(state.commit_seconds, 3),
        "commit_share": state.commit_seconds / clock.wall,
        "state_file_bytes": (path / "data.mdb").stat().st_size,
    }


def bench_rebuild(
    log: LmdbEventLog, cached: CachedLog, raw: Clock, work: Path, sizes: Sizes
) -> dict[str, Any]:
    total = cached.events
    loadavg = load_average()
    # Decode only, in the runner's batch size.
    scans = [scan_log(log, total, BATCH_SIZE) for _ in range(sizes.scan_runs)]
    scan = Clock(median([c.wall for c in scans]), median([c.cpu for c in scans]))
    default = rebuild_into_lmdb(log, work / "rebuild-sync", REBUILT, STATE_SYNC, total)
    shutil.rmtree(work / "rebuild-sync")
    no_sync = rebuild_into_lmdb(log, work / "rebuild-nosync", REBUILT, not STATE_SYNC, total)
    shutil.rmtree(work / "rebuild-nosync")
    for result in (default, no_sync):
        result["ratio_vs_log_scan"] = result["events_per_s"] * scan.wall / total
        result["cpu_ratio_vs_log_scan"] = result["cpu_events_per_s"] * scan.cpu / total
        # What the projections (apply + state reads + commits) add per event, CPU time.
        result["projection_cpu_us_per_event"] = (result["cpu_seconds"] - scan.cpu) / total * 1e6
    return {
        "events": total,
        "batch_size": BATCH_SIZE,
        # What `catch_up` far behind (this rebuild, `autoagent replay`) reads per commit.
        "catch_up_batch": CATCH_UP_BATCH,
        "snapshot_every": SNAPSHOT_EVERY,
        "loadavg_start": loadavg,
        "raw_lmdb_msgpack": _rate(total, raw),
        "log_scan": {
            **_rate(total, scan),
            "runs_s": [round(c.wall, 3) for c in scans],
            "ratio_vs_raw": raw.wall / scan.wall,
            "decode_cpu_us_per_event": scan.cpu / total * 1e6,
        },
        "sessions_runs_default": default,
        "sessions_runs_nosync": no_sync,
        "loadavg_end": load_average(),
    }


# --- 2. start-up with and without persisted state ----------------------------------------


def _copy_store(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy2(source / "data.mdb", target / "data.mdb")


def build_startup_state(
    log: LmdbEventLog, total: int, tail: int, caught_up: Path, behind: Path
) -> dict[str, Any]:
    """All projections rebuilt into `caught_up`; `behind` = the same stopped `tail` early.

    Both legs end like a clean server stop (snapshots flushed). Timed without the copy.
    """
    legs: list[Clock] = []
    for until in (total - tail, total):
        with clocked() as clock:
            state = _open_state(caught_up, sync=False)
            try:
                runner = _runner(log, state, None)
                runner.prepare()
                runner.catch_up(until)
                runner.flush_snapshots()
            finally:
                state.close()
        if runner.position != until:
            raise AssertionError(f"startup state reached {runner.position}, wanted {until}")
        legs.append(clock)
        if until != total:
            _copy_store(caught_up, behind)
    return {
        "projections": "all",
        "sync": False,
        **_rate(total, Clock(sum(c.wall for c in legs), sum(c.cpu for c in legs))),
        "state_file_bytes": (caught_up / "data.mdb").stat().st_size,
    }


def start_with_state(log: LmdbEventLog, path: Path, expected_tail: int) -> dict[str, float]:
    """A server start over persisted state: open, prepare, catch up; seconds per phase."""
    with clocked() as total:
        with timed() as opening:
            state = LmdbStateStore.open(path, sync=STATE_SYNC)
        try:
            runner = _runner(log, state, None)
            with timed() as preparing:
                runner.prepare()
            with timed() as catching_up:
                applied = runner.catch_up()
        finally:
            state.close()
    if applied != expected_tail:
        raise AssertionError(f"start-up caught up {applied} events, expected {expected_tail}")
    return {
        "seconds": total.wall,
        "cpu_seconds": total.cpu,
        "open_s": opening.seconds,
        "prepare_s": preparing.seconds,
        "catch_up_s": catching_up.seconds,
    }


def start_without_state(log: LmdbEventLog, total: int) -> Clock:
    """A server with no persisted projection state: rebuild everything in memory."""
    with clocked() as clock:
        runner = ProjectionRunner(
            log,
            MemoryStateStore(),
            build_projections(None, SESSION_WINDOW),
            batch_size=BATCH_SIZE,
            snapshot_every=1 << 62,  # nothing to persist them to
        )
        runner.prepare()
        applied = runner.catch_up()
    if applied != total:
        raise AssertionError(f"in-memory rebuild applied {applied} events, expected {total}")
    return clock


def _summarise_starts(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "median_s": median([r["seconds"] for r in runs]),
        "cpu_median_s": median([r["cpu_seconds"] for r in runs]),
        "max_s": max(r["seconds"] for r in runs),
        "phases_median_s": {
            phase: median([r[phase] for r in runs])
            for phase in ("open_s", "prepare_s", "catch_up_s")
        },
        "runs_s": [round(r["seconds"], 4) for r in runs],
    }


def _metrics_snapshot_bytes(path: Path) -> int:
    state = LmdbStateStore.open(path, readonly=True)
    try:
        return len(state.snapshot("metrics") or b"")
    finally:
        state.close()


def bench_startup_one(
    log: LmdbEventLog, cached: CachedLog, work: Path, sizes: Sizes, without_runs: int
) -> dict[str, Any]:
    total = cached.events
    caught_up, behind, scratch = (work / f"{cached.name}-{k}" for k in ("state", "behind", "tmp"))
    build = build_startup_state(log, total, sizes.tail, caught_up, behind)
    with_empty = [start_with_state(log, caught_up, 0) for _ in range(sizes.startup_runs)]
    with_tail: list[dict[str, float]] = []
    for _ in range(sizes.startup_runs):
        _copy_store(behind, scratch)
        with_tail.append(start_with_state(log, scratch, sizes.tail))
    snapshot_bytes = _metrics_snapshot_bytes(caught_up)
    without = [start_without_state(log, total) for _ in range(without_runs)]
    for path in (caught_up, behind, scratch):
        shutil.rmtree(path, ignore_errors=True)
    empty, tailed = _summarise_starts(with_empty), _summarise_starts(with_tail)
    without_s = median([c.wall for c in without])
    return {
        "events": total,
        "state_build_all_projections": build,
        "metrics_snapshot_bytes": snapshot_bytes,
        "with_state_empty_tail": empty,
        "with_state_tail": {"tail_events": sizes.tail, **tailed},
        "without_state_in_memory": {
            "median_s": without_s,
            "cpu_median_s": median([c.cpu for c in without]),
            "runs_s": [round(c.wall, 3) for c in without],
            "events_per_s": total / without_s,
        },
        "ratio_without_vs_with_empty": without_s / empty["median_s"],
        "ratio_without_vs_with_tail": without_s / tailed["median_s"],
    }


def bench_startup(
    logs: list[tuple[LmdbEventLog, CachedLog]], work: Path, sizes: Sizes
) -> dict[str, Any]:
    loadavg = load_average()
    results = [
        bench_startup_one(log, cached, work, sizes, runs)
        for (log, cached), runs in zip(logs, (sizes.without_small_runs, 1), strict=True)
    ]
    small, big = results

    def growth(key: str) -> dict[str, Any]:
        a, b = small[key]["median_s"], big[key]["median_s"]
        cpu_a, cpu_b = small[key]["cpu_median_s"], big[key]["cpu_median_s"]
        independent = b <= a * INDEPENDENCE_RATIO or b - a <= INDEPENDENCE_SLACK_S
        return {
            "small_s": a,
            "big_s": b,
            "ratio": b / a,
            "cpu_ratio": cpu_b / cpu_a if cpu_a else None,
            "independent": independent,
        }

    return {
        "projections": [p.name for p in build_projections()],
        "state_sync": STATE_SYNC,
        "loadavg_start": loadavg,
        "logs": results,
        "growth_small_to_big": {
            "with_state_empty_tail": growth("with_state_empty_tail"),
            "with_state_tail": growth("with_state_tail"),
            "without_state_in_memory": growth("without_state_in_memory"),
        },
        "loadavg_end": load_average(),
    }


# --- 3. loading one long session ---------------------------------------------------------


def _read_full_stream(log: LmdbEventLog, stream: str) -> list[Any]:
    records: list[Any] = []
    while batch := log.read_stream(stream, len(records), 1000):
        records.extend(batch)
    return records


def _median_seconds(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    samples: list[float] = []
    result: object = None
    for _ in range(runs):
        with timed() as watch:
            result = fn()
        samples.append(watch.seconds)
    return median(samples), result


def bench_session_load(
    log: LmdbEventLog, cached: CachedLog, work: Path, sizes: Sizes
) -> dict[str, Any]:
    loadavg = load_average()
    messages_wanted = sizes.session_messages
    stream = f"session-{LONG_SESSION}"
    state_path = work / "session-state"
    rebuild_into_lmdb(log, state_path, REBUILT, False, cached.events)

    # The full history, from the log; it also feeds the file baselines.
    read_s, records = _median_seconds(lambda: _read_full_stream(log, stream), sizes.read_runs)
    assert isinstance(records, list)
    roles = {"UserMessageReceived": "user", "AssistantMessageSent": "assistant"}
    messages = [
        {
            "role": roles[r.type],
            "text": r.data["text"],
            "message_id": r.data.get("message_id") or r.data.get("run_id"),
            "position": r.position,
            "ts": r.ts,
        }
        for r in records
        if r.type in roles
    ]
    if len(messages) != messages_wanted:
        raise AssertionError(f"the session has {len(messages)} messages, not {messages_wanted}")
    session_doc = {"session_id": LONG_SESSION, "user": "bench", "messages": messages}
    json_path, msgpack_path = work / "session.json", work / "session.msgpack"
    json_path.write_text(json.dumps(session_doc))
    msgpack_path.write_bytes(msgpack.packb(session_doc, use_bin_type=True))

    def load_json() -> Any:
        with open(json_path, encoding="utf-8") as file:
            return json.load(file)

    def load_msgpack() -> Any:
        return msgpack.unpackb(msgpack_path.read_bytes(), raw=False)

    json_s, from_json = _median_seconds(load_json, sizes.read_runs)
    msgpack_s, from_msgpack = _median_seconds(load_msgpack, sizes.read_runs)
    for doc in (from_json, from_msgpack):
        assert isinstance(doc, dict) and len(doc["messages"]) == messages_wanted

    def open_and_get() -> Any:
        state = LmdbStateStore.open(state_path, readonly=True)
        try:
            return get_session(state, LONG_SESSION)
        finally:
            state.close()

    open_get_s, _ = _median_seconds(open_and_get, sizes.read_runs)
    state = LmdbStateStore.open(state_path, readonly=True)
    try:
        get_s, session = _median_seconds(lambda: get_session(state, LONG_SESSION), sizes.get_runs)
    finally:
        state.close()
    assert isinstance(session, dict)
    if session["messages"] != messages_wanted or len(session["window"]) != SESSION_WINDOW:
        raise AssertionError(f"projection: {session['messages']} messages, bad window")
    shutil.rmtree(state_path)

    def entry(seconds: float, returns: str, **extra: Any) -> dict[str, Any]:
        return {
            "median_ms": seconds * 1000,
            "returns": returns,
            "json_file_vs_this": json_s / seconds,
            **extra,
        }

    return {
        "messages": messages_wanted,
        "session_events_in_stream": len(records),
        "log_events": cached.events,
        "window": SESSION_WINDOW,
        "loadavg_start": loadavg,
        "projection_get_session": entry(
            get_s,
            f"{SESSION_WINDOW}-message window + counters",
            value_bytes=len(msgpack.packb(session, use_bin_type=True)),
        ),
        "projection_open_and_get_session": entry(
            open_get_s, f"{SESSION_WINDOW}-message window + counters, store opened per read"
        ),
        "log_read_stream_full": entry(
            read_s, f"all {len(records)} events of the session stream, decoded"
        ),
        "json_file": entry(
            json_s, f"all {messages_wanted} messages", file_bytes=json_path.stat().st_size
        ),
        "msgpack_file": entry(
            msgpack_s, f"all {messages_wanted} messages", file_bytes=msgpack_path.stat().st_size
        ),
        "loadavg_end": load_average(),
    }


# --- report ------------------------------------------------------------------------------


def report_tables(result: dict[str, Any]) -> list[Table]:
    rebuild, startup, session = result["rebuild"], result["startup"], result["session_load"]
    scan_rate = rebuild["log_scan"]["events_per_s"]
    rebuild_rows: list[list[object]] = [
        _rebuild_row("raw LMDB cursor + msgpack.unpackb", rebuild["raw_lmdb_msgpack"], scan_rate),
        _rebuild_row("log.read scan (decode only)", rebuild["log_scan"], scan_rate),
    ]
    for key, label in (
        ("sessions_runs_default", f"sessions+runs, state sync={STATE_SYNC} (server default)"),
        ("sessions_runs_nosync", f"sessions+runs, state sync={not STATE_SYNC}"),
    ):
        rebuild_rows.append(_rebuild_row(label, rebuild[key], scan_rate))
    for log in startup["logs"]:
        label = f"all 3 (+metrics), sync=False, {log['events']:,} events"
        rebuild_rows.append(_rebuild_row(label, log["state_build_all_projections"], scan_rate))
    tail = startup["logs"][0]["with_state_tail"]["tail_events"]
    startup_rows: list[list[object]] = []
    for log in startup["logs"]:
        empty, tailed = log["with_state_empty_tail"], log["with_state_tail"]
        without = log["without_state_in_memory"]
        startup_rows.append(
            [
                log["events"],
                _sig(without["median_s"]),
                _sig(without["cpu_median_s"]),
                _sig(empty["median_s"] * 1000),
                _sig(empty["cpu_median_s"] * 1000),
                _sig(tailed["median_s"] * 1000),
                _sig(log["ratio_without_vs_with_empty"]),
                _sig(log["ratio_without_vs_with_tail"]),
                _sig(empty["phases_median_s"]["prepare_s"] * 1000),
                log["metrics_snapshot_bytes"] / 1024,
            ]
        )
    growth = startup["growth_small_to_big"]
    startup_rows.append(
        [
            "big / small",
            _sig(growth["without_state_in_memory"]["ratio"]),
            _sig(growth["without_state_in_memory"]["cpu_ratio"]),
            _sig(growth["with_state_empty_tail"]["ratio"]),
            _sig(growth["with_state_empty_tail"]["cpu_ratio"]),
            _sig(growth["with_state_tail"]["ratio"]),
            "-",
            "-",
            "-",
            "-",
        ]
    )
    session_rows = [
        [
            label,
            _sig(session[key]["median_ms"]),
            _sig(session[key]["json_file_vs_this"]),
            session[key]["returns"],
        ]
        for key, label in (
            ("projection_get_session", "sessions projection: get_session"),
            ("projection_open_and_get_session", "sessions projection: open store + get_session"),
            ("log_read_stream_full", "event log: read_stream, full history"),
            ("json_file", "JSON file: open + json.load"),
            ("msgpack_file", "msgpack file: read + unpackb"),
        )
    ]
    targets = result["targets"]
    return [
        Table(
            f"Rebuild from position 1 over {rebuild['events']:,} events (scan batch"
            f" {BATCH_SIZE}, rebuild batch {rebuild['catch_up_batch']:,}, warm page cache)",
            [
                "reader / projections",
                "events/s",
                "x log scan",
                "s",
                "CPU events/s",
                "CPU share",
                "commit share",
                "state MB",
            ],
            rebuild_rows,
        ),
        Table(
            "Start-up of sessions+runs+metrics: without persisted state (in-memory rebuild)"
            " vs with (LMDB state: open + prepare + catch up)",
            [
                "log events",
                "without s",
                "without CPU s",
                "with ms",
                "with CPU ms",
                f"with +{tail:,} tail ms",
                "without/with",
                "without/with+tail",
                "prepare ms",
                "metrics snapshot KB",
            ],
            startup_rows,
        ),
        Table(
            f"Loading one session of {session['messages']:,} messages"
            f" ({session['session_events_in_stream']:,} events in its stream), median",
            ["source", "ms", "x faster than JSON", "returns"],
            session_rows,
        ),
        Table(
            "Targets",
            ["target", "measured", "goal", "met"],
            [[name, _sig(t["measured"]), t["goal"], t["met"]] for name, t in targets.items()],
        ),
    ]


def _rebuild_row(label: str, r: dict[str, Any], scan_rate: float) -> list[object]:
    commit_share = r.get("commit_share")
    state_bytes = r.get("state_file_bytes")
    return [
        label,
        r["events_per_s"],
        r["events_per_s"] / scan_rate,
        _sig(r["seconds"]),
        r["cpu_events_per_s"],
        r["cpu_share"],
        "-" if commit_share is None else commit_share,
        "-" if state_bytes is None else state_bytes / 2**20,
    ]


def _independence(growth: dict[str, Any]) -> dict[str, Any]:
    slack_ms = INDEPENDENCE_SLACK_S * 1000
    return {
        **_target(growth["ratio"], INDEPENDENCE_RATIO, at_most=True),
        "met": growth["independent"],
        "goal": f"<= {INDEPENDENCE_RATIO} or +{slack_ms:.0f} ms",
    }


def compute_targets(result: dict[str, Any]) -> dict[str, Any]:
    """Judged on wall time; CPU time is reported beside it (see `Clock`)."""
    rebuild, startup = result["rebuild"], result["startup"]
    big = startup["logs"][-1]
    growth = startup["growth_small_to_big"]
    return {
        "rebuild sessions+runs events/s (server default)": _target(
            rebuild["sessions_runs_default"]["events_per_s"], TARGET_REBUILD_PER_S
        ),
        "rebuild sessions+runs events/s (state sync off)": _target(
            rebuild["sessions_runs_nosync"]["events_per_s"], TARGET_REBUILD_PER_S
        ),
        f"start-up with state, {big['events']:,} events, s": _target(
            big["with_state_empty_tail"]["median_s"], TARGET_STARTUP_S, at_most=True
        ),
        f"start-up with state + tail, {big['events']:,} events, s": _target(
            big["with_state_tail"]["median_s"], TARGET_STARTUP_S, at_most=True
        ),
        "start-up with state, big/small log": _independence(growth["with_state_empty_tail"]),
        "start-up with state + tail, big/small log": _independence(growth["with_state_tail"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, work_dir_help="where state goes")
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="where generated logs are kept"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    result = result_header("bench_projections", args.quick, argv, args.work_dir) | {
        "loadavg": {"start": load_average()},
        "versions": {"lmdb": lmdb.__version__, "msgpack": msgpack.version},
        "collector": shipped_collector(),
        "settings": {
            "state_sync": STATE_SYNC,
            "batch_size": BATCH_SIZE,
            "snapshot_every": SNAPSHOT_EVERY,
            "session_window": SESSION_WINDOW,
            "workload_sessions": sizes.sessions,
            "seed": SEED,
        },
    }
    with timed() as generation:
        big = workload_log(args.cache_dir, sizes.events, sizes.sessions)
        small = workload_log(args.cache_dir, sizes.small_events, sizes.sessions)
        long_session = session_log(args.cache_dir, sizes.session_messages)
    result["logs"] = {
        "cache_dir": str(args.cache_dir),
        "seconds_this_run": round(generation.seconds, 1),
        "big": big.info(),
        "small": small.info(),
        "long_session": long_session.info(),
    }
    print(
        f"logs ready in {generation.seconds:.1f} s (excluded from the figures):"
        f" {big.events:,} events ({big.data_file_bytes / 2**20:,.0f} MB,"
        f" {'generated' if big.generated_now else 'cached'} at {big.path})",
        flush=True,
    )
    # Before the log is opened: LMDB wants one environment per file and process.
    # First also because it warms the page cache for every later figure.
    result["calibration_start"] = calibrate(sizes.calibration_rounds)
    raw = scan_raw(big.path, big.events)
    big_log, small_log, session_events = big.open(), small.open(), long_session.open()
    try:
        with timed() as total, scratch_dir(args.work_dir, "bench-projections-") as work:
            result["rebuild"] = bench_rebuild(big_log, big, raw, work, sizes)
            print("rebuild done", flush=True)
            result["startup"] = bench_startup([(small_log, small), (big_log, big)], work, sizes)
            print("start-up done", flush=True)
            result["session_load"] = bench_session_load(session_events, long_session, work, sizes)
    finally:
        for log in (big_log, small_log, session_events):
            log.close()
    result["calibration_end"] = calibrate(sizes.calibration_rounds)
    result["targets"] = compute_targets(result)
    result["seconds_measuring"] = round(total.seconds, 1)
    result["loadavg"]["end"] = load_average()
    footer = (
        f"\n{total.seconds:.1f} s measuring (+{generation.seconds:.1f} s for the logs);"
        f" load average {result['loadavg']['start']} -> {result['loadavg']['end']};"
        f" JSON written to {args.out}"
    )
    publish(result, args.out, report_tables, markdown=args.markdown, footer=footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
