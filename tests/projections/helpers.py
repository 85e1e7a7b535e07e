"""Shared helpers of the projection tests (also used by the CLI tests).

- `EventWriter` commits events straight into an `EventLog` with chosen timestamps, so
  latencies and timelines are known exactly.
- `CountingProjection` / `SnapshotCounter` record every event they are fed, to check
  that each event is applied exactly once.
- `write_demo` fills a store with a small, fully known set of sessions and runs.
- `ServerProcess` runs `python -m server serve` as a real subprocess, with deadlines.
"""

from __future__ import annotations

import functools
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from events import (
    ANY,
    AppendResult,
    AssistantMessageSent,
    ContextUpdated,
    Event,
    EventLog,
    LLMCallCompleted,
    LmdbEventLog,
    NewEvent,
    PlanCreated,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    SessionClosed,
    SessionStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
    UserMessageReceived,
    VerificationCompleted,
)
from events._store import prepare_append
from projections import (
    FileKeyStore,
    LmdbStateStore,
    MemoryStateStore,
    PostgresStateStore,
    Projection,
    ProjectionRunner,
    SnapshottingProjection,
    StateStore,
    build_projections,
)

# Upper bound on any single test's I/O; each test takes well under a second.
TIMEOUT_S = 15

T0 = 1_700_000_000 * 10**9  # a fixed origin: every event's ts is T0 + known seconds
SECOND = 10**9
MARKER = "MARKER-Q7Z"  # a goal text the corruption tests find in data.mdb


