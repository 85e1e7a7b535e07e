"""The inspection commands over projections: `sessions`, `runs`, `replay`, `stats`.

In-process `main()` calls over a real store in `tmp_path` (closed before the CLI opens
it: py-lmdb opens one environment once per process), and beside a real
`python -m server serve` subprocess: the commands work on a data dir a server is
running on, and on a stopped one.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from projections import LmdbStateStore, MetricsProjection, RunsProjection, StateCommit
from server.cli._main import main
from tests.projections.helpers import (
    MARKER,
    TIMEOUT_S,
    Demo,
    ServerProcess,
    build_state,
    flip_every,
    in_thread,
    open_log,
    write_demo,
)

START_TIMEOUT_S = 30.0  # serve up and caught up; generous for a loaded CI machine
STOP_TIMEOUT_S = 20.0


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


async def cli(*argv: str) -> tuple[int, str]:
    """`run_cli` in a worker thread, so that the test's `fail_after` bounds it."""
    return await in_thread(run_cli, *argv)


def write_demo_dir(path: Path, unfinished: bool = True) -> Demo:
    log = open_log(path)
    try:
        return write_demo(log, unfinished)
    finally:
        log.close()


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    """The demo store in tmp_path/data with its projections persisted up to the head."""
    written = write_demo_dir(tmp_path / "data")
    build_state(tmp_path / "data")
    return written


