"""`autoagent sim`: its flags and what they become (the command runs until Ctrl-C)."""

from __future__ import annotations

import argparse
import io

import pytest
import trio

from agents import SimulatorOptions
from server.app import llm_options
from server.cli._sim import _serve, add_sim_parser, simulator_options
from server.config import load_config


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autoagent")
    commands = parser.add_subparsers(dest="command")
    add_sim_parser(commands, argparse.ArgumentParser(add_help=False))
    return parser.parse_args(["sim", *argv])


def test_flags_become_simulator_options() -> None:
    args = parse(
        "--port",
        "0",
        "--latency-profile",
        "realistic",
        "--time-scale",
        "0.5",
        "--fault-rate",
        "0.2",
        "--seed",
        "7",
        "--rpm",
        "600",
        "--api-key",
        "k",
    )
    options = simulator_options(args, load_config(env={}))
    assert (options.port, options.latency_profile, options.time_scale) == (0, "realistic", 0.5)
    assert (options.fault_rate, options.seed, options.rpm_limit, options.tpm_limit) == (
        0.2,
        7,
        600,
        None,
    )
    assert options.api_key == "k" and options.host == "127.0.0.1"
    assert "gpt-4o-mini" in options.models  # the configured llm.model is served


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--fault-rate", "1.5"], "must be between 0 and 1, got 1.5"),
        (["--time-scale", "-1"], "must be at least 0, got -1"),
        (["--latency-profile", "slow"], "invalid choice: 'slow'"),
    ],
    ids=["fault-rate", "time-scale", "profile"],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert problem in capsys.readouterr().err


async def test_serve_prints_the_url_and_stops_when_cancelled() -> None:
    out = io.StringIO()
    with trio.fail_after(10):
        with trio.move_on_after(0.5):
            await _serve(SimulatorOptions(port=0), out)
    assert out.getvalue().startswith(
        "autoagent sim: serving the offline model at http://127.0.0.1:"
    )
    assert "/v1 (latency none x1, fault rate 0)" in out.getvalue()


def test_llm_config_maps_onto_llm_options() -> None:
    config = load_config(
        env={"AUTOAGENT_LLM__PROVIDER": "openai", "AUTOAGENT_LLM__RPM_LIMIT": "60"}
    )
    options = llm_options(config.llm)
    assert (options.provider, options.rpm_limit, options.model) == ("openai", 60, "gpt-4o-mini")
