"""The commands that go through a running server: `run`, `runs resume|retry|cancel`,
`approve`, `forget` (`server.cli._client`).

The server is the real application (`open_application` + `agent_server`, LMDB data dir,
127.0.0.1 port 0) holding its data dir's lock with its URL recorded, as `autoagent
serve` does, so the CLI finds it there; or one named by `--server`. The CLI runs in a
worker thread (it calls `trio.run` itself); one test runs it as a real process beside
a real `autoagent serve`. Steps are held for a human by `agents.require_approval`
naming the tool the offline planner picks for the goal (`math.calculate`).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from events import PlanCreated, RunRequested
from server._datadir import client_url, open_data_dir_lock, running_server
from server.app import Application, agent_server, open_application
from server.cli._main import main
from server.cli._run import StepView
from server.config import load_config
from tests.security.principal_server import hash_embedder

ROOT = Path(__file__).resolve().parents[2]
GOAL = "what is 17 * 23 + 4"
ANSWER = "17 * 23 + 4 = 395"
TIMEOUT_S = 60
TOKEN = "cli-client-token-0123456789abcdef0123"
HELD = '["math.calculate"]'


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The settings both the server and the CLI read from the environment; the data dir."""
    for name in [n for n in os.environ if n.startswith("AUTOAGENT_")]:
        monkeypatch.delenv(name)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    monkeypatch.setenv("AUTOAGENT_AGENTS__WORKSPACE_ROOTS", json.dumps([str(workspace)]))
    monkeypatch.setenv("AUTOAGENT_STORE__SYNC", "false")
    monkeypatch.setenv("AUTOAGENT_STORE__MAP_SIZE_MB", "64")
    return tmp_path / "data"


@dataclass
class Served:
    app: Application
    url: str
    stop: Callable[[], None]


@asynccontextmanager
async def serving(data: Path, **settings: str) -> AsyncIterator[Served]:
    """The application served on 127.0.0.1:0, holding `data` with its URL recorded."""
    env = {**os.environ, **{f"AUTOAGENT_{k.upper()}": v for k, v in settings.items()}}
    config = load_config(env=env, data_dir=data)
    async with (
        open_data_dir_lock(data) as lock,
        open_application(config, embedder_factory=hash_embedder) as app,
        trio.open_nursery() as nursery,
    ):
        server, server_scope = agent_server(app), trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[int]) -> None:
            with server_scope:  # stops the server alone, as a signal does
                await server.serve("127.0.0.1", 0, task_status=task_status)

        port = await nursery.start(serve)
        lock.record_url(client_url("127.0.0.1", port))
        try:
            yield Served(app, client_url("127.0.0.1", port), server_scope.cancel)
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class Outcome:
    code: int
    out: str
    err: str


