"""WebSocket load test: N concurrent clients against `autoagent serve` in its own process.

From the project root:

    .venv/bin/python -m tests.performance.load_ws [--clients 100 1000] [--quick]
        [--load-s S] [--out PATH] [--work-dir DIR] [--latency-profile P] [--time-scale X]
        [--markdown]

Processes: the simulator (`python -m server sim --port 0`, the OpenAI-compatible
endpoint, `realistic` latency x `--time-scale`), and for each N a fresh server
(`python -m server serve --port 0 --data-dir <tmp>`, provider "openai" pointed at the
simulator, the shipped LLM budgets (raised only with the diagnostic `--raised-budgets`),
`server.max_connections` raised for the load, the store
durable as shipped: `sync = true`, unless `--no-sync`). Both print their address; this
process parses it (`server/bench/_processes.py`, shared with `autoagent bench`). The clients
all live in this process (one Trio loop, trio-websocket; `server/bench/_client.py` sends a
goal and reads its run to the end).

For each N:
1. Idle: the server's RSS once it listens and is warm, before any client connects, and
   the CPU it spends per second left alone for 5 s (every thread, from the scheduler's
   nanosecond counts in `/proc/<pid>/task/*/schedstat`; a thread that ends meanwhile
   is left out).
2. Connect N clients (at most 50 handshakes at a time) and hold them all open.
3. Load for `--load-s` seconds: every client sends a goal (`message`), reads its run's
   events to the terminal one, and sends the next goal at once; one session per client.
   Every event frame's `ts` (the writer's commit time, ns since the epoch) is compared
   with `time.time_ns()` when the frame arrives: the append-to-client latency, which
   includes the commit (fsync) and this process's own scheduling of N clients.
4. Drain: no new goals; runs in flight get up to `--drain-s` to finish.
5. Held: every client pings; a client counts as held when its pong arrives and it saw
   no error frame and no unexpected close during the test.
Meanwhile the server's RSS (`/proc/<pid>/status` VmRSS, and VmHWM for the peak) and CPU
(`/proc/<pid>/stat` utime + stime) are sampled every 0.5 s, with its main (Trio) thread's
time on a CPU and time runnable but waiting for one (`/proc/<pid>/schedstat`): on a
shared machine the second says how much of the latency is other jobs taking the CPU.
The simulator's and this process's CPU, the server's /metrics counters and the
simulator's /_sim/stats at the end go into the JSON too. Everything is bounded in time;
the processes are stopped with SIGINT (killed if they do not exit) at the end.

Writes JSON (default `tests/performance/results/load_ws.json`) and prints tables.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, connect_websocket_url

from server.bench import _processes as bench_processes
from server.bench._client import run_goal
from server.bench._processes import ServiceProcess, child_env, http_get, port_of
from server.bench._procfs import (
    Sampler,
    cpu_s,
    own_cpu_s,
    peak_rss_mb,
    threads_cpu_between,
    threads_on_cpu_s,
    threads_slices,
)
from server.errors import GoalRejected
from tests.performance._cli import make_parser, publish, scratch_dir
from tests.performance._common import (
    RESULTS_DIR,
    Table,
    load_average,
    machine_info,
    percentile,
    wait_until_warm,
)

DEFAULT_OUT = RESULTS_DIR / "load_ws.json"
GOALS = (
    "what is 17 * 23 + 4",
    "what is 12 * 12 - 7",
    "what is 1024 / 8 + 3",
    "what is 99 * 3 - 18",
)
TARGETS = {
    "held_1000_no_errors": "1,000 concurrent clients held with no errors",
    "p99_latency_100_ms": "p99 append-to-client latency < 100 ms at 100 clients",
    "idle_rss_mb": "idle server RSS < 150 MB",
}
CONNECT_PARALLEL = 50


# --- the server and simulator processes (started by `server/bench/_processes.py`) --------------


def base_env(work: Path) -> dict[str, str]:
    workspace = work / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    return child_env({"AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)])})


async def start_simulator(
    work: Path, profile: str, time_scale: float
) -> tuple[ServiceProcess, str]:
    argv = ["--latency-profile", profile, "--time-scale", str(time_scale)]
    return await bench_processes.start_simulator(work, argv, base_env(work))


# The diagnostic `--raised-budgets`: client-side LLM budgets out of the way, so the
# figures show the server's own ceiling rather than the shipped limiter's.
RAISED_BUDGETS = {
    "AUTOAGENT_LLM__RPM_LIMIT": "1000000",
    "AUTOAGENT_LLM__TPM_LIMIT": "1000000000",
    "AUTOAGENT_LLM__MAX_PARALLEL_CALLS": "256",
}


def server_env(
    work: Path,
    sim_url: str,
    clients: int,
    sync: bool,
    raised: bool,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The shipped configuration pointed at the simulator (budgets raised only if asked,
    `extra`: the diagnostic `--server-setting` values, applied last)."""
    return (
        base_env(work)
        | (RAISED_BUDGETS if raised else {})
        | {
            "AUTOAGENT_STORE__SYNC": "true" if sync else "false",
            "AUTOAGENT_LLM__PROVIDER": "openai",
            "AUTOAGENT_LLM__BASE_URL": sim_url,
            "AUTOAGENT_LLM__API_KEY_ENV": "AUTOAGENT_LOAD_SIM_KEY",
            "AUTOAGENT_LOAD_SIM_KEY": "sk-load-test",
            "AUTOAGENT_SERVER__MAX_CONNECTIONS": str(clients + 100),
        }
        | (extra or {})
    )


