"""The projection runner: catch up from checkpoints, then follow the live log.

Each step reads one batch of records, applies it to every projection that has not
seen it, and commits each projection's changes together with its new checkpoint in
one transaction: every event is applied exactly once, across crashes too. A projection
is handed only the records of the types it reads (`Projection.reads`); the others
advance its checkpoint all the same, and their payloads are decoded only when some
other projection reads them (`BatchReader`). A projection whose version changed is
reset and rebuilt from position 1. The blocking work (reading, applying, committing)
runs in a worker thread; the Trio side only waits for new events and wakes readers
waiting for a position (read-your-writes).

Failure boundary: while the runner follows the log (`run`), a projection whose `apply`,
snapshot or commit raises is stopped alone, at its last checkpoint, with the error kept
in its status (for /healthz) and logged with its traceback; the other projections and
the server go on. It is tried again from its checkpoint on the next start. The
synchronous `step` / `catch_up` used by the CLI and replay raise instead, as a one-shot
command should.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import gc
import logging
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import trio

from events import EventLog, EventStore, RecordedEvent
from projections._base import Projection, SnapshottingProjection
from projections._batches import Batch, BatchReader, Reader
from projections._state_store import StateCommit, StateStore
from projections.errors import CheckpointMoved, UnknownProjection

LONG_CATCH_UP = 20_000
# Records per commit of `catch_up` far behind (a rebuild, `autoagent replay`): each
# commit is an fsync of the state store and repacks every value the batch changed, so
# fewer, larger batches are what a rebuild's speed is made of; a crash redoes at most
# one batch. Not larger: a batch's records stay in memory, decoded, until its commit
# (and a run's state holds its steps' results), and the bound is in records of any
# size (50,000 was tried and taken back: RESULTS round 8). The server's own catch-up
# (`run`) keeps the runner's batch: the event loop takes some projections' locks
# (/healthz the metrics', `forget` the memory index's), and a batch is applied under
# them.
CATCH_UP_BATCH = 10_000
MAX_ERROR_CHARS = 500

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    version: int
    position: int
    persisted: int
    rebuilt: bool
    error: str | None = None  # why the projection stopped; None while it runs

    @property
    def stopped(self) -> bool:
        return self.error is not None


class ProjectionRunner:
    """Feeds a set of projections from one log into one state store."""

    def __init__(
        self,
        log: EventLog,
        state: StateStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = 2000,
        snapshot_every: int = 10_000,
        reader: Reader | None = None,
        linger_s: float = 0.0,
    ) -> None:
        self.log = log
        self.state = state
        self.projections = {p.name: p for p in projections}
        self._reads = {p.name: p.reads for p in projections}
        self._batches = BatchReader(log, reader)
        self.batch_size = batch_size
        self.snapshot_every = snapshot_every
        self._applied: dict[str, int] = {}
        self._persisted: dict[str, int] = {}
        self._rebuilt: set[str] = set()
        self._stopped: dict[str, str] = {}  # name -> why it stopped
        self._read_to = 0  # the last position read, for when every projection stopped
        self._applying = 0  # the position being applied, to say where a projection failed
        self._advanced = trio.Event() if _in_trio() else None
        self.linger_s = linger_s
        self._reader_waits = trio.Event() if _in_trio() else None  # set by `wait_for`

    def projection(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            raise UnknownProjection(name, list(self.projections)) from None

    # --- synchronous core (worker thread or CLI) -----------------------------------

    def prepare(self, *, isolate: bool = False) -> None:
        """Load checkpoints (and snapshots); reset projections whose version changed.

        `isolate`: a projection that cannot be loaded is stopped instead of raising.
        """
        for projection in self._running():
            try:
                self._prepare_one(projection)
            except Exception as exc:
                if not isolate:
                    raise
                self._stop(projection, exc, self._applied.get(projection.name, 0))

    def _prepare_one(self, projection: Projection) -> None:
        projection.attach(self.state)
        checkpoint = self.state.checkpoint(projection.name)
        if checkpoint.version != projection.version and checkpoint.position:
            self.state.reset(projection.name)
            self._rebuilt.add(projection.name)
            checkpoint = self.state.checkpoint(projection.name)
        if isinstance(projection, SnapshottingProjection):
            projection.restore(
                self.state.snapshot(projection.name) if checkpoint.position else None
            )
        self._applied[projection.name] = checkpoint.position
        self._persisted[projection.name] = checkpoint.position

    @property
    def position(self) -> int:
        """The position every running projection has applied (the slowest one's)."""
        running = [p for name, p in self._applied.items() if name not in self._stopped]
        return min(running, default=self._read_to)

    def _running(self) -> list[Projection]:
        return [p for p in self.projections.values() if p.name not in self._stopped]

    def _stop(self, projection: Projection, exc: Exception, position: int) -> None:
        """Take `projection` out of the runner: the failure boundary of one projection."""
        projection.discard_changes()
        reason = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        self._stopped[projection.name] = f"{reason} (at position {position})"
        log.error(
            "projection %r stopped at position %d; the others go on",
            projection.name,
            position,
            exc_info=exc,
        )

    def step(
        self, until: int | None = None, *, isolate: bool = False, batch_size: int | None = None
    ) -> int:
        """Apply and commit one batch; returns how many records were read.

        `isolate`: a projection that fails is stopped (see module docstring) instead of
        the error propagating. `batch_size`: this batch's size (default `batch_size`).
        """
        start = self.position
        size = batch_size or self.batch_size
        limit = size if until is None else min(size, until - start)
        if limit <= 0:
            return 0
        batch = self._batches.read(start, limit, self._wanted())
        if not batch.count:
            return 0
        try:
            self._apply_and_commit(batch, isolate)
        except CheckpointMoved:
            self.prepare(isolate=isolate)
        self._read_to = max(self._read_to, batch.last)
        return batch.count

    def _wanted(self) -> frozenset[str] | None:
        """Every event type a running projection reads; None: every type."""
        wanted: set[str] = set()
        for projection in self._running():
            reads = self._reads[projection.name]
            if reads is None:
                return None
            wanted |= reads
        return frozenset(wanted)

    def _apply_and_commit(self, batch: Batch, isolate: bool = False) -> None:
        last = batch.last
        commits: list[StateCommit] = []
        try:
            # The batch's reads go through one view (LMDB: one read transaction, not one
            # per key a rebuild meets for the first time), closed before the commit.
            with self.state.batch_view() as view:
                for projection in self._running():
                    with projection.lock, projection.reading_from(view):
                        try:
                            commit = self._apply_batch(projection, batch.records, last)
                        except Exception as exc:
                            if not isolate:
                                raise
                            self._stop(projection, exc, self._applying)
                            continue
                    if commit is not None:
                        commits.append(commit)
            self._commit(commits, isolate)
        except BaseException:
            # No checkpoint moved: the batch is read again, so no cache may keep values
            # of it (taken changes that were never committed, or half-applied ones).
            for projection in self.projections.values():
                projection.discard_changes()
            raise
        for projection in self._running():
            self._applied[projection.name] = max(self._applied[projection.name], last)

    def _apply_batch(
        self, projection: Projection, records: list[RecordedEvent], last: int
    ) -> StateCommit | None:
        applied = self._applied[projection.name]
        handlers = projection.handlers
        # Records come in position order: those already applied are skipped once here,
        # not checked one by one (the hot loop of a rebuild runs once per record).
        if records and records[0].position <= applied:
            records = records[bisect.bisect_right(records, applied, key=_position) :]
        record = None
        try:
            if handlers is None:
                for record in records:
                    projection.apply(record)
            else:  # straight to the handler, as `apply` would
                handler_for = handlers.get
                for record in records:
                    handler = handler_for(record.type)
                    if handler is not None:
                        handler(record)
        except BaseException:
            # Where the projection failed: the record the loop was applying.
            self._applying = last if record is None else record.position
            raise
        self._applying = last
        return self._commit_for(projection, last) if applied < last else None

    def _commit(self, commits: list[StateCommit], isolate: bool) -> None:
        """Commit all at once; when that fails and `isolate`, each alone, stopping the
        projections whose commit fails (a state store commit is all or nothing)."""
        if not commits:
            return
        try:
            self.state.commit(commits)
        except CheckpointMoved:
            raise
        except Exception:
            if not isolate:
                raise
            for commit in commits:
                self._commit_alone(commit)
            return
        for commit in commits:
            self._persisted[commit.name] = commit.position

    def _commit_alone(self, commit: StateCommit) -> None:
        try:
            self.state.commit([commit])
        except CheckpointMoved:
            raise
        except Exception as exc:
            self._stop(self.projections[commit.name], exc, commit.position)
            return
        self._persisted[commit.name] = commit.position

    def _commit_for(self, projection: Projection, last: int) -> StateCommit | None:
        name = projection.name
        persisted = self._persisted[name]
        if isinstance(projection, SnapshottingProjection):
            if last - persisted < self.snapshot_every:
                return None
            return StateCommit(name, projection.version, persisted, last, {}, projection.snapshot())
        changes = projection.take_changes()
        return StateCommit(name, projection.version, persisted, last, changes)

    def catch_up(self, until: int | None = None, progress: Progress | None = None) -> int:
        """Step until `until` (default: the log head now); returns records applied."""
        target = self.log.head()[0] if until is None else until
        total = 0
        far = target - self.position > LONG_CATCH_UP
        size = max(self.batch_size, CATCH_UP_BATCH) if far else None
        with gc_paused(far):
            while self.position < target:
                read = self.step(target, batch_size=size)
                if not read:
                    break
                total += read
                if progress:
                    progress(self.position, target)
        return total

    def flush_snapshots(self) -> None:
        """Persist every snapshotting projection at its current position (clean stop)."""
        commits = [
            StateCommit(
                p.name, p.version, self._persisted[p.name], self._applied[p.name], {}, p.snapshot()
            )
            for p in self._running()
            if isinstance(p, SnapshottingProjection)
            and self._applied[p.name] > self._persisted[p.name]
        ]
        if not commits:
            return
        try:
            self.state.commit(commits)
        except CheckpointMoved:
            return  # replaced under us (replay): the new state stands, ours is dropped
        for commit in commits:
            self._persisted[commit.name] = commit.position

    def statuses(self) -> list[ProjectionStatus]:
        return [
            ProjectionStatus(
                p.name,
                p.version,
                self._applied.get(p.name, 0),
                self._persisted.get(p.name, 0),
                p.name in self._rebuilt,
                self._stopped.get(p.name),
            )
            for p in self.projections.values()
        ]

    # --- Trio side -----------------------------------------------------------------------

    async def run(
        self,
        store: EventStore,
        *,
        progress: Progress | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Catch up, report ready, then follow the live log until cancelled.

        Work goes to a thread one batch at a time, so cancellation (shutdown) takes
        effect between batches, never inside a commit.
        """
        if self._advanced is None:
            self._advanced = trio.Event()
        await trio.to_thread.run_sync(functools.partial(self.prepare, isolate=True))
        try:
            await self._catch_up_async(store.head_position, progress)
            task_status.started()
            while True:
                await store.wait_for_position(self.position + 1)
                await self._linger()
                await self._catch_up_async(store.head_position, None)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.flush_snapshots)

    async def _catch_up_async(self, target: int, progress: Progress | None) -> None:
        with gc_paused(target - self.position > LONG_CATCH_UP):
            while self.position < target:
                step = functools.partial(self.step, target, isolate=True)
                if not await trio.to_thread.run_sync(step):
                    break
                self._wake()
                if progress:
                    progress(self.position, target)

    async def _linger(self) -> None:
        """Let more commits join the next step, unless a reader waits for one.

        Following the live log a step per commit cost a worker-thread call and a state
        commit each (~3 per run under load, the projections' thread 9 % of the server's
        CPU); waiting `linger_s` first applies what several commits wrote in one step.
        Nothing on a run's path reads these projections without `wait_for`, which cuts
        the wait short, so only unawaited readers (`/healthz` counters) see them later.
        """
        if self.linger_s <= 0:
            return
        if self._reader_waits is None:
            self._reader_waits = trio.Event()
        if not self._reader_waits.is_set():
            with trio.move_on_after(self.linger_s):
                await self._reader_waits.wait()
        self._reader_waits = trio.Event()

    def _wake(self) -> None:
        assert self._advanced is not None
        self._advanced.set()
        self._advanced = trio.Event()

    async def wait_for(self, position: int) -> None:
        """Wait until every projection has applied `position` (read-your-writes)."""
        while self.position < position:
            if self._advanced is None:
                self._advanced = trio.Event()
            if self._reader_waits is None:
                self._reader_waits = trio.Event()
            self._reader_waits.set()
            await self._advanced.wait()


_position = operator.attrgetter("position")


@contextlib.contextmanager
def gc_paused(pause: bool) -> Iterator[None]:
    """Hold the cyclic garbage collector off during a long catch-up.

    A rebuild allocates millions of short-lived dicts and tuples and holds no cycles;
    the collector's passes over them cost 15-35 % of the time (measured).
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
