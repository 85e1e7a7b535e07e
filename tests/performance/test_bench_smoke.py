"""Smoke run of the event log benchmark: it completes and writes every documented key; and
the peer runner, offline, with a fake peer (no package registry needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.performance._peers import Peer, run_peer
from tests.performance.bench_eventlog import main


@pytest.mark.slow
def test_bench_eventlog_quick_writes_all_sections(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert main(["--quick", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert {"machine", "versions", "append", "replay", "session_save"} <= result.keys()
    assert "peers" not in result  # off with --quick unless asked for

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


def _fake_peer(tmp_path: Path, body: str) -> Peer:
    script = tmp_path / "peer_fake.py"
    script.write_text(body)
    return Peer(name="fake", script=script, requirements=(), description="a fake peer")


def test_run_peer_returns_what_the_script_printed(tmp_path: Path) -> None:
    body = "import json, sys\nprint(json.dumps({'argv': sys.argv[1:]}))\n"
    peer = _fake_peer(tmp_path, body)
    result = run_peer(peer, tmp_path / "work", ["--quick"], timeout=60, root=tmp_path)
    assert result["argv"] == [str(tmp_path / "work"), "--quick"]
    assert result["venv"] == str(tmp_path / "autoagent-peer-fake")
    assert "error" not in result


def test_run_peer_reports_a_venv_that_cannot_be_made(tmp_path: Path) -> None:
    peer = _fake_peer(tmp_path, "print('{}')\n")
    missing = str(tmp_path / "no-such-python")
    result = run_peer(peer, tmp_path, timeout=60, root=tmp_path, base_python=missing)
    assert result["peer"] == "fake"
    assert result["error"].startswith("python -m venv could not start:")


def test_run_peer_reports_a_failing_script(tmp_path: Path) -> None:
    peer = _fake_peer(tmp_path, "raise SystemExit('boom')\n")
    result = run_peer(peer, tmp_path, timeout=60, root=tmp_path)
    assert result == {"peer": "fake", "error": "peer_fake.py exited with 1: boom"}


def test_bench_append_path_quick_times_every_part(tmp_path: Path) -> None:
    from tests.performance.bench_append_path import PARTS
    from tests.performance.bench_append_path import main as append_path_main

    out = tmp_path / "a.json"
    assert append_path_main(["--quick", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    parts = result["parts"]
    assert set(parts) == {*PARTS, "total"}
    assert all(parts[name]["p50_us"] > 0 for name in PARTS)
    assert result["raw_synced_txn"]["p50_us"] > 0
    assert result["ratio"] > 0


def test_bench_wakeup_cost_quick_reports_every_operation(tmp_path: Path) -> None:
    from tests.performance.bench_wakeup_cost import OPERATIONS
    from tests.performance.bench_wakeup_cost import main as wakeup_main

    out = tmp_path / "w.json"
    wakeup_main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["per_op_us"]) == set(OPERATIONS)
    assert all(f["cpu"] >= 0 and f["wall"] > 0 for f in result["per_op_us"].values())
    assert result["command"].startswith(".venv/bin/python -m tests.performance.bench_wakeup_cost")
