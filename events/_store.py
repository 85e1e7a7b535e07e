"""The Trio face of the event log: group-commit writer, reads and live subscriptions.

One writer task owns the write path. Producers validate and encode their events, send
the request over a bounded memory channel and wait; the writer takes everything
pending, commits it in one transaction on its commit thread (group commit: one fsync
for many appends), then acknowledges each producer and wakes subscribers. An
acknowledged append is on disk when `sync` is on. `submit` queues an append without
waiting (pipelined): commits are in queue order, so the next awaited append makes it
durable too; subscribers only ever see committed records. A batch made only of such
queued appends may wait up to `commit_linger_s` for more to join its commit; anything
awaited ends that wait at once.

Other processes may append to the same log (an LMDB data dir shared by `serve` and
`autoagent run`, a PostgreSQL log shared by several nodes). For such a log a watcher
task publishes the records it finds beyond the store's own head, so `head_position`,
`wait_for_position` and live subscribers follow every process's appends, not only this
one's. It looks when the commit thread, which watches the log's file while it has
nothing to commit (LMDB on Linux: `events._committer`, `events._file_changes`), saw
another process commit; when a log that announces appends says one was made
(PostgreSQL's NOTIFY); or else every `watch_interval_s`. For LMDB it first compares the
log's change marker with what this store has published (its own commits included), so
neither an idle store nor its own commits cost a wake-up or a worker-thread call.

Commits run on the writer's own long-lived thread (`events._committer`).
Cancellation: a commit in progress is not abandoned (its waiter is shielded), so a
batch is written whole or not at all. A producer cancelled while
waiting for its acknowledgement may or may not have been written; retrying it with
the same event ids is safe (idempotent append).
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from events._codec import PreparedEvent, decode_record, pack_data
from events._committer import CommitResult, Committer
from events._file_changes import FileChanges
from events._keys import UserKey
from events._lmdb_log import LmdbEventLog
from events._log import AppendRequest, EventLog, LogStatistics, Outcome, PlannedWrite
from events._model import (
    ANY,
    AppendResult,
    Expected,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    new_event_id_bytes,
)
from events._sealing import PERSONAL_FIELDS, Sealer, seal_payload
from events._types import Event, check_decodable, is_known_type
from events.errors import (
    EventStoreError,
    EventTooLarge,
    InvalidAppend,
    InvalidStreamName,
    StoreClosed,
    StoreCorrupted,
    UnknownEventType,
)

_log = logging.getLogger(__name__)

MAX_STREAM_NAME_BYTES = 256
# Batches the writer may have queued on its commit thread at once (see `run_writer`).
_COMMITS_IN_FLIGHT = 2
_SEALED_STREAMS = ("session-", "run-")
# Looks again while the change marker is ahead of what a look saw (`_catch_up_with_marker`).
_MARKER_RETRIES = 10
_MARKER_RETRY_S = 0.002
# Stream names `stream_exists` remembers at most (then it starts over).
EXISTING_STREAMS_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Tuning of the store; `server.config` maps the `[store]` section onto this."""

    sync: bool = True
    map_size_mb: int = 1024
    compress_over_bytes: int = 4096
    max_event_bytes: int = 4 * 1024 * 1024
    recent_events: int = 8192
    max_batch_requests: int = 4096
    queue_size: int = 4096
    read_batch: int = 1000
    # How soon, at worst, a log that other processes append to is checked for their
    # records: where its file is watched (`watch_file_changes`), how often the commit
    # thread looks between commits that keep coming; elsewhere how often the watcher
    # polls; for PostgreSQL, how long it waits for a NOTIFY before it looks anyway.
    watch_interval_s: float = 0.05
    # Wait for writes to the log's file (Linux inotify) instead of looking every
    # `watch_interval_s`: an idle store then never wakes. False: always poll.
    watch_file_changes: bool = True
    # LMDB: records a commit may leave out of the indexes (written behind the log).
    index_every: int = 2048
    # How long the writer holds a batch that nobody awaits yet (only `submit`s) for
    # more appends to join it: a run's queued events then share a commit (one disk
    # flush, one commit-thread round trip, one projection step) instead of one each.
    # An awaited append, `durable()` or `flush()` ends the wait at once. 0: never wait.
    commit_linger_s: float = 0.005


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    head_position: int
    appends: int
    commits: int
    events_written: int
    mean_batch_requests: float
    # The watcher of a shared log: times it woke to check for other processes' commits,
    # and times it read the log for them (a worker-thread call each).
    watcher_checks: int = 0
    watcher_looks: int = 0


