"""One `autoagent bench` measurement: the simulator, two servers in turn, one scorecard.

In a temporary directory: the bench's loopback world (quotes and pages) runs in this
Trio loop and the simulator (`autoagent sim`, realistic latency x the time scale) in a
child process, shared by both servers. Then, one after the other so they never compete
for the CPU, the baseline server (every `[features]` flag off) and the optimized one
(every flag on), each in its own child process and directory:

1. start it and wait until it listens;
2. drive the scenario's requests through `concurrency` WebSocket clients;
3. ask it to index the bench's 100 documents (the embedding row);
4. read its peak RSS (VmHWM), stop it with SIGINT, and fold its event log.

The simulator's counters are read around each step, so every LLM call and token the
server made is also counted where it arrived.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from server._progress import ProgressLine
from server.bench._client import GoalRun
from server.bench._config import (
    EMBEDDING_DIM,
    SIM_KEY,
    SIM_KEY_ENV,
    Endpoints,
    PhasePaths,
    phase_settings,
    write_phase_config,
)
from server.bench._log import LogFigures, read_figures
from server.bench._processes import (
    ServiceProcess,
    child_env,
    http_get,
    metric_samples,
    port_of,
    start_server,
)
from server.bench._processes import start_simulator as start_simulator_process
from server.bench._procfs import Sampler, cpu_s, own_cpu_s, peak_rss_mb, rss_mb
from server.bench._scenarios import Scenario
from server.bench._scorecard import (
    AGREEMENT_TOLERANCE,
    PHASES,
    Witnessed,
    build_rows,
    disagreements,
    mean,
    nearest_rank,
    per_request,
)
from server.bench._workload import (
    DOCUMENTS_FOLDER,
    INDEX_GOAL,
    WorkloadResult,
    drive,
    index_documents,
    step_client_seconds,
    step_of,
    write_documents,
)
from server.bench._world import World
from server.config import Config

LATENCY_PROFILE = "realistic"
CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"


@dataclass(frozen=True, slots=True)
class BenchOptions:
    scenario: Scenario
    requests: int
    concurrency: int
    time_scale: float
    seed: int
    documents: int
    work_parent: Path | None = None

    def command(self) -> str:
        return (
            f"autoagent bench --scenario {self.scenario.name} --requests {self.requests} "
            f"--concurrency {self.concurrency} --time-scale {self.time_scale:g}"
        )


@dataclass
class PhaseMeasurement:
    """Everything one server's phase produced, before it becomes figures."""

    workload: WorkloadResult
    wall_s: float
    cpu_percent: dict[str, float | None]
    simulator_workload: dict[str, Any]
    simulator_indexing: dict[str, Any]
    indexing: GoalRun | None
    index_step: str | None
    idle_rss_mb: float
    workload_peak_rss_mb: float
    peak_rss_mb: float
    exit_code: int | None
    features: dict[str, bool] | None = None
    log: LogFigures | None = None
    # Seconds the server's LLM calls waited for the rpm/tpm budget during the workload
    # (its /metrics counter): whether the phase was bound by the budget.
    llm_budget_wait_s: float | None = None


