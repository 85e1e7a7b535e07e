"""Crash test of the durable event log: SIGKILL a real writer process at random moments.

Each round starts `crash_child` (concurrent producers appending batches to the LMDB
store with `sync=True`; it prints every acknowledged append), waits for its first ack,
lets it run for a random 0-150 ms and kills it with SIGKILL, most often in the middle
of a group commit (every fourth round is killed 0-5 ms after `ready` instead, around
the first commit after the previous crash). Between rounds, with the child dead
(py-lmdb cannot open one environment twice in a process), the parent opens the store
read-only and checks the property under test:

    acknowledged => present (same position, id and stream), and the log intact:
    positions 1..head contiguous, hash chain verified, stream versions contiguous,
    and the next child appends after the previous crash.

A final step reopens the store in-process, retries every acknowledged append with the
same event ids (each must be recognised as a duplicate at its original positions) and
appends once more.

The kill moments come from a seeded RNG; the seed is printed and can be replayed with
AUTOAGENT_CRASH_SEED=<seed>. Thread scheduling still varies between runs.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import trio

from events import (
    LmdbEventLog,
    NewEvent,
    RecordedEvent,
    StoreOptions,
    audit_log,
    open_event_store,
    typed_event,
)

ROOT = Path(__file__).resolve().parents[2]
CHILD = [sys.executable, "-u", "-m", "tests.events.crash_child"]  # + DATA_DIR ROUND
ROUNDS = 24
MAX_RUN_SECONDS = 0.15  # how long a child may append after its first ack
EARLY_KILL_EVERY = 4  # these rounds are killed 0-5 ms after `ready`, acked or not
START_TIMEOUT = 30.0  # to `ready` and the first ack: generous for a loaded CI machine
EXIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Ack:
    round: int
    stream: str
    positions: tuple[int, ...]
    ids: tuple[uuid.UUID, ...]


class ChildOutput:
    """Complete stdout lines of a child, read with deadlines (never blocks unbounded)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        self._partial = b""
        self.lines: list[str] = []
        self.eof = False

    def pump(self, seconds: float) -> None:
        """Collect what the child writes during `seconds` (or until EOF)."""
        deadline = time.monotonic() + seconds
        while not self.eof and (remaining := deadline - time.monotonic()) > 0:
            self._read_some(remaining)

    def wait_for(self, done: Callable[[list[str]], bool], seconds: float) -> bool:
        """Read until `done(lines)` (True), or EOF or `seconds` pass first (False)."""
        deadline = time.monotonic() + seconds
        while not done(self.lines):
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0:
                return False
            self._read_some(remaining)
        return True

    def _read_some(self, timeout: float) -> None:
        readable, _, _ = select.select([self._fd], [], [], timeout)
        if readable:
            self._read()

    def _read(self) -> None:
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            # A trailing line without its newline was cut by the kill: not an ack.
            self.eof = True
            return
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self.lines.extend(line.decode() for line in complete)


def _parse_acks(round_no: int, context: str, lines: list[str]) -> list[Ack]:
    assert lines and lines[0] == "ready", f"{context}: child output {lines[:3]!r}"
    acks = []
    for line in lines[1:]:
        word, stream, positions, ids = line.split(" ")
        assert word == "ack", f"{context}: unexpected child line {line!r}"
        acks.append(
            Ack(
                round_no,
                stream,
                tuple(int(p) for p in positions.split(",")),
                tuple(uuid.UUID(hex=i) for i in ids.split(",")),
            )
        )
    return acks


def _run_child(
    data: Path, round_no: int, first_ack: bool, delay: float, stderr_path: Path, context: str
) -> list[str]:
    """One round: start the writer, wait for `ready` (and its first ack when `first_ack`),
    let it append for `delay` seconds more, SIGKILL it; returns its complete stdout lines."""
    command = [*CHILD, str(data), str(round_no)]
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        )
    assert proc.stdout is not None

    def failure(what: str) -> str:
        return f"{context}: {what}; stderr:\n{stderr_path.read_text(errors='replace')}"

    try:
        out = ChildOutput(proc.stdout)
        wanted = 2 if first_ack else 1
        started = out.wait_for(lambda lines: len(lines) >= wanted, START_TIMEOUT)
        assert started, failure(f"not started in {START_TIMEOUT}s (output {out.lines!r})")
        out.pump(delay)
        assert proc.poll() is None, failure(f"child exited by itself ({proc.returncode})")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=EXIT_TIMEOUT)
        assert proc.returncode == -signal.SIGKILL, failure(f"exit status {proc.returncode}")
        # The child is dead: whatever it already wrote is in the pipe, then EOF.
        assert out.wait_for(lambda _: out.eof, EXIT_TIMEOUT), failure("no EOF after the kill")
        return out.lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _read_all(log: LmdbEventLog, head: int) -> list[RecordedEvent]:
    records: list[RecordedEvent] = []
    while True:
        batch = log.read(records[-1].position if records else 0, 5000)
        if not batch:
            return records
        records.extend(batch)
        assert len(records) <= head, "records beyond the head"


