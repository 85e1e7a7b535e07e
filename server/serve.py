"""`autoagent serve`: own the event store (and, in later issues, everything wired to it).

For now the server holds the store open with its writer running, says where it is,
and waits for SIGINT/SIGTERM, then closes cleanly: queued appends commit first.
"""

from __future__ import annotations

import signal
import sys
from typing import TextIO

import trio

from events import StoreOptions, open_event_store

from .config import Config


def store_options(config: Config) -> StoreOptions:
    """Map the `[store]` section onto the event store's options."""
    return StoreOptions(
        sync=config.store.sync,
        map_size_mb=config.store.map_size_mb,
        compress_over_bytes=config.store.compress_over_bytes,
        max_event_bytes=config.store.max_event_bytes,
    )


async def serve(config: Config, out: TextIO = sys.stdout) -> int:
    path = config.store.data_path
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_event_store(path, store_options(config)) as store:
            out.write(
                f"autoagent: event store open at {path.resolve()} "
                f"(head position {store.head_position}); Ctrl-C to stop\n"
            )
            out.flush()
            async for signum in signals:
                out.write(f"autoagent: {signal.Signals(signum).name} received, closing the store\n")
                break
    out.write("autoagent: stopped cleanly\n")
    out.flush()
    return 0
