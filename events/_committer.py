"""The writer's own thread: every commit of a store runs on one long-lived thread.

`trio.to_thread.run_sync` per commit costs a capacity-limiter round, a context copy, a
thread rename and a wake of a cached worker each time: about 160 us per round trip on
this project's 2-core VM, against about 100 us for a thread that waits on a queue and
reports back through the Trio token (measured with the probe in commit history; the
single-producer append waits for one round trip per event). The thread is started and
joined by the writer task that owns it (`running`, a nursery), so it never outlives
the store.

A commit in progress is never abandoned: the writer waits (shielded) for the outcome
of every batch it queued, so a batch is written whole or not at all and the writer
knows which. After a failed commit the thread commits nothing more; later batches are
answered with an error.
"""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

from events._log import AppendRequest, EventLog, Outcome, PlannedWrite
from events.errors import EventStoreError

CommitResult = tuple[list[Outcome], list[PlannedWrite]]
# What the thread reports: the commit's result, or what it raised.
_Reported = CommitResult | BaseException
# The report and the log's `last_commit_marker` (None after a failure).
_Deliver = Callable[[_Reported, int | None], None]
_Job = tuple[Sequence[AppendRequest], int, _Deliver]


class Committer:
    """Runs `log.commit` on the thread of `running`; one batch at a time, in order.

    `start` queues a batch; its result reaches the writer through `run_sync_soon`.
    """

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()

    def _loop(self, token: trio.lowlevel.TrioToken) -> None:
        failure: BaseException | None = None
        while (job := self._jobs.get()) is not None:
            requests, ts, deliver = job
            result: _Reported
            marker = None
            if failure is not None:  # nothing is committed after a failed commit
                result = EventStoreError(f"an earlier commit failed: {failure!r}")
            else:
                try:
                    result = self._log.commit(requests, ts)
                    marker = self._log.last_commit_marker()
                except BaseException as exc:  # handed to the writer, raised there
                    result = failure = exc
            token.run_sync_soon(deliver, result, marker)

    def start(self, requests: Sequence[AppendRequest], ts: int, deliver: _Deliver) -> None:
        """Queue a commit; `deliver` gets its result (or what it raised) and the log's
        marker of it in the Trio thread, after every commit queued before it."""
        self._jobs.put((requests, ts, deliver))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Committer]:
        """The thread, from entry to exit (it finishes every commit queued, then stops).

        A Trio worker thread with a limiter of its own, so it never takes one of the
        shared slots and code running in it may call `trio.from_thread`.
        """
        token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(trio.to_thread.run_sync, self._loop, token, limiter=trio.CapacityLimiter(1))
            )
            try:
                yield self
            finally:
                self._jobs.put(None)
