"""Smoke run of the WebSocket fuzz script: a few hundred random frames against a real
`autoagent serve` process; every frame answered, none `internal`, the server still up."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.performance.fuzz_ws import main


@pytest.mark.slow
def test_fuzz_ws_sends_frames_to_a_server_process_and_reports_it_still_up(
    tmp_path: Path,
) -> None:
    out = tmp_path / "fuzz_ws.json"
    started = time.perf_counter()
    argv = ["--frames", "300", "--connections", "3", "--json", str(out)]
    assert main([*argv, "--work-dir", str(tmp_path)]) == 0
    assert time.perf_counter() - started < 120
    result = json.loads(out.read_text())
    assert result["passed"] is True
    assert result["settings"] == {"frames": 300, "connections": 3, "seed": 1}
    r = result["results"]
    assert r["frames_sent"] == sum(r["replies_by_code"].values()) == 300
    assert r["internal"] == r["id_mismatches"] == r["unanswered"] == r["unexpected_closes"] == 0
    assert r["server_up"] is True and r["server_exit_code"] == 0
    assert r["healthz_status"] == "ok"
    assert r["logged_tracebacks"] == 0, "\n".join(r["traceback_samples"])
    assert r["replies_by_code"]["error:bad_request"] > 0  # the fuzzing reached the parser
    assert not list(tmp_path.glob("fuzz_ws-*"))  # the work directory is removed