class EventWriter:
    """Appends to an `EventLog` directly, each append committed with a chosen ts."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.ts = T0

    def add(self, stream: str, *events: Event | NewEvent, at: float | None = None) -> int:
        """Append `events` at T0 + `at` seconds (default: 1 ms after the previous
        append); returns the position of the last one."""
        self.ts = T0 + round(at * SECOND) if at is not None else self.ts + SECOND // 1000
        outcomes, _ = self.log.commit([prepare_append(stream, list(events), ANY, 1 << 22)], self.ts)
        result = outcomes[0]
        assert isinstance(result, AppendResult), result
        return result.last_position


def open_log(path: Path) -> LmdbEventLog:
    return LmdbEventLog.open(path, sync=False, map_size=1 << 26)


def open_state(path: Path) -> LmdbStateStore:
    return LmdbStateStore.open(path, sync=False, map_size=1 << 24)


def assert_counted_once(state: StateStore, head: int) -> None:
    """`CountingProjection` saw every position up to `head` exactly once."""
    items = dict(state.items("counter"))
    assert items.pop(b"count") == head
    assert items == {b"seen/%08d" % p: 1 for p in range(1, head + 1)}


STATE_KINDS = ["lmdb", "memory", "postgres"]


def state_of_kind(kind: str, tmp_path: Path, postgres_url: Callable[[], str]) -> StateStore:
    """A state store of `kind` (one of `STATE_KINDS`); PostgreSQL's asks for its URL only
    then, so the cluster starts only for the tests that run on it."""
    if kind == "postgres":
        return PostgresStateStore.open(postgres_url(), "node-test")
    if kind == "lmdb":
        return open_state(tmp_path / "projections")
    return MemoryStateStore()


def session_messages(writer: EventWriter, session_id: str, count: int) -> int:
    """A started session with `count` user messages; returns the last position."""
    last = writer.add(f"session-{session_id}", SessionStarted(session_id=session_id, user="u"))
    for i in range(count):
        last = writer.add(
            f"session-{session_id}",
            UserMessageReceived(session_id=session_id, message_id=f"m{i}", text=f"message {i}"),
        )
    return last


class CountingProjection(Projection):
    """Counts every event it is fed, in total and per position (keyed state)."""

    name = "counter"
    version = 1

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[int] = []
        self.fail_at: int | None = None

    def apply(self, record: RecordedEvent) -> None:
        if record.position == self.fail_at:
            raise RuntimeError(f"simulated crash at position {record.position}")
        self.applied.append(record.position)
        self.save(b"count", (self.load(b"count") or 0) + 1)
        key = b"seen/%08d" % record.position
        self.save(key, (self.load(key) or 0) + 1)


class CountingProjectionV2(CountingProjection):
    version = 2


class SnapshotCounter(SnapshottingProjection):
    """Counts every event it is fed, in memory, persisted by snapshots."""

    name = "snapcount"
    version = 1

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[int] = []
        self.restore_state(None)

    def restore_state(self, state: Any) -> None:
        state = state or {"count": 0, "sum": 0}
        self.count: int = state["count"]
        self.sum: int = state["sum"]

    def snapshot_state(self) -> Any:
        return {"count": self.count, "sum": self.sum}

    def apply(self, record: RecordedEvent) -> None:
        self.applied.append(record.position)
        self.count += 1
        self.sum += record.position


class SnapshotCounterV2(SnapshotCounter):
    version = 2


@dataclass(frozen=True)
class Demo:
    """What `write_demo` wrote: positions worth naming in assertions."""

    head: int
    marker_position: int


def write_demo(log: EventLog, unfinished: bool = True) -> Demo:
    """Two sessions and five runs covering every run status, with known timestamps.

    Run `ov` has overlapping steps: a runs 1-3 s, b 2-4 s, c 5-6 s after the request.
    `unfinished=False` leaves out the two runs that are not finished (`wip`, `new`),
    which a starting server would resume, writing to the log.
    """
    w = EventWriter(log)
    w.add("session-s1", SessionStarted(session_id="s1", user="alice", client="cli"), at=0)
    w.add("session-s1", UserMessageReceived(session_id="s1", message_id="m1", text="hi"), at=0.5)
    w.add("session-s1", ContextUpdated(session_id="s1", values={"city": "Paris"}), at=0.6)
    w.add("session-s2", SessionStarted(session_id="s2", user="bob"), at=0.7)
    marker = w.add("run-ov", RunRequested(run_id="ov", session_id="s1", goal=MARKER), at=1)
    steps: list[dict[str, Any]] = [
        {"id": s, "agent": "quotes", "action": "get", "parameters": {}, "dependencies": []}
        for s in ("a", "b", "c")
    ]
    w.add("run-ov", PlanCreated(run_id="ov", steps=steps), at=1.5)
    w.add(
        "run-ov",
        LLMCallCompleted(
            run_id="ov",
            purpose="plan",
            model="m",
            prompt_tokens=100,
            completion_tokens=20,
            latency_s=0.4,
        ),
        at=1.5,
    )
    w.add("run-ov", StepStarted(run_id="ov", step_id="a"), at=2)
    w.add("run-ov", StepStarted(run_id="ov", step_id="b"), at=3)
    w.add("run-ov", StepCompleted(run_id="ov", step_id="a", result=1, duration_s=2.0), at=4)
    w.add("run-ov", StepCompleted(run_id="ov", step_id="b", result=2, duration_s=2.0), at=5)
    w.add("run-ov", StepStarted(run_id="ov", step_id="c"), at=6)
    w.add("run-ov", StepCompleted(run_id="ov", step_id="c", result=3, duration_s=1.0), at=7)
    w.add(
        "run-ov",
        VerificationCompleted(run_id="ov", step_id="c", passed=True, confidence=0.9),
        at=7.5,
    )
    w.add(
        "run-ov",
        LLMCallCompleted(
            run_id="ov",
            purpose="verify",
            model="m",
            prompt_tokens=10,
            completion_tokens=0,
            latency_s=0.001,
            outcome="cached",
        ),
        at=7.5,
    )
    w.add("run-ov", RunCompleted(run_id="ov", answer="all done"), at=8)
    w.add("session-s1", AssistantMessageSent(session_id="s1", text="done", run_id="ov"), at=8.1)
    w.add("run-bad", RunRequested(run_id="bad", session_id="s2", goal="fail please"), at=9)
    w.add("run-bad", PlanCreated(run_id="bad", steps=steps[:1]), at=9.5)
    w.add("run-bad", StepStarted(run_id="bad", step_id="a"), at=10)
    w.add(
        "run-bad",
        StepFailed(run_id="bad", step_id="a", error_type="ToolError", message="x", retryable=False),
        at=10.5,
    )
    w.add("run-bad", RunFailed(run_id="bad", reason="step a failed"), at=11)
    if unfinished:
        w.add("run-wip", RunRequested(run_id="wip", session_id="s2", goal="in progress"), at=12)
        w.add("run-wip", PlanCreated(run_id="wip", steps=steps[:1]), at=12.5)
    w.add("run-stop", RunRequested(run_id="stop", session_id="s2", goal="stop it"), at=13)
    w.add("run-stop", RunCancelled(run_id="stop", reason="user"), at=14)
    if unfinished:
        w.add("run-new", RunRequested(run_id="new", session_id="s1", goal="just asked"), at=15)
    head = w.add("session-s1", SessionClosed(session_id="s1", reason="bye"), at=16)
    return Demo(head=head, marker_position=marker)


def build_state(data_dir: Path, until: int | None = None) -> None:
    """Bring every projection of `data_dir` up to `until` (default: the head), as a
    server that stopped cleanly there would have; closes what it opened."""
    log = LmdbEventLog.open(data_dir, readonly=True)
    state = open_state(data_dir / "projections")
    try:
        keys = FileKeyStore(data_dir / "keys", readonly=True)
        runner = ProjectionRunner(log, state, build_projections(keys=keys), batch_size=7)
        runner.prepare()
        runner.catch_up(until)
        runner.flush_snapshots()
    finally:
        state.close()
        log.close()


def flip_every(path: Path, marker: bytes) -> int:
    """Flip one bit in every copy of `marker` in `path` (LMDB is copy-on-write, so
    stale copies of a page may hold it too); returns how many were altered."""
    raw = bytearray(path.read_bytes())
    found = 0
    offset = raw.find(marker)
    while offset >= 0:
        raw[offset] ^= 0x01
        found += 1
        offset = raw.find(marker, offset + 1)
    path.write_bytes(bytes(raw))
    return found


ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class ServerProcess:
    """`python -m server serve` as a real subprocess, its stdout read line by line on a
    thread so that every wait has a deadline. Use as a context manager: on exit the
    process is killed if still running and always reaped."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "AUTOAGENT_SERVER__PORT": "0", **(env or {})}
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "server", "serve", "--data-dir", str(self.data_dir)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        self.lines.put(None)

    def wait_for_line(self, marker: str, timeout: float) -> str:
        """The first stdout line containing `marker`; fails at EOF or after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {marker!r} within {timeout} s; stdout: {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"serve exited before {marker!r}: {self.finish(5)}")
            self.seen.append(line)
            if marker in line:
                return line

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Wait for the exit; (exit code, rest of stdout, stderr)."""
        assert self.proc is not None and self._pump is not None
        code = self.proc.wait(timeout=timeout)
        self._pump.join(timeout=timeout)
        rest = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            rest.append(line)
        assert self.proc.stderr is not None
        return code, "".join(self.seen + rest), self.proc.stderr.read()

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self._pump is not None:
            self._pump.join(timeout=30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking `fn` in a worker thread, so that an enclosing `fail_after` can end
    the test (the thread is abandoned) instead of it hanging."""
    call = functools.partial(fn, *args, **kwargs)
    return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
