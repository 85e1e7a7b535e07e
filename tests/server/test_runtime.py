"""The process settings of `server._runtime`: the garbage collector's threshold and the
threads' switch interval, set by the `autoagent` command, and the survivors of start-up
frozen out of later collections once `serve` is warm."""

from __future__ import annotations

import gc
import json
import re
import signal
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from server._runtime import (
    collector_state,
    freeze_survivors,
    tune_collector,
    tune_process,
    tune_switch_interval,
)
from server.config import PerformanceConfig
from tests.python_process import python_lines

from .test_ws_serve import spawn_serve, wait_listening
from .ws_helpers import TIMEOUT_S, http_request

WARM = re.compile(r"warm; ([\d,]+) objects frozen out of the garbage collector's scans")


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_the_young_threshold_is_set_and_the_older_ones_kept(collector: None) -> None:
    gc.set_threshold(700, 11, 12)
    tune_collector(PerformanceConfig())
    assert gc.get_threshold() == (50000, 11, 12)
    tune_collector(PerformanceConfig(gc_young_threshold=0))  # 0: leave it as it is
    assert gc.get_threshold() == (50000, 11, 12)
    tune_collector(PerformanceConfig(gc_young_threshold=1234))
    assert collector_state().thresholds == (1234, 11, 12)


def test_the_switch_interval_is_set_in_milliseconds_and_zero_keeps_it() -> None:
    sys.setswitchinterval(0.005)
    tune_switch_interval(PerformanceConfig())
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    tune_switch_interval(PerformanceConfig(switch_interval_ms=0))
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    tune_switch_interval(PerformanceConfig(switch_interval_ms=2.5))
    assert sys.getswitchinterval() == pytest.approx(0.0025)
    # Below a microsecond Python would keep 0 (a hand-over at every chance): one it is.
    tune_switch_interval(PerformanceConfig(switch_interval_ms=1e-9))
    assert sys.getswitchinterval() == pytest.approx(1e-6)


def test_tune_process_sets_the_collector_and_the_switch_interval(collector: None) -> None:
    """What `_dispatch` calls for the `autoagent` command's own process (own_process)."""
    gc.set_threshold(700, 10, 10)
    sys.setswitchinterval(0.005)
    tune_process(PerformanceConfig(gc_young_threshold=4321, switch_interval_ms=1.0))
    assert gc.get_threshold()[0] == 4321
    assert sys.getswitchinterval() == pytest.approx(0.001)


class _Node:
    """A cyclic object a weak reference can watch."""

    me: object = None


def test_freezing_collects_first_and_keeps_what_is_alive(collector: None) -> None:
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # lists stay tracked by the collector
    cycle = _Node()
    cycle.me = cycle
    watch = weakref.ref(cycle)
    del cycle  # garbage only the collector can free: frozen without a collection first
    assert watch() is not None
    seconds = freeze_survivors()
    assert watch() is None  # collected before the freeze, not kept forever
    assert seconds >= 0 and collector_state().frozen >= len(kept)


async def _serve_until_stopped(tmp_path: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    """`autoagent serve` as a process: wait for /healthz to say nothing is warming,
    stop it with SIGINT; its whole output and the parts /healthz listed on the way."""
    proc = spawn_serve(tmp_path, "--port", "0", env=env)
    seen: list[str] = []
    try:
        with trio.fail_after(TIMEOUT_S * 4):  # the local embedder loads first
            port = await wait_listening(proc)
            while True:
                _, _, body = await http_request(port, "GET", "/healthz")
                warming = json.loads(body)["warming"]
                seen += [part for part in warming if part not in seen]
                if not warming:
                    break
                await trio.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            code = await trio.to_thread.run_sync(proc.wait)
    finally:
        proc.kill()
        # Not communicate(): it reads the pipes' descriptors and would lose what
        # `wait_listening`'s readline already took into the stream's buffer (the lines
        # printed right after "listening", now that nothing slow comes between).
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stdout, proc.stderr:
            out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait()
    assert code == 0, err
    return out, seen


@pytest.mark.slow
async def test_serve_freezes_once_warm_and_says_so(tmp_path: Path) -> None:
    out, seen = await _serve_until_stopped(tmp_path, {})
    found = WARM.search(out)
    assert found is not None, out
    assert int(found.group(1).replace(",", "")) > 10_000  # modules, the model, the caches
    assert "projections caught up" in out
    if "embedder" in seen:  # seen only when a poll lands while the model loads (~0.1 s)
        assert "collector" in seen  # listed from the start until the freeze


@pytest.mark.slow
async def test_serve_with_the_freeze_off_leaves_the_collector_alone(tmp_path: Path) -> None:
    out, seen = await _serve_until_stopped(tmp_path, {"AUTOAGENT_PERFORMANCE__GC_FREEZE": "false"})
    assert "stopped cleanly" in out and WARM.search(out) is None
    assert "collector" not in seen


_IMPORTS_OF_AN_LMDB_SERVER = """
import sys, server.app, server.cli, server._views, server.cli._migrate
def loaded():
    return sorted(m for m in ("psycopg", "psycopg_pool", "openai") if m in sys.modules)
print(loaded())
import events
events.PostgresEventLog
print(loaded())
import agents
agents.OpenAIProvider
print(loaded())
"""


def test_psycopg_and_openai_are_imported_only_when_their_backend_is_named() -> None:
    """The shipped server (LMDB, the offline model, the local embedder) loads neither."""
    assert python_lines(_IMPORTS_OF_AN_LMDB_SERVER) == [
        "[]",
        "['psycopg', 'psycopg_pool']",
        "['openai', 'psycopg', 'psycopg_pool']",
    ]
