"""Smoke runs of the indexing benchmark: it completes, writes its keys, and counts the
embedding requests it promises (never timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.performance.bench_indexing import Sizes, main, report_tables, run_benchmark


def test_bench_indexing_quick_counts_requests_batched_single_and_unchanged(
    tmp_path: Path,
) -> None:
    out = tmp_path / "indexing.json"
    assert main(["--quick", "--no-local", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"machine", "versions", "command", "remote", "documents"} <= result.keys()
    remote = result["remote"]
    batched, single = remote["runs"]
    documents = result["documents"]
    assert batched["indexed"] == single["indexed"] == batched["chunks"] == documents
    assert batched["embedding_requests"] == batched["requests_seen_by_simulator_per_pass"] == 1
    assert (
        single["embedding_requests"] == single["requests_seen_by_simulator_per_pass"] == documents
    )
    assert remote["ratio_one_per_document_vs_batched"]["requests"] == documents
    unchanged = remote["unchanged"]
    assert unchanged["again"] == {
        "indexed": 0,
        "unchanged": documents,
        "chunks": 0,
        "embedding_requests": 0,
    }
    assert unchanged["simulator_requests_both_passes"] == 1  # the first pass only


@pytest.mark.slow
async def test_bench_indexing_local_part_counts_encoder_calls(tmp_path: Path) -> None:
    sizes = Sizes(documents=5, time_scale=0.0, repeats=1)
    result = await run_benchmark(tmp_path, sizes, True)
    batched, single = result["local"]["runs"]
    assert (batched["embedding_requests"], single["embedding_requests"]) == (1, 5)
    assert result["local"]["unchanged"]["again"]["embedding_requests"] == 0
    assert [len(t.rows) for t in report_tables(result | {"machine": {"cpus": 2}})] == [3, 3]
