"""Child process of the crash test (`test_crash.py`): append until killed.

    python -m tests.events.crash_child DATA_DIR ROUND [SYNC]

Opens the LMDB event store in DATA_DIR, prints `ready`, then runs concurrent producers
that append batches of 1-5 `StepStarted` events forever. After every acknowledged
append it writes one line to stdout and flushes:

    ack <stream> <pos,pos,...> <idhex,idhex,...>

Each line goes out in a single `write` on an unbuffered stdout (`-u`), so a SIGKILL can
only cut off lines that were never written; a line without its newline is not an ack.
SYNC (default 1) is `StoreOptions.sync`; 0 exists only to probe the test by hand.
"""

from __future__ import annotations

import random
import sys
import uuid

import trio

from events import ANY, EventStore, StepStarted, StoreOptions, open_event_store

PRODUCERS = 8
# Streams shared by every round (their versions must stay contiguous across crashes)...
SHARED_STREAMS = ("run-crash-a", "run-crash-b", "run-crash-c")
# ...and producers that own one stream per round and append with an exact expected version.
OWNER_PRODUCERS = 2


def _ack(stream: str, positions: tuple[int, ...], ids: list[uuid.UUID]) -> None:
    line = f"ack {stream} {','.join(map(str, positions))} {','.join(i.hex for i in ids)}\n"
    sys.stdout.write(line)
    sys.stdout.flush()


async def _producer(store: EventStore, round_no: int, producer: int) -> None:
    rng = random.Random(f"{round_no}-{producer}")
    owned = producer < OWNER_PRODUCERS
    own_stream = f"run-crash-r{round_no}-p{producer}"
    own_version = 0
    step = 0
    while True:
        size = rng.randint(1, 5)
        events = []
        ids = []
        for _ in range(size):
            step += 1
            event_id = uuid.UUID(bytes=rng.randbytes(16), version=4)
            ids.append(event_id)
            events.append(
                StepStarted(run_id=f"r{round_no}", step_id=f"p{producer}-s{step}").new(
                    id=event_id, correlation=f"r{round_no}"
                )
            )
        if owned:
            stream = own_stream
            result = await store.append(stream, events, expected_version=own_version)
            own_version = result.version
        else:
            stream = rng.choice(SHARED_STREAMS)
            result = await store.append(stream, events, expected_version=ANY)
        if result.duplicate or len(result.positions) != size:
            raise AssertionError(f"unexpected append result {result!r}")
        _ack(stream, result.positions, ids)


async def main(data_dir: str, round_no: int, sync: bool) -> None:
    async with open_event_store(data_dir, StoreOptions(sync=sync)) as store:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with trio.open_nursery() as nursery:
            for producer in range(PRODUCERS):
                nursery.start_soon(_producer, store, round_no, producer)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m tests.events.crash_child DATA_DIR ROUND [SYNC]")
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3:] != ["0"])