@pytest.fixture
def data_dir(tmp_path: Path, demo: Demo) -> Path:
    return tmp_path / "data"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("autoagent: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def tamper_run(data_dir: Path, run_id: str, **fields: object) -> None:
    state = LmdbStateStore.open(data_dir / "projections", sync=False)
    try:
        key = b"r/" + run_id.encode()
        run = state.get("runs", key)
        position = state.checkpoint("runs").position
        version = RunsProjection.version
        state.commit([StateCommit("runs", version, position, position, {key: {**run, **fields}})])
    finally:
        state.close()


# --- sessions -----------------------------------------------------------------------------


async def test_sessions_list_json(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("sessions", "list", "--json", "--data-dir", str(data_dir))
        assert code == 0
        sessions = {s["session_id"]: s for s in json.loads(out)}
        assert set(sessions) == {"s1", "s2"}
        s1 = sessions["s1"]
        assert (s1["user"], s1["messages"], s1["closed"], s1["closed_reason"]) == (
            "alice",
            2,
            True,
            "bye",
        )
        assert s1["runs"] == ["ov", "new"]
        assert sessions["s2"]["runs"] == ["bad", "wip", "stop"]
        assert "window" not in s1


async def test_sessions_list_table(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("sessions", "list", "--data-dir", str(data_dir))
        assert code == 0
        header, _rule, *rows = out.splitlines()
        assert header.split()[:4] == ["session", "user", "messages", "runs"]
        assert rows[0].split()[:4] == ["s1", "alice", "2", "2"] and rows[0].endswith("closed")
        assert rows[1].split()[:4] == ["s2", "bob", "0", "3"] and rows[1].endswith("open")


async def test_sessions_show_json_has_window_and_context(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("sessions", "show", "s1", "--json", "--data-dir", str(data_dir))
        assert code == 0
        session = json.loads(out)
        assert session["context"] == {"city": "Paris"}
        assert [(m["role"], m["text"]) for m in session["window"]] == [
            ("user", "hi"),
            ("assistant", "done"),
        ]


async def test_sessions_show_prints_recent_messages(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("sessions", "show", "s1", "--data-dir", str(data_dir))
        assert code == 0
        assert out.splitlines()[0].startswith("session s1  user alice  2 messages  closed")
        assert 'context: {"city": "Paris"}' in out
        assert "runs: ov, new" in out
        assert out.rstrip().endswith("assistant: done")


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
async def test_sessions_show_of_unknown_id_is_one_line_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str], json_flag: list[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("sessions", "show", "nope", *json_flag, "--data-dir", str(data_dir))
        assert (code, out) == (2, "")
        assert one_error_line(capsys) == "autoagent: error: no session with id 'nope'\n"


# --- runs ---------------------------------------------------------------------------------


async def test_runs_list_json_is_in_request_order_without_plans(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("runs", "list", "--json", "--data-dir", str(data_dir))
        assert code == 0
        runs = json.loads(out)
        assert [(r["run_id"], r["status"]) for r in runs] == [
            ("ov", "completed"),
            ("bad", "failed"),
            ("wip", "running"),
            ("stop", "cancelled"),
            ("new", "requested"),
        ]
        assert not {"plan", "steps"} & set(runs[0])
        assert runs[0]["goal"] == MARKER and runs[0]["answer"] == "all done"


@pytest.mark.parametrize(
    "status, run_id",
    [
        ("completed", "ov"),
        ("failed", "bad"),
        ("running", "wip"),
        ("cancelled", "stop"),
        ("requested", "new"),
    ],
    ids=["completed", "failed", "running", "cancelled", "requested"],
)
async def test_runs_list_filters_by_status(data_dir: Path, status: str, run_id: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli(
            "runs", "list", "--status", status, "--json", "--data-dir", str(data_dir)
        )
        assert code == 0
        assert [r["run_id"] for r in json.loads(out)] == [run_id]
        code, out = await cli("runs", "list", "--status", status, "--data-dir", str(data_dir))
        assert code == 0
        assert [line.split()[0] for line in out.splitlines()[2:]] == [run_id]


async def test_runs_list_table_shows_status_steps_and_duration(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("runs", "list", "--data-dir", str(data_dir))
        assert code == 0
        rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
        assert rows["ov"][:5] == ["ov", "s1", "completed", "3", "7.000"]
        assert rows["bad"][:5] == ["bad", "s2", "failed", "1", "2.000"]


async def test_runs_show_json_timeline_names_overlapping_steps(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("runs", "show", "ov", "--json", "--data-dir", str(data_dir))
        assert code == 0
        run = json.loads(out)
        assert run["status"] == "completed" and set(run["steps"]) == {"a", "b", "c"}
        timeline = [
            (t["step_id"], t["start_s"], t["end_s"], t["duration_s"], t["overlaps"])
            for t in run["timeline"]
        ]
        assert timeline == [
            ("a", 1.0, 3.0, 2.0, ["b"]),
            ("b", 2.0, 4.0, 2.0, ["a"]),
            ("c", 5.0, 6.0, 1.0, []),
        ]
        assert all(t["status"] == "completed" and t["attempts"] == 1 for t in run["timeline"])
        assert run["steps"]["c"]["verification"]["passed"] is True


async def test_runs_show_prints_a_timeline_table(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("runs", "show", "ov", "--data-dir", str(data_dir))
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == "run ov  session s1  status completed"
        assert lines[1] == f"goal: {MARKER}" and lines[2] == "answer: all done"
        assert lines[3] == "critical path: a (2.000 s)"  # b and c do not depend on a
        assert lines[4].split()[:3] == ["step", "tool", "status"] and "overlapped with" in lines[4]
        table_rows = lines[6 : lines.index("")]
        rows = {line.split()[0]: line.split() for line in table_rows}
        assert rows["a"] == [
            "a",
            "quotes.get",
            "completed",
            "1",
            "1.000",
            "3.000",
            "2.000",
            "-",
            "b",
        ]
        assert rows["b"][-1] == "a"
        assert rows["c"][-3:] == ["yes", "(0.90)", "-"]


async def test_runs_show_prints_each_steps_call_result_and_verdict(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("runs", "show", "ov", "--data-dir", str(data_dir))
        assert code == 0
        details = out.split("\n\n", 1)[1]
        assert details.splitlines() == [
            "a: quotes.get({})",
            "  result: 1",
            "",
            "b: quotes.get({})",
            "  result: 2",
            "",
            "c: quotes.get({})",
            "  result: 3",
            "  verified: yes (0.90)",
        ]


async def test_runs_show_of_a_failed_run_prints_its_reason(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("runs", "show", "bad", "--data-dir", str(data_dir))
        assert code == 0
        assert "reason: step a failed" in out
        table_rows = out.split("\n\n")[0].splitlines()
        assert table_rows[-1].split()[:3] == ["a", "quotes.get", "failed"]
        assert out.splitlines()[-2:] == ["a: quotes.get({})", "  failed: ToolError: x"]


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
async def test_runs_show_of_unknown_id_is_one_line_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str], json_flag: list[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("runs", "show", "nope", *json_flag, "--data-dir", str(data_dir))
        assert (code, out) == (2, "")
        assert one_error_line(capsys) == "autoagent: error: no run with id 'nope'\n"


# --- a stopped server's state that lags the log, or no state at all ------------------------


async def test_commands_bring_a_lagging_state_up_to_the_head_without_writing(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        path = tmp_path / "data"
        demo = write_demo_dir(path)
        build_state(path, until=6)  # the server stopped at position 6
        code, out = await cli("runs", "show", "ov", "--json", "--data-dir", str(path))
        assert code == 0 and json.loads(out)["status"] == "completed"
        code, out = await cli("sessions", "show", "s1", "--json", "--data-dir", str(path))
        assert code == 0 and json.loads(out)["closed"] is True
        code, out = await cli("stats", "--json", "--data-dir", str(path))
        assert code == 0
        stats = json.loads(out)
        assert {p["name"]: p["persisted"] for p in stats["projections"]} == {
            "sessions": 6,
            "runs": 6,
            "metrics": 6,
            "memory": 6,
            "documents": 6,
        }
        assert stats["metrics"]["counters"]["runs_requested"] == 5
        state = LmdbStateStore.open(path / "projections", readonly=True)
        try:
            assert state.checkpoint("runs").position == 6 < demo.head
        finally:
            state.close()


async def test_commands_work_before_any_projection_state_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        path = tmp_path / "data"
        write_demo_dir(path)
        code, out = await cli("sessions", "list", "--json", "--data-dir", str(path))
        assert code == 0 and len(json.loads(out)) == 2
        code, out = await cli("runs", "show", "bad", "--json", "--data-dir", str(path))
        assert code == 0 and json.loads(out)["status"] == "failed"
        code, out = await cli("replay", "--verify", "--data-dir", str(path))
        assert code == 2
        assert "no projection state yet" in one_error_line(capsys)
        assert not (path / "projections").exists()


@pytest.mark.parametrize(
    "argv",
    [["sessions", "list"], ["runs", "list"], ["runs", "show", "x"], ["replay"]],
    ids=["sessions-list", "runs-list", "runs-show", "replay"],
)
async def test_commands_on_a_missing_data_dir_fail_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, _ = await cli(*argv, "--data-dir", str(tmp_path / "nowhere"))
        assert code == 2
        assert str(tmp_path / "nowhere") in one_error_line(capsys)


# --- replay -------------------------------------------------------------------------------


async def test_replay_verify_of_good_state_exits_0(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("replay", "--verify", "--data-dir", str(data_dir))
        assert (code, out) == (
            0,
            "ok: sessions, runs, metrics, memory, documents match a fresh rebuild\n",
        )
        code, out = await cli("replay", "--verify", "--json", "--data-dir", str(data_dir))
        assert (code, json.loads(out)) == (0, [])


async def test_replay_verify_of_tampered_state_prints_the_difference_and_exits_1(
    data_dir: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        tamper_run(data_dir, "ov", status="failed")
        code, out = await cli("replay", "--verify", "--data-dir", str(data_dir))
        assert code == 1
        lines = out.splitlines()
        assert lines[0] == "DIFFERENT runs r/ov:"
        assert lines[1].startswith("  live:") and '"status": "failed"' in lines[1]
        assert lines[2].startswith("  rebuilt:") and '"status": "completed"' in lines[2]
        assert len(lines) == 3
        code, out = await cli("replay", "--verify", "--json", "--data-dir", str(data_dir))
        assert code == 1
        (difference,) = json.loads(out)
        assert (difference["projection"], difference["key"]) == ("runs", "r/ov")
        assert (difference["live"]["status"], difference["rebuilt"]["status"]) == (
            "failed",
            "completed",
        )


async def test_replay_verify_of_one_projection_checks_only_that_one(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        tamper_run(data_dir, "ov", status="failed")
        code, out = await cli(
            "replay", "--projection", "sessions", "--verify", "--data-dir", str(data_dir)
        )
        assert (code, out) == (0, "ok: sessions match a fresh rebuild\n")
        code, _ = await cli(
            "replay", "--projection", "runs", "--verify", "--data-dir", str(data_dir)
        )
        assert code == 1


async def test_replay_rebuilds_tampered_state_which_then_verifies(
    data_dir: Path, demo: Demo
) -> None:
    with trio.fail_after(TIMEOUT_S):
        tamper_run(data_dir, "ov", status="failed")
        code, out = await cli("replay", "--data-dir", str(data_dir))
        assert code == 0
        assert out.splitlines() == [
            f"rebuilt {name} up to position {demo.head}"
            for name in ("sessions", "runs", "metrics", "memory", "documents")
        ]
        code, _ = await cli("replay", "--verify", "--data-dir", str(data_dir))
        assert code == 0
        code, out = await cli("runs", "show", "ov", "--json", "--data-dir", str(data_dir))
        assert json.loads(out)["status"] == "completed"


async def test_replay_of_unknown_projection_is_one_line_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("replay", "--projection", "nope", "--data-dir", str(data_dir))
        assert (code, out) == (2, "")
        err = one_error_line(capsys)
        assert (
            "unknown projection 'nope'" in err
            and "sessions, runs, metrics, memory, documents" in err
        )


@pytest.mark.parametrize("verify_flag", [[], ["--verify"]], ids=["rebuild", "verify"])
async def test_replay_of_a_corrupted_copy_stops_naming_the_position(
    tmp_path: Path,
    data_dir: Path,
    demo: Demo,
    capsys: pytest.CaptureFixture[str],
    verify_flag: list[str],
) -> None:
    with trio.fail_after(TIMEOUT_S):
        copy = tmp_path / "copy"
        shutil.copytree(data_dir, copy)
        assert flip_every(copy / "data.mdb", MARKER.encode()) >= 1
        before = (copy / "projections" / "data.mdb").read_bytes()
        code, out = await cli("replay", *verify_flag, "--data-dir", str(copy))
        err = capsys.readouterr().err
        assert code != 0 and f"position {demo.marker_position}" in err, (code, out, err)
        assert err.startswith("autoagent: error: ") and err.count("\n") == 1, err
        assert "rebuilt" not in out and "DIFFERENT" not in out
        # nothing built from the bad record was written
        assert (copy / "projections" / "data.mdb").read_bytes() == before


# --- stats --------------------------------------------------------------------------------


async def test_stats_json_shows_projections_and_metrics(data_dir: Path, demo: Demo) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("stats", "--json", "--data-dir", str(data_dir))
        assert code == 0
        stats = json.loads(out)
        assert stats["head_position"] == demo.head
        assert stats["projections"] == [
            {"name": "sessions", "version": 1, "persisted": demo.head},
            {"name": "runs", "version": RunsProjection.version, "persisted": demo.head},
            {"name": "metrics", "version": MetricsProjection.version, "persisted": demo.head},
            {"name": "memory", "version": 1, "persisted": demo.head},
            {"name": "documents", "version": 1, "persisted": demo.head},
        ]
        metrics = stats["metrics"]
        assert metrics["latency_s"]["step"]["count"] == 3
        assert metrics["latency_s"]["run"]["count"] == 3  # completed, failed, cancelled
        assert metrics["latency_s"]["plan"]["p50"] == pytest.approx(0.5, rel=0.05)
        assert metrics["cache_hit_rate"] == 0.5
        assert (metrics["llm_calls_per_run"], metrics["llm_tokens_per_run"]) == (2.0, 130.0)
        assert metrics["counters"]["runs_requested"] == 5
        assert metrics["open_runs"] == 2


async def test_stats_table_shows_projection_lag_and_latencies(data_dir: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("stats", "--data-dir", str(data_dir))
        assert code == 0
        assert "projection" in out and "lag" in out
        assert "cache hit rate 50.0%" in out
        assert any(line.split()[:2] == ["run", "3"] for line in out.splitlines())


# --- beside a real running server, then on the stopped one --------------------------------


def inspect_all(path: Path) -> dict[str, Any]:
    """What every inspection command prints (JSON), keyed by command."""
    results: dict[str, Any] = {}
    for argv in (
        ["sessions", "list"],
        ["sessions", "show", "s1"],
        ["runs", "list"],
        ["runs", "list", "--status", "failed"],
        ["runs", "show", "ov"],
    ):
        code, out = run_cli(*argv, "--json", "--data-dir", str(path))
        assert code == 0, argv
        results[" ".join(argv)] = json.loads(out)
    return results


@pytest.mark.slow
def test_inspection_commands_work_beside_a_running_server_and_after_it_stops(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data"
    demo = write_demo_dir(path, unfinished=False)  # nothing for the server to resume
    with ServerProcess(path) as server:
        ready = server.wait_for_line("event store open at", START_TIMEOUT_S)
        assert f"head position {demo.head}, projections at " in ready
        caught_up = server.wait_for_line("projections caught up", START_TIMEOUT_S)
        assert caught_up.rstrip().endswith(f"at position {demo.head}")
        running = inspect_all(path)
        code, out = run_cli("stats", "--json", "--data-dir", str(path))
        assert code == 0
        stats = json.loads(out)
        persisted = {p["name"]: p["persisted"] for p in stats["projections"]}
        assert (persisted["sessions"], persisted["runs"]) == (demo.head, demo.head)
        assert stats["metrics"]["counters"]["runs_requested"] == 3
        server.signal(signal.SIGINT)
        code, stdout, stderr = server.finish(STOP_TIMEOUT_S)
        assert code == 0, stderr
        assert "stopped cleanly" in stdout
    stopped = inspect_all(path)
    assert running == stopped
    assert [r["run_id"] for r in running["runs list --status failed"]] == ["bad"]
    code, out = run_cli("replay", "--verify", "--data-dir", str(path))
    assert (code, out) == (
        0,
        "ok: sessions, runs, metrics, memory, documents match a fresh rebuild\n",
    )


@pytest.mark.slow
def test_replay_verify_beside_a_running_server_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "data"
    write_demo_dir(path, unfinished=False)
    with ServerProcess(path) as server:
        server.wait_for_line("event store open at", START_TIMEOUT_S)
        code, out = run_cli("replay", "--verify", "--data-dir", str(path))
        server.signal(signal.SIGINT)
        assert server.finish(STOP_TIMEOUT_S)[0] == 0
    assert (code, out) == (
        0,
        "ok: sessions, runs, metrics, memory, documents match a fresh rebuild\n",
    )


@pytest.mark.slow
def test_replay_beside_a_running_server_then_the_server_stops_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data"
    demo = write_demo_dir(path, unfinished=False)
    with ServerProcess(path) as server:
        server.wait_for_line("event store open at", START_TIMEOUT_S)
        code, out = run_cli("replay", "--data-dir", str(path))
        assert code == 0, capsys.readouterr().err
        assert out.splitlines()[-1] == f"rebuilt documents up to position {demo.head}"
        running = inspect_all(path)
        server.signal(signal.SIGINT)
        code, _, stderr = server.finish(STOP_TIMEOUT_S)
        assert code == 0, stderr
    assert inspect_all(path) == running
    code, out = run_cli("replay", "--verify", "--data-dir", str(path))
    assert (code, out) == (
        0,
        "ok: sessions, runs, metrics, memory, documents match a fresh rebuild\n",
    )
