"""Smoke run of the PostgreSQL benchmark: it starts a durable cluster, writes every row and
the target, and cleans up (no peer: off with --quick)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.performance.bench_postgres import PRODUCERS, main


@pytest.mark.slow
def test_bench_postgres_quick_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert main(["--quick", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert {"machine", "versions", "postgres", "append", "targets"} <= result.keys()
    assert "peers" not in result  # off with --quick unless asked for
    assert {"loadavg_start", "loadavg_end", "git"} <= result["machine"].keys()

    settings = result["postgres"]["settings"]
    assert settings["fsync"] == settings["synchronous_commit"] == "on"

    for backend in ("postgres", "lmdb"):
        configs = result["append"][backend]["configs"]
        assert [c["producers"] for c in configs] == list(PRODUCERS)
        for config in configs:
            assert config["events_per_s"] > 0
            assert config["latency_ms"]["p50"] > 0 and config["latency_ms"]["p99"] > 0
            assert config["commits"] > 0 and config["record_bytes"] > 0

    target = result["targets"]["postgres_vs_peer_at_256"]
    assert target["postgres_events_per_s"] > 0
    assert target["measured"] is None and target["met"] is None  # no peer, no verdict
    assert list(tmp_path.iterdir()) == [out]  # the cluster and stores are cleaned up
