"""Smoke run of the projection benchmark: `--quick` completes and writes every documented key."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.performance.bench_projections import main


@pytest.mark.slow
def test_bench_projections_quick_writes_all_sections(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    started = time.perf_counter()
    argv = ["--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--work-dir", str(tmp_path / "work")]) == 0
    assert time.perf_counter() - started < 15
    result = json.loads(out.read_text())
    assert {
        "machine",
        "loadavg",
        "calibration_start",
        "calibration_end",
        "settings",
        "logs",
        "rebuild",
        "startup",
        "session_load",
        "targets",
    } <= result.keys()
    assert result["loadavg"]["start"] and result["loadavg"]["end"]

    logs = result["logs"]
    for name in ("big", "small", "long_session"):
        assert logs[name]["events"] > 0 and logs[name]["data_file_bytes"] > 0

    rebuild = result["rebuild"]
    assert rebuild["events"] == logs["big"]["events"]
    for key in ("raw_lmdb_msgpack", "log_scan", "sessions_runs_default", "sessions_runs_nosync"):
        assert rebuild[key]["events_per_s"] > 0 and rebuild[key]["cpu_events_per_s"] > 0
    assert rebuild["sessions_runs_default"]["sync"] is True
    assert rebuild["sessions_runs_nosync"]["sync"] is False

    startup = result["startup"]
    assert [log["events"] for log in startup["logs"]] == [
        logs["small"]["events"],
        logs["big"]["events"],
    ]
    for log in startup["logs"]:
        for key in ("with_state_empty_tail", "with_state_tail", "without_state_in_memory"):
            assert log[key]["median_s"] > 0
        assert log["metrics_snapshot_bytes"] > 0
    assert {"with_state_empty_tail", "with_state_tail", "without_state_in_memory"} <= startup[
        "growth_small_to_big"
    ].keys()

    session = result["session_load"]
    for key in (
        "projection_get_session",
        "projection_open_and_get_session",
        "log_read_stream_full",
        "json_file",
        "msgpack_file",
    ):
        assert session[key]["median_ms"] > 0
    assert session["json_file"]["file_bytes"] > 0

    for target in result["targets"].values():
        assert {"target", "measured", "met", "goal"} <= target.keys()
