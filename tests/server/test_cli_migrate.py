"""`autoagent migrate`: LMDB data dirs in `tmp_path` and a real PostgreSQL (`postgres_url`);
copies keep positions and bytes, continue after an interruption, refuse a destination
that is no prefix of the source, and report errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from events import (
    EventLog,
    LmdbEventLog,
    PlanCreated,
    RunRequested,
    StepStarted,
    StoreOptions,
    audit_log,
    open_event_store,
)
from server._datadir import open_data_dir_lock
from server.cli import _migrate
from server.cli._migrate import CopyResult, copy_log

from .test_cli import run_cli

RUNS = 5  # 3 events each


async def _fill(path: Path, runs: int = RUNS, goal: str = "g") -> None:
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        for i in range(runs):
            stream = f"run-{i}"
            await store.append(stream, [RunRequested(run_id=str(i), session_id="s", goal=goal)])
            await store.append(stream, [PlanCreated(run_id=str(i), steps=[])])
            await store.append(stream, [StepStarted(run_id=str(i), step_id="a")])


def _raw(path: Path) -> list[tuple[int, bytes]]:
    log = LmdbEventLog.open(path, readonly=True)
    try:
        assert audit_log(log).ok
        return log.read_raw(0, 100_000)
    finally:
        log.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    trio.run(_fill, path)
    return path


def test_lmdb_to_postgres_and_back_keeps_every_record(
    source: Path, tmp_path: Path, postgres_url: str
) -> None:
    code, out = run_cli(
        "migrate", "--from", f"lmdb:{source}", "--to", f"postgres:{postgres_url}", "--batch", "4"
    )
    assert (code, out) == (
        0,
        "copied 15 events (0 were already there); destination head 15\n"
        "audit ok: 15 events checked, hash chain intact\n",
    )
    back = tmp_path / "back"
    code, out = run_cli(
        "migrate", "--from", f"postgres:{postgres_url}", "--to", f"lmdb:{back}", "--json"
    )
    assert code == 0
    assert json.loads(out) == {
        "copied": 15,
        "skipped": 0,
        "head_position": 15,
        "audit_ok": True,
        "first_bad_position": None,
        "problem": None,
    }
    assert _raw(back) == _raw(source)
    assert run_cli("audit", "--data-dir", str(back))[0] == 0
    assert run_cli("runs", "list", "--json", "--data-dir", str(back))[0] == 0


def test_interrupted_copy_continues_where_the_destination_stops(
    source: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def ctrl_c_after_first_batch(
        log: EventLog, destination: EventLog, batch: int, *_: object
    ) -> CopyResult:
        def interrupt(done: int, total: int) -> None:
            raise KeyboardInterrupt

        return copy_log(log, destination, batch, interrupt)

    target = f"postgres:{postgres_url}"
    with monkeypatch.context() as patch:
        patch.setattr(_migrate, "copy_log", ctrl_c_after_first_batch)
        code, out = run_cli("migrate", "--from", f"lmdb:{source}", "--to", target, "--batch", "4")
    assert (code, out) == (1, "")
    assert capsys.readouterr().err == (
        "autoagent: interrupted; the destination holds records 1-4: "
        "run the same command again to continue\n"
    )
    argv = ("migrate", "--from", f"lmdb:{source}", "--to", target, "--json")
    code, out = run_cli(*argv)
    assert code == 0
    assert json.loads(out)["copied"] == 11
    assert json.loads(out)["skipped"] == 4
    code, out = run_cli(*argv)  # a complete copy: nothing to do, still audited
    assert code == 0
    assert (json.loads(out)["copied"], json.loads(out)["skipped"]) == (0, 15)
    assert json.loads(out)["audit_ok"] is True


def test_copy_of_a_prefix_continues_between_lmdb_dirs(source: Path, tmp_path: Path) -> None:
    destination = tmp_path / "destination"
    log, copy = LmdbEventLog.open(source, readonly=True), LmdbEventLog.open(destination)
    try:
        result = copy_log(log, copy, batch=2, max_batches=3)
        assert (result.copied, result.skipped, result.head_position) == (6, 0, 6)
    finally:
        copy.close()
        log.close()
    code, out = run_cli("migrate", "--from", f"lmdb:{source}", "--to", f"lmdb:{destination}")
    assert code == 0
    assert out.startswith("copied 9 events (6 were already there); destination head 15\n")
    assert _raw(destination) == _raw(source)


async def test_destination_that_diverges_is_refused_with_one_line(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    await _fill(other, runs=2, goal="something else")
    before = _raw(other)
    code, out = run_cli("migrate", "--from", f"lmdb:{source}", "--to", f"lmdb:{other}")
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == (
        "autoagent: error: the destination's record 6 differs from the source's: "
        "it is not a copy of this log (refusing to write into it)\n"
    )
    assert _raw(other) == before
    code, out = run_cli("migrate", "--from", f"lmdb:{other}", "--to", f"lmdb:{source}")
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == (
        "autoagent: error: the destination holds 15 records, the source only 6: "
        "it is not a copy of this log\n"
    )


async def test_data_dir_of_a_running_server_is_not_written_into(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "served"
    async with open_data_dir_lock(destination) as lock:
        code, _ = run_cli("migrate", "--from", f"lmdb:{source}", "--to", f"lmdb:{destination}")
    assert code == 2
    assert capsys.readouterr().err == (
        f"autoagent: error: {destination}: a running autoagent serve (pid {lock.pid}) holds "
        "this data dir; stop it before migrating into it\n"
    )
    assert not (destination / "data.mdb").exists()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ("--from", "mysql:x", "--to", "lmdb:y"),
            "--from 'mysql:x' is not a log: expected lmdb:DIR or postgres:URL",
        ),
        (("--from", "lmdb:a", "--to", "lmdb:./a"), "--from and --to name the same log"),
        (
            ("--from", "lmdb:a", "--to", "lmdb:b", "--batch", "0"),
            "--batch 0 is not a number of records (1 or more)",
        ),
        (
            ("--from", "lmdb:{tmp}/missing", "--to", "lmdb:b"),
            "{tmp}/missing: no such data directory",
        ),
    ],
    ids=["unknown-backend", "same-log", "batch-0", "no-source"],
)
def test_unusable_arguments_are_one_line_exit_2(
    argv: tuple[str, ...], error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli("migrate", *(a.format(tmp=tmp_path) for a in argv))
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == f"autoagent: error: {error.format(tmp=tmp_path)}\n"
