"""What sealing personal content costs: appends, reads, and CPU per run, sealed vs not.

Three measurements, each with the shipped default (sealing on) and the diagnostic row
beside it (the same store with its sealer set aside), alternated round by round so the
disk and the machine's load treat both alike:

- appends: producers appending run events that carry content (StepCompleted with a
  ~300-byte result), durable (`store.sync = true`, the shipped default) on LMDB; events
  per second at 1 and 16 producers;
- reads: reading the whole log and opening every record (what `events export`, the
  WebSocket catch-up and `runs show` do) against reading it as stored; events/s;
- runs: complete offline runs through `open_application` (the real wiring, sealing with
  the file key store) and the orchestrator; process CPU time per run.

    .venv/bin/python -m tests.performance.bench_sealing [--quick]
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from agents.embeddings import Embedder
from events import (
    FileKeyStore,
    RunRequested,
    Sealer,
    SessionStarted,
    StepCompleted,
    StoreOptions,
    open_event_store,
)
from server.app import open_application
from server.config import load_config
from tests.memory.conftest import HashEmbedder

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import Table, load_average

RESULTS = Path(__file__).parent / "results" / "sealing.json"
RESULT_TEXT = "quote: " + "x" * 290
GOALS = ("what is 17 * 23 + 4", "what time is it in Tokyo", "what is 12 * 12 and 7 + 5")


@asynccontextmanager
async def _hash_embedder(config: object) -> AsyncIterator[Embedder]:
    yield HashEmbedder()


async def _append_rate(directory: Path, sealed: bool, producers: int, per_producer: int) -> float:
    """Events/s of `producers` tasks each appending `per_producer` content events."""
    sealer = Sealer(FileKeyStore(directory / "keys")) if sealed else None
    async with open_event_store(directory / "log", StoreOptions(sync=True), sealer=sealer) as store:
        for p in range(producers):
            await store.append(f"session-s{p}", [SessionStarted(f"s{p}", user="bench")])
            await store.append(f"run-r{p}", [RunRequested(f"r{p}", f"s{p}", "goal", "bench")])

        async def produce(p: int) -> None:
            for i in range(per_producer):
                event = StepCompleted(f"r{p}", f"s{i}", {"text": RESULT_TEXT}, 0.01)
                await store.append(f"run-r{p}", [event])

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for p in range(producers):
                nursery.start_soon(produce, p)
        elapsed = time.perf_counter() - started
    return producers * per_producer / elapsed


async def _read_rate(directory: Path, sealed: bool, events: int, *, opening: bool) -> float:
    """Events/s of reading a log back as stored (what a replay or rebuild does:
    projections never open content), or with every record opened (`opening`: what an
    export, a WebSocket catch-up or `runs show` does). The log is written sealed or not
    the first time."""
    sealer = Sealer(FileKeyStore(directory / "keys"))
    options = StoreOptions(sync=False)
    async with open_event_store(
        directory / "log", options, sealer=sealer if sealed else None
    ) as store:
        if store.head_position == 0:
            await store.append("session-s", [SessionStarted("s", user="bench")])
            await store.append("run-r", [RunRequested("r", "s", "goal", "bench")])
            batch = [StepCompleted("r", f"s{i}", {"text": RESULT_TEXT}, 0.01) for i in range(100)]
            for _ in range(events // 100):
                await store.append("run-r", batch)
        log = store.log

        def scan() -> int:
            count, after = 0, 0
            while records := log.read(after, 1000):
                if opening:
                    records = sealer.open_many(records)
                count += len(records)
                after = records[-1].position
            return count

        started = time.perf_counter()
        count = await trio.to_thread.run_sync(scan)
        return count / (time.perf_counter() - started)


async def _run_cpu(directory: Path, sealed: bool, runs: int, *, one_session: bool) -> float:
    """Process CPU milliseconds per complete offline run: each in a new session (a new
    session key: one key file written and synced), or all in one session."""
    config = load_config(
        env={
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(directory / "ws")]),
            "AUTOAGENT_STORE__MAP_SIZE_MB": "256",
        },
        data_dir=directory / "data",
    )
    (directory / "ws").mkdir(parents=True, exist_ok=True)
    async with open_application(config, embedder_factory=_hash_embedder) as app:
        if not sealed:
            app.store.sealer = None  # the diagnostic row: the same wiring, nothing sealed
        warm = await app.orchestrator.run_goal(GOALS[0])  # warm caches and the catalog
        session = warm.session_id if one_session else None
        started = time.process_time()
        for i in range(runs):
            result = await app.orchestrator.run_goal(GOALS[i % len(GOALS)], session)
            assert result.status == "completed", result
        return (time.process_time() - started) * 1000 / runs


async def _measure(work: Path, quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 7
    per_producer = 20 if quick else 1000
    read_events = 2_000 if quick else 50_000
    runs = 5 if quick else 150
    rows: dict[str, dict[str, list[float]]] = {}

    def note(measure: str, sealed: bool, value: float) -> None:
        rows.setdefault(measure, {"sealed": [], "clear": []})[
            "sealed" if sealed else "clear"
        ].append(value)

    for r in range(rounds):
        for sealed in (True, False) if r % 2 == 0 else (False, True):
            tag = f"{r}-{'s' if sealed else 'c'}"
            note(
                "append_1", sealed, await _append_rate(work / f"a1-{tag}", sealed, 1, per_producer)
            )
            note(
                "append_16",
                sealed,
                await _append_rate(work / f"a16-{tag}", sealed, 16, per_producer),
            )
            log_dir = work / ("read-sealed" if sealed else "read-clear")
            note("replay", sealed, await _read_rate(log_dir, sealed, read_events, opening=False))
            note(
                "read_open", sealed, await _read_rate(log_dir, sealed, read_events, opening=sealed)
            )
            note(
                "run_cpu_ms",
                sealed,
                await _run_cpu(work / f"run-{tag}", sealed, runs, one_session=False),
            )
            note(
                "run_cpu_ms_one_session",
                sealed,
                await _run_cpu(work / f"run1-{tag}", sealed, runs, one_session=True),
            )
    medians = {
        measure: {kind: round(statistics.median(values), 2) for kind, values in kinds.items()}
        for measure, kinds in rows.items()
    }
    spread = {
        measure: {kind: [round(min(v), 1), round(max(v), 1)] for kind, v in kinds.items()}
        for measure, kinds in rows.items()
    }
    return {"rounds": rows, "median": medians, "spread": spread}


def report(result: dict[str, Any]) -> Sequence[Table]:
    median, spread = result["median"], result["spread"]
    rows = []
    for measure, unit, higher_is_better in (
        ("append_1", "events/s, 1 producer, durable", True),
        ("append_16", "events/s, 16 producers, durable", True),
        ("replay", "events/s, replay (read as stored)", True),
        ("read_open", "events/s, read and open (export)", True),
        ("run_cpu_ms", "CPU ms per offline run, new session each", False),
        ("run_cpu_ms_one_session", "CPU ms per offline run, one session", False),
    ):
        sealed, clear = median[measure]["sealed"], median[measure]["clear"]
        cost = (clear / sealed - 1) if higher_is_better else (sealed / clear - 1)
        low_s, high_s = spread[measure]["sealed"]
        low_c, high_c = spread[measure]["clear"]
        rows.append(
            (
                unit,
                sealed,
                f"{low_s:g}-{high_s:g}",
                clear,
                f"{low_c:g}-{high_c:g}",
                f"{cost * 100:+.1f} %",
            )
        )
    load = result["machine"].get("loadavg_start"), result["machine"].get("loadavg_end")
    return [
        Table(
            f"Sealing: shipped default (sealed) vs sealer set aside (medians; load {load})",
            [
                "measure",
                "sealed (default)",
                "range",
                "not sealed (diagnostic)",
                "range",
                "cost of sealing (medians)",
            ],
            rows,
        )
    ]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__, RESULTS, work_dir_help="where the scratch stores go")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with scratch_dir(args.work_dir, "bench-sealing-") as work:
        result = result_header("bench_sealing", args.quick, argv, work)
        result["machine"]["loadavg_start"] = load_average()
        result |= trio.run(_measure, work, args.quick)
    finish(result, args.out, report, seconds=time.perf_counter() - started, markdown=args.markdown)


if __name__ == "__main__":
    main()
