"""Smoke run of the start-up benchmark: it starts the shipped server and a one-shot
command, and writes what it promises (never judges the timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.performance.bench_startup import main


@pytest.mark.slow
def test_bench_startup_quick_starts_serve_and_stats_and_writes_every_key(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["repeats"] == 2 and len(result["serve"]) == 2
    for start in result["serve"]:
        assert 0 < start["listening_s"] <= start["warm_s"]
        assert start["rss_warm_mb"] > 0 and start["cpu_s_at_warm"] > 0
        assert start["warming_at_end"] == []  # measured once nothing was warming
    assert len(result["stats_command_s"]) == 2
    assert result["code"] == str(Path(__file__).resolve().parents[2])