class _Recent:
    """A just-committed record kept for live subscribers, decoded on first read."""

    __slots__ = ("_record", "position", "stream", "value")

    def __init__(self, position: int, stream: str, value: bytes) -> None:
        self.position = position
        self.stream = stream
        self.value = value
        self._record: RecordedEvent | None = None

    @classmethod
    def decoded(cls, record: RecordedEvent) -> _Recent:
        """One read back from the log (another process's), already decoded."""
        recent = cls(record.position, record.stream, b"")
        recent._record = record
        return recent

    def record(self) -> RecordedEvent:
        if self._record is None:
            self._record = decode_record(self.value, self.position)
        return self._record


class AppendTicket:
    """A queued append; the writer puts its outcome here when the batch is on disk.

    `durable()` waits for that. Commits are in queue order, so a ticket that is durable
    makes every append queued before it durable too.
    """

    __slots__ = ("_done", "_outcome", "_poke", "request", "sealed_events", "urgent")

    def __init__(
        self,
        request: AppendRequest,
        sealed_events: Sequence[Event | NewEvent] | None,
        *,
        urgent: bool = True,
        poke: Callable[[], None] | None = None,
    ) -> None:
        self.request = request
        # Events of a sealed stream, for the sealer to learn owners from once committed.
        self.sealed_events = sealed_events
        # Whether someone waits for this append: the writer never holds such a batch
        # back (`StoreOptions.commit_linger_s`). `poke` tells the writer it became so.
        self.urgent = urgent
        self._poke = poke
        self._done = trio.Event()
        self._outcome: Outcome | BaseException | None = None

    def hurry(self) -> None:
        """Someone now waits for this append: the writer commits it without lingering."""
        if not self.urgent and not self._done.is_set():
            self.urgent = True
            if self._poke is not None:
                self._poke()

    def settle(self, outcome: Outcome | BaseException) -> None:
        self._outcome = outcome
        self._done.set()

    @property
    def settled(self) -> bool:
        """Whether the writer has put the outcome here (the append is durable or refused)."""
        return self._done.is_set()

    @property
    def settled_event(self) -> trio.Event:
        """Set once `settled`."""
        return self._done

    async def durable(self) -> AppendResult:
        """Wait until the append is on disk (with `sync`); raise what refused it."""
        self.hurry()
        await self._done.wait()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


