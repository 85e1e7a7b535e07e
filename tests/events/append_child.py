"""Child process of the shared-log tests (`test_shared_log.py`): another writer.

    python -m tests.events.append_child DATA_DIR STREAM COUNT [--per-append N]
        [--every S] [--map-mb M] [--payload-bytes B]

Opens the LMDB event store in DATA_DIR (as a second process beside the test's), appends
COUNT events to STREAM with `ANY` expected version, N per append, sleeping S seconds
between appends, and after each acknowledged append writes one line and flushes:

    ack <first position> <last position> <last version> <time.monotonic()>

(CLOCK_MONOTONIC is one clock for every process of the machine, so the parent can
measure how long its subscribers took to see each append.) `--payload-bytes` gives each
event an incompressible payload of that size, to grow the map.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time

import trio

from events import ANY, Event, StepCompleted, StepStarted, StoreOptions, open_event_store


def _event(stream: str, n: int, payload_bytes: int) -> Event:
    if payload_bytes:
        blob = base64.b64encode(os.urandom(payload_bytes)).decode()[:payload_bytes]
        return StepCompleted(run_id=stream, step_id=f"c{n}", result=blob, duration_s=0.0)
    return StepStarted(run_id=stream, step_id=f"c{n}")


async def main(args: argparse.Namespace) -> None:
    options = StoreOptions(sync=False, map_size_mb=args.map_mb)
    async with open_event_store(args.data_dir, options) as store:
        for start in range(0, args.count, args.per_append):
            size = min(args.per_append, args.count - start)
            events = [_event(args.stream, start + i, args.payload_bytes) for i in range(size)]
            result = await store.append(args.stream, events, ANY)
            sys.stdout.write(
                f"ack {result.positions[0]} {result.last_position} {result.version} "
                f"{time.monotonic()!r}\n"
            )
            sys.stdout.flush()
            if args.every:
                await trio.sleep(args.every)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="append_child")
    parser.add_argument("data_dir")
    parser.add_argument("stream")
    parser.add_argument("count", type=int)
    parser.add_argument("--per-append", type=int, default=1)
    parser.add_argument("--every", type=float, default=0.0)
    parser.add_argument("--map-mb", type=int, default=16)
    parser.add_argument("--payload-bytes", type=int, default=0)
    return parser


if __name__ == "__main__":
    trio.run(main, _parser().parse_args())