def _check_store(data: Path, acks: list[Ack], context: str, full: bool = False) -> int:
    """Every ack present, positions and versions contiguous, chain intact; returns head."""
    log = LmdbEventLog.open(data, readonly=True)
    try:
        head, head_hash = log.head()
        report = audit_log(log)
        assert report.ok, f"{context}: audit failed: {report}"
        assert report.checked == report.head_position == head, f"{context}: {report}"

        records = _read_all(log, head)
        assert [r.position for r in records] == list(range(1, head + 1)), (
            f"{context}: positions not contiguous 1..{head}"
        )
        assert not head or records[-1].hash == head_hash
        assert len({r.id_bytes for r in records}) == head, f"{context}: an event id twice"

        for ack in acks:
            first = ack.positions[0]
            assert ack.positions == tuple(range(first, first + len(ack.positions))), (
                f"{context}: an acked append is not contiguous: {ack}"
            )
            assert ack.positions[-1] <= head, f"{context}: acked {ack} is past head {head}"
            got = [records[p - 1] for p in ack.positions]
            assert [r.id for r in got] == list(ack.ids), f"{context}: ids differ for {ack}"
            assert {r.stream for r in got} == {ack.stream}, f"{context}: stream of {ack}"
            assert all(r.type == "StepStarted" for r in got)
            assert all(r.data["run_id"] == f"r{ack.round}" for r in got)
            versions = [r.version for r in got]
            assert versions == list(range(versions[0], versions[0] + len(got))), (
                f"{context}: versions of {ack}: {versions}"
            )

        # Versions from the records themselves: 1..n per stream, in log order...
        by_stream: dict[str, list[RecordedEvent]] = {}
        for record in records:
            by_stream.setdefault(record.stream, []).append(record)
        for stream, in_stream in by_stream.items():
            assert [r.version for r in in_stream] == list(range(1, len(in_stream) + 1)), (
                f"{context}: versions of {stream} not contiguous"
            )
        # ...agree with the streams index (reading through it fully at the end only).
        streams = dict(log.streams())
        assert streams == {s: len(rs) for s, rs in by_stream.items()}, (
            f"{context}: streams index {streams} disagrees with the records"
        )
        if full:
            for stream, in_stream in by_stream.items():
                indexed = log.read_stream(stream, 0, len(in_stream) + 1)
                assert indexed == in_stream, f"{context}: read_stream({stream!r}) differs"
        return head
    finally:
        log.close()


async def _retry_and_append(data: Path, acks: list[Ack], records: dict[int, RecordedEvent]) -> int:
    """Reopen in-process: idempotent retries of every ack, then one more append."""
    async with open_event_store(data, StoreOptions(sync=True)) as store:
        head = store.head_position

        async def retry(ack: Ack) -> None:
            events = [
                NewEvent(r.type, r.data, id=r.id, correlation=r.correlation)
                for r in (records[p] for p in ack.positions)
            ]
            result = await store.append(ack.stream, events)
            assert result.duplicate, f"retry of {ack} was written again: {result}"
            assert result.positions == ack.positions

        async with trio.open_nursery() as nursery:
            for ack in acks:
                nursery.start_soon(retry, ack)
        assert store.head_position == head, "idempotent retries moved the head"

        stream = acks[-1].stream
        version = await store.stream_version(stream)
        records_before = await store.read_stream(stream, version - 1)
        event = typed_event(records_before[-1])
        result = await store.append(stream, [event, event], expected_version=version)
        assert result.positions == (head + 1, head + 2)
        assert result.version == version + 2
        return head + 2


@pytest.mark.slow
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("AUTOAGENT_CRASH_SEED", random.randrange(1 << 32)))
    print(f"crash test seed: {seed} (replay with AUTOAGENT_CRASH_SEED={seed})")
    rng = random.Random(seed)
    data = tmp_path / "store"
    acks: list[Ack] = []
    head = 0
    unacked_rounds = 0
    for round_no in range(1, ROUNDS + 1):
        context = f"seed {seed} round {round_no}"
        # Every EARLY_KILL_EVERY-th round dies around the first commit after reopening;
        # the others run for a while after their first ack.
        early = round_no % EARLY_KILL_EVERY == 0
        delay = rng.uniform(0.0, 0.005 if early else MAX_RUN_SECONDS)
        stderr_path = tmp_path / f"child-{round_no}.err"
        lines = _run_child(data, round_no, not early, delay, stderr_path, context)
        new = _parse_acks(round_no, context, lines)
        assert new or early, f"{context}: no acknowledged append"
        acks.extend(new)
        new_head = _check_store(data, acks, context)
        last_acked = head
        if new:
            # Appends continue after the previous crash: new positions come after its head.
            assert min(a.positions[0] for a in new) > head, f"{context}: reused a position"
            last_acked = max(a.positions[-1] for a in new)
        assert new_head >= last_acked >= head, f"{context}: head {head} -> {new_head}"
        unacked_rounds += new_head > last_acked
        print(f"round {round_no}: {len(new)} acks, head {head} -> {new_head}")
        head = new_head

    log = LmdbEventLog.open(data, readonly=True)
    try:
        records = {r.position: r for r in _read_all(log, head)}
    finally:
        log.close()
    final_head = trio.run(_retry_and_append, data, acks, records)
    final = _check_store(data, acks, f"seed {seed} after the final append", full=True)
    assert final == final_head
    print(
        f"{len(acks)} acked appends over {ROUNDS} kills; {unacked_rounds} rounds killed "
        f"between a commit and its ack; final head {final_head}"
    )
