"""Smoke run of the orchestrator benchmark: `--quick` completes and writes every documented key."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.performance.bench_orchestrator import MODES, main


@pytest.mark.slow
def test_bench_orchestrator_quick_writes_all_sections(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    started = time.perf_counter()
    assert main(["--quick", "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 0
    assert time.perf_counter() - started < 20
    result = json.loads(out.read_text())
    assert {
        "machine",
        "calibration_start",
        "calibration_end",
        "goals",
        "executor",
        "targets",
        "peer_quoted_from_issue",
    } <= result.keys()
    assert "peers" not in result  # off with --quick unless asked for
    assert result["machine"]["loadavg_start"] and result["machine"]["loadavg_end"]
    for when in ("start", "end"):
        assert result[f"calibration_{when}"]["store_durable_append_p50_ms"] > 0

    goals = result["goals"]
    assert set(goals["summary"]) == set(MODES)
    for mode in goals["summary"].values():
        assert mode["completed"] == mode["runs"] > 0
        assert mode["latency_s"]["mean"] > 0 and mode["latency_s"]["p95"] > 0
        assert mode["bound_s"]["mean"] > 0 and mode["ratio_to_bound"]["mean"] > 0
        assert mode["llm_calls_per_run"] >= 2  # at least the plan and the answer
        assert mode["ttfs_s"]["mean"] > 0
    labels = {g["label"] for g in goals["goals"]}
    assert {"chain", "fan", "diamond"} <= labels
    assert len(goals["per_goal"]) == len(goals["goals"])
    for mode in ("baseline", "optimized"):
        assert goals["overhead_zero_latency"][mode]["ms_per_step"] > 0

    executor = result["executor"]
    assert [d["dag"] for d in executor["dags"]] == ["diamond", "fan10", "chain10"]
    for dag in executor["dags"]:
        assert dag["ratio_to_bound"] >= 1.0
        assert dag["append_wait_ms_per_step"] > 0
    growth = executor["growth"]
    assert len(growth["per_run"]) == growth["runs"]
    assert growth["last"]["step_event_bytes_per_step"] > 0

    for target in result["targets"].values():
        assert {"measured", "goal", "met"} <= target.keys()


def test_the_baseline_turns_off_every_feature_the_orchestrator_takes() -> None:
    from tests.performance.bench_orchestrator import ORCHESTRATOR_FLAGS

    assert "compact_tool_catalog" in ORCHESTRATOR_FLAGS and "streaming_plan" in ORCHESTRATOR_FLAGS
    assert all(getattr(MODES["baseline"], flag) is False for flag in ORCHESTRATOR_FLAGS)
    assert all(getattr(MODES["optimized"], flag) is True for flag in ORCHESTRATOR_FLAGS)
