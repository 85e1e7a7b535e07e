"""The Python process under autoagent: how its garbage collector and its threads' turns
at the interpreter lock are set.

CPython's cyclic collector (3.11: thresholds 700, 10, 10) runs a young collection every
700 allocations of container objects (dicts, lists, tuples, instances) and, from time
to time, a full one over every object alive. Two costs of ours came from that, both
measured:

- Reading the log makes a dict and a tuple per event, and a batch of them survives
  until its reader is done: at 700 the collector walked the same survivors again and
  again. Decoding and keeping 100,000 events took 4.8-7.0 us per event with Python's
  default and 2.5-3.3 us at 50,000; replay through `store.iterate()` 153k -> 206k
  events/s (`bench_eventlog`, round 7). A long projection catch-up already turns the
  collector off while it runs (`projections/_runner.py`, `gc_paused`); a short one
  (`bench_projections --quick`, 10,000 events) went 88,787 -> 143,734 events/s.
- A server with the local embedder on torch held about 510,000 objects; one full
  collection walked them in 260 ms with the event loop stopped (every client waited).
  With the embedder on numpy (round 9) a warm server holds about 145,000, walked in
  about 70 ms (the "warm" line of `serve` in `load_ws_round9_final.json`).

So the `autoagent` command sets its own process's young generation
(`performance.gc_young_threshold`), and a serving process, once warm (model loaded,
projections caught up), moves every object alive then into the collector's permanent
generation (`performance.gc_freeze`, `gc.freeze()`): later collections walk only what
was made since. What is frozen is what a long-running server keeps anyway (modules, the
model, caches); a cycle that becomes garbage among it is not collected, which is why
the freeze comes after a full collection and only once.

Threads: the event loop shares the interpreter lock with worker threads (log reads and
their decoding, projection batches, the committer). It gives the lock up on every
socket send and receive; when a worker then holds it, the loop waits up to Python's
switch interval (5 ms) to get it back. Profiled at 100 WebSocket clients (cProfile of
the server), a socket send took 363 us on average and an `os.urandom` call 39 us, which
we read as that wait. So the `autoagent` command sets its own process's interval
(`performance.switch_interval_ms`, 0.5 ms): the loop waits a tenth as long; a worker
doing long Python work is interrupted more often, at a small cost to its own speed.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass

from server.config import PerformanceConfig


@dataclass(frozen=True, slots=True)
class CollectorState:
    """The collector's thresholds and how many objects are frozen (serve's warm line)."""

    thresholds: tuple[int, int, int]
    frozen: int


def tune_collector(performance: PerformanceConfig) -> None:
    """Set the young generation's threshold (0: leave Python's own)."""
    if performance.gc_young_threshold > 0:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(performance.gc_young_threshold, middle, old)


# Python keeps the interval in whole microseconds: a smaller value would become 0, a
# hand-over of the lock at every chance.
_FINEST_SWITCH_INTERVAL_MS = 0.001


def tune_switch_interval(performance: PerformanceConfig) -> None:
    """Set how long a thread may keep the interpreter lock from another (0: Python's;
    at least one microsecond)."""
    if performance.switch_interval_ms > 0:
        ms = max(performance.switch_interval_ms, _FINEST_SWITCH_INTERVAL_MS)
        sys.setswitchinterval(ms / 1000)


def tune_process(performance: PerformanceConfig) -> None:
    """Everything the `autoagent` command sets for its own process."""
    tune_collector(performance)
    tune_switch_interval(performance)


def freeze_survivors() -> float:
    """One full collection, then everything still alive frozen; returns the seconds.

    Called once per process, when it is warm: the collection stops the event loop for
    as long as it takes (~70 ms for a warm server, 300 ms when the embedder ran on
    torch), once.
    """
    start = time.perf_counter()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - start


def collector_state() -> CollectorState:
    first, middle, old = gc.get_threshold()
    return CollectorState((first, middle, old), gc.get_freeze_count())
