"""`autoagent bench`: the seed's performance table, measured end to end through real servers.

    autoagent bench [--scenario NAME] [--requests N] [--concurrency C] [--time-scale X]
                    [--seed N] [--json | --markdown]

Starts the simulator (realistic latency x the time scale) and two servers on loopback
in temporary directories, the sequential baseline (every `[features]` flag off) and
the optimized server (every flag on), one after the other; drives the same requests
through real WebSocket clients, has each server index 100 documents, and prints the
scorecard: average, P95 and P99 response time, LLM calls and tokens per request,
embedding time for 100 documents and server peak RSS, for baseline and optimized, their
ratio and the seed's target. `--json` writes the same as JSON on stdout. Progress goes
to stderr. `--data-dir` is where the temporary directories go (default: the system's).
How each figure is measured: `_run.py`, `_log.py`, `_scorecard.py`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import trio

from server._render import dumps
from server.bench._run import BenchOptions, run_bench
from server.bench._scenarios import DEFAULT_SCENARIO, DEFAULT_SEED, SCENARIOS, scenario_named
from server.bench._scorecard import render
from server.config import Config
from server.errors import InvalidBenchOption

DEFAULT_REQUESTS = 200
DEFAULT_CONCURRENCY = 8
DEFAULT_TIME_SCALE = 1.0
DOCUMENTS = 100
MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 1_000


def add_bench_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Register `bench` and its flags on the CLI's subcommands."""
    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="baseline vs optimized server, end to end: the performance scorecard",
        description=(
            "Start the simulator and two servers (every [features] flag off, then all on), "
            "drive the same requests through WebSocket clients and print the scorecard. "
            "--config is both servers' base configuration; --data-dir is where the "
            "temporary directories go (default: the system's)."
        ),
    )
    names = ", ".join(SCENARIOS)
    scenario_help = f"workload: {names} (default {DEFAULT_SCENARIO})"
    bench.add_argument("--scenario", default=DEFAULT_SCENARIO, help=scenario_help)
    bench.add_argument(
        "--requests", default=str(DEFAULT_REQUESTS), metavar="N", help="requests per server"
    )
    bench.add_argument(
        "--concurrency", default=str(DEFAULT_CONCURRENCY), metavar="C", help="WebSocket clients"
    )
    bench.add_argument(
        "--time-scale",
        default=str(DEFAULT_TIME_SCALE),
        metavar="X",
        help="simulated latencies x this (1: realistic)",
    )
    bench.add_argument(
        "--seed", default=str(DEFAULT_SEED), metavar="N", help="order of requests, latencies"
    )
    output = bench.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the scorecard as JSON on stdout")
    output.add_argument("--markdown", action="store_true", help="the tables as Markdown")
    return bench


def _whole(flag: str, text: str, low: int, high: int) -> int:
    expected = f"a whole number from {low:,} to {high:,}"
    try:
        value = int(text)
    except ValueError:
        raise InvalidBenchOption(flag, expected, text) from None
    if not low <= value <= high:
        raise InvalidBenchOption(flag, expected, text)
    return value


def _time_scale(text: str) -> float:
    expected = "a number above 0 and at most 100"
    try:
        value = float(text)
    except ValueError:
        raise InvalidBenchOption("--time-scale", expected, text) from None
    if not (math.isfinite(value) and 0 < value <= 100):
        raise InvalidBenchOption("--time-scale", expected, text)
    return value


def bench_options(args: argparse.Namespace) -> BenchOptions:
    """The flags, checked up front; InvalidBenchOption or UnknownScenario names the bad one."""
    work_parent = Path(args.data_dir).expanduser() if args.data_dir else None
    if work_parent is not None and not work_parent.is_dir():
        raise InvalidBenchOption("--data-dir", "an existing directory", str(args.data_dir))
    return BenchOptions(
        scenario=scenario_named(args.scenario),
        requests=_whole("--requests", args.requests, 1, MAX_REQUESTS),
        concurrency=_whole("--concurrency", args.concurrency, 1, MAX_CONCURRENCY),
        time_scale=_time_scale(args.time_scale),
        seed=_whole("--seed", args.seed, 0, 2**63 - 1),
        documents=DOCUMENTS,
        work_parent=work_parent,
    )


def bench_command(
    args: argparse.Namespace, config: Config, out: TextIO, err: TextIO | None = None
) -> int:
    """Run the bench with the loaded `config` as both servers' base; print the scorecard."""
    options = bench_options(args)
    err = err or sys.stderr
    err.write(
        f"bench: {options.command()} (scenario {options.scenario.name!r}: "
        f"{options.scenario.description})\n"
    )
    card = trio.run(run_bench, options, config, err)
    if args.json:
        out.write(dumps(card, indent=2) + "\n")
        return 0
    out.write(f"{card['command']}  ({card['seconds']:.0f} s)\n\n")
    out.write(render(card["rows"], markdown=args.markdown) + "\n\n")
    out.write("\n".join(phase_notes(card)) + "\n")
    return 0


def phase_notes(card: Mapping[str, Any]) -> list[str]:
    """One line per server: what finished, how long it took, what the CPUs were doing."""
    lines = []
    for phase, details in card["phases"].items():
        requests, cpu = details["requests"], details["cpu_percent_during_requests"]
        gaps = details["client_minus_server_s"]
        outcomes = ", ".join(f"{n} {kind}" for kind, n in sorted(requests["outcomes"].items()))
        lines.append(
            f"{phase}: {requests['finished']}/{requests['sent']} requests ({outcomes}) in "
            f"{requests['wall_s']:.1f} s; CPU % during them: server {_percent(cpu['server'])}"
            f" (main thread waiting for a CPU {_percent(cpu['server_main_thread_waiting_for_cpu'])}"
            f"), simulator {_percent(cpu['simulator'])}, "
            f"bench {_percent(cpu['bench_clients_and_world'])}; the client's clock adds "
            f"{_ms(gaps['send_to_run_requested_mean'])} before RunRequested and "
            f"{_ms(gaps['terminal_event_to_client_mean'])} after the terminal event (means)"
        )
    load = card["machine"]
    lines.append(f"load average at start {load['loadavg_start']}, at end {load['loadavg_end']}")
    return lines


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{1000 * seconds:.0f} ms"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"
