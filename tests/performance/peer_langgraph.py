"""Peer for bench_orchestrator's executor-only DAGs: LangGraph + SqliteSaver, measured alike.

Runs inside its own venv (see `_peers.py`), never the project's: it imports nothing from
the project. Usage:

    python peer_langgraph.py WORK_DIR [--quick] [--scale X] [--reps N]
        [--max-concurrency N] [--growth-runs N] [--growth-steps N]

The DAGs, step times and bounds are bench_orchestrator's `dag_plans` (diamond
3 x 0.2 s -> 0.4 s -> 0.15 s, bound 0.75 s; fan of 10 x 0.1 s, bound 0.1 s; chain of
10 x 0.1 s, bound 1.0 s; times x `--scale`). Each step is a node that sleeps its time
and returns the same small result as the project's sleeping tool, appended to the
state's `results`. The graph is compiled with a `SqliteSaver` (WAL, synchronous=FULL)
and invoked with durability "sync", one new thread per run, `max_concurrency` 16 (the
project's `max_parallel_steps`), once more with the default thread pool. The saver's
`put` and `put_writes` are timed (lock wait included): "checkpointer ms per step".
Growth: a chain of 0 s steps run again and again into one database, a new thread per
run (as the project starts a new run stream), and once more all on one thread (a
conversation whose state keeps every run's results, as issue 5's quoted figures imply).

Prints one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

FULL = {"scale": 1.0, "reps": 5, "growth_runs": 20, "growth_steps": 50}
QUICK = {"scale": 0.1, "reps": 1, "growth_runs": 2, "growth_steps": 10}
MAX_CONCURRENCY = 16

# (step id, seconds before scaling, dependencies)
Step = tuple[str, float, tuple[str, ...]]


def dag_shapes() -> dict[str, tuple[list[Step], float]]:
    """bench_orchestrator's three DAGs, unscaled, with their critical-path bounds."""
    diamond: list[Step] = [
        ("a1", 0.2, ()),
        ("a2", 0.2, ()),
        ("a3", 0.2, ()),
        ("b", 0.4, ("a1", "a2", "a3")),
        ("c", 0.15, ("b",)),
    ]
    fan: list[Step] = [(f"f{i}", 0.1, ()) for i in range(10)]
    return {
        "diamond": (diamond, 0.75),
        "fan10": (fan, 0.1),
        "chain10": (chain(10, 0.1), 1.0),
    }


def chain(steps: int, seconds: float) -> list[Step]:
    return [(f"c{i}", seconds, (f"c{i - 1}",) if i else ()) for i in range(steps)]


class State(TypedDict):
    # Appended to, like a thread's messages: on one thread it keeps every run's results.
    results: Annotated[list[dict[str, Any]], operator.add]


class Sleeper:
    """A node doing what the project's sleeping tool does: sleep, return a small result."""

    def __init__(self, step_id: str, seconds: float) -> None:
        self.step_id = step_id
        self.seconds = seconds

    def __call__(self, state: State) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {"results": [{"label": self.step_id, "slept_s": self.seconds}]}