class EventStore:
    """Appends, reads and subscriptions over one `EventLog`; see module docstring."""

    def __init__(
        self, log: EventLog, options: StoreOptions = StoreOptions(), sealer: Sealer | None = None
    ) -> None:
        self.log = log
        self.options = options
        # With a sealer, personal content of session and run streams is sealed on
        # append (see `events._sealing`); readers that show content call `open`.
        self.sealer = sealer
        self._send, self._receive = trio.open_memory_channel[AppendTicket](options.queue_size)
        # The last commit the store has published, by its change marker: at first, what
        # the read of the head saw.
        marker, self._head = log.seen_head()
        self._marker_seen = marker or 0
        self._changed = trio.Event()
        # Subscribers of one stream wait here: an append wakes only its own stream's
        # subscribers, not every follower of every run.
        self._stream_changed: dict[str, trio.Event] = {}
        self._recent: collections.deque[_Recent] = collections.deque()
        # The same records by stream, so a stream's subscriber finds its own without
        # looking at every other stream's (100 clients each following their own run).
        self._recent_of: dict[str, collections.deque[_Recent]] = {}
        self._closed = False
        self._poked = trio.Event()  # set: stop holding the batch back (`_linger`)
        # Batches on the commit thread, and how many have come back: the watcher lets
        # a commit of this process that is under way say what it saw (`_look_needed`).
        self._in_flight = 0
        self._deliveries = 0
        self._delivered = trio.Event()
        self._watch_scope = trio.CancelScope()
        # Set when the commit thread, which watches the log's file, saw another
        # process commit (`events._committer`); None while nothing watches the file.
        self._external_commit: trio.Event | None = None
        self._appends = self._commits = self._events_written = 0
        self._watcher_checks = self._watcher_looks = 0
        # Appends queued and not answered yet, for `flush`.
        self._unanswered: set[AppendTicket] = set()
        # Streams known to hold records (`stream_exists`), bounded.
        self._existing: set[str] = set()

    # --- writing -------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[Event | NewEvent],
        expected_version: Expected = ANY,
        *,
        correlation: str | None = None,
        causation: str | None = None,
    ) -> AppendResult:
        """Append `events` to `stream` atomically; returns once durable.

        `correlation` / `causation` apply to typed `Event`s; a `NewEvent` carries its own.
        A caller already cancelled queues nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        ticket = await self._enqueue(
            stream, events, expected_version, correlation, causation, urgent=True
        )
        result = await ticket.durable()
        if events:
            self._remember_existing(stream)
        return result

    async def submit(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: Expected = ANY,
        correlation: str | None = None,
        causation: str | None = None,
    ) -> AppendTicket:
        """Queue an append without waiting for the disk (a pipelined append).

        The append is committed in order with every other one: a later append that is
        awaited (`append`, or `durable()` of a later ticket) makes it durable too, and
        appends queued together without a checkpoint between them go into one commit.
        Until then a crash may lose it. Only typed events (fresh ids) are taken, so at
        `ANY` version nothing can refuse the append and an outcome nobody awaits is
        never an error that goes unseen (a failed commit stops the writer, and with it
        every later append). With another `expected_version` the ticket says whether it
        was refused: await it.
        """
        if isinstance(events, Event) or not all(isinstance(e, Event) for e in events):
            raise InvalidAppend("submit takes a sequence of typed events")
        return await self._enqueue(
            stream, events, expected_version, correlation, causation, urgent=False
        )

    async def flush(self) -> None:
        """Wait until every append queued so far (`submit` included; one whose `submit`
        has returned) is answered, whatever its outcome."""
        waiting = list(self._unanswered)
        for ticket in waiting:
            ticket.hurry()
        for ticket in waiting:
            await ticket.settled_event.wait()

    async def _enqueue(
        self,
        stream: str,
        events: Sequence[Event | NewEvent],
        expected_version: Expected,
        correlation: str | None,
        causation: str | None,
        *,
        urgent: bool,
    ) -> AppendTicket:
        key = None
        sealed_stream = self.sealer is not None and stream.startswith(_SEALED_STREAMS)
        if self.sealer is not None and sealed_stream:
            self.sealer.observe(stream, events, committed=False)
            if self.sealer.wants(stream, events):
                key = await self.sealer.key_for(stream, self.log)
        request = prepare_append(
            stream,
            events,
            expected_version,
            self.options.max_event_bytes,
            correlation,
            causation,
            seal_with=key,
        )
        if self._closed:
            raise StoreClosed("the event store is closed")
        ticket = AppendTicket(
            request, events if sealed_stream else None, urgent=urgent, poke=self._poke
        )
        try:
            # No checkpoint while there is room: appends queued one after another by one
            # task reach the writer together (one commit).
            self._send.send_nowait(ticket)
        except trio.WouldBlock:
            self._poke()  # a full queue is not held back
            try:
                await self._send.send(ticket)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise StoreClosed("the event store is closed") from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreClosed("the event store is closed") from None
        if urgent:
            self._poke()
        if not ticket.settled:  # a sender that waited for room may be answered already
            self._unanswered.add(ticket)
        return ticket

    def _poke(self) -> None:
        """Wake a writer that holds a batch back (`_linger`)."""
        self._poked.set()

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The single writer task; returns when the store is closed and drained.

        It does not wait for a commit before gathering the next batch: up to
        `_COMMITS_IN_FLIGHT` batches are queued on the commit thread, which commits them
        one after the other, so the thread never idles while producers' next appends
        are gathered. Outcomes come back in commit order (`_committed`). When the
        writer stops early (a failed commit, cancellation), every append it has not
        handed to the thread is answered with `StoreClosed`: no waiter is left hanging.
        """
        changes = self._watch_file()
        committer = Committer(
            self.log,
            changes,
            self._external_committed,
            self._marker_seen,
            busy_s=self.options.watch_interval_s,
            on_watch_failed=self._file_watch_failed,
        )
        try:
            await self._write(committer, task_status)
        finally:
            if changes is not None:  # the commit thread has stopped
                changes.close()

    def _watch_file(self) -> FileChanges | None:
        """A watch on the log's file for the commit thread, where there is one."""
        changed = self.log.changed_file() if self.options.watch_file_changes else None
        if changed is None or not self.log.shared:
            return None
        changes = FileChanges.watch(changed)
        if changes is not None:
            self._external_commit = trio.Event()
        return changes

    def _external_committed(self) -> None:
        if self._external_commit is not None:
            self._external_commit.set()

    def _file_watch_failed(self) -> None:
        """The commit thread no longer watches the file: the watcher polls."""
        waiting, self._external_commit = self._external_commit, None
        if waiting is not None:
            waiting.set()

    async def _write(self, committer: Committer, task_status: trio.TaskStatus[None]) -> None:
        slots = trio.Semaphore(_COMMITS_IN_FLIGHT)
        failures: list[BaseException] = []
        held: list[AppendTicket] = []  # taken from the channel, not yet on the thread
        async with committer.running(), self._receive:
            task_status.started()
            try:
                with trio.CancelScope() as gathering:
                    async for first in self._receive:
                        held = [first]
                        self._gather(held)
                        if self.options.commit_linger_s > 0:
                            await self._linger(held)
                        try:  # no checkpoint when a slot is free: one scheduling pass less
                            slots.acquire_nowait()
                        except trio.WouldBlock:
                            await slots.acquire()
                        batch, held = held, []
                        done = partial(self._committed, batch, slots, failures, gathering)
                        self._in_flight += 1
                        committer.start([t.request for t in batch], time.time_ns(), done)
            finally:
                # Every batch in flight is answered, also when the writer is cancelled:
                # a commit in progress is never abandoned.
                with trio.CancelScope(shield=True):
                    for _ in range(_COMMITS_IN_FLIGHT):
                        await slots.acquire()
                self._closed = True
                self._refuse_unwritten(held)
        if failures:
            raise failures[0]

    def _gather(self, held: list[AppendTicket]) -> None:
        """Add what is queued (without waiting) to `held`, up to a batch's limit."""
        while len(held) < self.options.max_batch_requests:
            try:
                held.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break

    async def _linger(self, held: list[AppendTicket]) -> None:
        """Hold a batch nobody awaits for up to `commit_linger_s`, gathering what is
        queued meanwhile; return as soon as an append in it is awaited (`urgent`: an
        `append`, or `durable()` / `flush()` of a submitted one), the batch is full,
        or the store is closing. Appends that only queue lose nothing by it: until
        committed a crash may lose them anyway, and the order of commits is kept.
        """
        deadline = trio.current_time() + self.options.commit_linger_s
        while (
            not self._closed
            and len(held) < self.options.max_batch_requests
            and not any(ticket.urgent for ticket in held)
        ):
            # No checkpoint between this check and the wait: a poke cannot slip between.
            self._poked = trio.Event()
            with trio.move_on_at(deadline) as waited:
                await self._poked.wait()
            self._gather(held)
            if waited.cancelled_caught:
                return

    def _refuse_unwritten(self, held: list[AppendTicket]) -> None:
        """Answer what the stopped writer never handed to the commit thread."""
        refusal = StoreClosed("the event store stopped before this append was written")
        unwritten = list(held)
        while True:
            try:
                unwritten.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        for ticket in unwritten:
            ticket.settle(refusal)
        self._unanswered.difference_update(unwritten)

    def _committed(
        self,
        batch: list[AppendTicket],
        slots: trio.Semaphore,
        failures: list[BaseException],
        gathering: trio.CancelScope,
        result: CommitResult | BaseException,
        marker: int | None,
    ) -> None:
        """A batch's commit is done (called in the Trio thread, in commit order).

        It runs outside any task (`run_sync_soon`): whatever goes wrong here is handed
        to the writer task, which stops and raises it, never to Trio itself.
        """
        slots.release()
        self._in_flight -= 1
        self._deliveries += 1
        self._delivered.set()
        self._delivered = trio.Event()
        try:
            if isinstance(result, BaseException):
                raise result
            self._answer(batch, *result)
            if marker is not None:
                # Its records are published, and with them (a gap before them) whatever
                # other processes committed before its transaction: every commit up to
                # its marker. A commit that wrote nothing has no marker.
                self._marker_seen = max(self._marker_seen, marker)
        except BaseException as exc:
            for ticket in batch:
                if not ticket.settled:
                    ticket.settle(EventStoreError(f"commit failed: {exc!r}"))
            self._unanswered.difference_update(batch)
            failures.append(exc)
            gathering.cancel()  # the writer stops and raises it

    def _answer(
        self, batch: list[AppendTicket], outcomes: list[Outcome], writes: list[PlannedWrite]
    ) -> None:
        self._publish([_Recent(w.position, w.stream, w.value) for w in writes])
        self._events_written += len(writes)
        self._commits += 1
        self._appends += len(batch)
        for ticket, outcome in zip(batch, outcomes, strict=True):
            if ticket.sealed_events is not None and self.sealer is not None:
                if not isinstance(outcome, BaseException):
                    # Learned only from what is in the log: a refused SessionStarted
                    # (another principal created the session first) must not name the
                    # session's owner.
                    self.sealer.observe(ticket.request.stream, ticket.sealed_events, committed=True)
            ticket.settle(outcome)
        self._unanswered.difference_update(batch)

    def _publish(self, entries: list[_Recent]) -> None:
        """Make committed records (contiguous positions) visible to subscribers.

        No await: one atomic step. Invariant: `_recent` is empty or holds contiguous
        positions ending at `_head`. This process's records are decoded lazily, by the
        first subscriber that reads one (often none does); one that cannot be decoded
        raises there, as it would read from disk.
        """
        if entries and entries[0].position <= self._head:
            # The watcher may read this process's commit before the writer publishes
            # it, or the other way round: each position is published once.
            entries = [e for e in entries if e.position > self._head]
        if not entries:
            return
        if entries[0].position != self._head + 1:
            # Records of another process lie in between, not read here yet: the window
            # restarts, and any stream subscriber may find its records on disk.
            self._forget_recent()
            self._wake(None)
        self._remember(entries)
        self._head = entries[-1].position
        self._wake({e.stream for e in entries})

    def _remember(self, entries: list[_Recent]) -> None:
        """Add `entries` to the window, dropping its oldest beyond `recent_events`."""
        recent, of, size = self._recent, self._recent_of, self.options.recent_events
        if len(entries) >= size:
            self._forget_recent()
            entries = entries[len(entries) - size :]
        for _ in range(len(recent) + len(entries) - size):
            oldest = recent.popleft()
            kept = of[oldest.stream]
            kept.popleft()  # a stream's oldest in the window is the window's oldest of it
            if not kept:
                del of[oldest.stream]
        recent.extend(entries)
        for entry in entries:
            of_stream = of.get(entry.stream)
            if of_stream is None:
                of_stream = of[entry.stream] = collections.deque()
            of_stream.append(entry)

    def _forget_recent(self) -> None:
        self._recent.clear()
        self._recent_of.clear()

    def _skip_to(self, head: int) -> None:
        """Another process appended more than the window holds: move the head alone
        (subscribers read those records from disk)."""
        self._forget_recent()
        self._head = head
        self._wake(None)

    def _wake(self, streams: set[str] | None) -> None:
        """Wake followers of every position, and subscribers of `streams` (None: all)."""
        self._changed.set()
        self._changed = trio.Event()
        if streams is None:
            waiting = list(self._stream_changed.values())
            self._stream_changed.clear()
        else:
            waiting = [e for s in streams if (e := self._stream_changed.pop(s, None)) is not None]
        for event in waiting:
            event.set()

    async def run_watcher(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Publish the records other processes append to a shared log; ends on `aclose`."""
        with self._watch_scope:
            task_status.started()
            if self.log.shared:
                await self._watch()

    async def _watch(self) -> None:
        interval = self.options.watch_interval_s
        while True:
            try:
                if self.log.announces_appends:  # woken by another node's commit
                    await trio.to_thread.run_sync(self.log.wait_for_append, interval)
                else:
                    if self._external_commit is not None:  # the commit thread saw one
                        await self._external_commit.wait()
                        if self._external_commit is not None:  # else it stopped watching
                            self._external_commit = trio.Event()
                    else:
                        await trio.sleep(interval)
                    self._watcher_checks += 1
                    if not await self._look_needed():
                        continue
                await self._publish_external()
                await self._catch_up_with_marker()
            except StoreClosed:
                return
            except EventStoreError as exc:
                # A dropped connection (PostgreSQL): the log reconnects on the next
                # call; the watcher tries again after a pause, the writer goes on.
                _log.warning("watching the log for other writers failed: %s", exc)
                await trio.sleep(interval)

    async def _look_needed(self) -> bool:
        """Whether a process may have committed records this store has not published.

        A commit of this process that is on the commit thread is most likely what
        wrote the file: it is let come back first, since its transaction read the
        log's head and publishes (a gap before its records) what others committed
        before it. Then the log's change marker says whether any commit came after
        everything published: no worker-thread call for this process's own commits.
        """
        await self._own_commits_back()
        marker = self.log.change_marker()
        return marker is None or marker > self._marker_seen

    async def _own_commits_back(self) -> None:
        """Wait until the commits of this process on the commit thread now are back."""
        target = self._deliveries + self._in_flight
        while self._deliveries < target:
            await self._delivered.wait()

    async def _catch_up_with_marker(self) -> None:
        """Look again while the change marker is ahead of what the last look saw.

        An LMDB commit's meta page (the marker) is in the map a moment before new
        readers take the commit up: a look in between misses its records, and the
        commit's last notice of the file may already have been taken. A few short
        waits cover the flush; a writer that died in between leaves the marker ahead
        until the next commit (by anyone), which publishes the records then.
        """
        for _ in range(_MARKER_RETRIES):
            await self._own_commits_back()  # not ahead because of one of this process's
            marker = self.log.change_marker()
            if marker is None or marker <= self._marker_seen:
                return
            await trio.sleep(_MARKER_RETRY_S)
            await self._publish_external()

    async def _publish_external(self) -> None:
        self._watcher_looks += 1
        marker, head, records = await trio.to_thread.run_sync(
            _records_after, self.log, self._head, self.options.recent_events
        )
        if records:
            self._publish([_Recent.decoded(r) for r in records])
        elif head > self._head:
            self._skip_to(head)
        if marker is not None:
            self._marker_seen = max(self._marker_seen, marker)

    async def aclose(self) -> None:
        """Stop accepting appends; the writer drains what is queued and returns."""
        self._closed = True
        self._poke()  # a batch held back is committed now
        self._watch_scope.cancel()
        await self._send.aclose()

    # --- reading -------------------------------------------------------------------

    @property
    def watches_file(self) -> bool:
        """Whether the commit thread watches the log's file for other processes'
        commits (else the watcher polls, or waits for the log's announcements)."""
        return self._external_commit is not None

    @property
    def head_position(self) -> int:
        return self._head

    async def wait_for_position(self, position: int) -> None:
        """Wait until the log holds `position` (read-your-writes for followers).

        A position another process appends is seen within `watch_interval_s`.
        """
        while self._head < position:
            await self._changed.wait()

    async def _wait_for_stream(self, stream: str, after: int) -> None:
        """Wait until `stream` may have a record after position `after`.

        Returns at once when records after `after` are no longer all in memory (the
        caller reads the disk) or when one of them belongs to `stream`; otherwise it
        sleeps until an append to `stream` (other streams' appends never wake it).
        """
        while self._head > after:
            recent = self._recent
            if not recent or recent[0].position > after + 1:
                return
            mine = self._recent_of.get(stream)
            if mine and mine[-1].position > after:
                return
            after = self._head  # nothing of ours in memory up to the head
        event = self._stream_changed.get(stream)
        if event is None:
            event = self._stream_changed[stream] = trio.Event()
        try:
            await event.wait()
        finally:  # the last waiter of a stream nobody writes any more leaves no entry
            if not event.is_set() and event.statistics().tasks_waiting == 0:
                self._stream_changed.pop(stream, None)

    async def open(self, records: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """Records with their personal content opened (or marked forgotten); as they
        are when this store seals nothing."""
        if self.sealer is None:
            return list(records)
        return await self.sealer.open_async(records)

    def open_blocking(self, records: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """`open` for worker threads and synchronous callers (may read a key file)."""
        return list(records) if self.sealer is None else self.sealer.open_many(records)

    async def read(self, after: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        return await trio.to_thread.run_sync(self.log.read, after, limit or self.options.read_batch)

    async def read_stream(
        self, stream: str, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        return await trio.to_thread.run_sync(
            self.log.read_stream, stream, after_version, limit or self.options.read_batch
        )

    async def read_whole_stream(self, stream: str, after_version: int = 0) -> list[RecordedEvent]:
        """Every record of `stream` after `after_version`: the batches are read in one
        worker-thread call, not one hand-over per batch and one more to find the end."""

        def read() -> list[RecordedEvent]:
            records: list[RecordedEvent] = []
            after = after_version
            while batch := self.log.read_stream(stream, after, self.options.read_batch):
                records.extend(batch)
                after = batch[-1].version
            return records

        return await trio.to_thread.run_sync(read)

    async def read_stream_end(self, stream: str, count: int) -> list[RecordedEvent]:
        """The last `count` records of `stream` (fewer when it holds fewer), opened as
        `open` opens them: one worker-thread call where `stream_version`, `read_stream`
        and `open` would make up to three hand-overs between threads."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")

        def read() -> list[RecordedEvent]:
            since = max(0, self.log.stream_version(stream) - count)
            return self.open_blocking(self.log.read_stream(stream, since, count))

        return await trio.to_thread.run_sync(read)

    async def read_type(
        self, event_type: str, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        return await trio.to_thread.run_sync(
            self.log.read_type, event_type, after, limit or self.options.read_batch
        )

    async def stream_version(self, stream: str) -> int:
        return await trio.to_thread.run_sync(self.log.stream_version, stream)

    async def stream_exists(self, stream: str) -> bool:
        """Whether `stream` holds any record. A stream never loses its records, so a
        yes (seen here, or this store's own append) is remembered and answered without
        a worker-thread call; a no is always asked of the log (another process may
        have written the stream since)."""
        if stream in self._existing:
            await trio.lowlevel.checkpoint()
            return True
        exists = await self.stream_version(stream) > 0
        if exists:
            self._remember_existing(stream)
        return exists

    def _remember_existing(self, stream: str) -> None:
        if len(self._existing) >= EXISTING_STREAMS_KEPT:
            self._existing.clear()
        self._existing.add(stream)

    async def iterate(
        self, after: int = 0, until: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """Every record after `after` up to `until` (default: the head now), in batches."""
        end = self._head if until is None else until
        while after < end:
            batch = await self.read(after, min(self.options.read_batch, end - after))
            if not batch:
                return
            for record in batch:
                yield record
            after = batch[-1].position

    def subscribe(self, after: int = 0, stream: str | None = None) -> Subscription:
        """Records after position `after` (of one stream, or all): catch-up, then live."""
        return Subscription(self, after, stream)

    async def log_statistics(self) -> LogStatistics:
        return await trio.to_thread.run_sync(self.log.statistics)

    def statistics(self) -> StoreStatistics:
        mean = self._appends / self._commits if self._commits else 0.0
        return StoreStatistics(
            self._head,
            self._appends,
            self._commits,
            self._events_written,
            mean,
            self._watcher_checks,
            self._watcher_looks,
        )


class Subscription:
    """Async iterator over the log from a position on, never buffering without bound.

    It pulls: from the in-memory window of recent records when its position is still
    inside it, from disk otherwise (a slow subscriber simply reads the log). Every
    record is selected by position, so the switch from catch-up to live has no gap
    and no duplicate.
    """

    def __init__(self, store: EventStore, after: int, stream: str | None) -> None:
        self._store = store
        self.position = after
        self._stream = stream
        self._buffer: collections.deque[RecordedEvent] = collections.deque()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RecordedEvent:
        while not self._buffer:
            await self._fill()
        return self._buffer.popleft()

    async def next_batch(self) -> list[RecordedEvent]:
        """Every record available now, in order (at least one: waits for it); what one
        commit wrote comes together, for a subscriber that handles records in batches."""
        while not self._buffer:
            await self._fill()
        batch = list(self._buffer)
        self._buffer.clear()
        return batch

    async def _fill(self) -> None:
        store = self._store
        if self._stream is None:
            await store.wait_for_position(self.position + 1)
        else:
            await store._wait_for_stream(self._stream, self.position)
            if store.head_position <= self.position:
                return
        batch = self._from_memory()
        if batch is None:
            batch = await self._from_disk()
        if self._stream is not None:
            self._buffer.extend(r for r in batch if r.stream == self._stream)
        else:
            self._buffer.extend(batch)
        await trio.lowlevel.checkpoint()

    def _from_memory(self) -> list[RecordedEvent] | None:
        store = self._store
        recent = store._recent
        if not recent or recent[0].position > self.position + 1:
            return None
        limit = store.options.read_batch
        if self._stream is not None:
            return self._stream_from_memory(recent[-1].position, limit)
        start = self.position + 1 - recent[0].position
        end = min(len(recent), start + limit)
        batch = [recent[i].record() for i in range(start, end)]
        if end > start:
            self.position = recent[end - 1].position
        return batch

    def _stream_from_memory(self, window_end: int, limit: int) -> list[RecordedEvent]:
        """This stream's records in the window after `position`, from the store's
        index by stream (newest first until one already seen): only its own records
        are looked at and decoded."""
        assert self._stream is not None
        new: list[_Recent] = []
        for entry in reversed(self._store._recent_of.get(self._stream, ())):
            if entry.position <= self.position:
                break
            new.append(entry)
        new.reverse()
        more = len(new) > limit
        del new[limit:]
        # Decoded before the position moves: a record that does not decode raises with
        # the subscription still before it, as when reading the whole window.
        records = [entry.record() for entry in new]
        self.position = new[-1].position if more else max(self.position, window_end)
        return records

    async def _from_disk(self) -> list[RecordedEvent]:
        store = self._store
        limit = store.options.read_batch
        if self._stream is None:
            batch = await store.read(self.position, limit)
            if batch:
                self.position = batch[-1].position
            return batch
        head_before = store.head_position
        batch = await trio.to_thread.run_sync(
            store.log.read_stream_after, self._stream, self.position, limit
        )
        if len(batch) < limit:
            self.position = max(head_before, batch[-1].position if batch else 0, self.position)
        else:
            self.position = batch[-1].position
        return batch


def _records_after(
    log: EventLog, known: int, most: int
) -> tuple[int | None, int, list[RecordedEvent]]:
    """The change marker and head position a read of the log sees, and its records
    after `known` unless there are more than `most` (the watcher's worker-thread call)."""
    marker, head = log.seen_head()
    if head <= known or head - known > most:
        return marker, head, []
    try:
        return marker, head, log.read(known, head - known)
    except (StoreCorrupted, UnknownEventType):  # a subscriber meets it reading from disk
        return marker, head, []


def validate_stream(stream: object) -> str:
    if not isinstance(stream, str) or not stream:
        raise InvalidStreamName(f"stream name must be a non-empty string, got {stream!r}")
    if "\x00" in stream:
        raise InvalidStreamName(f"stream name must not contain NUL: {stream!r}")
    try:
        size = len(stream.encode())
    except UnicodeEncodeError:
        raise InvalidStreamName(f"stream name is not valid Unicode text: {stream!r}") from None
    if size > MAX_STREAM_NAME_BYTES:
        raise InvalidStreamName(
            f"stream name is {size} bytes, over the limit of {MAX_STREAM_NAME_BYTES}"
        )
    return stream


def _validate_expected(expected: object) -> Expected:
    if isinstance(expected, ExpectedVersion):
        return expected
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return expected
    raise InvalidAppend(
        f"expected_version must be ANY, NO_STREAM, STREAM_EXISTS or an int >= 0, got {expected!r}"
    )


def _prepare_event(
    stream: str,
    event: Event | NewEvent,
    max_bytes: int,
    correlation: str | None,
    causation: str | None,
    seal_with: UserKey | None = None,
) -> PreparedEvent:
    if isinstance(event, Event):
        etype, schema, id_bytes = event.type_name(), event.schema, new_event_id_bytes()
        data: object = event.to_data()
        fresh_id = True
    elif isinstance(event, NewEvent):
        if not isinstance(event.id, uuid.UUID):
            raise InvalidAppend(f"event id must be a UUID, got {event.id!r}")
        etype, schema, id_bytes, data = event.type, event.schema, event.id.bytes, dict(event.data)
        correlation, causation = event.correlation, event.causation
        fresh_id = False
    else:
        raise InvalidAppend(f"cannot append {type(event).__name__}: not an Event or NewEvent")
    if not is_known_type(etype):
        raise UnknownEventType(etype)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise InvalidAppend(f"event schema must be an int >= 1, got {schema!r}")
    check_decodable(etype, schema)
    if seal_with is not None and etype in PERSONAL_FIELDS:
        if not isinstance(data, dict):
            raise InvalidAppend(f"payload of {etype} must be a map to be sealed")
        data = seal_payload(etype, data, id_bytes, seal_with)
    packed = pack_data(etype, data)
    if len(packed) > max_bytes:
        raise EventTooLarge(stream, etype, len(packed), max_bytes)
    return PreparedEvent(etype, schema, id_bytes, correlation, causation, packed, fresh_id)


def prepare_append(
    stream: str,
    events: Sequence[Event | NewEvent],
    expected: Expected,
    max_event_bytes: int,
    correlation: str | None = None,
    causation: str | None = None,
    *,
    seal_with: UserKey | None = None,
) -> AppendRequest:
    """Validate and encode an append in the producer, before anything is queued; with
    `seal_with`, personal content is sealed with that key on the way (see `_sealing`)."""
    validate_stream(stream)
    expected = _validate_expected(expected)
    if isinstance(events, Event | NewEvent):
        raise InvalidAppend("append needs a non-empty sequence of events")
    if not isinstance(events, list | tuple):  # any other iterable of events, taken once
        try:
            events = tuple(events)
        except TypeError:
            raise InvalidAppend("append needs a non-empty sequence of events") from None
    if not events:
        raise InvalidAppend("append needs a non-empty sequence of events")
    if len(events) == 1:  # most appends: no generator, no check for repeated ids
        prepared: tuple[PreparedEvent, ...] = (
            _prepare_event(stream, events[0], max_event_bytes, correlation, causation, seal_with),
        )
    else:
        prepared = tuple(
            _prepare_event(stream, e, max_event_bytes, correlation, causation, seal_with)
            for e in events
        )
        if len({p.id_bytes for p in prepared}) != len(prepared):
            raise InvalidAppend("the same event id appears twice in one append")
    return AppendRequest(stream, expected, prepared)


@asynccontextmanager
async def open_event_store(
    path: str | Path | None = None,
    options: StoreOptions = StoreOptions(),
    *,
    log: EventLog | None = None,
    store_class: type[EventStore] = EventStore,
    sealer: Sealer | None = None,
) -> AsyncIterator[EventStore]:
    """Open the store at `path` (LMDB), or over a given `log`, with its writer running.

    On exit the writer drains every queued append before the log is closed.
    `store_class` lets a benchmark instrument the store without copying this.
    """
    if log is None:
        if path is None:
            raise InvalidAppend("open_event_store needs a path or a log")
        log = await trio.to_thread.run_sync(_open_lmdb, Path(path), options)
    try:
        store = store_class(log, options, sealer)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            await nursery.start(store.run_watcher)
            try:
                yield store
            finally:
                with trio.CancelScope(shield=True):
                    await store.aclose()
    finally:
        # Closing is I/O too (a PostgreSQL pool's connections): not on the Trio thread.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(log.close)


def _open_lmdb(path: Path, options: StoreOptions) -> LmdbEventLog:
    return LmdbEventLog.open(
        path,
        sync=options.sync,
        map_size=max(1, options.map_size_mb) * 1024 * 1024,
        compress_over=options.compress_over_bytes,
        index_every=options.index_every,
    )
