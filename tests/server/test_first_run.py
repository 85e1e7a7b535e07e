"""A new user's first commands: where the workspace lives and that it exists, what an
empty workspace answers, a port already in use, and what `runs show` tells about steps.

In-process `main()` calls outside any event loop, as from a shell, and `serve` as a
real subprocess where its start-up lines matter.
"""

from __future__ import annotations

import io
import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from events import (
    PlanCreated,
    RunCompleted,
    RunRequested,
    StepCompleted,
    StepFailed,
    StepStarted,
    StoreOptions,
    VerificationCompleted,
    open_event_store,
)
from server.cli._main import main
from tests.projections.helpers import ServerProcess

START_TIMEOUT_S = 60.0  # serve up; generous for a loaded machine


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("autoagent: error: "), err
    assert "Traceback" not in err
    return lines[-1]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory apart from the data dir, to show the workspace does not follow it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("AUTOAGENT_CONFIG", raising=False)
    return cwd


# --- the workspace ---------------------------------------------------------------------


def test_run_creates_the_workspace_beside_the_data_dir(
    tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "home" / "data"
    code, out = run_cli("run", "what is 2 + 2", "--data-dir", str(data))
    assert code == 0 and "4" in out
    workspace = tmp_path / "home" / "workspace"
    assert workspace.is_dir()
    assert not (elsewhere / "workspace").exists()
    assert f"autoagent: created the workspace folder {workspace}\n" in capsys.readouterr().err


def test_relative_roots_in_a_config_resolve_against_the_data_dirs_parent(
    tmp_path: Path, elsewhere: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[agents]\nworkspace_roots = ["./files", "/abs/elsewhere"]\n')
    data = tmp_path / "home" / "data"
    trio.run(_fill_run, data)
    code, out = run_cli("stats", "--json", "--config", str(config), "--data-dir", str(data))
    assert code == 0
    roots = json.loads(out)["config"]["agents"]["workspace_roots"]
    assert roots == [str(tmp_path / "home" / "files"), "/abs/elsewhere"]


def test_indexing_a_missing_folder_says_where_it_looked(
    tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "home" / "data"
    code, out = run_cli("documents", "index", "docs", "--data-dir", str(data))
    assert (code, out) == (2, "")
    workspace = tmp_path / "home" / "workspace"
    assert workspace.is_dir()
    assert one_error_line(capsys) == (
        "autoagent: error: nothing to index at 'docs': no such file or folder "
        f"(looked for {workspace / 'docs'}; the workspace is {workspace})"
    )


@pytest.mark.slow
def test_serve_prints_where_the_workspace_is(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        line = server.wait_for_line("autoagent: workspace ", START_TIMEOUT_S)
        server.signal(signal.SIGINT)
        code, _, err = server.finish(START_TIMEOUT_S)
    assert code == 0, err
    workspace = tmp_path / "workspace"
    assert line == f"autoagent: workspace {workspace} (created) (agents.workspace_roots)\n"
    assert workspace.is_dir()


# --- a port in use ---------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "sim"])
def test_a_port_in_use_is_one_line_and_exit_2(
    tmp_path: Path, taken_port: int, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_cli(command, "--port", str(taken_port), "--data-dir", str(tmp_path / "data"))
    assert code == 2
    assert one_error_line(capsys) == (
        f"autoagent: error: port {taken_port} on 127.0.0.1 is in use; pick another with --port"
    )


# --- runs show -------------------------------------------------------------------------

LONG_TEXT = "word " * 60


async def _fill_run(path: Path) -> None:
    plan = [
        {
            "id": "s1",
            "agent": "quotes",
            "action": "get_stock_price",
            "parameters": {"symbols": ["NVDA", "AAPL"]},
            "dependencies": [],
        },
        {
            "id": "s2",
            "agent": "writer",
            "action": "write_report",
            "parameters": {"title": LONG_TEXT},
            "dependencies": ["s1"],
        },
    ]
    quotes = {"quotes": [{"symbol": "NVDA", "price": 208.59}, {"symbol": "AAPL", "price": 9.5}]}
    events = [
        RunRequested(run_id="r1", session_id="s", goal="prices, then a report"),
        PlanCreated(run_id="r1", steps=plan),
        StepStarted(run_id="r1", step_id="s1"),
        StepCompleted(run_id="r1", step_id="s1", result=quotes, duration_s=0.25),
        VerificationCompleted(
            run_id="r1", step_id="s1", passed=True, confidence=0.9, notes="prices look\nright"
        ),
        StepStarted(run_id="r1", step_id="s2"),
        StepFailed(
            run_id="r1", step_id="s2", error_type="ToolError", message="disk full", retryable=False
        ),
        RunCompleted(run_id="r1", answer="NVDA: 208.59 USD"),
    ]
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        for event in events:
            await store.append("run-r1", [event])


def test_runs_show_gives_each_steps_tool_parameters_result_verdict_and_timing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    trio.run(_fill_run, data)
    code, out = run_cli("runs", "show", "r1", "--data-dir", str(data))
    assert code == 0
    summary, first, second = out.split("\n\n")
    path, header, _rule, *rows = summary.splitlines()[3:]
    assert path.startswith("critical path: ")
    assert header.split() == [
        "step",
        "tool",
        "status",
        "attempts",
        "start",
        "s",
        "end",
        "s",
        "duration",
        "s",
        "verified",
        "overlapped",
        "with",
    ]
    assert rows[0].split()[:4] == ["s1", "quotes.get_stock_price", "completed", "1"]
    assert rows[0].split()[6:9] == ["0.250", "yes", "(0.90)"]
    assert rows[1].split()[:3] == ["s2", "writer.write_report", "failed"]
    assert first.splitlines() == [
        's1: quotes.get_stock_price({"symbols": ["NVDA", "AAPL"]})',
        '  result: {"quotes": [{"symbol": "NVDA", "price": 208.59}, {"symbol": "AAPL", '
        '"price": 9.5}]}',
        "  verified: yes (0.90): prices look right",
    ]
    call, outcome = second.splitlines()
    assert call.startswith('s2: writer.write_report({"title": "word word ') and len(call) < 140
    assert call.endswith("...)")
    assert outcome == "  failed: ToolError: disk full"
