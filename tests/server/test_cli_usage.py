"""The `autoagent` command line's usage: help for every flag, `--version`, a subcommand's
own usage on a bad flag, `--data-dir` / `--config` before or after the subcommand, and
`events tail -n` with `--after`.

In-process `main()` calls, as a shell would make them (outside any event loop).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from events import RunRequested, StepStarted, StoreOptions, open_event_store
from server.cli._main import build_parser, main


def run_cli(*argv: str) -> tuple[int, str]:
    """Exit code and stdout; argparse's own exits (usage, --version) give their code."""
    out = io.StringIO()
    try:
        code = main(list(argv), out=out)
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        code = exc.code
    return code, out.getvalue()


async def _fill(path: Path, events: int) -> None:
    async with open_event_store(path, StoreOptions(sync=False)) as store:
        await store.append("run-1", [RunRequested(run_id="1", session_id="s", goal="g")])
        for i in range(2, events + 1):
            await store.append("run-1", [StepStarted(run_id="1", step_id=f"s{i}")])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding 30 events: RunRequested at 1, then StepStarted s2..s30."""
    path = tmp_path_factory.mktemp("usage") / "data"
    trio.run(_fill, path, 30)
    return path


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


PARSERS = dict(_parsers(build_parser(), "autoagent"))


@pytest.mark.parametrize("command", sorted(PARSERS), ids=sorted(PARSERS))
def test_every_argument_of_every_command_has_help(command: str) -> None:
    parser = PARSERS[command]
    missing = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest for choice in action._choices_actions if choice.help}
            assert described == set(action.choices)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_cli("--version")
    assert code == 0
    assert capsys.readouterr().out == f"autoagent {importlib.metadata.version('autoagent')}\n"


@pytest.mark.parametrize(
    "argv",
    [("runs", "list", "--bogus"), ("events", "tail", "--bogus"), ("audit", "--bogus")],
    ids=["runs-list", "events-tail", "audit"],
)
def test_unknown_flag_prints_the_subcommands_usage_and_exits_2(
    data_dir: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(*argv, "--data-dir", str(data_dir))
    assert (code, out) == (2, "")
    err = capsys.readouterr().err
    command = " ".join(argv[:-1])
    assert err.startswith(f"usage: autoagent {command} [-h]")
    assert err.endswith(f"autoagent {command}: error: unrecognized arguments: --bogus\n")


@pytest.mark.parametrize(
    "argv",
    [
        ("--data-dir", "{data}", "events", "tail", "--json"),
        ("events", "tail", "--json", "--data-dir", "{data}"),
        ("--data-dir", "{elsewhere}", "events", "tail", "--json", "--data-dir", "{data}"),
    ],
    ids=["before", "after", "after-wins"],
)
def test_data_dir_is_accepted_before_and_after_the_subcommand(
    data_dir: Path, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    names = {"data": str(data_dir), "elsewhere": str(tmp_path / "nowhere")}
    code, out = run_cli(*(arg.format(**names) for arg in argv))
    assert code == 0
    assert [json.loads(line)["position"] for line in out.splitlines()] == list(range(11, 31))


def test_config_is_accepted_before_the_subcommand(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[store]\ndata_dir = {json.dumps(str(data_dir))}\n")
    code, out = run_cli("--config", str(config), "stats", "--json")
    assert code == 0
    assert json.loads(out)["head_position"] == 30
    config.write_text("[store]\nsyncc = true\n")
    code, _ = run_cli("--config", str(config), "stats")
    assert code == 2
    assert "store.syncc" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "positions"),
    [
        (("--after", "10", "-n", "2"), [11, 12]),
        (("--after", "10", "--lines", "3"), [11, 12, 13]),
        (("--after", "27"), [28, 29, 30]),
        (("-n", "2"), [29, 30]),
        (("--after", "10", "-n", "0"), []),
        (("--type", "RunRequested", "-n", "5"), [1]),
        (("--stream", "run-1", "-n", "2"), [29, 30]),
        (("--stream", "run-1", "--after", "4", "-n", "2"), [5, 6]),
    ],
    ids=["after-n", "after-lines", "after-all", "last-n", "n-zero", "type", "stream", "both"],
)
def test_events_tail_honours_n_with_and_without_after(
    data_dir: Path, flags: tuple[str, ...], positions: list[int]
) -> None:
    code, out = run_cli("events", "tail", *flags, "--json", "--data-dir", str(data_dir))
    assert code == 0
    assert [json.loads(line)["position"] for line in out.splitlines()] == positions


def test_events_tail_with_negative_n_is_one_line_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli("events", "tail", "-n", "-1", "--data-dir", str(data_dir))
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == (
        "autoagent: error: -n -1 is not a number of events (0 or more)\n"
    )
