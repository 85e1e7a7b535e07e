"""CPU of one wake-up of a Trio loop on this machine: a worker-thread call, a timer, a checkpoint.

From the project root:

    .venv/bin/python -m tests.performance.bench_wakeup_cost [--ops N] [--quick] [--out PATH]

Each is run `--ops` times one after another in an otherwise idle loop, and the
process's CPU (user + system) and the wall time per operation are reported:
- `trio.to_thread.run_sync` of a function that does nothing: the hand-over to a worker
  thread and back, as the server pays for every log read, projection step and key load;
- `trio.sleep(0.0005)`: the loop falls asleep in `epoll_wait` and a timer wakes it, as
  every network read or commit delivery that finds the server idle does;
- `trio.lowlevel.checkpoint()`: a yield to the scheduler with nothing to wait for, the
  floor.

On a virtual machine where system calls and wake-ups are expensive, the first two say
what a server at low load spends per event besides its own Python. Writes JSON
(default `tests/performance/results/wakeup_cost.json`) and prints a table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ._cli import finish, make_parser, result_header
from ._common import Table

RESULTS = Path(__file__).resolve().parent / "results" / "wakeup_cost.json"


def _nothing() -> None:
    return None


async def _thread_call() -> None:
    await trio.to_thread.run_sync(_nothing)


async def _timer() -> None:
    await trio.sleep(0.0005)


OPERATIONS: dict[str, Callable[[], Awaitable[None]]] = {
    "trio.to_thread.run_sync(nothing)": _thread_call,
    "trio.sleep(0.0005), the loop idle": _timer,
    "trio.lowlevel.checkpoint()": trio.lowlevel.checkpoint,
}


async def measure(ops: int) -> dict[str, Any]:
    result: dict[str, Any] = {"ops": ops, "per_op_us": {}}
    for name, operation in OPERATIONS.items():
        for _ in range(ops // 10):  # warm up (the worker thread, the caches)
            await operation()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(ops):
            await operation()
        result["per_op_us"][name] = {
            "cpu": (time.process_time() - cpu) / ops * 1e6,
            "wall": (time.perf_counter() - wall) / ops * 1e6,
        }
    return result


def report(result: dict[str, Any]) -> list[Table]:
    rows = [
        [name, f"{figures['cpu']:.1f}", f"{figures['wall']:.1f}"]
        for name, figures in result["per_op_us"].items()
    ]
    title = f"One operation of an otherwise idle Trio loop, {result['ops']} each"
    return [Table(title, ["operation", "CPU us", "wall us"], rows)]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__, RESULTS)
    parser.add_argument("--ops", type=int, default=3000, help="operations of each kind")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = result_header("bench_wakeup_cost", args.quick, argv, Path.cwd())
    result |= trio.run(measure, 100 if args.quick else args.ops)
    finish(result, args.out, report, seconds=time.perf_counter() - started, markdown=args.markdown)


if __name__ == "__main__":
    main()
