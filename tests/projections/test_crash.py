"""SIGKILL a real `autoagent serve` while its projections catch up, then restart it.

The parent fills a data dir with a realistic workload, starts `python -m server serve`
on it, watches the `runs` checkpoint from outside (a read-only LMDB reader in this
process) and kills the server with SIGKILL once the checkpoint is strictly between 0
and the head. The checkpoint must be mid-way; a restarted server must continue from
it, reach the head, and stop cleanly; `replay --verify` must then find no difference,
and the state must equal a fresh rebuild key for key.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest

from events import LmdbEventLog
from projections import (
    Checkpoint,
    LmdbStateStore,
    MetricsProjection,
    ProjectionStoreMissing,
    RunsProjection,
    SessionsProjection,
    rebuild,
)
from tests.workload import write_workload

from .helpers import ROOT, ServerProcess

EVENTS = 60_000  # a catch-up of about a second: wide enough to kill it mid-way
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def kill_when_mid_way(server: ServerProcess, state_path: Path, head: int) -> int:
    """Poll the `runs` checkpoint until 0 < position < head, then SIGKILL the server."""
    deadline = time.monotonic() + START_TIMEOUT_S
    store: LmdbStateStore | None = None
    try:
        while time.monotonic() < deadline:
            if store is None:
                try:
                    store = LmdbStateStore.open(state_path, readonly=True)
                except (ProjectionStoreMissing, lmdb.Error):
                    time.sleep(0.002)
                    continue
            position = store.checkpoint("runs").position
            if 0 < position < head:
                server.signal(signal.SIGKILL)
                return position
            assert position < head, "caught up before it could be killed: raise EVENTS"
            time.sleep(0.001)
        raise AssertionError("the runs checkpoint did not move within the deadline")
    finally:
        if store is not None:
            store.close()


def checkpoints(state_path: Path) -> dict[str, Checkpoint]:
    store = LmdbStateStore.open(state_path, readonly=True)
    try:
        return {name: store.checkpoint(name) for name in ("sessions", "runs", "metrics")}
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_during_catch_up_then_restart_ends_in_the_rebuilt_state(tmp_path: Path) -> None:
    path = tmp_path / "data"
    state_path = path / "projections"
    log = LmdbEventLog.open(path, sync=False)
    try:
        write_workload(log, EVENTS)
        head = log.head()[0]
    finally:
        log.close()

    with ServerProcess(path) as server:
        seen = kill_when_mid_way(server, state_path, head)
        code, _, stderr = server.finish(STOP_TIMEOUT_S)
        assert code == -signal.SIGKILL, stderr
    killed_at = checkpoints(state_path)
    assert seen <= killed_at["runs"].position < head
    assert 0 < killed_at["sessions"].position < head

    with ServerProcess(path) as server:
        ready = server.wait_for_line("event store open at", START_TIMEOUT_S)
        assert f"(head position {head}, projections at " in ready
        caught_up = server.wait_for_line("projections caught up", START_TIMEOUT_S)
        assert caught_up.rstrip().endswith(f"at position {head}")
        server.signal(signal.SIGINT)
        code, stdout, stderr = server.finish(STOP_TIMEOUT_S)
        assert code == 0, stderr
        assert "stopped cleanly" in stdout
    assert checkpoints(state_path) == {
        "sessions": Checkpoint(head, SessionsProjection.version),
        "runs": Checkpoint(head, RunsProjection.version),
        "metrics": Checkpoint(head, MetricsProjection.version),
    }

    # `replay --verify` in its own process while this one rebuilds for the comparison.
    with subprocess.Popen(
        [sys.executable, "-m", "server", "replay", "--verify", "--data-dir", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as verifier:
        try:
            log = LmdbEventLog.open(path, readonly=True)
            state = LmdbStateStore.open(state_path, readonly=True)
            try:
                for projection in (SessionsProjection(), RunsProjection()):
                    fresh = rebuild(log, projection, head).items(projection.name)
                    live = state.items(projection.name)
                    assert len(live) == len(fresh) > 0
                    assert live == fresh, projection.name
            finally:
                state.close()
                log.close()
            stdout, stderr = verifier.communicate(timeout=60)
        finally:
            verifier.kill()
    assert verifier.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert stdout == "ok: sessions, runs, metrics, memory, documents match a fresh rebuild\n"