async def start_server(work: Path, clients: int, env: dict[str, str]) -> tuple[ServiceProcess, int]:
    """The server for N clients, with `env` (`server_env`)."""
    argv = ["--data-dir", str(work / f"data-{clients}")]
    return await bench_processes.start_server(work, f"serve-{clients}", argv, env)


async def server_metrics(port: int) -> dict[str, float]:
    """The counters and gauges of the server's /metrics (histograms left out)."""
    wanted = (
        "autoagent_event_log_position",
        "autoagent_projection_lag_events",
        "autoagent_connected_clients",
        "autoagent_runs_requested_total",
        "autoagent_runs_completed_total",
        "autoagent_runs_failed_total",
        "autoagent_llm_calls_total",
        "autoagent_llm_errors_total",
        "autoagent_llm_retries_total",
        "autoagent_llm_budget_wait_seconds_total",
        "autoagent_event_commits_total",
        "autoagent_event_appends_total",
        "autoagent_ws_frames_sent_total",
        "autoagent_ws_frame_writes_total",
    )
    samples = await bench_processes.metric_samples(port, wanted)
    return {name.removeprefix("autoagent_"): value for name, value in samples.items()}


async def simulator_stats(url: str) -> dict[str, Any]:
    stats = json.loads(await http_get(port_of(url), "/_sim/stats"))
    keep = ("requests", "by_purpose", "by_status", "max_in_flight", "connections_open")
    return {k: stats[k] for k in keep if k in stats}


# --- clients ---------------------------------------------------------------------------------


@dataclass
class LoadStats:
    connected: int = 0
    connect_failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    run_s: list[float] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    held: int = 0
    sent: int = 0
    unfinished: int = 0

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail}"[:300])


@dataclass
class Phase:
    go: trio.Event = field(default_factory=trio.Event)
    stop_sending_at: float = float("inf")
    drain_until: float = float("inf")
    ping: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


