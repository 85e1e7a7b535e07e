"""`autoagent sim`: the offline model as an OpenAI-compatible endpoint on loopback, and
the bench's world of quotes and web pages on the same port.

Point the server (or any OpenAI client) at the printed URL with `llm.provider = "openai"`
and `llm.base_url = <url>/v1` to exercise the real client path with no network: latency
profiles, injected faults and rate limits come from the flags. The same port answers
`GET /quotes?symbols=...` (for `agents.quote_endpoint`) and the pages under `/news/`
(for the web tool, with `agents.web_allow = ["127.0.0.1"]`), so every tool can be tried
offline. The world answers at once, or with its own made-up latency under
`--latency-profile realistic` (times `--time-scale`).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import TextIO

import trio

from agents import Simulator, SimulatorOptions
from agents.offline import DEFAULT_MODELS, LATENCY_PROFILES
from server.bench import World
from server.cli._ports import reporting_bind_errors
from server.config import Config

DEFAULT_PORT = 8766


def add_sim_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Register `sim` and its flags on the CLI's subcommands."""
    sim = commands.add_parser(
        "sim",
        parents=[common],
        help="serve the offline model as an OpenAI-compatible API, and quotes and web pages",
        description=(
            f"Serve, on one port (default {DEFAULT_PORT}): the offline model as an "
            "OpenAI-compatible API under /v1 (llm.provider = 'openai', llm.base_url = "
            "'http://127.0.0.1:PORT/v1'), quotes at /quotes (agents.quote_endpoint = "
            "'http://127.0.0.1:PORT/quotes') and web pages under /news/ (agents.web_allow = "
            "['127.0.0.1']). Runs until Ctrl-C."
        ),
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument(
        "--port",
        type=_bounded(int, 0, 65535),
        default=DEFAULT_PORT,
        help=f"port to bind, 0 for any free one (default {DEFAULT_PORT})",
    )
    sim.add_argument(
        "--latency-profile",
        choices=LATENCY_PROFILES,
        default="none",
        help="none: answer at once (default); realistic: as a hosted model would",
    )
    sim.add_argument(
        "--time-scale",
        type=_bounded(float, 0.0, None),
        default=1.0,
        metavar="X",
        help="simulated latencies x this (default 1)",
    )
    sim.add_argument(
        "--fault-rate",
        type=_bounded(float, 0.0, 1.0),
        default=0.0,
        metavar="R",
        help="share of model calls that fail on purpose: 429, 500, slow, bad JSON (default 0)",
    )
    sim.add_argument(
        "--seed", type=int, default=None, metavar="N", help="seed of latencies and faults"
    )
    sim.add_argument("--rpm", type=_bounded(int, 1, None), default=None, help="requests/min limit")
    sim.add_argument("--tpm", type=_bounded(int, 1, None), default=None, help="tokens/min limit")
    sim.add_argument("--api-key", default=None, help="require this bearer key (else 401)")
    sim.add_argument(
        "--embedding-dim",
        type=_bounded(int, 1, 8192),
        default=256,
        metavar="D",
        help="length of the vectors /v1/embeddings answers (default 256)",
    )
    return sim


def _bounded(
    kind: Callable[[str], float], low: float, high: float | None
) -> Callable[[str], float]:
    """An argparse type: a number of `kind` within [low, high]; bad values exit 2 with usage."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def simulator_options(args: argparse.Namespace, config: Config) -> SimulatorOptions:
    """The flags as options; the configured model is served too, so `[llm]` works as is."""
    models = tuple(dict.fromkeys((*DEFAULT_MODELS, config.llm.model)))
    return SimulatorOptions(
        host=args.host,
        port=args.port,
        latency_profile=args.latency_profile,
        time_scale=args.time_scale,
        fault_rate=args.fault_rate,
        seed=args.seed,
        rpm_limit=args.rpm,
        tpm_limit=args.tpm,
        api_key=args.api_key,
        models=models,
        embedding_dim=args.embedding_dim,
    )


def run_sim(args: argparse.Namespace, config: Config, out: TextIO = sys.stdout) -> int:
    """Serve until SIGINT/SIGTERM; prints the base URL once listening. Returns the exit code."""
    return trio.run(_serve, simulator_options(args, config), out)


def simulator_with_world(options: SimulatorOptions) -> Simulator:
    """The simulator with the bench's world behind it on the same port."""
    world_scale = options.time_scale if options.latency_profile == "realistic" else 0.0
    return Simulator(options, fallback=World(world_scale).respond)


async def _serve(options: SimulatorOptions, out: TextIO) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            with reporting_bind_errors(options.host, options.port):
                port = await nursery.start(simulator_with_world(options).serve)
            out.write(f"autoagent sim: {_describe(options, port)}; Ctrl-C to stop\n")
            out.write(f"autoagent sim: {_world_lines(options.host, port)}\n")
            out.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    out.write("autoagent sim: stopped\n")
    out.flush()
    return 0


def _describe(options: SimulatorOptions, port: int) -> str:
    limited = options.rpm_limit or options.tpm_limit
    limits = f", limits {options.rpm_limit or '-'} rpm / {options.tpm_limit or '-'} tpm"
    return (
        f"serving the offline model at http://{options.host}:{port}/v1 "
        f"(latency {options.latency_profile} x{options.time_scale:g}, "
        f"fault rate {options.fault_rate:g}{limits if limited else ''})"
    )


def _world_lines(host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    return (
        f"quotes at {base}/quotes?symbols=NVDA,AAPL (agents.quote_endpoint = "
        f'"{base}/quotes"), web pages at {base}/ and {base}/news/<topic> '
        f'(agents.web_allow = ["{host}"])'
    )
