"""Where one producer's durable append spends its time, hop by hop (issue 14, item 2).

From the project root:

    .venv/bin/python -m tests.performance.bench_append_path [--quick] [--out PATH] [--work-dir DIR]

One Trio task appends one ~300-byte event at a time to a fresh LMDB store (sync on, the
shipped defaults), each append awaited before the next, as a lone run does. Every append
is cut into four parts by timestamps taken in the store's own path (a store subclass and
a log subclass that only read the clock):

1. to the commit: from the `append` call to `log.commit` starting on the commit thread
   (validation and encoding, Trio's scheduling of the writer task, waking the thread);
2. the commit: `log.commit` (planning, the LMDB transaction and its fsyncs);
3. back to Trio: from the commit's end to the writer's callback running in the Trio
   thread (`run_sync_soon`: the socket wake-up and taking the GIL);
4. to the producer: from the callback to `append` returning.

Baseline measured in the same run: a raw py-lmdb synced transaction of one 300-byte put
(one sub-database, no Python around it). Writes JSON (default
`tests/performance/results/append_path.json`) and prints a table of medians.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb
import trio

from events import EventStore, StepCompleted, StoreOptions, open_event_store
from events._log import AppendRequest, Outcome, PlannedWrite

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, Table, percentile
from ._logs import U64, TimedLog

DEFAULT_OUT = RESULTS_DIR / "append_path.json"
PARTS = ("to_commit", "commit", "back_to_trio", "to_producer")
RESULT = ("Fetched 12 rows from the orders table; 3 are overdue by more than 30 days. " * 3)[:200]


class _StampedLog(TimedLog):
    """The LMDB log, keeping when its last commit started and ended."""

    started = ended = 0.0

    def commit(
        self, requests: Sequence[AppendRequest], ts: int
    ) -> tuple[list[Outcome], list[PlannedWrite]]:
        self.started = time.perf_counter()
        try:
            return super().commit(requests, ts)
        finally:
            self.ended = time.perf_counter()


class _StampedStore(EventStore):
    """The store, keeping when the writer's callback for the last commit ran."""

    answered = 0.0

    def _answer(
        self, batch: list[Any], outcomes: list[Outcome], writes: list[PlannedWrite]
    ) -> None:
        self.answered = time.perf_counter()
        super()._answer(batch, outcomes, writes)


async def _appends(path: Path, count: int, warmup: int) -> dict[str, list[float]]:
    options = StoreOptions(sync=True)
    log = await trio.to_thread.run_sync(
        lambda: _StampedLog.open(path, sync=True, map_size=options.map_size_mb << 20)
    )
    assert isinstance(log, _StampedLog)
    parts: dict[str, list[float]] = {name: [] for name in (*PARTS, "total")}
    async with open_event_store(options=options, log=log, store_class=_StampedStore) as store:
        assert isinstance(store, _StampedStore)
        for i in range(warmup + count):
            event = StepCompleted("r", f"s{i}", RESULT, 0.1)
            begin = time.perf_counter()
            await store.append("run-r", [event])
            end = time.perf_counter()
            if i < warmup:
                continue
            stamps = (begin, log.started, log.ended, store.answered, end)
            if list(stamps) != sorted(stamps):  # each append had its own commit
                raise AssertionError(f"append {i}: stamps out of order {stamps}")
            for name, (a, b) in zip(PARTS, itertools.pairwise(stamps), strict=True):
                parts[name].append((b - a) * 1e6)
            parts["total"].append((end - begin) * 1e6)
    return parts


def _raw_txns(path: Path, count: int) -> list[float]:
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)
    value = os.urandom(300)
    took: list[float] = []
    try:
        for key in range(1, count + 1):
            start = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(U64.pack(key), value, append=True)
            took.append((time.perf_counter() - start) * 1e6)
    finally:
        env.close()
    return took


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_us": percentile(values, 50), "p90_us": percentile(values, 90)}


def report_tables(result: dict[str, Any]) -> list[Table]:
    parts, raw = result["parts"], result["raw_synced_txn"]
    rows: list[list[object]] = [
        [name.replace("_", " "), parts[name]["p50_us"], parts[name]["p90_us"]]
        for name in (*PARTS, "total")
    ]
    rows.append(["raw synced LMDB txn (baseline)", raw["p50_us"], raw["p90_us"]])
    return [
        Table(
            f"One producer's durable append, {result['appends']:,} appends (us)",
            ["part", "p50 us", "p90 us"],
            rows,
        ),
        Table(
            "Target (issue 14 item 2)",
            ["target", "measured", "goal", "met"],
            [["append p50 / raw txn p50", result["ratio"], "<= 1.5", result["ratio"] <= 1.5]],
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, work_dir_help="where the stores go")
    args = parser.parse_args(argv)
    count, warmup = (300, 50) if args.quick else (3000, 300)
    started = time.perf_counter()
    result = result_header("bench_append_path", args.quick, argv, args.work_dir)
    with scratch_dir(args.work_dir, "bench-append-path-") as work:
        parts = trio.run(_appends, work / "store", count, warmup)
        raw = _raw_txns(work / "raw", count)
    result |= {
        "appends": count,
        "parts": {name: _summary(values) for name, values in parts.items()},
        "raw_synced_txn": _summary(raw),
    }
    result["ratio"] = result["parts"]["total"]["p50_us"] / result["raw_synced_txn"]["p50_us"]
    finish(
        result,
        args.out,
        report_tables,
        seconds=time.perf_counter() - started,
        markdown=args.markdown,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