@dataclass(frozen=True, slots=True)
class Services:
    """What both servers share: the endpoints they are pointed at, and the simulator."""

    endpoints: Endpoints
    simulator: ServiceProcess


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU seconds of the server, the simulator and this process at the workload's start.

    On a shared 2-core machine these say whether a latency is the server's own work or
    a wait for a CPU: the server's main (Trio) thread runnable but not running.
    """

    server_pid: int
    simulator_pid: int
    started: float
    server_s: float
    simulator_s: float
    own_s: float

    @classmethod
    def start(cls, server_pid: int, simulator_pid: int) -> CpuUsage:
        now = time.monotonic()
        return cls(
            server_pid, simulator_pid, now, cpu_s(server_pid), cpu_s(simulator_pid), own_cpu_s()
        )

    def stop(self, sampler: Sampler) -> tuple[float, dict[str, float | None]]:
        """Wall seconds since start, and each process's CPU percent over them."""
        end = time.monotonic()
        wall = end - self.started
        on_cpu, waiting = sampler.main_thread_percent(self.started, end)

        def percent(spent: float) -> float | None:
            return 100 * spent / wall if wall > 0 else None

        return wall, {
            "server": percent(cpu_s(self.server_pid) - self.server_s),
            "server_main_thread_on_cpu": _finite_or_none(on_cpu),
            "server_main_thread_waiting_for_cpu": _finite_or_none(waiting),
            "simulator": percent(cpu_s(self.simulator_pid) - self.simulator_s),
            "bench_clients_and_world": percent(own_cpu_s() - self.own_s),
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- the whole bench --------------------------------------------------------------------


async def run_bench(options: BenchOptions, base: Config, err: TextIO) -> dict[str, Any]:
    """Measure both servers and return the scorecard as plain data."""
    started = time.monotonic()
    load_start = _load_average()
    prefix = "autoagent-bench-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=options.work_parent) as tmp:
        measured = await _measure_all(options, base, Path(tmp), err)
    figures = {phase: witnessed_figures(m) for phase, m in measured.items()}
    rows = build_rows(figures)
    return {
        "command": options.command(),
        "settings": _settings(options, base),
        "machine": _machine(load_start),
        "rows": rows,
        "agreement_tolerance": AGREEMENT_TOLERANCE,
        "disagreements": disagreements(rows),
        "phases": {phase: phase_details(m, options) for phase, m in measured.items()},
        "seconds": time.monotonic() - started,
    }


async def _measure_all(
    options: BenchOptions, base: Config, work: Path, err: TextIO
) -> dict[str, PhaseMeasurement]:
    measured: dict[str, PhaseMeasurement] = {}
    async with trio.open_nursery() as nursery:
        world_port = await nursery.start(World(options.time_scale).serve)
        sim, sim_url = await _start_simulator(options, work)
        try:
            endpoints = Endpoints(sim_url, f"http://127.0.0.1:{world_port}")
            for phase in PHASES:
                measured[phase] = await _measure_phase(
                    phase, options, base, Services(endpoints, sim), work, err
                )
        finally:
            await sim.aclose()
        nursery.cancel_scope.cancel()
    return measured


async def _start_simulator(options: BenchOptions, work: Path) -> tuple[ServiceProcess, str]:
    argv = [
        "--latency-profile",
        LATENCY_PROFILE,
        "--time-scale",
        repr(options.time_scale),
        "--seed",
        str(options.seed),
        "--embedding-dim",
        str(EMBEDDING_DIM),
    ]
    return await start_simulator_process(work, argv, child_env())


# --- one server ---------------------------------------------------------------------------


async def _measure_phase(
    phase: str,
    options: BenchOptions,
    base: Config,
    services: Services,
    work: Path,
    err: TextIO,
) -> PhaseMeasurement:
    paths = PhasePaths(work / phase)
    endpoints = services.endpoints
    settings = phase_settings(base, phase == "optimized", paths, endpoints, options.concurrency)
    write_phase_config(settings, paths)
    if options.documents:  # file writes off the loop: the bench's own services run on it
        await trio.to_thread.run_sync(
            write_documents, paths.workspace, options.documents, options.seed
        )
    err.write(f"bench: {phase} server starting ({paths.config_file.name} in {paths.root})\n")
    argv = ["--config", str(paths.config_file)]
    env = child_env({SIM_KEY_ENV: SIM_KEY})
    server, port = await start_server(paths.root, f"{phase}-server", argv, env)
    try:
        measurement = await _drive_server(phase, server, port, options, services, err)
    finally:
        code = await server.aclose()
    measurement.exit_code = code
    measurement.features = dict(settings["features"])
    run_id = measurement.indexing.run_id if measurement.indexing else None
    measurement.log = await trio.to_thread.run_sync(
        read_figures, paths.data, run_id, measurement.index_step
    )
    return measurement


async def _drive_server(
    phase: str,
    server: ServiceProcess,
    port: int,
    options: BenchOptions,
    services: Services,
    err: TextIO,
) -> PhaseMeasurement:
    url = f"ws://127.0.0.1:{port}/"
    endpoints = services.endpoints
    goals = options.scenario.requests(options.requests, options.seed, endpoints.world_url)
    idle_rss = rss_mb(server.pid)
    before = await simulator_stats(endpoints.simulator_url)
    progress = ProgressLine(f"bench: {phase} requests", err)
    usage = CpuUsage.start(server.pid, services.simulator.pid)
    sampler = Sampler(server.pid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        workload = await drive(
            url, goals, options.concurrency, lambda done: progress.update(done, len(goals))
        )
        nursery.cancel_scope.cancel()
    progress.close()
    wall, cpu = usage.stop(sampler)
    budget_wait = await llm_budget_wait_s(port)
    after_workload = await simulator_stats(endpoints.simulator_url)
    workload_peak = peak_rss_mb(server.pid)
    indexing = None
    if options.documents:
        err.write(f"bench: {phase} indexing {options.documents} documents\n")
        indexing = await index_documents(url)
    after_indexing = await simulator_stats(endpoints.simulator_url)
    return PhaseMeasurement(
        workload=workload,
        wall_s=wall,
        cpu_percent=cpu,
        simulator_workload=stats_delta(before, after_workload),
        simulator_indexing=stats_delta(after_workload, after_indexing),
        indexing=indexing,
        index_step=step_of(indexing, "documents", "index") if indexing else None,
        idle_rss_mb=idle_rss,
        workload_peak_rss_mb=workload_peak,
        peak_rss_mb=peak_rss_mb(server.pid),
        exit_code=None,
        llm_budget_wait_s=budget_wait,
    )


async def llm_budget_wait_s(port: int) -> float | None:
    """The server's `autoagent_llm_budget_wait_seconds_total` now; None if it has none."""
    name = "autoagent_llm_budget_wait_seconds_total"
    return (await metric_samples(port, [name])).get(name)


async def simulator_stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = json.loads(await http_get(port_of(url), "/_sim/stats"))
    return stats


def stats_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What the simulator saw between two readings of its counters."""

    def counts(key: str) -> Counter[str]:
        return Counter(after.get(key, {})) - Counter(before.get(key, {}))

    endpoints = counts("by_endpoint")
    tokens = sum(after[k] - before[k] for k in ("prompt_tokens", "completion_tokens"))
    return {
        "chat_requests": endpoints.get(CHAT_ENDPOINT, 0),
        "embedding_requests": endpoints.get(EMBEDDINGS_ENDPOINT, 0),
        "tokens": tokens,
        "by_purpose": dict(counts("by_purpose")),
        "tokens_by_purpose": dict(counts("tokens_by_purpose")),
        "by_status": dict(counts("by_status")),
    }


# --- figures -------------------------------------------------------------------------------


def witnessed_figures(m: PhaseMeasurement) -> dict[str, Witnessed]:
    """The scorecard's rows for one server, each as the server and the client saw it."""
    assert m.log is not None
    metrics = m.log.metrics
    run = metrics["latency_s"]["run"]
    counters = metrics["counters"]
    requested = counters.get("runs_requested", 0)
    seconds = [r.seconds for r in m.workload.finished]
    finished = len(seconds)
    return {
        "avg_response_s": Witnessed(_if_runs(run, "mean"), mean(seconds)),
        "p95_response_s": Witnessed(_if_runs(run, "p95"), nearest_rank(seconds, 95)),
        "p99_response_s": Witnessed(_if_runs(run, "p99"), nearest_rank(seconds, 99)),
        "llm_calls_per_request": Witnessed(
            per_request(counters.get("llm_calls", 0), requested),
            per_request(m.simulator_workload["chat_requests"], finished),
        ),
        "tokens_per_request": Witnessed(
            per_request(counters.get("llm_tokens", 0), requested),
            per_request(m.simulator_workload["tokens"], finished),
        ),
        "embedding_100_docs_s": Witnessed(m.log.index_step_s, _index_client_s(m)),
        "peak_rss_mb": Witnessed(m.peak_rss_mb, None),
    }


def _if_runs(summary: Mapping[str, float], key: str) -> float | None:
    return float(summary[key]) if summary.get("count") else None


def _index_client_s(m: PhaseMeasurement) -> float | None:
    if m.indexing is None or m.index_step is None:
        return None
    return step_client_seconds(m.indexing, m.index_step)


# --- the JSON around the rows -------------------------------------------------------------


def phase_details(m: PhaseMeasurement, options: BenchOptions) -> dict[str, Any]:
    assert m.log is not None
    seconds = [r.seconds for r in m.workload.finished]
    return {
        "features": m.features,
        "requests": {
            "sent": options.requests,
            "finished": len(seconds),
            "outcomes": dict(Counter(str(r.outcome) for r in m.workload.finished)),
            "rejected": m.workload.rejected,
            "wall_s": m.wall_s,
            "per_s": len(seconds) / m.wall_s if m.wall_s > 0 else None,
        },
        "client_response_s": {
            "mean": mean(seconds),
            "p50": nearest_rank(seconds, 50),
            "p95": nearest_rank(seconds, 95),
            "p99": nearest_rank(seconds, 99),
            "max": max(seconds, default=None),
        },
        "client_minus_server_s": _gaps(m.workload.finished),
        "cpu_percent_during_requests": m.cpu_percent,
        "llm_budget_wait_s": m.llm_budget_wait_s,
        "server_metrics": m.log.metrics,
        "simulator": {"workload": m.simulator_workload, "indexing": m.simulator_indexing},
        "memory_mb": {
            "idle_rss": m.idle_rss_mb,
            "peak_rss_after_workload": m.workload_peak_rss_mb,
            "peak_rss": m.peak_rss_mb,
        },
        "indexing": _indexing_details(m, options),
        "server_exit_code": m.exit_code,
    }


def _gaps(runs: list[GoalRun]) -> dict[str, float | None]:
    """Means of what the client's clock has and the server's run latency has not."""
    before = [r.before_run_s for r in runs if r.before_run_s is not None]
    after = [r.after_run_s for r in runs if r.after_run_s is not None]
    return {
        "send_to_run_requested_mean": mean(before),
        "terminal_event_to_client_mean": mean(after),
    }


def _indexing_details(m: PhaseMeasurement, options: BenchOptions) -> dict[str, Any] | None:
    if m.indexing is None or m.log is None:
        return None
    return {
        "goal": INDEX_GOAL.format(folder=DOCUMENTS_FOLDER),
        "documents": options.documents,
        "outcome": m.indexing.outcome,
        "step": m.index_step,
        "server_step_s": m.log.index_step_s,
        "client_step_s": _index_client_s(m),
        "client_request_s": m.indexing.seconds,
        "documents_indexed_events": m.log.documents_indexed,
        "embedding_requests": m.simulator_indexing["embedding_requests"],
        "step_counts": _counts(m.log.index_result),
        "run_events": m.log.index_run_events,
        "reason": _failure_reason(m.indexing),
    }


def _counts(result: Any) -> Any:
    """The indexing step's counts (its result also lists every file, too long to keep)."""
    return result.get("counts") if isinstance(result, dict) else result


def _failure_reason(run: GoalRun) -> str | None:
    for _, frame in run.events:
        if frame.get("event_type") in ("RunFailed", "StepFailed"):
            data = frame["data"]
            return str(data.get("reason") or data.get("message"))
    return None


def _settings(options: BenchOptions, base: Config) -> dict[str, Any]:
    return {
        "scenario": options.scenario.name,
        "scenario_description": options.scenario.description,
        "goals": list(options.scenario.templates),
        "requests": options.requests,
        "concurrency": options.concurrency,
        "time_scale": options.time_scale,
        "seed": options.seed,
        "documents": options.documents,
        "latency_profile": LATENCY_PROFILE,
        "servers": "one after the other; baseline: every [features] flag off, optimized: all on",
        # What bounds both servers when it is low (the shipped budgets): a scorecard
        # taken with `--config` says which it ran with.
        "llm_budgets": {"rpm_limit": base.llm.rpm_limit, "tpm_limit": base.llm.tpm_limit},
    }


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _machine(load_start: list[float]) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": load_start,
        "loadavg_end": _load_average(),
    }
