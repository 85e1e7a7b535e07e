"""The shipped defaults, through the real server: what a user who runs `make run` gets.

Everything runs in its own process, as a user would run it: `autoagent sim` (the
`realistic` profile x `--time-scale`), and one `autoagent serve` per phase with the
shipped configuration (every default kept: the LLM rate limiter's budgets, sync on, the
local embedder), pointed only at the simulator, a loopback quotes service and a
workspace of its own. A WebSocket client sends the goal list one after another.

Phases:
1. `sequential`: every `[features]` flag off (the baseline);
2. `shipped`: the configuration as shipped (all on): its ratio to the baseline;
3. `warm-up`: a fresh shipped server, once `/healthz` reports nothing warming, asked to
   remember something, then something else: the first such goal against the second, over
   two servers with the goals in both orders (and, as a diagnostic, the same sent the
   moment the server listens: it waits for the load);
4. `zero latency`: the shipped server against the simulator with no latency: the plan
   call's own overhead (its `LLMCallCompleted` latency), and the server's CPU per run
   (of this goal mix, whose remember steps embed with the local model).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from events import LmdbEventLog, RecordedEvent
from server.bench._client import run_goal
from server.bench._config import CHAT_MODEL, SIM_KEY, SIM_KEY_ENV, to_toml
from server.bench._processes import (
    ServiceProcess,
    child_env,
    start_server,
    start_simulator,
)
from server.bench._procfs import cpu_s, rss_mb
from server.bench._world import World
from server.config import Config, FeaturesConfig, config_as_dict

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import Table, wait_until_warm

RESULTS = Path(__file__).resolve().parent / "results" / "default_path.json"
# The mix: quotes + report, three-city time, two calculations + remember.
GOALS = (
    "get the stock prices of NVDA and AAPL and write a report",
    "what time is it in Tokyo, London and New York",
    "what is 17 * 23 + 4 and what is 12 * 12 and remember that the answer is 395",
    "get the stock price of MSFT and write a report",
    "what time is it in Paris and in Sydney",
    "what is 2 ** 10 and what is 99 / 3",
    "remember that my dentist is Dr Lee",
    "get the stock prices of TSLA and AMZN and write a report",
)
MEMORY_GOALS = ("remember that my sister lives in lisbon", "remember that my car is blue")
FLAGS = [f.name for f in dataclasses.fields(FeaturesConfig)]


def phase_config(root: Path, sim_url: str, world_url: str, *, features_on: bool) -> Path:
    """The shipped configuration with only the endpoints and directories changed."""
    settings = config_as_dict(Config(), redact=False)
    if not features_on:
        settings["features"] = dict.fromkeys(FLAGS, False)
    settings["server"] |= {"host": "127.0.0.1", "port": 0}
    settings["store"]["data_dir"] = str(root / "data")
    settings["llm"] |= {
        "provider": "openai",
        "base_url": sim_url,
        "api_key_env": SIM_KEY_ENV,
        "model": CHAT_MODEL,
    }
    (root / "workspace").mkdir(parents=True, exist_ok=True)
    settings["agents"] |= {
        "workspace_roots": [str(root / "workspace")],
        "quote_endpoint": f"{world_url}/quotes",
    }
    path = root / "config.toml"
    path.write_text(to_toml(settings))
    return path


async def start(root: Path, name: str, config: Path) -> tuple[ServiceProcess, int, float]:
    """A server process; its port and the moment it reported listening."""
    env = child_env({SIM_KEY_ENV: SIM_KEY})
    process, port = await start_server(root, name, ["--config", str(config)], env)
    return process, port, trio.current_time()


async def run_goals(port: int, goals: tuple[str, ...]) -> list[float]:
    """Each goal's seconds, send to terminal frame, one after another on one client."""
    seconds = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        for n, goal in enumerate(goals):
            run = await run_goal(ws, goal, n)
            if run.outcome != "RunCompleted":
                raise RuntimeError(f"{goal!r} ended with {run.outcome}")
            seconds.append(run.seconds)
    return seconds


async def llm_calls(data: Path) -> list[RecordedEvent]:
    """The LLMCallCompleted records of a stopped server's log, read directly."""

    def read() -> list[RecordedEvent]:
        log = LmdbEventLog.open(data, readonly=True)
        try:
            records = log.read(0, 1_000_000)
        finally:
            log.close()
        return [r for r in records if r.type == "LLMCallCompleted"]

    return await trio.to_thread.run_sync(read)


async def plan_latencies(data: Path) -> list[float]:
    """The plan calls' latency as the server recorded it (LLMCallCompleted)."""
    calls = await llm_calls(data)
    return [r.data["latency_s"] for r in calls if r.data.get("purpose") == "plan"]


