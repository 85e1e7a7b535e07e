"""The command line on a PostgreSQL log (`store.backend = "postgres"`): the commands that
read the log, and `forget`, work on the configured backend, not on an LMDB data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from events import PlanCreated, RunRequested, StepStarted
from server.app import open_configured_store
from server.config import load_config
from server.leases import PostgresRunLeases

from .test_cli import run_cli

TIMEOUT_S = 30


@pytest.fixture
def postgres_config(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of a server on `postgres_url`; its data dir holds no log."""
    monkeypatch.setenv("AUTOAGENT_STORE__BACKEND", "postgres")
    monkeypatch.setenv("AUTOAGENT_STORE__URL", postgres_url)
    monkeypatch.setenv("AUTOAGENT_STORE__DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


async def test_read_commands_read_the_postgres_log(postgres_config: Path) -> None:
    config = load_config(None)
    with trio.fail_after(TIMEOUT_S):
        async with open_configured_store(config) as store:
            await store.append("run-1", [RunRequested(run_id="1", session_id="s", goal="g")])
            await store.append("run-1", [PlanCreated(run_id="1", steps=[])])
            await store.append("run-1", [StepStarted(run_id="1", step_id="a")])
    code, out = run_cli("audit", "--json")
    assert code == 0, out
    assert json.loads(out)["checked"] == 3
    code, out = run_cli("events", "tail", "--json")
    assert code == 0, out
    tail = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [e["type"] for e in tail] == ["RunRequested", "PlanCreated", "StepStarted"]
    code, out = run_cli("runs", "list", "--json")
    assert code == 0, out
    assert [r["run_id"] for r in json.loads(out)] == ["1"]
    assert not (postgres_config / "data.mdb").exists()  # nothing was read or made there


def test_run_in_process_refuses_a_run_another_node_holds(
    postgres_config: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`runs resume` without a server executes in this process, but only under its own
    lease: a run a server node holds is that node's (one line, exit 2, nothing run)."""
    monkeypatch.setenv("AUTOAGENT_AGENTS__ENABLED", '["math"]')
    config = load_config(None)

    async def fill() -> None:
        async with open_configured_store(config) as store:
            goal = "what is 1 + 1"
            await store.append("run-1", [RunRequested(run_id="1", session_id="s", goal=goal)])

    trio.run(fill)
    node_b = PostgresRunLeases.open(postgres_url, "node-b", 60.0)
    try:
        assert node_b.acquire("1")
        code, _ = run_cli("runs", "resume", "1")
        assert code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert errors == ["autoagent: error: run 1 is executed by node 'node-b'; ask that node"]
        node_b.release("1")
        code, out = run_cli("runs", "resume", "1")  # nobody holds it now: it runs here
        assert code == 0, out
        assert out.strip() == "1 + 1 = 2"
        assert node_b.leases() == []  # given back when it ended
    finally:
        node_b.close()
