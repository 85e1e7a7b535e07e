"""LLM layer benchmark: the pooled client and the rate limiter, against the simulator.

From the project root:

    .venv/bin/python -m tests.performance.bench_llm [--quick] [--out PATH] [--markdown]

The simulator runs in a child process (this module with `--serve-sim`), so client and
server do not share one Trio loop or one core. Two measurements:

1. pooling: 200 concurrent chat calls through one `OpenAIProvider` (one pooled httpx2
   client, `max_connections = llm.max_parallel_calls`), against the seed's approach of
   a fresh `AsyncOpenAI` client per call. Simulator latency: `realistic` profile scaled
   down (planner median 1.5 s x `time_scale`). Reports TCP connections the simulator
   accepted, wall time, calls/s and latency percentiles.
2. limiter: N calls at a budget of 600 RPM against a simulator that itself allows
   600 RPM (and answers 429 beyond it): achieved rate vs the budget and the 429s,
   against the cookbook approach (send as fast as allowed, sleep on 429 for its
   Retry-After, send again).

Writes JSON (default `tests/performance/results/bench_llm.json`) and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import trio
from openai.types.chat import ChatCompletionMessageParam

from agents import (
    LLMOptions,
    OpenAIProvider,
    PromptRepository,
    Simulator,
    SimulatorOptions,
    plan_messages,
)
from agents.llm._rate_limiter import retry_after_from

from ._cli import make_parser, publish
from ._common import RESULTS_DIR, Table, machine_info, percentile

DEFAULT_OUT = RESULTS_DIR / "bench_llm.json"
KEY = "sk-bench"
MODEL = "autoagent-offline"
MESSAGES = plan_messages(PromptRepository(), "what is 17 * 23 + 4", ())
SDK_MESSAGES = cast("list[ChatCompletionMessageParam]", MESSAGES)


@dataclass(frozen=True, slots=True)
class Sizes:
    pool_calls: int = 200
    pool_sizes: tuple[int, ...] = (8, 32)
    pool_time_scale: float = 0.1
    limiter_calls: int = 600
    limiter_rpm: int = 600
    limiter_parallel: int = 16


QUICK = Sizes(pool_sizes=(8,), limiter_calls=150)


# --- the simulator in a child process -------------------------------------------------


@asynccontextmanager
async def simulator_process(options: SimulatorOptions) -> AsyncIterator[str]:
    """Run a simulator in a child process; yields its base URL, stops it on exit."""
    command = [sys.executable, "-m", "tests.performance.bench_llm", "--serve-sim"]
    process = await trio.lowlevel.open_process(
        [*command, json.dumps(asdict(options))],
        stdout=-1,  # subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await _read_line(process.stdout)
        yield f"http://127.0.0.1:{int(line)}/v1"
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    with trio.fail_after(30):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(64)
            if not chunk:
                raise RuntimeError("the simulator process exited before reporting its port")
            data += chunk
    return data.decode().strip()


def serve_sim(options_json: str) -> None:
    """Child process: serve a simulator, print its port, run until terminated."""
    fields = json.loads(options_json)
    fields["faults"], fields["models"] = tuple(fields["faults"]), tuple(fields["models"])
    simulator = Simulator(SimulatorOptions(**fields))

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            print(port, flush=True)

    trio.run(run)


def _control_client() -> httpx.AsyncClient:
    """For /_sim/stats: one connection kept open all along, so it is counted only once."""
    return httpx.AsyncClient(limits=httpx.Limits(keepalive_expiry=3600))


async def sim_stats(control: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await control.get(url.removesuffix("/v1") + "/_sim/stats")
    stats: dict[str, Any] = response.json()
    return stats


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    return int(after[key]) - int(before[key])


# --- 1. pooled client vs a fresh client per call --------------------------------------


def _options(url: str, **overrides: Any) -> LLMOptions:
    """A provider against the simulator; the limiter is out of the way unless overridden."""
    base = LLMOptions(
        provider="openai",
        base_url=url,
        api_key_env="BENCH_KEY",
        model=MODEL,
        timeout_s=60.0,
        max_retries=2,
        rpm_limit=1_000_000,
        tpm_limit=10**9,
    )
    return dataclasses.replace(base, **overrides)


async def _timed_batch(calls: int, one: Any) -> tuple[float, list[float]]:
    """Run `calls` concurrent calls of `one()`; wall seconds and each call's latency."""
    latencies: list[float] = []

    async def timed_one() -> None:
        start = trio.current_time()
        await one()
        latencies.append(trio.current_time() - start)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(timed_one)
    return trio.current_time() - start, latencies