async def one_client(
    index: int, url: str, phase: Phase, stats: LoadStats, gate: trio.Semaphore
) -> None:
    try:
        async with trio.open_nursery() as connection_nursery:
            async with gate:
                with trio.fail_after(30):
                    ws = await connect_websocket_url(connection_nursery, url)
            try:
                stats.connected += 1
                await phase.go.wait()
                ok = await drive(index, ws, phase, stats)
                await phase.ping.wait()
                if ok:
                    await ws.send_message(json.dumps({"type": "ping", "id": "held"}))
                    with trio.move_on_after(15):
                        while json.loads(await ws.get_message()).get("type") != "pong":
                            pass
                        stats.held += 1
                await phase.done.wait()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await ws.aclose()
                with trio.CancelScope(shield=True):
                    await ws._stream.aclose()
    except (HandshakeError, OSError, trio.TooSlowError) as exc:
        stats.connect_failed += 1
        stats.error("connect", repr(exc))
    except ConnectionClosed as exc:
        stats.error("closed", f"client {index}: {exc.reason}")


async def drive(index: int, ws: Any, phase: Phase, stats: LoadStats) -> bool:
    """Goals one after another until the load window ends; False after any error."""
    session: str | None = None
    number = 0

    def on_frame(frame: dict[str, Any], received_ns: int) -> None:
        if frame.get("type") == "event":
            stats.latencies_ms.append((received_ns - frame["ts"]) / 1e6)

    while trio.current_time() < phase.stop_sending_at:
        number += 1
        goal = GOALS[(index + number) % len(GOALS)]
        stats.sent += 1
        with trio.move_on_at(phase.drain_until):
            try:
                run = await run_goal(ws, goal, number, session, on_frame=on_frame)
            except GoalRejected as exc:
                stats.error(f"error:{exc.code}", exc.detail)
                return False
            session = run.session_id
            stats.outcomes[str(run.outcome)] += 1
            stats.run_s.append(run.seconds)
            stats.completed_at.append(trio.current_time())
            continue
        stats.unfinished += 1
        return True
    return True


async def run_in_scope(scope: trio.CancelScope, task: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await task()


async def until(condition: Callable[[], bool], within_s: float) -> bool:
    """Poll `condition` every 50 ms for at most `within_s` seconds; whether it held."""
    with trio.move_on_after(max(0.0, within_s)):
        while True:
            if condition():
                return True
            await trio.sleep(0.05)
    return condition()


async def load(
    url: str, clients: int, load_s: float, drain_s: float, sampler: Sampler
) -> dict[str, Any]:
    stats = LoadStats()
    phase = Phase()
    gate = trio.Semaphore(CONNECT_PARALLEL)
    timings: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        sampling = trio.CancelScope()
        nursery.start_soon(run_in_scope, sampling, sampler.run)
        t0 = trio.current_time()
        for index in range(clients):
            nursery.start_soon(one_client, index, url, phase, stats, gate)
        await until(lambda: stats.connected + stats.connect_failed >= clients, 120)
        timings["connect_s"] = trio.current_time() - t0
        connected_rss = sampler.sample()[1]
        start = trio.current_time()
        phase.stop_sending_at = start + load_s
        phase.drain_until = phase.stop_sending_at + drain_s
        phase.go.set()
        mono_start = time.monotonic()
        await trio.sleep_until(phase.stop_sending_at)
        mono_end = time.monotonic()
        await until(
            lambda: (
                sum(stats.outcomes.values()) + stats.unfinished + sum(stats.errors.values())
                >= stats.sent
            ),
            phase.drain_until + 1 - trio.current_time(),
        )
        timings["drain_s"] = trio.current_time() - phase.stop_sending_at
        phase.ping.set()
        pinging = trio.current_time()
        await until(lambda: stats.held >= stats.connected - sum(stats.errors.values()), 20)
        timings["held_check_s"] = trio.current_time() - pinging
        sampling.cancel()
        phase.done.set()
        closing = trio.current_time()
        # The nursery now waits for every client to close, for 30 s at most.
        nursery.cancel_scope.deadline = trio.current_time() + 30
    timings["close_s"] = trio.current_time() - closing
    in_window = [t for t in stats.completed_at if start <= t <= start + load_s]
    on_cpu, waiting = sampler.main_thread_percent(mono_start, mono_end)
    latencies = stats.latencies_ms
    return {
        "clients": clients,
        "connected": stats.connected,
        "connect_failed": stats.connect_failed,
        "held": stats.held,
        "errors": dict(stats.errors),
        "error_samples": stats.error_samples,
        "goals_sent": stats.sent,
        "runs": dict(stats.outcomes),
        "runs_unfinished_at_drain_end": stats.unfinished,
        "load_s": load_s,
        "runs_completed_in_window": len(in_window),
        "runs_per_s": len(in_window) / load_s,
        "run_latency_s": {
            "p50": percentile(stats.run_s, 50),
            "p95": percentile(stats.run_s, 95),
            "max": max(stats.run_s, default=float("nan")),
        },
        "append_to_client_ms": {
            "events": len(latencies),
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=float("nan")),
        },
        "server": {
            "rss_connected_mb": connected_rss,
            "rss_max_sampled_mb": sampler.rss_max(),
            "cpu_percent_load": sampler.cpu_percent(mono_start, mono_end),
            "main_thread_on_cpu_percent": on_cpu,
            "main_thread_runqueue_wait_percent": waiting,
        },
        "timings_s": timings,
    }


