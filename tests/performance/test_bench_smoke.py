"""Smoke run of the event log benchmark: it completes and writes every documented key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.performance.bench_eventlog import main


@pytest.mark.slow
def test_bench_eventlog_quick_writes_all_sections(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert main(["--quick", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert {"machine", "versions", "append", "replay", "session_save"} <= result.keys()

    appends = result["append"]
    assert [c["producers"] for c in appends["configs"]] == [1, 16, 256]
    for config in appends["configs"]:
        assert config["events_per_s"] > 0
        assert {"p50", "p99"} <= config["latency_ms"].keys()
        assert {"mean_batch", "ratio_vs_1_producer", "commit_thread_share"} <= config.keys()
    assert {"raw_lmdb_1_per_txn", "raw_lmdb_100_per_txn"} <= appends["baselines"].keys()
    assert {"events_per_s_at_256", "ratio_256_vs_1"} <= appends["targets"].keys()

    replay = result["replay"]
    for reader in ("store_iterate", "log_read_batches", "raw_lmdb_msgpack"):
        assert replay[reader]["events_per_s"] > 0
    assert "store_iterate_events_per_s" in replay["targets"]

    sessions = result["session_save"]["results"]
    assert [s["interactions"] for s in sessions] == result["session_save"]["sizes"]
    for size in sessions:
        for approach in ("json_rewrite", "msgpack_rewrite", "event_append"):
            assert size[approach]["median_ms"] > 0
