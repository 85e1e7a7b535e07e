"""Smoke run of the nodes benchmark: `--quick` with two clients starts a durable PostgreSQL,
one node then two on it, drives runs through both, and writes every key."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from tests.performance.bench_nodes import main

NODE_KEYS = {
    "node_id",
    "clients",
    "runs_in_window",
    "runs_per_s",
    "cpu_s",
    "cpu_ms_per_run",
    "main_thread_on_cpu_percent",
    "peak_rss_mb",
    "health_end",
    "exit_code",
}
CPU_KEYS = {"nodes", "postgres", "simulator", "client", "ours", "other", "machine_busy"}


@pytest.mark.slow
def test_bench_nodes_quick_measures_one_node_and_two_on_one_database(tmp_path: Path) -> None:
    out = tmp_path / "bench_nodes.json"
    argv = ["--quick", "--clients", "2", "--warmup-s", "0.5", "--window-s", "2", "--out", str(out)]
    # The cluster's processes run as another user when the tests run as root: its data dir
    # must not be under pytest's base temp dir, which a concurrent pytest session may make
    # private to root again (it resets pytest-of-<user> to mode 0o700).
    with tempfile.TemporaryDirectory(prefix="bench-nodes-smoke-") as work:
        assert main([*argv, "--work-dir", work]) == 0
        assert list(Path(work).iterdir()) == []  # the cluster, data dirs and logs are removed
    result = json.loads(out.read_text())
    assert {"machine", "settings", "postgres", "simulator", "configurations", "target"} <= (
        result.keys()
    )
    assert {"git", "loadavg_start", "loadavg_end", "cpus"} <= result["machine"].keys()
    settings = result["postgres"]["settings"]
    assert settings["fsync"] == settings["synchronous_commit"] == "on"
    assert result["settings"]["latency_profile"] == "realistic"

    a, b = result["configurations"]  # --quick: the shipped rows only
    assert (a["name"], a["nodes"], b["name"], b["nodes"]) == ("A", 1, "B", 2)
    assert a["database"] != b["database"]
    for config in (a, b):
        assert config["clients"] == 2 and config["client_errors"] == {}
        assert config["runs_in_window"] > 0 and config["runs_per_s"] > 0
        assert config["run_latency_s"]["p50"] > 0
        assert CPU_KEYS <= config["cpu"]["ms_per_run"].keys()
        assert config["cpu"]["seconds"]["nodes"] > 0 and config["cpu"]["seconds"]["postgres"] > 0
        assert 0 < config["cpu"]["machine_busy_percent"] <= 100
        assert {"requests_per_s", "budget_requests_percent", "budget_tokens_percent"} <= (
            config["llm"].keys()
        )
        assert config["bound"]
        for node in config["per_node"]:
            assert NODE_KEYS <= node.keys()
            assert node["clients"] == 2 // config["nodes"] and node["runs_in_window"] > 0
            assert node["exit_code"] == 0  # SIGINT: a clean stop
            assert node["health_end"]["id"] == node["node_id"]
    assert [n["node_id"] for n in b["per_node"]] == ["b-node-1", "b-node-2"]

    target = result["target"]
    assert {"goal", "ratio", "target", "met", "bound"} <= target.keys()
    assert target["ratio"] > 0 and set(target["bound"]) == {"A", "B"}
