"""Smoke run of the WebSocket load test: `--quick` completes on its own and writes every key."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.performance.load_ws import main


@pytest.mark.slow
def test_load_ws_quick_runs_clients_against_a_server_process_and_writes_results(
    tmp_path: Path,
) -> None:
    out = tmp_path / "load_ws.json"
    started = time.perf_counter()
    assert main(["--quick", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    assert time.perf_counter() - started < 120
    result = json.loads(out.read_text())
    assert {"machine", "settings", "results", "targets", "simulator_url"} <= result.keys()
    assert result["settings"]["clients"] == [10] and result["settings"]["store_sync"] is True
    (run,) = result["results"]
    assert run["clients"] == run["connected"] == run["held"] == 10
    assert run["errors"] == {} and run["connect_failed"] == 0
    assert run["runs"].get("RunCompleted", 0) >= 10  # every client finished a goal at least
    assert run["runs_per_s"] > 0
    latency = run["append_to_client_ms"]
    assert latency["events"] > 0 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    server = run["server"]
    assert server["idle_rss_mb"] > 0 and server["peak_rss_mb"] >= server["idle_rss_mb"]
    assert server["cpu_percent_load"] > 0
    assert server["idle_cpu_ms_per_s"] >= 0
    assert server["exit_code"] == 0  # SIGINT: a clean stop
    assert set(result["targets"]) == {"idle_rss_mb"}  # only what N=10 can tell
    assert {"goal", "measured", "met"} <= result["targets"]["idle_rss_mb"].keys()
    assert not list(tmp_path.glob("load_ws-*"))  # the work directory is removed