async def _pooled(url: str, sizes: Sizes, pool_size: int) -> tuple[float, list[float]]:
    provider = OpenAIProvider(_options(url, max_parallel_calls=pool_size), KEY)
    try:
        return await _timed_batch(
            sizes.pool_calls, lambda: provider.chat_json(MESSAGES, purpose="plan")
        )
    finally:
        await provider.aclose()


async def _fresh_client_call(url: str) -> None:
    """The seed's way: a new client (and so a new connection pool) for every call."""
    async with openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=2) as client:
        await client.chat.completions.create(
            model=MODEL,
            messages=SDK_MESSAGES,
            response_format={"type": "json_object"},
        )


async def _pool_case(name: str, url: str, control: httpx.AsyncClient, run: Any) -> dict[str, Any]:
    before = await sim_stats(control, url)
    wall, latencies = await run()
    after = await sim_stats(control, url)
    return {
        "approach": name,
        "calls": len(latencies),
        "wall_s": wall,
        "calls_per_s": len(latencies) / wall,
        "tcp_connections_opened": _delta(after, before, "connections_opened"),
        "max_requests_in_flight_at_server": after["max_in_flight"],
        "latency_ms": {
            "p50": percentile(latencies, 50) * 1000,
            "p95": percentile(latencies, 95) * 1000,
            "p99": percentile(latencies, 99) * 1000,
        },
    }


async def bench_pooling(sizes: Sizes) -> dict[str, Any]:
    options = SimulatorOptions(
        latency_profile="realistic", time_scale=sizes.pool_time_scale, seed=1, api_key=KEY
    )
    results = []
    async with simulator_process(options) as url, _control_client() as control:
        for size in sizes.pool_sizes:
            run = functools.partial(_pooled, url, sizes, size)
            results.append(await _pool_case(f"pooled_{size}", url, control, run) | {"pool": size})
        fresh = await _pool_case(
            "fresh_client_per_call",
            url,
            control,
            lambda: _timed_batch(sizes.pool_calls, lambda: _fresh_client_call(url)),
        )
    pooled = results[0]
    return {
        "simulator": {"latency_profile": "realistic", "time_scale": sizes.pool_time_scale},
        "results": [*results, fresh],
        "targets": {
            "connections_within_pool_size": all(
                r["tcp_connections_opened"] <= r["pool"] for r in results
            ),
            "throughput_ratio_pooled_vs_fresh": pooled["calls_per_s"] / fresh["calls_per_s"],
            "connections_ratio_fresh_vs_pooled": fresh["tcp_connections_opened"]
            / max(1, pooled["tcp_connections_opened"]),
        },
    }


# --- 2. the limiter vs sleeping on 429 ------------------------------------------------


async def _limited(url: str, sizes: Sizes) -> tuple[float, list[float], int | None]:
    """Our provider at the budget: start time and each call's completion time.

    It is checked first, as `open_provider` does at start-up; that also warms the SDK,
    whose first request is slower than the rest.
    """
    options = _options(
        url, rpm_limit=sizes.limiter_rpm, max_parallel_calls=sizes.limiter_parallel, max_retries=8
    )
    provider = OpenAIProvider(options, KEY)
    done: list[float] = []

    async def one() -> None:
        await provider.chat_json(MESSAGES, purpose="plan")
        done.append(trio.current_time())

    try:
        await provider.check()
        start = trio.current_time()
        await _run_all(sizes.limiter_calls, sizes.limiter_parallel, one)
    finally:
        await provider.aclose()
    return start, done, None