# --- one N ------------------------------------------------------------------------------------

IDLE_CPU_S = 5.0  # how long the warm server is left alone before the clients connect


async def idle_cpu_ms_per_s(pid: int) -> float:
    """CPU the warm server spends per second while nobody is connected (all threads)."""
    before, started = threads_on_cpu_s(pid), time.monotonic()
    await trio.sleep(IDLE_CPU_S)
    spent = threads_cpu_between(before, threads_on_cpu_s(pid))
    return 1000 * spent / (time.monotonic() - started)


def thread_split(
    pid: int,
    before: Mapping[int, float],
    after: Mapping[int, float],
    finished: int,
    scale: float = 1000,
) -> dict[str, float] | None:
    """Per finished run, of the Trio (main) thread and of all the others (worker
    threads: the log's commit thread, projections, reads, key loads), to tell which
    side a change moved: CPU ms (from seconds, `scale` 1000) or times put on a CPU
    (wake-ups, `scale` 1)."""
    if not finished:
        return None
    main = after.get(pid, 0.0) - before.get(pid, 0.0)
    others = threads_cpu_between(before, after) - main
    return {"trio_thread": scale * main / finished, "other_threads": scale * others / finished}


async def measure(
    work: Path, sim: ServiceProcess, sim_url: str, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    started = time.monotonic()
    env = server_env(
        work, sim_url, clients, not args.no_sync, args.raised_budgets, args.server_settings
    )
    server, port = await start_server(work, clients, env)
    server_start_s = time.monotonic() - started
    try:
        await trio.sleep(1.0)  # settle: projections caught up, nothing in flight
        cold_rss = Sampler(server.pid).sample()[1]
        warm_after_s = await wait_until_warm(port)  # the embedder's background load
        idle_cpu = await idle_cpu_ms_per_s(server.pid)
        sampler = Sampler(server.pid)
        idle_rss = sampler.sample()[1]
        cpu_before, threads_before = cpu_s(server.pid), threads_on_cpu_s(server.pid)
        slices_before = threads_slices(server.pid)
        url = f"ws://127.0.0.1:{port}/"
        sim_before = await simulator_stats(sim_url)
        others_before = cpu_s(sim.pid), own_cpu_s(), time.monotonic()
        result = await load(url, clients, args.load_s, args.drain_s, sampler)
        wall = time.monotonic() - others_before[2]
        result["other_processes_cpu_percent_whole_test"] = {
            "simulator": 100 * (cpu_s(sim.pid) - others_before[0]) / wall,
            "load_clients": 100 * (own_cpu_s() - others_before[1]) / wall,
            "machine_loadavg": load_average(),
        }
        result["server_metrics_end"] = await server_metrics(port)
        result["simulator_end"] = await simulator_stats(sim_url)
        result["simulator_start_requests"] = sim_before.get("requests")
        result["server"]["idle_rss_mb"] = idle_rss
        result["server"]["idle_cpu_ms_per_s"] = idle_cpu
        result["server"]["idle_rss_before_warm_up_mb"] = cold_rss
        result["server"]["warm_after_s"] = warm_after_s
        result["server"]["peak_rss_mb"] = peak_rss_mb(server.pid)
        spent = cpu_s(server.pid) - cpu_before
        result["server"]["cpu_s_total_during_test"] = spent
        finished = sum(result["runs"].values())
        result["server"]["cpu_ms_per_finished_run"] = 1000 * spent / finished if finished else None
        result["server"]["cpu_ms_per_finished_run_by_thread"] = thread_split(
            server.pid, threads_before, threads_on_cpu_s(server.pid), finished
        )
        result["server"]["wakeups_per_finished_run_by_thread"] = thread_split(
            server.pid, slices_before, threads_slices(server.pid), finished, scale=1
        )
    finally:
        stopping = time.monotonic()
        code = await server.aclose()
    result["server"]["exit_code"] = code
    result["server_log_tail"] = server.output()[-1500:].splitlines()
    result["timings_s"] |= {
        "server_start_s": server_start_s,
        "server_stop_s": time.monotonic() - stopping,
    }
    result["seconds"] = time.monotonic() - started
    return result


def raise_fd_limit(clients: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * clients + 256))
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sim, sim_url = await start_simulator(work, args.latency_profile, args.time_scale)
    results = []
    try:
        for clients in args.clients:
            results.append(await measure(work, sim, sim_url, clients, args))
            print_run(results[-1])
    finally:
        await sim.aclose()
    return {"simulator_url": sim_url, "results": results}


def targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_n = {r["clients"]: r for r in results}
    out: dict[str, Any] = {}
    if 1000 in by_n:
        r = by_n[1000]
        clean = r["held"] == r["connected"] == 1000 and not r["errors"]
        out["held_1000_no_errors"] = {
            "goal": TARGETS["held_1000_no_errors"],
            "measured": f"{r['held']} held of {r['connected']} connected, errors {r['errors']}",
            "met": clean,
        }
    if 100 in by_n:
        p99 = by_n[100]["append_to_client_ms"]["p99"]
        out["p99_latency_100_ms"] = {
            "goal": TARGETS["p99_latency_100_ms"],
            "measured": round(p99, 1),
            "met": p99 < 100,
        }
    if results:
        idle = min(r["server"]["idle_rss_mb"] for r in results)
        out["idle_rss_mb"] = {
            "goal": TARGETS["idle_rss_mb"],
            "measured": round(idle, 1),
            "met": idle < 150,
        }
    return out


def print_run(r: dict[str, Any]) -> None:
    lat, srv = r["append_to_client_ms"], r["server"]
    print(
        f"N={r['clients']}: connected {r['connected']} held {r['held']} errors {r['errors']} "
        f"runs/s {r['runs_per_s']:.1f} ({r['runs']}) latency ms p50 {lat['p50']:.1f} "
        f"p95 {lat['p95']:.1f} p99 {lat['p99']:.1f} | RSS idle {srv['idle_rss_mb']:.0f} MB "
        f"(CPU idle {srv['idle_cpu_ms_per_s']:.2f} ms/s) "
        f"peak {srv['peak_rss_mb']:.0f} MB, CPU {srv['cpu_percent_load']:.0f}% (Trio thread "
        f"runnable but waiting {srv['main_thread_runqueue_wait_percent']:.0f}%)",
        flush=True,
    )


