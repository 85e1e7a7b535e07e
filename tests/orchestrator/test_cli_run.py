"""`autoagent run` and `autoagent runs resume` over a real data dir, in-process:
answers on stdout, exit codes 0 / 1 / 2, errors as one line on stderr."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import trio

from events import PlanCreated, RunRequested, StepStarted, StoreOptions, open_event_store
from server.cli._main import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default configuration (offline model), whatever the caller's shell sets."""
    for name in list(os.environ):
        if name.startswith("AUTOAGENT_"):
            monkeypatch.delenv(name)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_run_prints_the_answer_and_exits_0(tmp_path: Path) -> None:
    code, out = run_cli("run", "what is 17 * 23 + 4", "--data-dir", str(tmp_path / "d"))
    assert (code, out) == (0, "17 * 23 + 4 = 395\n")


def test_run_json_includes_the_answer_and_the_runs_events(tmp_path: Path) -> None:
    code, out = run_cli("run", "what is 17 * 23 + 4", "--json", "--data-dir", str(tmp_path / "d"))
    assert code == 0
    report = json.loads(out)
    assert (report["status"], report["answer"], report["reason"]) == (
        "completed",
        "17 * 23 + 4 = 395",
        None,
    )
    events = report["events"]
    assert {e["stream"] for e in events} == {f"run-{report['run_id']}"}
    types = [e["type"] for e in events]
    assert types[0] == "RunRequested" and types[-1] == "RunCompleted"
    assert {"PlanCreated", "StepStarted", "StepCompleted", "VerificationCompleted"} <= set(types)
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    completed = next(e for e in events if e["type"] == "StepCompleted")
    assert completed["data"]["result"]["value"] == 395


def test_run_of_an_unplannable_goal_exits_1_with_the_reason(tmp_path: Path) -> None:
    code, out = run_cli("run", "sing me a song", "--data-dir", str(tmp_path / "d"))
    assert code == 1
    assert out.count("\n") == 1
    assert " failed: no usable plan: " in out
    assert "no available tool matches 'sing me a song'" in out


def test_run_of_an_empty_goal_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "workspace").mkdir()  # else its creation is announced first
    code, out = run_cli("run", "  ", "--data-dir", str(tmp_path / "d"))
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == "autoagent: error: the goal must be non-empty text\n"


def test_runs_resume_of_a_finished_run_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    _, out = run_cli("run", "what is 2 + 2", "--json", "--data-dir", data)
    run_id = json.loads(out)["run_id"]
    capsys.readouterr()
    code, out = run_cli("runs", "resume", run_id, "--data-dir", data)
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == f"autoagent: error: run '{run_id}' is already completed\n"


def test_runs_resume_of_an_unknown_run_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli("run", "what is 2 + 2", "--data-dir", str(tmp_path / "d"))
    capsys.readouterr()
    code, _ = run_cli("runs", "resume", "ghost", "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert capsys.readouterr().err == "autoagent: error: no run with id 'ghost'\n"


async def _write_interrupted_run(path: Path) -> None:
    step = {
        "id": "s1",
        "agent": "math",
        "action": "calculate",
        "parameters": {"expression": "17 * 23 + 4"},
        "dependencies": [],
        "reasoning": "arithmetic",
    }
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        await store.append(
            "run-half",
            [
                RunRequested("half", "sess", "what is 17 * 23 + 4"),
                PlanCreated("half", [step]),
                StepStarted("half", "s1", 1),
            ],
            correlation="half",
        )


def test_runs_resume_of_an_interrupted_run_finishes_it(tmp_path: Path) -> None:
    trio.run(_write_interrupted_run, tmp_path / "d")
    code, out = run_cli("runs", "resume", "half", "--json", "--data-dir", str(tmp_path / "d"))
    assert code == 0
    report = json.loads(out)
    assert (report["status"], report["answer"]) == ("completed", "17 * 23 + 4 = 395")
    started = [e["data"] for e in report["events"] if e["type"] == "StepStarted"]
    assert [(s["step_id"], s["attempt"]) for s in started] == [("s1", 1), ("s1", 2)]


def test_runs_retry_runs_a_failed_run_again_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    code, out = run_cli("run", "book me a flight to Paris", "--data-dir", data, "--json")
    assert code == 1
    old = json.loads(out)["run_id"]
    code, out = run_cli("runs", "retry", old, "--data-dir", data, "--json")
    assert code == 1  # the offline model still cannot plan it: the new run fails too
    report = json.loads(out)
    assert report["run_id"] != old and report["status"] == "failed"
    assert report["events"][0]["data"]["retry_of"] == old
    capsys.readouterr()
    code, out = run_cli("runs", "retry", old, "--data-dir", data)
    assert code == 2 and out == ""
    assert "retried already" in capsys.readouterr().err
