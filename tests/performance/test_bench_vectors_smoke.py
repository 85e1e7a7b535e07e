"""Smoke run of the vector benchmark: it completes and writes every documented key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.performance.bench_vectors import main


@pytest.mark.slow
def test_bench_vectors_quick_writes_all_sections(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert main(["--quick", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert {"machine", "versions", "targets", "search", "restart"} <= result.keys()
    assert [(s["data"], s["vectors"]) for s in result["search"]] == [
        ("clustered", 10_000),
        ("clustered", 30_000),
        ("continuous", 10_000),
        ("continuous", 30_000),
    ]
    for search in result["search"]:
        assert search["flat"]["single_query_qps"] > 0
        runs = search["ivf"]["runs"]
        assert runs and all(0 <= r["recall_at_10"] <= 1 and r["qps"] > 0 for r in runs)
        assert runs[-1]["recall_at_10"] >= 0.95  # probing most lists finds nearly all
    restart = result["restart"]
    assert restart["from_snapshot"]["equals_rebuild"] is True
    assert restart["from_snapshot"]["memories"] == restart["memories"] == 10_000
    assert restart["full_rebuild"]["ready_s"] > 0 and restart["snapshot"]["bytes"] > 0
    assert list(tmp_path.iterdir()) == [out]  # the work dir is cleaned up