def tables(result: dict[str, Any]) -> list[Table]:
    rows = []
    for r in result["results"]:
        lat, srv = r["append_to_client_ms"], r["server"]
        rows.append(
            [
                r["clients"],
                r["held"],
                sum(r["errors"].values()),
                r["runs_per_s"],
                r["run_latency_s"]["p50"],
                lat["p50"],
                lat["p95"],
                lat["p99"],
                srv["idle_rss_mb"],
                srv["idle_cpu_ms_per_s"],
                srv["peak_rss_mb"],
                srv["cpu_percent_load"],
                srv["main_thread_runqueue_wait_percent"],
                srv["cpu_ms_per_finished_run"] or float("nan"),
            ]
        )
    load_table = Table(
        "WebSocket load",
        [
            "clients",
            "held",
            "errors",
            "runs/s",
            "run p50 s",
            "lat p50 ms",
            "lat p95 ms",
            "lat p99 ms",
            "idle RSS MB",
            "idle CPU ms/s",
            "peak RSS MB",
            "server CPU %",
            "Trio thread waiting for CPU %",
            "CPU ms/run",
        ],
        rows,
    )
    target_rows = [[t["goal"], str(t["measured"]), t["met"]] for t in result["targets"].values()]
    return [load_table, Table("Targets", ["target", "measured", "met"], target_rows)]


def server_settings(parser: argparse.ArgumentParser, given: Sequence[str]) -> dict[str, str]:
    """`--server-setting` values as environment entries; anything else is refused."""
    settings = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("AUTOAGENT_"):
            parser.error(f"--server-setting {item!r}: expected AUTOAGENT_NAME=VALUE")
        settings[name] = value
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(
        __doc__,
        DEFAULT_OUT,
        quick_help="N=10 for a few seconds (smoke)",
        work_dir_help="parent of the temp dir",
    )
    parser.add_argument("--clients", type=int, nargs="+", default=None, help="N values")
    parser.add_argument("--load-s", type=float, default=None, help="seconds of load per N")
    parser.add_argument("--drain-s", type=float, default=None, help="seconds for runs to end")
    parser.add_argument("--latency-profile", default="realistic", choices=("none", "realistic"))
    parser.add_argument("--time-scale", type=float, default=0.1, help="simulated latency x this")
    parser.add_argument(
        "--no-sync", action="store_true", help="store.sync = false (isolates the fsync share)"
    )
    parser.add_argument(
        "--raised-budgets",
        action="store_true",
        help="diagnostic: client-side LLM rpm/tpm budgets raised out of the way",
    )
    parser.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="AUTOAGENT_NAME=VALUE",
        help="diagnostic: one more setting for the server (repeatable), e.g. a feature set aside",
    )
    args = parser.parse_args(argv)
    args.server_settings = server_settings(parser, args.server_setting)
    if args.clients is None:
        args.clients = [10] if args.quick else [100, 1000]
    if args.load_s is None:
        args.load_s = 3.0 if args.quick else 30.0
    if args.drain_s is None:
        args.drain_s = 10.0 if args.quick else 30.0
    fd_limit = raise_fd_limit(max(args.clients))
    started = time.monotonic()
    with scratch_dir(args.work_dir, "load_ws-") as work:
        machine = machine_info(work)
        outcome = trio.run(run_all, args, work)
    result: dict[str, Any] = {
        "machine": machine | {"loadavg_end": load_average(), "fd_limit": fd_limit},
        "settings": {
            "clients": args.clients,
            "load_s": args.load_s,
            "drain_s": args.drain_s,
            "latency_profile": args.latency_profile,
            "time_scale": args.time_scale,
            "store_sync": not args.no_sync,
            "llm_budgets": "raised" if args.raised_budgets else "shipped",
            "server_settings": args.server_settings,
            "goals": list(GOALS),
        },
        **outcome,
        "seconds": time.monotonic() - started,
    }
    result["targets"] = targets(result["results"])
    footer = f"\nwritten to {args.out} in {result['seconds']:.0f} s"
    publish(result, args.out, tables, markdown=args.markdown, footer=footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