async def cli(data: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> Outcome:
    """`autoagent ARGV --data-dir DATA` in a worker thread (it runs its own Trio loop)."""
    out = io.StringIO()
    code = await trio.to_thread.run_sync(
        lambda: main([*argv, "--data-dir", str(data)], out=out), abandon_on_cancel=True
    )
    return Outcome(code, out.getvalue(), capsys.readouterr().err)


async def approval_requested(app: Application) -> str:
    """The run id of the first step held for approval."""
    async for record in app.store.subscribe(after=0):
        if record.type == "ApprovalRequested":
            return str(record.data["run_id"])
    raise AssertionError("the log ended")


async def terminal_of(app: Application, run_id: str) -> str:
    async for record in app.store.subscribe(after=0, stream=f"run-{run_id}"):
        if record.type in ("RunCompleted", "RunFailed", "RunCancelled"):
            return record.type
    raise AssertionError("the log ended")


def one_error_line(outcome: Outcome) -> str:
    assert outcome.code == 2, outcome
    assert outcome.err.count("\n") == 1 and outcome.err.startswith("autoagent: error: ")
    assert "Traceback" not in outcome.err
    return outcome.err


# --- run ------------------------------------------------------------------------------


async def test_run_goes_through_the_server_holding_the_data_dir_and_shows_steps(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served:
            done = await cli(env, "run", GOAL, capsys=capsys)
            lines = done.out.splitlines()
            run_id = lines[0].split()[1]
            ran_here = await served.app.store.stream_version(f"run-{run_id}")
    assert done.code == 0, done
    assert lines[0].startswith(f"run {run_id} in session ")
    assert "plan: s1 math.calculate" in lines
    assert "s1 math.calculate started" in lines
    assert any(line.startswith("s1 completed in ") and line.endswith(" s") for line in lines)
    assert lines[-1] == ANSWER
    assert "\r" not in done.out  # not a terminal: plain lines
    assert ran_here > 0  # the server's orchestrator ran it, in its log
    assert done.err == ""  # no workspace created here: the server's tools ran


async def test_run_json_through_a_named_server_has_the_in_process_shape(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served:
            named = await cli(env, "run", GOAL, "--json", "--server", served.url, capsys=capsys)
        here = await cli(env, "run", GOAL, "--json", capsys=capsys)
    assert (named.code, here.code) == (0, 0), (named, here)
    report, local = json.loads(named.out), json.loads(here.out)
    assert (
        set(report)
        == set(local)
        == {
            "run_id",
            "session_id",
            "status",
            "answer",
            "reason",
            "events",
        }
    )
    assert report["status"] == local["status"] == "completed"
    assert report["answer"] == local["answer"] == ANSWER
    assert report["reason"] is local["reason"] is None
    assert report["session_id"] != local["session_id"]  # each run started a session
    assert sorted(e["type"] for e in report["events"]) == sorted(e["type"] for e in local["events"])
    # The log is not opened here: the fields the protocol carries, under the same names.
    fields = {"position", "stream", "type", "ts", "time", "data"}
    assert all(set(e) == fields for e in report["events"])
    assert all(fields <= set(e) for e in local["events"])
    assert report["events"][0]["type"] == "RunRequested"
    assert report["events"][-1]["type"] == "RunCompleted"


async def test_a_run_that_fails_through_the_server_exits_1(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(env):
            done = await cli(env, "run", "x", capsys=capsys)
    assert done.code == 1
    last = done.out.splitlines()[-1]
    assert last.startswith("run ") and " failed: no usable plan" in last


# --- approvals and cancel ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "shown"),
    [("approve", "s1 approved by local: looks right"), ("deny", "s1 denied by local: no")],
    ids=["approve", "deny"],
)
async def test_approve_from_the_cli_releases_the_held_step(
    env: Path, capsys: pytest.CaptureFixture[str], decision: str, shown: str
) -> None:
    note = "looks right" if decision == "approve" else "no"
    results: list[Outcome] = []
    with trio.fail_after(TIMEOUT_S):
        async with serving(env, agents__require_approval=HELD) as served:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _collect(results, cli(env, "run", GOAL, capsys=capsys)))
                run_id = await approval_requested(served.app)
                decided = await cli(
                    env, "approve", run_id, "s1", decision, "--note", note, capsys=capsys
                )
                assert decided.code == 0, decided
            again = await cli(env, "approve", run_id, "s1", decision, capsys=capsys)
    done = results[0]
    lines = done.out.splitlines()
    past = "approved" if decision == "approve" else "denied"
    assert decided.out == f"step s1 of run {run_id} {past}\n"
    assert f"s1 math.calculate waits for approval: autoagent approve {run_id} s1 approve|deny" in (
        lines
    )
    assert shown in lines
    if decision == "approve":
        assert done.code == 0 and lines[-1] == ANSWER
        assert lines.index(shown) < lines.index("s1 math.calculate started")
    else:
        assert "s1 math.calculate started" not in lines
        assert any(line.startswith("s1 skipped") for line in lines)
    assert "is already" in one_error_line(again)  # the run ended: nothing to decide


async def _collect(results: list[Outcome], outcome: Any) -> None:
    results.append(await outcome)


async def test_runs_cancel_of_a_run_waiting_for_approval_ends_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results: list[Outcome] = []
    with trio.fail_after(TIMEOUT_S):
        async with serving(env, agents__require_approval=HELD) as served:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _collect(results, cli(env, "run", GOAL, capsys=capsys)))
                run_id = await approval_requested(served.app)
                cancelled = await cli(env, "runs", "cancel", run_id, capsys=capsys)
            ended = await terminal_of(served.app, run_id)
            twice = await cli(env, "runs", "cancel", run_id, "--json", capsys=capsys)
            missing = await cli(env, "runs", "cancel", "no-such-run", capsys=capsys)
    assert cancelled.code == 0 and cancelled.out == f"run {run_id} cancelled\n"
    assert ended == "RunCancelled"
    assert results[0].code == 1
    assert results[0].out.splitlines()[-1] == f"run {run_id} cancelled: cancelled by request"
    assert one_error_line(twice) == (
        f"autoagent: error: the server refused: run {run_id!r} is already cancelled (conflict)\n"
    )
    assert one_error_line(missing) == (
        "autoagent: error: the server refused: no run 'no-such-run' (not_found)\n"
    )


async def test_runs_retry_through_the_server_follows_the_new_run(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results: list[Outcome] = []
    with trio.fail_after(TIMEOUT_S):
        async with serving(env, agents__require_approval=HELD) as served:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _collect(results, cli(env, "run", GOAL, capsys=capsys)))
                first = await approval_requested(served.app)
                assert (await cli(env, "runs", "cancel", first, capsys=capsys)).code == 0
            async with trio.open_nursery() as nursery:
                retry = cli(env, "runs", "retry", first, capsys=capsys)
                nursery.start_soon(lambda: _collect(results, retry))
                second = await _next_approval(served.app, after=first)
                assert (await cli(env, "approve", second, "s1", "approve", capsys=capsys)).code == 0
    retried = results[1]
    lines = retried.out.splitlines()
    assert retried.code == 0, retried
    assert lines[0] == f"run {first} retried as run {second}"
    assert lines[-1] == ANSWER


async def _next_approval(app: Application, after: str) -> str:
    async for record in app.store.subscribe(after=0):
        if record.type == "ApprovalRequested" and record.data["run_id"] != after:
            return str(record.data["run_id"])
    raise AssertionError("the log ended")


# --- resume -------------------------------------------------------------------------------


async def test_runs_resume_through_the_server_reports_the_whole_run(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = {
        "id": "s1",
        "agent": "math",
        "action": "calculate",
        "parameters": {"expression": "2 + 2"},
        "dependencies": [],
        "reasoning": "",
    }
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served:
            await served.app.store.append(
                "run-left1",
                [RunRequested("left1", "sess1", "what is 2 + 2"), PlanCreated("left1", [step])],
                correlation="left1",
            )
            done = await cli(env, "runs", "resume", "left1", "--json", capsys=capsys)
    assert done.code == 0, done
    report = json.loads(done.out)
    assert (report["run_id"], report["session_id"], report["status"]) == (
        "left1",
        "sess1",
        "completed",
    )
    types = [e["type"] for e in report["events"]]
    assert types[:2] == ["RunRequested", "PlanCreated"] and "RunResumed" in types
    assert types[-1] == "RunCompleted"


# --- tokens, unreachable servers, no server ---------------------------------------------------


async def test_a_wrong_or_missing_token_is_one_line_and_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(env, server__tokens=json.dumps([TOKEN])) as served:
            wrong = await cli(env, "run", GOAL, "--token", "not-" + TOKEN, capsys=capsys)
            missing = await cli(env, "runs", "cancel", "r1", capsys=capsys)
            monkeypatch.setenv("AUTOAGENT_TOKEN", TOKEN)
            right = await cli(env, "run", GOAL, "--server", served.url, capsys=capsys)
    assert one_error_line(wrong) == (
        f"autoagent: error: the server at {served.url} refused: unknown token (unauthorized); "
        "give its token with --token or $AUTOAGENT_TOKEN\n"
    )
    assert "send hello with a valid token first (unauthorized)" in one_error_line(missing)
    assert right.code == 0 and right.out.splitlines()[-1] == ANSWER


async def test_a_server_that_is_gone_is_one_line_and_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/"
    results: list[Outcome] = []
    with trio.fail_after(TIMEOUT_S):
        nowhere = await cli(env, "run", GOAL, "--server", url, capsys=capsys)
        async with serving(env, agents__require_approval=HELD) as served:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _collect(results, cli(env, "run", GOAL, capsys=capsys)))
                await approval_requested(served.app)
                served.stop()  # the server goes away mid-run
    assert one_error_line(nowhere) == (
        f"autoagent: error: cannot reach a server at {url}: all attempts to connect to "
        f"127.0.0.1:{port} failed\n"
    )
    assert one_error_line(results[0]) == (
        f"autoagent: error: the server at {served.url} closed the connection "
        "(1001 server shutting down)\n"
    )


@pytest.mark.parametrize(
    ("argv", "what"),
    [(("runs", "cancel", "r1"), "runs cancel"), (("approve", "r1", "s1", "deny"), "approve")],
    ids=["cancel", "approve"],
)
async def test_cancel_and_approve_without_a_server_say_so(
    env: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], what: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        done = await cli(env, *argv, capsys=capsys)
    assert one_error_line(done) == (
        f"autoagent: error: {what} needs a running server: none holds data dir {env}; "
        "start one with `autoagent serve` or name one with --server ws://HOST:PORT/\n"
    )


async def test_a_server_url_that_is_not_websocket_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = await cli(env, "runs", "retry", "r1", "--server", "http://x", capsys=capsys)
    assert one_error_line(done) == (
        "autoagent: error: --server 'http://x' is not a WebSocket URL (ws://HOST:PORT/)\n"
    )


async def test_forget_goes_through_a_server_named_by_flag(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served:
            ran = json.loads((await cli(env, "run", GOAL, "--json", capsys=capsys)).out)
            done = await cli(
                env,
                "forget",
                "--session",
                ran["session_id"],
                "--json",
                "--server",
                served.url,
                capsys=capsys,
            )
    assert done.code == 0 and json.loads(done.out) == {"via": served.url, "key_destroyed": True}


# --- the live view ------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_step_view_on_a_terminal_redraws_one_status_line_in_place() -> None:
    out = Terminal()
    view = StepView(out, live=out.isatty())
    view.started("r1")
    frames = [
        ("StepStarted", {"step_id": "s1"}),  # a streamed plan starts it before it is recorded
        ("PlanCreated", {"steps": [{"id": "s1", "agent": "quotes", "action": "get"}]}),
        ("StepCompleted", {"step_id": "s1", "duration_s": 0.123}),
    ]
    for kind, data in frames:
        view.show({"type": "event", "event_type": kind, "stream": "run-r1", "data": data})
    view.close()
    text = out.getvalue()
    shown = [line.split("\r")[-1].replace("\x1b[2K", "") for line in text.split("\n")]
    assert shown[:3] == ["plan: s1 quotes.get", "s1 quotes.get started", "s1 completed in 0.12 s"]
    assert "\rrunning s1 quotes.get | 0 step(s) done" in text
    assert text.endswith("\r\x1b[2K")  # the status line is gone at the end


# --- a real process beside a real `autoagent serve` -----------------------------------------


@pytest.mark.slow
async def test_run_as_a_process_goes_through_a_serve_process_with_in_process_json(
    env: Path, tmp_path: Path, nursery: trio.Nursery
) -> None:
    environ = {**os.environ, "AUTOAGENT_SERVER__PORT": "0"}

    async def autoagent(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [sys.executable, "-m", "server", *argv, "--data-dir", str(env)],
            cwd=ROOT,
            env=environ,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

    with trio.fail_after(TIMEOUT_S):
        with (tmp_path / "serve.out").open("wb") as log:
            serve = await trio.lowlevel.open_process(
                [sys.executable, "-m", "server", "serve", "--data-dir", str(env)],
                cwd=ROOT,
                env=environ,
                stdout=log,
                stderr=log,
            )
        try:
            while (record := running_server(env)) is None or record.url is None:
                assert serve.poll() is None, (tmp_path / "serve.out").read_text()
                await trio.sleep(0.05)
            plain = await autoagent("run", GOAL)
            through = await autoagent("run", GOAL, "--json")
        finally:
            serve.terminate()
            await serve.wait()
        here = await autoagent("run", GOAL, "--json")
    lines = plain.stdout.decode().splitlines()
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr == b""
    assert "s1 math.calculate started" in lines and lines[-1] == ANSWER
    assert (through.returncode, here.returncode) == (0, 0), (through.stderr, here.stderr)
    report, local = json.loads(through.stdout), json.loads(here.stdout)
    assert set(report) == set(local)
    assert (report["status"], report["answer"]) == (local["status"], local["answer"])
    # The server held this data dir: its records in full, as `events export` prints them.
    assert {frozenset(e) for e in report["events"]} == {frozenset(e) for e in local["events"]}
    assert set(report["events"][0]) >= {"version", "hash", "prev_hash", "correlation"}
