"""How soon a store sees what another process appends to its log (issue 14, item 4).

One store open here, with the shipped options (on Linux its commit thread watches the
log's file for writes; elsewhere the watcher polls every `watch_interval_s`, 50 ms),
with a subscriber of every position, first idle, then committing events of its own
every `--own-every` seconds (each of those commits reads the head, so it publishes
what the other process wrote before it); a second process (`tests.events.
append_child`) appends one event at a time, every `--every` seconds, and prints the
CLOCK_MONOTONIC moment each append was acknowledged (one clock for every process of the
machine). The delay of a record is its arrival at the subscriber minus that moment; it
can come out slightly negative, since the record is visible from its commit on, a
little before the other process prints its acknowledgement.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

from events import StepStarted, StoreOptions, open_event_store

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import Table

RESULTS = Path(__file__).resolve().parent / "results" / "shared_log.json"
ROOT = Path(__file__).resolve().parents[2]
OTHER_STREAM = "run-other"


async def measure(
    work: Path, count: int, every_s: float, own_every_s: float | None = None
) -> dict[str, Any]:
    """The delays of `count` appends by another process; with `own_every_s`, this store
    commits an event of its own that often meanwhile."""
    data = work / "data"
    arrived: dict[int, float] = {}
    options = StoreOptions(sync=True)
    async with open_event_store(data, options) as store:
        watches_file = store.watches_file
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for record in store.subscribe(after=0):
                    if record.stream == OTHER_STREAM:
                        arrived[record.position] = time.monotonic()
                        if len(arrived) == count:
                            return

            async def commit_own(every: float) -> None:
                while True:
                    await store.append("run-mine", [StepStarted(run_id="mine", step_id="s")])
                    await trio.sleep(every)

            nursery.start_soon(follow)
            async with trio.open_nursery() as own:
                if own_every_s is not None:
                    own.start_soon(commit_own, own_every_s)
                argv = [sys.executable, "-m", "tests.events.append_child", str(data), OTHER_STREAM]
                done = await trio.run_process(
                    [*argv, str(count), "--every", str(every_s)], cwd=ROOT, capture_stdout=True
                )
                own.cancel_scope.cancel()
        acked = {
            int(line.split()[2]): float(line.split()[4])
            for line in done.stdout.decode().splitlines()
        }
    delays_ms = sorted((arrived[p] - acked[p]) * 1000 for p in acked)
    return {
        "appends": count,
        "every_s": every_s,
        "own_commit_every_s": own_every_s,
        "watch_interval_s": options.watch_interval_s,
        "watches_file": watches_file,
        "delay_ms": {
            "min": delays_ms[0],
            "p50": statistics.median(delays_ms),
            "p95": delays_ms[int(0.95 * (len(delays_ms) - 1))],
            "max": delays_ms[-1],
        },
    }


def report(result: dict[str, Any]) -> list[Table]:
    rows = [("this store idle", result)]
    if "while_committing" in result:
        busy = result["while_committing"]
        rows.append((f"this store committing every {busy['own_commit_every_s']} s", busy))
    return [
        Table(
            f"Another process's appends seen by this store's subscriber ({result['appends']} "
            f"appends, one every {result['every_s']} s; "
            + (
                "the commit thread watches the log's file)"
                if result.get("watches_file")
                else f"the watcher looks every {result['watch_interval_s']} s)"
            ),
            ["", "min ms", "p50 ms", "p95 ms", "max ms"],
            [
                [label, *(f"{row['delay_ms'][k]:.1f}" for k in ("min", "p50", "p95", "max"))]
                for label, row in rows
            ],
        )
    ]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__, RESULTS, work_dir_help="parent of the temp dir")
    parser.add_argument("--appends", type=int, default=200, help="appends by the other process")
    parser.add_argument("--every", type=float, default=0.03, help="seconds between them")
    parser.add_argument(
        "--own-every",
        type=float,
        default=0.02,
        help="seconds between this store's own commits in the second measurement",
    )
    args = parser.parse_args(argv)
    count = 20 if args.quick else args.appends
    started = time.perf_counter()
    result = result_header("bench_shared_log", args.quick, argv, Path.cwd())
    with scratch_dir(args.work_dir, "shared-log-") as work:
        result |= trio.run(measure, work / "idle", count, args.every)
        result["while_committing"] = trio.run(
            measure, work / "committing", count, args.every, args.own_every
        )
    finish(result, args.out, report, seconds=time.perf_counter() - started, markdown=args.markdown)


if __name__ == "__main__":
    main()