async def _run_all(calls: int, parallel: int, one: Any) -> None:
    """`calls` calls by `parallel` workers, as a server with a bounded pool would send them."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    async with trio.open_nursery() as nursery:
        for _ in range(parallel):
            nursery.start_soon(worker)


async def _sleep_on_429(url: str, sizes: Sizes) -> tuple[float, list[float], int | None]:
    """The cookbook: send; on 429 sleep for Retry-After (or 1 s) and send again."""
    http = openai.DefaultAsyncHttpx2Client()
    client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, http_client=http)
    done: list[float] = []
    refused = 0

    async def one() -> None:
        nonlocal refused
        while True:
            try:
                await client.chat.completions.create(model=MODEL, messages=SDK_MESSAGES)
            except openai.RateLimitError as exc:
                refused += 1
                await trio.sleep(retry_after_from(exc.response.headers) or 1.0)
                continue
            done.append(trio.current_time())
            return

    async with client:
        await client.models.list()  # the same warm-up as ours
        start = trio.current_time()
        await _run_all(sizes.limiter_calls, sizes.limiter_parallel, one)
    return start, done, refused


def _rate(times: list[float], start: float, burst: int) -> dict[str, float]:
    """Calls per minute: overall, and in steady state (from the first call after the burst).

    The steady rate is what the budget governs; the overall one includes the initial
    burst (faster) and the limiter's safety margin (a constant delay, slower).
    """
    times = sorted(times)
    overall = len(times) / (times[-1] - start) * 60
    steady_span = times[-1] - times[burst] if len(times) > burst + 1 else math.nan
    return {
        "wall_s": times[-1] - start,
        "calls_per_min_overall": overall,
        "calls_per_min_steady": (len(times) - burst - 1) / steady_span * 60,
    }


async def bench_limiter(sizes: Sizes) -> dict[str, Any]:
    options = SimulatorOptions(rpm_limit=sizes.limiter_rpm, api_key=KEY)
    burst = max(1, sizes.limiter_rpm // 60)
    results: list[dict[str, Any]] = []
    for name in ("limiter", "sleep_on_429"):
        async with simulator_process(options) as url, _control_client() as control:
            before = await sim_stats(control, url)
            run = _limited if name == "limiter" else _sleep_on_429
            start, times, refused = await run(url, sizes)
            after = await sim_stats(control, url)
        results.append(
            {
                "approach": name,
                "calls": len(times),
                **_rate(times, start, burst),
                "server_429s": _delta(after, before, "rate_limited"),
                "requests_sent": _delta(after, before, "requests"),
                "client_saw_429s": refused,
            }
        )
    ours = results[0]
    return {
        "budget_rpm": sizes.limiter_rpm,
        "simulator_rpm": sizes.limiter_rpm,
        "parallel": sizes.limiter_parallel,
        "results": results,
        "targets": {
            "steady_rate_vs_budget": ours["calls_per_min_steady"] / sizes.limiter_rpm,
            "within_5_percent": abs(ours["calls_per_min_steady"] / sizes.limiter_rpm - 1) <= 0.05,
            "zero_429s": ours["server_429s"] == 0,
        },
    }


# --- report ---------------------------------------------------------------------------


def report_tables(result: dict[str, Any]) -> list[Table]:
    pool, limiter = result["pooling"], result["limiter"]
    return [
        Table(
            f"200 concurrent chat calls (simulator realistic x{pool['simulator']['time_scale']})",
            ["approach", "TCP conns", "wall s", "calls/s", "p50 ms", "p95 ms"],
            [
                [
                    r["approach"],
                    r["tcp_connections_opened"],
                    r["wall_s"],
                    r["calls_per_s"],
                    r["latency_ms"]["p50"],
                    r["latency_ms"]["p95"],
                ]
                for r in pool["results"]
            ],
        ),
        Table(
            f"{limiter['results'][0]['calls']} calls at a budget of {limiter['budget_rpm']} RPM",
            ["approach", "steady calls/min", "overall calls/min", "server 429s", "requests sent"],
            [
                [
                    r["approach"],
                    r["calls_per_min_steady"],
                    r["calls_per_min_overall"],
                    r["server_429s"],
                    r["requests_sent"],
                ]
                for r in limiter["results"]
            ],
        ),
    ]


async def run_all(sizes: Sizes) -> dict[str, Any]:
    return {"pooling": await bench_pooling(sizes), "limiter": await bench_limiter(sizes)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, DEFAULT_OUT, quick_help="150 limiter calls instead of 600")
    parser.add_argument("--serve-sim", metavar="OPTIONS_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sim:
        serve_sim(args.serve_sim)
        return 0
    sizes = QUICK if args.quick else Sizes()
    result: dict[str, Any] = {"machine": machine_info(Path.cwd()), "sizes": asdict(sizes)}
    result |= trio.run(run_all, sizes)
    targets = result["pooling"]["targets"] | result["limiter"]["targets"]
    footer = f"\ntargets: {json.dumps(targets, indent=1)}\n\nwritten to {args.out}"
    publish(result, args.out, report_tables, markdown=args.markdown, footer=footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