class TimedSqliteSaver(SqliteSaver):
    """SqliteSaver that adds up the seconds and calls of its writes (thread-safe)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self._tally = threading.Lock()
        self.seconds = 0.0
        self.puts = 0
        self.put_writes_calls = 0

    def _add(self, started: float, puts: int, writes: int) -> None:
        with self._tally:
            self.seconds += time.perf_counter() - started
            self.puts += puts
            self.put_writes_calls += writes

    def put(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().put(*args, **kwargs)
        finally:
            self._add(started, 1, 0)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            super().put_writes(*args, **kwargs)
        finally:
            self._add(started, 0, 1)

    def tally(self) -> tuple[float, int, int]:
        with self._tally:
            return self.seconds, self.puts, self.put_writes_calls


def open_saver(path: Path) -> TimedSqliteSaver:
    conn = sqlite3.connect(path, check_same_thread=False)
    saver = TimedSqliteSaver(conn)
    saver.setup()  # WAL, tables
    conn.execute("PRAGMA synchronous=FULL")
    return saver


def sqlite_settings(saver: SqliteSaver) -> dict[str, Any]:
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    with saver.lock:
        mode = saver.conn.execute("PRAGMA journal_mode").fetchone()[0]
        level = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
    return {"journal_mode": mode, "synchronous": names.get(level, str(level))}


def build(steps: Sequence[Step], scale: float, saver: SqliteSaver) -> Any:
    builder = StateGraph(State)
    for step_id, seconds, _ in steps:
        builder.add_node(step_id, Sleeper(step_id, seconds * scale))
    needed = {dep for _, _, deps in steps for dep in deps}
    for step_id, _, deps in steps:
        if not deps:
            builder.add_edge(START, step_id)
        else:  # a list waits for all of them (one dependency: a plain edge)
            builder.add_edge(list(deps) if len(deps) > 1 else deps[0], step_id)
        if step_id not in needed:
            builder.add_edge(step_id, END)
    return builder.compile(checkpointer=saver)


def invoke(graph: Any, steps: Sequence[Step], max_concurrency: int | None) -> float:
    """One run on a new thread, durability "sync"; its wall seconds."""
    config: dict[str, Any] = {"configurable": {"thread_id": uuid.uuid4().hex}}
    if max_concurrency is not None:
        config["max_concurrency"] = max_concurrency
    started = time.perf_counter()
    state = graph.invoke({"results": []}, config, durability="sync")
    wall = time.perf_counter() - started
    missing = {s[0] for s in steps} - {r["label"] for r in state["results"]}
    if missing:
        raise AssertionError(f"steps without a result: {sorted(missing)}")
    return wall


def bench_dags(work: Path, scale: float, reps: int, max_concurrency: int) -> dict[str, Any]:
    saver = open_saver(work / "dags.sqlite")
    warm = chain(2, 0.0)
    invoke(build(warm, 0.0, saver), warm, max_concurrency)
    results = []
    for name, (steps, bound_unscaled) in dag_shapes().items():
        graph, bound = build(steps, scale, saver), bound_unscaled * scale
        tally0 = saver.tally()
        walls = [invoke(graph, steps, max_concurrency) for _ in range(reps)]
        seconds, puts, writes = (b - a for a, b in zip(tally0, saver.tally(), strict=True))
        default_pool = invoke(graph, steps, None)
        per_step = len(steps) * reps
        results.append(
            {
                "dag": name,
                "steps": len(steps),
                "bound_s": bound,
                "wall_s": {
                    "mean": statistics.fmean(walls),
                    "min": min(walls),
                    "max": max(walls),
                    "runs": [round(w, 4) for w in walls],
                },
                "ratio_to_bound": statistics.fmean(walls) / bound,
                "ratio_to_bound_worst": max(walls) / bound,
                "ratio_to_bound_default_pool": default_pool / bound,
                "overhead_ms_per_step": (statistics.fmean(walls) - bound) / len(steps) * 1000,
                "checkpointer_ms_per_step": seconds / per_step * 1000,
                "puts_per_step": puts / per_step,
                "put_writes_per_step": writes / per_step,
            }
        )
    settings = sqlite_settings(saver)
    saver.conn.close()
    return {"max_concurrency": max_concurrency, "sqlite": settings, "dags": results}


def _thread_rows(saver: SqliteSaver, thread_id: str) -> tuple[list[int], int]:
    """One thread's checkpoint sizes (blob + metadata, in order) and its writes' bytes."""
    with saver.lock:
        conn = saver.conn
        checkpoints = conn.execute(
            "SELECT length(checkpoint) + length(metadata) FROM checkpoints "
            "WHERE thread_id = ? ORDER BY checkpoint_id",
            (thread_id,),
        ).fetchall()
        writes = conn.execute(
            "SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?", (thread_id,)
        ).fetchone()[0]
    return [row[0] for row in checkpoints], int(writes)


def _database_bytes(saver: SqliteSaver) -> int:
    """Pages in use as the connection sees them (WAL included), times the page size."""
    with saver.lock:
        pages = saver.conn.execute("PRAGMA page_count").fetchone()[0]
        size = saver.conn.execute("PRAGMA page_size").fetchone()[0]
    return int(pages * size)


def bench_growth(
    work: Path, runs: int, steps: int, max_concurrency: int, *, one_thread: bool
) -> dict[str, Any]:
    """A chain of `steps` 0 s steps run `runs` times into one database: a new thread per
    run (like a new run stream), or `one_thread` (a conversation whose state keeps every
    run's results)."""
    name = "growth-one-thread" if one_thread else "growth"
    saver = open_saver(work / f"{name}.sqlite")
    graph = build(chain(steps, 0.0), 0.0, saver)
    per_run = []
    for run in range(1, runs + 1):
        thread = "conversation" if one_thread else f"run-{run}"
        before, tally0 = _database_bytes(saver), saver.tally()[0]
        sizes0, writes0 = _thread_rows(saver, thread)
        config = {"configurable": {"thread_id": thread}, "max_concurrency": max_concurrency}
        graph.invoke({"results": []}, config, durability="sync")
        sizes, writes = _thread_rows(saver, thread)
        new = sizes[len(sizes0) :]
        per_run.append(
            {
                "run": run,
                "database_bytes_per_step": (_database_bytes(saver) - before) / steps,
                "row_bytes_per_step": (sum(new) + writes - writes0) / steps,
                "checkpoints_per_step": len(new) / steps,
                "first_checkpoint_bytes": new[0] if new else 0,
                "last_checkpoint_bytes": new[-1] if new else 0,
                "checkpointer_ms_per_step": (saver.tally()[0] - tally0) / steps * 1000,
            }
        )
    end_bytes = _database_bytes(saver)
    saver.conn.close()
    return {
        "runs": runs,
        "steps_per_run": steps,
        "thread_per_run": not one_thread,
        "per_run": per_run,
        "database_bytes_end": end_bytes,
        "files_bytes_end": sum(p.stat().st_size for p in work.glob(f"{name}.sqlite*")),
        "database_bytes_per_step_overall": end_bytes / (runs * steps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scale", type=float)
    parser.add_argument("--reps", type=int)
    parser.add_argument("--max-concurrency", type=int, default=MAX_CONCURRENCY)
    parser.add_argument("--growth-runs", type=int)
    parser.add_argument("--growth-steps", type=int)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    scale = args.scale if args.scale is not None else sizes["scale"]
    reps = args.reps or int(sizes["reps"])
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "peer": "langgraph",
        "description": "LangGraph StateGraph + SqliteSaver (WAL, synchronous=FULL), "
        'durability "sync"',
        "versions": {
            "python": platform.python_version(),
            "langgraph": version("langgraph"),
            "langgraph-checkpoint-sqlite": version("langgraph-checkpoint-sqlite"),
            "sqlite": sqlite3.sqlite_version,
        },
        "cpus": os.cpu_count(),
        "scale": scale,
        "reps": reps,
        "executor": bench_dags(work, scale, reps, args.max_concurrency),
    }
    growth = (
        args.growth_runs or int(sizes["growth_runs"]),
        args.growth_steps or int(sizes["growth_steps"]),
        args.max_concurrency,
    )
    result["growth"] = bench_growth(work, *growth, one_thread=False)
    result["growth_one_thread"] = bench_growth(work, *growth, one_thread=True)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