async def model_seconds_per_run(data: Path) -> list[float]:
    """Per run, in order: the model's latency on the run's path, as the server recorded it
    (LLMCallCompleted of the run's stream): the longer of intent and the first plan call
    (they overlap), plus the run's other calls (answer, further plans), summed as if one
    after another. An approximation: a streamed plan overlaps its first steps, and an
    LLM-backed tool's own calls carry no run id (none in the memory goals it is used on).
    What is left of a goal's time is the server's and the tools'."""
    runs: dict[str, list[tuple[str, float]]] = {}
    for r in await llm_calls(data):
        if r.stream.startswith("run-"):
            call = (str(r.data.get("purpose")), float(r.data["latency_s"]))
            runs.setdefault(r.stream, []).append(call)
    return [_on_path(calls) for calls in runs.values()]


def _on_path(calls: list[tuple[str, float]]) -> float:
    intent = sum(s for p, s in calls if p == "intent")
    plans = [s for p, s in calls if p == "plan"]
    rest = sum(s for p, s in calls if p not in ("intent", "plan"))
    return max(intent, plans[0] if plans else 0.0) + sum(plans[1:]) + rest


async def phase_goals(work: Path, name: str, sim_url: str, world: str, on: bool) -> dict[str, Any]:
    root = work / name
    process, port, _ = await start(root, name, phase_config(root, sim_url, world, features_on=on))
    try:
        await wait_until_warm(port)  # both phases measured warm: the warm-up has its own phase
        cpu_before = cpu_s(process.pid)
        seconds = await run_goals(port, GOALS)
        cpu_used = cpu_s(process.pid) - cpu_before
    finally:
        await process.aclose()
    plans = await plan_latencies(root / "data")
    return {
        "goal_seconds": seconds,
        "mean_s": statistics.fmean(seconds),
        "server_cpu_ms_per_run": cpu_used / len(GOALS) * 1000,
        "plan_call_mean_s": statistics.fmean(plans) if plans else None,
    }


async def memory_goals_on_a_fresh_server(
    root: Path, sim_url: str, world: str, goals: tuple[str, ...], once_warm: bool
) -> dict[str, Any]:
    """`goals` one after another on a fresh shipped server, sent once /healthz reports
    warm or the moment it listens; each goal's seconds and its model latency, and the
    server's RSS once warm (or listening) and after the goals (the model has embedded)."""
    config = phase_config(root, sim_url, world, features_on=True)
    process, port, _ = await start(root, root.name, config)
    try:
        warm_after = await wait_until_warm(port) if once_warm else None
        rss_before = rss_mb(process.pid)
        seconds = await run_goals(port, goals)
        rss_after = rss_mb(process.pid)
    finally:
        await process.aclose()
    return {
        "goals": list(goals),
        "warm_reported_after_listening_s": warm_after,
        "goal_seconds": seconds,
        "model_seconds": await model_seconds_per_run(root / "data"),
        "rss_before_goals_mb": rss_before,
        "rss_after_goals_mb": rss_after,
    }


def _first_and_second(servers: list[dict[str, Any]]) -> dict[str, Any]:
    """The goal sent first against the one sent second, each the mean over `servers`."""
    first = statistics.fmean(s["goal_seconds"][0] for s in servers)
    second = statistics.fmean(s["goal_seconds"][1] for s in servers)
    first_model = statistics.fmean(s["model_seconds"][0] for s in servers)
    second_model = statistics.fmean(s["model_seconds"][1] for s in servers)
    return {
        "servers": servers,
        "first_memory_goal_s": first,
        "second_memory_goal_s": second,
        "first_over_second": first / second,
        # Diagnostic: what is left without the model's latency on each goal's path.
        "first_memory_goal_model_s": first_model,
        "second_memory_goal_model_s": second_model,
        "first_memory_goal_rest_s": first - first_model,
        "second_memory_goal_rest_s": second - second_model,
    }


async def phase_warm_up(work: Path, sim_url: str, world: str) -> dict[str, Any]:
    """Memory goals on fresh shipped servers.

    Once /healthz reports warm (the target): two servers, the two goals in one order on
    the first and in the other order on the second, so that each goal is sent once first
    and once second; the mean of the goals sent first against the mean of those sent
    second. The goals differ (and so do the simulated model's latencies for them): with
    one order only, the comparison measured which sentence is longer. As a diagnostic,
    the goals sent the moment a server listens (it waits for the model to load).
    """
    orders = (MEMORY_GOALS, MEMORY_GOALS[::-1])
    once_warm = [
        await memory_goals_on_a_fresh_server(
            work / f"warm-up-once-warm-{n}", sim_url, world, order, once_warm=True
        )
        for n, order in enumerate(orders)
    ]
    at_once = await memory_goals_on_a_fresh_server(
        work / "warm-up-at-once", sim_url, world, MEMORY_GOALS, once_warm=False
    )
    return {"once_warm": _first_and_second(once_warm), "at_once": _first_and_second([at_once])}


