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

Watching the log's file (`FileChanges`, LMDB on Linux): once the thread has had
nothing to commit for `busy_s`, it waits for writes to the file as well as for work
(`poll` on the inotify descriptor and an eventfd). Until then it waits for work alone,
as it does without a watch: a queue's wake-up costs fewer system calls than the
eventfd's (measured: the single-producer append took ~40 us longer when every commit
went through the eventfd). While commits keep coming it looks between them once per
`busy_s` (a commit that writes records also publishes what others committed before
it, one that writes nothing does not). This thread's own commits write the file too;
it drains their notices before it watches, and compares the log's change marker with
its own last commit's, so only a commit of another process made after this thread's
last one reaches the Trio thread (`on_external`). The Trio thread never wakes for this
process's own commits, and an idle store never wakes at all. A watch that breaks (an
`OSError`) is dropped: the thread commits on and the store polls (`on_watch_failed`).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

from events._file_changes import FileChanges
from events._log import AppendRequest, EventLog, Outcome, PlannedWrite
from events.errors import EventStoreError

_log = logging.getLogger(__name__)

CommitResult = tuple[list[Outcome], list[PlannedWrite]]
# What the thread reports: the commit's result, or what it raised.
_Reported = CommitResult | BaseException
# The report and the log's `last_commit_marker` (None after a failure).
_Deliver = Callable[[_Reported, int | None], None]
_Job = tuple[Sequence[AppendRequest], int, _Deliver]


class Committer:
    """Runs `log.commit` on the thread of `running`; one batch at a time, in order.

    `start` queues a batch; its result reaches the writer through `run_sync_soon`.
    With `changes`, the thread also watches the log's file while idle and calls
    `on_external` (in the Trio thread) when another process committed after this
    thread's last commit; `known_marker` is the change marker the store started from.
    """

    def __init__(
        self,
        log: EventLog,
        changes: FileChanges | None = None,
        on_external: Callable[[], None] | None = None,
        known_marker: int = 0,
        busy_s: float = 0.05,
        on_watch_failed: Callable[[], None] | None = None,
    ) -> None:
        self._log = log
        self._failure: BaseException | None = None
        self._changes = changes
        self._on_external = on_external
        self._on_watch_failed = on_watch_failed
        self._known_marker = known_marker  # the latest commit this thread accounts for
        self._busy_s = busy_s
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # With `changes`: a thread watching the file is woken for work through an
        # eventfd (only then: `_asleep`), so that one `poll` waits for both.
        self._wake_fd = -1
        self._asleep = False

    def _commit(self, job: _Job, token: trio.lowlevel.TrioToken) -> None:
        """Commit one batch and hand its result to the Trio thread."""
        requests, ts, deliver = job
        result: _Reported
        marker = None
        if self._failure is not None:  # nothing is committed after a failed commit
            result = EventStoreError(f"an earlier commit failed: {self._failure!r}")
        else:
            try:
                result = self._log.commit(requests, ts)
                marker = self._log.last_commit_marker()
            except BaseException as exc:  # handed to the writer, raised there
                result = self._failure = exc
        if marker is not None:
            self._known_marker = max(self._known_marker, marker)
        token.run_sync_soon(deliver, result, marker)

    def _loop(self, token: trio.lowlevel.TrioToken) -> None:
        while (job := self._jobs.get()) is not None:
            self._commit(job, token)

    def _loop_watching(self, token: trio.lowlevel.TrioToken) -> None:
        try:
            self._commit_and_watch(token)
        except OSError as exc:  # the watch broke (`poll`, a read of a descriptor)
            self._stop_watching(token, exc)
            self._loop(token)

    def _commit_and_watch(self, token: trio.lowlevel.TrioToken) -> None:
        """`_loop`, watching the file between commits; only the watching raises (a
        commit's failure is handed to the writer by `_commit`), so no job is lost."""
        poller = select.poll()
        poller.register(self._wake_fd, select.POLLIN)
        assert self._changes is not None
        poller.register(self._changes.fileno, select.POLLIN)
        self._look_for_others(token, written=True)  # commits before the watch began
        looked = time.monotonic()
        while True:
            try:
                # Until the next look is due; then, with nothing to commit, watch.
                job = self._jobs.get(timeout=max(0.0, looked + self._busy_s - time.monotonic()))
            except queue.Empty:
                job = self._watch(poller, token)
                looked = time.monotonic()
            if job is None:
                return
            self._commit(job, token)
            if time.monotonic() - looked >= self._busy_s:
                # Commits that keep coming without a pause: a look between them, as
                # not every commit publishes what others wrote (one that writes
                # nothing publishes nothing).
                self._look_for_others(token, written=self._changes.drain())
                looked = time.monotonic()

    def _stop_watching(self, token: trio.lowlevel.TrioToken, exc: OSError) -> None:
        """Watching failed (the descriptor broke): this thread commits on without it
        and the store's watcher polls instead (`on_watch_failed`)."""
        _log.warning("watching the event log's file failed (%s); polling instead", exc)
        self._asleep = False
        if self._on_watch_failed is not None:
            token.run_sync_soon(self._on_watch_failed)

    def _watch(self, poller: select.poll, token: trio.lowlevel.TrioToken) -> _Job | None:
        """Wait for work and for writes to the file; returns the next job."""
        assert self._changes is not None
        while True:
            # This thread's own commits' notices are drained first, or they would
            # wake it at once.
            self._look_for_others(token, written=self._changes.drain())
            self._asleep = True  # from here on `start` writes the eventfd
            try:
                if self._jobs.empty():
                    for fd, _ in poller.poll():
                        if fd == self._wake_fd:
                            os.eventfd_read(self._wake_fd)
            finally:
                self._asleep = False
            try:
                return self._jobs.get_nowait()
            except queue.Empty:  # the file was written: look again
                continue

    def _look_for_others(self, token: trio.lowlevel.TrioToken, *, written: bool) -> None:
        if not written or self._on_external is None:
            return
        marker = self._log.change_marker()
        if marker is None or marker > self._known_marker:
            if marker is not None:
                self._known_marker = marker
            token.run_sync_soon(self._on_external)

    def start(self, requests: Sequence[AppendRequest], ts: int, deliver: _Deliver) -> None:
        """Queue a commit; `deliver` gets its result (or what it raised) and the log's
        marker of it in the Trio thread, after every commit queued before it."""
        self._put((requests, ts, deliver))

    def _put(self, job: _Job | None) -> None:
        self._jobs.put(job)
        if self._asleep:
            os.eventfd_write(self._wake_fd, 1)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Committer]:
        """The thread, from entry to exit (it finishes every commit queued, then stops).

        A Trio worker thread with a limiter of its own, so it never takes one of the
        shared slots and code running in it may call `trio.from_thread`.
        """
        token = trio.lowlevel.current_trio_token()
        loop = self._loop
        if self._changes is not None:
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            loop = self._loop_watching
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(trio.to_thread.run_sync, loop, token, limiter=trio.CapacityLimiter(1))
                )
                try:
                    yield self
                finally:
                    self._put(None)
        finally:
            if self._wake_fd >= 0:
                os.close(self._wake_fd)
                self._wake_fd = -1
