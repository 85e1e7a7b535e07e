"""The `autoagent` command line over a real store: exit codes, output, errors as one line."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from events import PlanCreated, RunRequested, StepStarted, StoreOptions, open_event_store
from server.cli._main import main

ROOT = Path(__file__).resolve().parents[2]


async def _fill(path: Path, runs: int = 3) -> None:
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        for i in range(runs):
            stream = f"run-{i}"
            await store.append(stream, [RunRequested(run_id=str(i), session_id="s", goal="g")])
            await store.append(stream, [PlanCreated(run_id=str(i), steps=[])])
            await store.append(stream, [StepStarted(run_id=str(i), step_id="a")])


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    await _fill(path)
    return path


async def test_audit_of_intact_store_exits_0(data_dir: Path) -> None:
    code, out = run_cli("audit", "--data-dir", str(data_dir))
    assert code == 0
    assert "9 events checked" in out


async def test_audit_json_reports_ok(data_dir: Path) -> None:
    code, out = run_cli("audit", "--json", "--data-dir", str(data_dir))
    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "checked": 9,
        "head_position": 9,
        "first_bad_position": None,
        "problem": None,
    }


async def test_audit_of_altered_record_exits_1_naming_position(tmp_path: Path) -> None:
    path = tmp_path / "data"
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        await store.append("run-1", [RunRequested(run_id="1", session_id="s", goal="first")])
        await store.append("run-1", [RunRequested(run_id="1", session_id="s", goal="MARKER-XYZ")])
        await store.append("run-1", [RunRequested(run_id="1", session_id="s", goal="third")])
    raw = bytearray((path / "data.mdb").read_bytes())
    # LMDB is copy-on-write: stale copies of the page may remain, so alter them all.
    offset = raw.find(b"MARKER-XYZ")
    assert offset > 0
    while offset > 0:
        raw[offset] ^= 0x01
        offset = raw.find(b"MARKER-XYZ", offset + 1)
    (path / "data.mdb").write_bytes(bytes(raw))
    code, out = run_cli("audit", "--json", "--data-dir", str(path))
    assert code == 1
    report = json.loads(out)
    assert report["first_bad_position"] == 2
    assert "hash" in report["problem"]


async def test_events_show_prints_one_event_as_json(data_dir: Path) -> None:
    code, out = run_cli("events", "show", "2", "--json", "--data-dir", str(data_dir))
    assert code == 0
    shown = json.loads(out)
    assert (shown["position"], shown["type"], shown["stream"]) == (2, "PlanCreated", "run-0")


async def test_events_show_out_of_range_is_one_line_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_cli("events", "show", "99", "--data-dir", str(data_dir))
    assert code == 2
    err = capsys.readouterr().err
    assert err == "autoagent: error: no event at position 99 (head position is 9)\n"


@pytest.mark.parametrize("kind", ["missing", "empty"], ids=["missing-dir", "not-a-store"])
def test_commands_on_a_non_store_fail_with_one_line(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nowhere"
    if kind == "empty":
        path.mkdir()
    code, _ = run_cli("stats", "--data-dir", str(path))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("autoagent: error: ") and err.count("\n") == 1
    assert str(path) in err


async def test_events_export_writes_json_lines_after_position(data_dir: Path) -> None:
    code, out = run_cli("events", "export", "--after", "6", "--data-dir", str(data_dir))
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["position"] for line in lines] == [7, 8, 9]


async def test_events_tail_filters_by_type_and_stream(data_dir: Path) -> None:
    code, out = run_cli(
        "events",
        "tail",
        "--type",
        "StepStarted",
        "--stream",
        "run-1",
        "--json",
        "--data-dir",
        str(data_dir),
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["stream"], r["type"]) for r in rows] == [("run-1", "StepStarted")]


async def test_events_tail_shows_last_lines(data_dir: Path) -> None:
    code, out = run_cli("events", "tail", "-n", "2", "--json", "--data-dir", str(data_dir))
    assert code == 0
    assert [json.loads(line)["position"] for line in out.splitlines()] == [8, 9]


async def test_stats_json_counts_events_by_type(data_dir: Path) -> None:
    config = data_dir.parent / "config.toml"
    config.write_text('[server]\ntokens = ["s3cret-0123456789abcdef0123456789ab"]\n')
    code, out = run_cli("stats", "--json", "--config", str(config), "--data-dir", str(data_dir))
    assert code == 0
    stats = json.loads(out)
    assert stats["head_position"] == 9
    assert stats["streams"] == 3
    assert stats["events_by_type"] == {"PlanCreated": 3, "RunRequested": 3, "StepStarted": 3}
    assert stats["config"]["server"]["tokens"] == ["<redacted>"]
    assert "s3cret" not in out


def test_bad_config_key_is_one_line_naming_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[store]\nsyncc = true\n")
    code, _ = run_cli("stats", "--config", str(config), "--data-dir", str(tmp_path))
    assert code == 2
    err = capsys.readouterr().err
    assert "store.syncc" in err and str(config) in err and err.count("\n") == 1


def _spawn(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "server", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_serve_opens_store_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    proc = _spawn("serve", env={"AUTOAGENT_DATA_DIR": str(tmp_path / "data")})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "event store open at" in first and str(tmp_path / "data") in first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out
    assert (tmp_path / "data" / "data.mdb").exists()


@pytest.mark.slow
async def test_tail_follow_sees_events_appended_by_a_running_writer(tmp_path: Path) -> None:
    path = tmp_path / "data"
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        await store.append("run-1", [StepStarted(run_id="1", step_id="before")])
        proc = _spawn("events", "tail", "--follow", "--json", "--data-dir", str(path))
        try:
            assert proc.stdout is not None
            seen = []
            with trio.fail_after(20):
                seen.append(json.loads(await trio.to_thread.run_sync(proc.stdout.readline)))
                await store.append("run-1", [StepStarted(run_id="1", step_id="after")])
                seen.append(json.loads(await trio.to_thread.run_sync(proc.stdout.readline)))
        finally:
            proc.kill()
            proc.communicate()
    assert [s["data"]["step_id"] for s in seen] == ["before", "after"]


HOSTILE_ARGUMENTS = [
    ("events", "show", "abc"),
    ("events", "show", "-5"),
    ("events", "show", "99999999999999999999999"),
    ("events", "tail", "--after", "-3"),
    ("events", "tail", "--after", "1e9"),
    ("runs", "show", ""),
    ("runs", "show", "x" * 300),
    ("runs", "list", "--status", "bogus"),
    ("sessions", "show", "nope"),
    ("bench", "--requests", "-3"),
    ("run", ""),
    ("documents", "index", "/etc"),
    ("replay", "--projection", "nope"),
    ("serve", "--port", "70000"),
]


@pytest.fixture(scope="module")
def filled_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "data"
    trio.run(_fill, path)
    return path


HOSTILE_IDS = [" ".join(argv)[:30] for argv in HOSTILE_ARGUMENTS]


@pytest.mark.parametrize("argv", HOSTILE_ARGUMENTS, ids=HOSTILE_IDS)
def test_hostile_arguments_end_in_one_error_line_and_exit_2(
    filled_data_dir: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Commands that run Trio themselves run here outside any event loop, as from a shell."""
    try:
        code, _ = run_cli(*argv, "--data-dir", str(filled_data_dir))
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "error: " in err.strip().splitlines()[-1]