async def measure(work: Path, time_scale: float) -> dict[str, Any]:
    result: dict[str, Any] = {"time_scale": time_scale, "goals": list(GOALS)}
    async with trio.open_nursery() as nursery:
        world_port = await nursery.start(World(time_scale).serve)
        world = f"http://127.0.0.1:{world_port}"
        argv = ["--latency-profile", "realistic", "--time-scale", str(time_scale)]
        sim, sim_url = await start_simulator(work, argv, child_env())
        try:
            result["sequential"] = await phase_goals(work, "sequential", sim_url, world, False)
            result["shipped"] = await phase_goals(work, "shipped", sim_url, world, True)
            result["warm_up"] = await phase_warm_up(work, sim_url, world)
        finally:
            await sim.aclose()
        zero, zero_url = await start_simulator(work, ["--latency-profile", "none"], child_env())
        try:
            result["zero_latency"] = await phase_goals(work, "zero", zero_url, world, True)
        finally:
            await zero.aclose()
        nursery.cancel_scope.cancel()
    result["ratio_shipped_to_sequential"] = (
        result["shipped"]["mean_s"] / result["sequential"]["mean_s"]
    )
    return result


def report(result: dict[str, Any]) -> list[Table]:
    seq, shipped, zero, warm = (
        result["sequential"],
        result["shipped"],
        result["zero_latency"],
        result["warm_up"],
    )
    goals = Table(
        f"Eight goals one after another, shipped config, simulator realistic x "
        f"{result['time_scale']}",
        ["phase", "mean s", "plan call mean s", "server CPU ms/run"],
        [
            [
                name,
                f"{p['mean_s']:.3f}",
                f"{p['plan_call_mean_s']:.3f}",
                f"{p['server_cpu_ms_per_run']:.1f}",
            ]
            for name, p in (("sequential", seq), ("shipped", shipped), ("zero latency", zero))
        ],
    )
    targets = Table(
        "Targets",
        ["target", "measured", "met"],
        [
            [
                "shipped <= 0.60x sequential",
                f"{result['ratio_shipped_to_sequential']:.3f}",
                "yes" if result["ratio_shipped_to_sequential"] <= 0.60 else "NO",
            ],
            [
                "plan call overhead at zero latency < 20 ms",
                f"{zero['plan_call_mean_s'] * 1000:.1f} ms",
                "yes" if zero["plan_call_mean_s"] < 0.020 else "NO",
            ],
            [
                "first memory goal once warm no slower than the second",
                f"{warm['once_warm']['first_memory_goal_s']:.3f} s vs "
                f"{warm['once_warm']['second_memory_goal_s']:.3f} s",
                "yes" if warm["once_warm"]["first_over_second"] <= 1.0 else "NO",
            ],
            [
                "(diagnostic) the same without the model's latency on their path",
                f"{warm['once_warm']['first_memory_goal_rest_s']:.3f} s vs "
                f"{warm['once_warm']['second_memory_goal_rest_s']:.3f} s",
                "-",
            ],
            [
                "(diagnostic) first memory goal sent as the server listens",
                f"{warm['at_once']['first_memory_goal_s']:.2f} s vs "
                f"{warm['at_once']['second_memory_goal_s']:.2f} s",
                "-",
            ],
            [
                "(diagnostic) server RSS once warm -> after two memory goals",
                ", ".join(
                    f"{server['rss_before_goals_mb']:.0f} -> {server['rss_after_goals_mb']:.0f} MB"
                    for server in warm["once_warm"]["servers"]
                ),
                "-",
            ],
            [
                "server CPU per run <= 5 ms (zero latency)",
                f"{zero['server_cpu_ms_per_run']:.1f} ms",
                "yes" if zero["server_cpu_ms_per_run"] <= 5 else "NO",
            ],
        ],
    )
    return [goals, targets]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__, RESULTS, work_dir_help="parent of the temp dir")
    parser.add_argument("--time-scale", type=float, default=0.2, help="simulated latency x this")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = result_header("bench_default_path", args.quick, argv, Path.cwd())
    with scratch_dir(args.work_dir, "default-path-") as work:
        result |= trio.run(measure, work, args.time_scale)
    finish(result, args.out, report, seconds=time.perf_counter() - started, markdown=args.markdown)


if __name__ == "__main__":
    main()
