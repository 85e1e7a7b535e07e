"""Server nodes on one PostgreSQL log (issue 17): end-to-end runs/s with one node and two.

From the project root:

    .venv/bin/python -m tests.performance.bench_nodes [--quick] [--out PATH] [--markdown]
        [--clients C] [--warmup-s S] [--window-s S] [--drain-s S] [--work-dir DIR]
        [--latency-profile P] [--time-scale X] [--raised-budget-rows | --no-raised-budget-rows]

Processes, all on this machine: a PostgreSQL cluster (`pgserver`, unix socket, data dir
under `--work-dir`) with its durable defaults (fsync and synchronous_commit on: checked,
and the run refuses to measure without them; `SHOW`n into the JSON); the simulator
(`python -m server sim --port 0` with load_ws's defaults, `realistic` latency x 0.1);
and per configuration fresh `python -m server serve` nodes with `store.backend =
"postgres"` on a fresh database of that cluster, each with its own node id, data dir and
port, otherwise configured as load_ws configures its server (`load_ws.server_env`:
provider "openai" pointed at the simulator, the shipped LLM budgets, the rest shipped
but max_connections C + 100).

Configurations, one after the other in one run: A, one node; B, two nodes on one
database. With `--raised-budget-rows` (the default; off with --quick) the diagnostic rows
"A raised" and "B raised" follow, with load_ws's `--raised-budgets` (client-side LLM
rpm/tpm budgets and parallel calls out of the way). The shipped budgets are per node:
two nodes have twice the LLM budget of one, so when the budget is the bound the shipped
rows measure the budget rather than the nodes. The target uses the shipped rows only.

Load, the same in every configuration: C WebSocket clients in this process (one Trio
loop; in B client i talks to node i mod 2), each with one session, sending load_ws's goals
one after another (`server/bench/_client.py`: send a goal, read its run to the terminal
event, send the next). The clients start together; `--warmup-s` later the measured
window of `--window-s` opens (the default warm-up, 15 s, outlasts the LLM limiter's
burst, a minute of budget the buckets start with); when it closes no new goal is sent
and runs in flight get `--drain-s` to end. At the window's edges this process reads
/proc (each node's utime + stime, all threads; PostgreSQL's: the postmaster, from the
first line of `postmaster.pid`, with its reaped children's time, plus every live child;
the simulator's; its own; the machine's busy time from /proc/stat, i.e. all but idle and
iowait), the simulator's /_sim/stats and every node's /metrics.

Figures per configuration:
- runs/s: runs completed (RunCompleted frames) inside the window / window; p50/p95 of
  their latency (send to terminal frame, the client's clock);
- per node: the runs its own clients completed, its CPU % of one core, its Trio
  thread's time on a CPU, CPU ms per run (its CPU / those runs; on a shared log every
  node's projections also read the other node's events, which this includes);
- CPU ms per run of the nodes, PostgreSQL, the simulator, this client process, other
  jobs (machine busy - ours) and the machine; machine CPU busy %, iowait %; the CPU
  ceiling: runs/s if all cores ran our processes at this cost per run;
- LLM: requests and tokens the simulator served vs nodes x the per-node rpm/tpm budget;
  calls open on average (Little's law over the log's llm_call latencies) vs slots;
- bound: every saturated resource (machine CPU >= 90% busy, LLM budget 90-111% used,
  LLM calls open >= 90% of slots, a node's Trio thread >= 90% on a CPU), else
  latency-bound; "not steady" when the window ran on the limiter's burst.
Target: runs/s(B) / runs/s(A) >= 1.7, with both bound lines beside it.

Writes JSON (default `tests/performance/results/bench_nodes.json`) and prints tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from server.bench import _processes as bench_processes
from server.bench._client import run_goal
from server.bench._processes import ServiceProcess, http_get, port_of
from server.bench._procfs import CLOCK_TICKS, Sampler, cpu_s, own_cpu_s, peak_rss_mb
from server.config import LLMConfig, ResumeConfig
from server.errors import GoalRejected

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, Table, filesystem_of, percentile, timed, wait_until_warm
from .bench_postgres import fresh_database, open_postgres_server, server_settings
from .load_ws import GOALS, RAISED_BUDGETS, run_in_scope, server_env, simulator_stats, until
from .load_ws import start_simulator as start_load_simulator

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

DEFAULT_OUT = RESULTS_DIR / "bench_nodes.json"
TARGET_RATIO = 1.7
# load_ws's defaults for the simulator (its --latency-profile and --time-scale).
LATENCY_PROFILE = "realistic"
TIME_SCALE = 0.1
# A figure at or above this share of its ceiling counts as the bound.
SATURATED = 0.9
START_TIMEOUT_S = 180.0  # both nodes started and warm (each imports the SDK and the embedder)
CONNECT_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 10.0  # one /metrics, /healthz or /_sim/stats answer
COMPLETED = "RunCompleted"


@dataclass(frozen=True, slots=True)
class Sizes:
    clients: int
    warmup_s: float
    window_s: float
    drain_s: float


FULL = Sizes(clients=16, warmup_s=15.0, window_s=20.0, drain_s=30.0)
QUICK = Sizes(clients=4, warmup_s=1.0, window_s=3.0, drain_s=10.0)


@dataclass(frozen=True, slots=True)
class Configuration:
    name: str
    nodes: int
    raised_budgets: bool

    def node_ids(self) -> list[str]:
        slug = self.name.lower().replace(" ", "-")
        return [f"{slug}-node-{i + 1}" for i in range(self.nodes)]


SHIPPED = (Configuration("A", 1, False), Configuration("B", 2, False))
RAISED = (Configuration("A raised", 1, True), Configuration("B raised", 2, True))


# --- /proc: the machine and a process tree ------------------------------------------------


def machine_cpu_s() -> dict[str, float]:
    """All cores' seconds since boot from /proc/stat's `cpu` line: busy (all but idle and
    iowait), iowait, steal (taken by the hypervisor, counted in busy) and total."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    line = Path("/proc/stat").read_text().splitlines()[0].split()
    ticks = dict(zip(names, (int(x) for x in line[1:9]), strict=True))
    total = sum(ticks.values())
    busy = total - ticks["idle"] - ticks["iowait"]
    return {
        "busy": busy / CLOCK_TICKS,
        "iowait": ticks["iowait"] / CLOCK_TICKS,
        "steal": ticks["steal"] / CLOCK_TICKS,
        "total": total / CLOCK_TICKS,
    }


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from the field after the command name: state, ppid, ..."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def postmaster_pid(server: PostgresServer) -> int:
    """The postmaster's pid: the first line of `postmaster.pid` in the data dir."""
    return int((Path(server.pgdata) / "postmaster.pid").read_text().splitlines()[0])


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and its children: its own utime + stime, its reaped children's
    (cutime + cstime: a backend that exits between two readings keeps counting), and every
    live child's utime + stime."""
    fields = _stat_fields(root)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat_fields(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(child[1]) == root:
            total += int(child[11]) + int(child[12])
    return total / CLOCK_TICKS


# --- one moment: every process's CPU, the simulator's and the log's counters ----------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.monotonic()
    machine: dict[str, float]
    nodes: list[float]
    postgres: float
    simulator: float
    client: float
    simulator_stats: dict[str, Any]
    node_metrics: list[dict[str, float]]

    @property
    def log_metrics(self) -> dict[str, float]:
        """The metrics projection reads the whole shared log: any node's counts are log-wide."""
        return self.node_metrics[0]


@dataclass(frozen=True, slots=True)
class Processes:
    nodes: list[ServiceProcess]
    ports: list[int]
    postmaster: int
    simulator: ServiceProcess
    simulator_url: str

    async def snapshot(self) -> Snapshot:
        # /proc first, all together, so the CPU figures share one moment.
        at, machine = time.monotonic(), machine_cpu_s()
        nodes = [cpu_s(node.pid) for node in self.nodes]
        postgres, simulator, client = (
            tree_cpu_s(self.postmaster),
            cpu_s(self.simulator.pid),
            own_cpu_s(),
        )
        with trio.fail_after(HTTP_TIMEOUT_S):
            stats = await simulator_stats_all(self.simulator_url)
            metrics = [await node_metrics(port) for port in self.ports]
        return Snapshot(at, machine, nodes, postgres, simulator, client, stats, metrics)


async def simulator_stats_all(url: str) -> dict[str, Any]:
    """load_ws's /_sim/stats keys plus the tokens served."""
    stats = json.loads(await http_get(port_of(url), "/_sim/stats"))
    keep = ("prompt_tokens", "completion_tokens", "rate_limited")
    return await simulator_stats(url) | {k: stats[k] for k in keep if k in stats}


async def node_metrics(port: int) -> dict[str, float]:
    """A node's /metrics samples (histogram buckets left out), the prefix dropped."""
    samples = {}
    for line in (await http_get(port, "/metrics")).splitlines():
        if line.startswith("#") or "_bucket{" in line or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        samples[name.removeprefix("autoagent_")] = float(value)
    return samples


# --- clients --------------------------------------------------------------------------------


@dataclass
class NodeLoad:
    """What the clients of one node saw: each run that ended (finished at, seconds, outcome)."""

    clients: int = 0
    connected: int = 0
    sent: int = 0
    unfinished: int = 0
    runs: list[tuple[float, float, str]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{kind}: {detail}"[:300])

    def connected_or_failed(self) -> bool:
        return self.connected + sum(self.errors.values()) >= self.clients

    def settled(self) -> bool:
        """Every client connected or failed, and every goal sent has ended one way or another."""
        ended = len(self.runs) + self.unfinished + sum(self.errors.values())
        return self.connected_or_failed() and ended >= self.sent


@dataclass
class Window:
    go: trio.Event = field(default_factory=trio.Event)
    start: float = 0.0
    end: float = 0.0
    drain_until: float = float("inf")

    def ended(self, load: NodeLoad) -> list[tuple[float, float, str]]:
        """The runs of `load` whose terminal frame arrived inside the window."""
        return [r for r in load.runs if self.start <= r[0] <= self.end]


async def one_client(index: int, url: str, window: Window, load: NodeLoad) -> None:
    """Goals one after another on one session until the window ends."""
    try:
        async with open_websocket_url(url, connect_timeout=CONNECT_TIMEOUT_S) as ws:
            load.connected += 1
            await window.go.wait()
            session: str | None = None
            number = 0
            while trio.current_time() < window.end:
                number += 1
                load.sent += 1
                with trio.move_on_at(window.drain_until):
                    goal = GOALS[(index + number) % len(GOALS)]
                    run = await run_goal(ws, goal, number, session)
                    session = run.session_id
                    load.runs.append((trio.current_time(), run.seconds, str(run.outcome)))
                    continue
                load.unfinished += 1
                return
    except GoalRejected as exc:
        load.error(f"error:{exc.code}", exc.detail)
    except (HandshakeError, ConnectionClosed, OSError, trio.TooSlowError) as exc:
        load.error(type(exc).__name__, repr(exc))


async def sample_all(samplers: list[Sampler]) -> None:
    """Every node's sampler, until cancelled."""
    async with trio.open_nursery() as nursery:
        for sampler in samplers:
            nursery.start_soon(sampler.run)


async def drive(
    processes: Processes, sizes: Sizes, samplers: list[Sampler]
) -> tuple[list[NodeLoad], Window, Snapshot, Snapshot]:
    """C clients spread over the nodes; snapshots at the window's edges."""
    urls = [f"ws://127.0.0.1:{port}/" for port in processes.ports]
    loads = [NodeLoad() for _ in urls]
    window = Window()
    async with trio.open_nursery() as nursery:
        sampling = trio.CancelScope()
        nursery.start_soon(run_in_scope, sampling, partial(sample_all, samplers))
        for index in range(sizes.clients):
            load = loads[index % len(urls)]
            load.clients += 1
            nursery.start_soon(one_client, index, urls[index % len(urls)], window, load)
        await until(lambda: all(x.connected_or_failed() for x in loads), CONNECT_TIMEOUT_S + 5)
        window.start = trio.current_time() + sizes.warmup_s
        window.end = window.start + sizes.window_s
        window.drain_until = window.end + sizes.drain_s
        window.go.set()
        await trio.sleep_until(window.start)
        first = await processes.snapshot()
        await trio.sleep_until(window.end)
        last = await processes.snapshot()
        await until(
            lambda: all(x.settled() for x in loads), window.drain_until + 1 - trio.current_time()
        )
        sampling.cancel()
        # The nursery waits for every client to close its connection, briefly.
        nursery.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
    return loads, window, first, last


# --- one configuration ------------------------------------------------------------------------


def node_env(
    work: Path, sim_url: str, clients: int, raised: bool, url: str, node: str
) -> dict[str, str]:
    """load_ws's server environment (shipped settings, the simulator as provider) on the
    shared database, with this node's id."""
    return server_env(work, sim_url, clients, True, raised) | {
        "AUTOAGENT_STORE__BACKEND": "postgres",
        "AUTOAGENT_STORE__URL": url,
        "AUTOAGENT_SERVER__NODE_ID": node,
    }


async def start_nodes(
    work: Path, config: Configuration, sim_url: str, clients: int, db_url: str
) -> list[tuple[ServiceProcess, int]]:
    """The configuration's nodes, started together, each warm; all stopped on a failure."""
    started: dict[int, tuple[ServiceProcess, int]] = {}

    async def start(index: int, node: str) -> None:
        node_work = work / node
        env = node_env(node_work, sim_url, clients, config.raised_budgets, db_url, node)
        argv = ["--data-dir", str(node_work / "data")]
        started[index] = await bench_processes.start_server(node_work, node, argv, env)
        await wait_until_warm(started[index][1])

    try:
        with trio.fail_after(START_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for index, node in enumerate(config.node_ids()):
                    (work / node).mkdir(parents=True, exist_ok=True)
                    nursery.start_soon(start, index, node)
    except BaseException:
        await stop_nodes([process for process, _ in started.values()])
        raise
    return [started[i] for i in range(config.nodes)]


async def stop_nodes(nodes: list[ServiceProcess]) -> list[int | None]:
    """SIGINT to every node at once (killed after a timeout); their exit codes."""
    codes: dict[int, int | None] = {}

    async def stop(index: int, node: ServiceProcess) -> None:
        codes[index] = await node.aclose()

    async with trio.open_nursery() as nursery:
        for index, node in enumerate(nodes):
            nursery.start_soon(stop, index, node)
    return [codes[i] for i in range(len(nodes))]


async def measure(
    work: Path,
    config: Configuration,
    pg: PostgresServer,
    sim: tuple[ServiceProcess, str],
    sizes: Sizes,
) -> dict[str, Any]:
    started = time.monotonic()
    database = "bench_nodes_" + config.name.lower().replace(" ", "_")
    db_url = await trio.to_thread.run_sync(fresh_database, pg, database)
    nodes = await start_nodes(work / database, config, sim[1], sizes.clients, db_url)
    start_s = time.monotonic() - started
    processes = Processes(
        [n for n, _ in nodes], [p for _, p in nodes], postmaster_pid(pg), sim[0], sim[1]
    )
    samplers = [Sampler(node.pid) for node in processes.nodes]
    try:
        loads, window, first, last = await drive(processes, sizes, samplers)
        health = [await node_health(port) for port in processes.ports]
        peaks = [peak_rss_mb(node.pid) for node in processes.nodes]
    finally:
        codes = await stop_nodes(processes.nodes)
    result = figures(config, sizes, loads, window, first, last)
    result["database"] = database
    for index, node in enumerate(result["per_node"]):
        on_cpu, _ = samplers[index].main_thread_percent(first.at, last.at)
        node |= {
            "main_thread_on_cpu_percent": on_cpu,
            "peak_rss_mb": peaks[index],
            "health_end": health[index],
            "exit_code": codes[index],
        }
        if codes[index] != 0:
            node["log_tail"] = processes.nodes[index].output()[-1500:].splitlines()
    result["bound"] = bound(result)
    result["seconds"] = {"start_and_warm": start_s, "total": time.monotonic() - started}
    return result


async def node_health(port: int) -> dict[str, Any]:
    """The `node` part of a node's /healthz: its id, runs leased, taken over, lost."""
    with trio.fail_after(HTTP_TIMEOUT_S):
        return dict(json.loads(await http_get(port, "/healthz")).get("node", {}))


# --- figures -------------------------------------------------------------------------------


def figures(
    config: Configuration,
    sizes: Sizes,
    loads: list[NodeLoad],
    window: Window,
    first: Snapshot,
    last: Snapshot,
) -> dict[str, Any]:
    """Everything a configuration reports, from its clients and its two snapshots. Runs
    are the ones that completed (RunCompleted) in the window; others are counted apart."""
    ended = [window.ended(load) for load in loads]
    completed = [[r for r in node_runs if r[2] == COMPLETED] for node_runs in ended]
    runs = sum(len(r) for r in completed)
    seconds = [s for node_runs in completed for _, s, _ in node_runs]
    nodes = zip(config.node_ids(), loads, completed, strict=True)
    return {
        "name": config.name,
        "nodes": config.nodes,
        "llm_budgets": "raised (diagnostic)" if config.raised_budgets else "shipped",
        "clients": sizes.clients,
        "window_s": sizes.window_s,
        "runs_in_window": runs,
        "runs_per_s": runs / sizes.window_s,
        "run_outcomes_in_window": dict(Counter(r[2] for node_runs in ended for r in node_runs)),
        "run_latency_s": {
            "p50": percentile(seconds, 50),
            "p95": percentile(seconds, 95),
            "mean": sum(seconds) / len(seconds) if seconds else float("nan"),
            "max": max(seconds, default=float("nan")),
        },
        "client_errors": dict(sum((load.errors for load in loads), Counter())),
        "error_samples": [s for load in loads for s in load.error_samples],
        "runs_unfinished_at_drain_end": sum(load.unfinished for load in loads),
        "per_node": [
            node_figures(
                node_id, load, len(node_runs), sizes.window_s, last.nodes[i] - first.nodes[i]
            )
            for i, (node_id, load, node_runs) in enumerate(nodes)
        ],
        "cpu": cpu_figures(first, last, runs),
        "llm": llm_figures(config, first, last, runs),
        "counters_in_window": log_deltas(first, last),
    }


def node_figures(
    node_id: str, load: NodeLoad, runs: int, window_s: float, cpu_spent_s: float
) -> dict[str, Any]:
    """One node: the runs its own clients completed, and its CPU (all its threads)."""
    return {
        "node_id": node_id,
        "clients": load.clients,
        "connected": load.connected,
        "runs_in_window": runs,
        "runs_per_s": runs / window_s,
        "cpu_s": cpu_spent_s,
        "cpu_percent_of_one_core": 100 * cpu_spent_s / window_s,
        "cpu_ms_per_run": 1000 * cpu_spent_s / runs if runs else None,
        "errors": dict(load.errors),
    }


def cpu_figures(first: Snapshot, last: Snapshot, runs: int) -> dict[str, Any]:
    """Every process's CPU seconds in the window, per run, and the machine's busy share."""
    wall = last.at - first.at
    machine = {k: last.machine[k] - first.machine[k] for k in first.machine}
    spent = {
        "nodes": sum(last.nodes) - sum(first.nodes),
        "postgres": last.postgres - first.postgres,
        "simulator": last.simulator - first.simulator,
        "client": last.client - first.client,
    }
    spent["ours"] = sum(spent.values())
    spent["other"] = machine["busy"] - spent["ours"]  # other jobs, the kernel's own work
    spent["machine_busy"] = machine["busy"]
    cores = os.cpu_count() or 1
    return {
        "cores": cores,
        "seconds": spent,
        "ms_per_run": {k: 1000 * v / runs if runs else None for k, v in spent.items()},
        "percent_of_one_core": {k: 100 * v / wall for k, v in spent.items()},
        "machine_busy_percent": 100 * machine["busy"] / machine["total"],
        "machine_iowait_percent": 100 * machine["iowait"] / machine["total"],
        "machine_steal_percent": 100 * machine["steal"] / machine["total"],
        # Every core busy with our processes at this cost per run: the machine's ceiling.
        "cpu_ceiling_runs_per_s": cores * runs / spent["ours"] if runs else None,
    }


def llm_budgets(raised: bool) -> dict[str, int]:
    """One node's client-side LLM budgets: the shipped ones, or load_ws's raised ones."""
    if raised:
        names = ("RPM_LIMIT", "TPM_LIMIT", "MAX_PARALLEL_CALLS")
        values = [int(RAISED_BUDGETS[f"AUTOAGENT_LLM__{n}"]) for n in names]
        return dict(zip(("rpm", "tpm", "parallel_calls"), values, strict=True))
    shipped = LLMConfig()
    return {
        "rpm": shipped.rpm_limit,
        "tpm": shipped.tpm_limit,
        "parallel_calls": shipped.max_parallel_calls,
    }


def llm_figures(
    config: Configuration, first: Snapshot, last: Snapshot, runs: int
) -> dict[str, Any]:
    """What the simulator served in the window, against the nodes' client-side budgets."""
    wall = last.at - first.at
    a, b = first.simulator_stats, last.simulator_stats
    requests = b["requests"] - a["requests"]
    tokens = sum(b[k] - a[k] for k in ("prompt_tokens", "completion_tokens"))
    budget = llm_budgets(config.raised_budgets)
    # Calls open on average (waiting for a slot or budget, or in flight): Little's law
    # over the log's llm_call latencies, which are counted from before the limiter's wait.
    key = 'phase_latency_seconds_sum{phase="llm_call"}'
    open_s = last.log_metrics.get(key, 0.0) - first.log_metrics.get(key, 0.0)
    return {
        "requests": requests,
        "requests_per_s": requests / wall,
        "requests_per_run": requests / runs if runs else None,
        "tokens_per_s": tokens / wall,
        "tokens_per_run": tokens / runs if runs else None,
        "budget_per_node": budget,
        "budget_requests_percent": 100 * requests / wall / (config.nodes * budget["rpm"] / 60),
        "budget_tokens_percent": 100 * tokens / wall / (config.nodes * budget["tpm"] / 60),
        "calls_open_mean": open_s / wall,
        "parallel_slots": config.nodes * budget["parallel_calls"],
        "rate_limited_by_simulator": b["rate_limited"] - a["rate_limited"],
    }


def log_deltas(first: Snapshot, last: Snapshot) -> dict[str, float]:
    """The counters' growth in the window: the log-wide ones of the metrics projection, and
    the appends and commits of every node's own writer, added up."""
    log_wide = (
        "runs_completed_total",
        "runs_failed_total",
        "llm_calls_total",
        "llm_tokens_total",
        "runs_taken_over_total",
    )
    own = ("event_appends_total", "event_commits_total")
    deltas = {k: last.log_metrics.get(k, 0.0) - first.log_metrics.get(k, 0.0) for k in log_wide}
    for key in own:
        before, after = (sum(m.get(key, 0.0) for m in s.node_metrics) for s in (first, last))
        deltas[key + "_all_nodes"] = after - before
    return deltas


# --- what limited a configuration, from its figures -------------------------------------------


def cpu_bound(r: dict[str, Any]) -> str | None:
    cpu = r["cpu"]
    if cpu["machine_busy_percent"] < 100 * SATURATED:
        return None
    ms = cpu["ms_per_run"]
    where = ", ".join(f"{k} {ms[k]:.0f}" for k in ("nodes", "postgres", "simulator", "client"))
    return (
        f"CPU-bound: {cpu['cores']} cores {cpu['machine_busy_percent']:.0f}% busy; CPU ms per "
        f"run: {where}, other jobs {ms['other']:.0f}"
    )


def budget_bound(r: dict[str, Any]) -> str | None:
    llm = r["llm"]
    use = max(llm["budget_requests_percent"], llm["budget_tokens_percent"])
    if not 100 * SATURATED <= use <= 100 / SATURATED:
        return None
    kind = "rpm" if llm["budget_requests_percent"] >= llm["budget_tokens_percent"] else "tpm"
    return f"LLM budget-bound: {use:.0f}% of {r['nodes']} x the per-node {kind} budget"


def slots_bound(r: dict[str, Any]) -> str | None:
    llm = r["llm"]
    if llm["calls_open_mean"] < SATURATED * llm["parallel_slots"]:
        return None
    return (
        f"LLM parallel-calls-bound: {llm['calls_open_mean']:.1f} calls open on average, "
        f"{llm['parallel_slots']} slots"
    )


def event_loop_bound(r: dict[str, Any]) -> str | None:
    busy = [
        f"{n['node_id']} {n['main_thread_on_cpu_percent']:.0f}%"
        for n in r["per_node"]
        if n["main_thread_on_cpu_percent"] >= 100 * SATURATED  # NaN (no samples) is never
    ]
    return f"event-loop-bound: Trio thread on a CPU {', '.join(busy)}" if busy else None


def latency_bound(r: dict[str, Any]) -> str:
    """Nothing saturated: C clients each waiting for its run allow C / mean latency."""
    mean = r["run_latency_s"]["mean"]
    return (
        f"latency-bound (nothing saturated; CPU {r['cpu']['machine_busy_percent']:.0f}% busy): "
        f"{r['clients']} clients / {mean:.2f} s mean run = {r['clients'] / mean:.1f} runs/s"
    )


def burst_note(r: dict[str, Any]) -> str | None:
    """The limiter's buckets hold a minute of budget: above the sustained rate the window
    was spending that allowance, and the rate would fall once it ran out."""
    llm = r["llm"]
    use = max(llm["budget_requests_percent"], llm["budget_tokens_percent"])
    if use <= 100 / SATURATED:
        return None
    return f"not steady: LLM use at {use:.0f}% of the sustained budget (the limiter's burst)"


BOUND_CHECKS: tuple[Callable[[dict[str, Any]], str | None], ...] = (
    cpu_bound,
    budget_bound,
    slots_bound,
    event_loop_bound,
)


def bound(r: dict[str, Any]) -> str:
    """Every saturated resource, the first the likeliest bound, else the clients' loop."""
    found = [line for check in BOUND_CHECKS if (line := check(r))]
    burst = burst_note(r)
    return "; ".join((found or [latency_bound(r)]) + ([burst] if burst else []))


def target(configs: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = {c["name"]: c for c in configs}
    a, b = by_name["A"], by_name["B"]
    ratio = b["runs_per_s"] / a["runs_per_s"] if a["runs_per_s"] else float("nan")
    out: dict[str, Any] = {
        "goal": f"runs/s with two nodes >= {TARGET_RATIO:g} x with one",
        "runs_per_s": {"A": a["runs_per_s"], "B": b["runs_per_s"]},
        "ratio": ratio,
        "target": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
        "bound": {"A": a["bound"], "B": b["bound"]},
    }
    if "A raised" in by_name and "B raised" in by_name:
        ra, rb = by_name["A raised"], by_name["B raised"]
        out["diagnostic_ratio_raised_budgets"] = (
            rb["runs_per_s"] / ra["runs_per_s"] if ra["runs_per_s"] else float("nan")
        )
    return out


# --- the run ---------------------------------------------------------------------------------


async def run_all(
    work: Path,
    pg: PostgresServer,
    configs: Sequence[Configuration],
    args: argparse.Namespace,
    sizes: Sizes,
) -> dict[str, Any]:
    sim = await start_load_simulator(work, args.latency_profile, args.time_scale)
    results = []
    try:
        for config in configs:
            results.append(await measure(work, config, pg, sim, sizes))
            print_configuration(results[-1])
    finally:
        code = await sim[0].aclose()
    return {"simulator": {"url": sim[1], "exit_code": code}, "configurations": results}


def print_configuration(r: dict[str, Any]) -> None:
    nodes = ", ".join(
        f"{n['node_id']} {n['runs_in_window']} runs {_num(n['cpu_ms_per_run']):.0f} CPU ms/run"
        for n in r["per_node"]
    )
    print(
        f"{r['name']}: {r['runs_per_s']:.2f} runs/s, p50 {r['run_latency_s']['p50']:.2f} s, "
        f"machine CPU {r['cpu']['machine_busy_percent']:.0f}% busy | {nodes} | {r['bound']}",
        flush=True,
    )


Row = dict[str, Any]
Column = tuple[str, Callable[[Row], object]]
# The report's tables, one (header, cell) pair per column.
RUN_COLUMNS: tuple[Column, ...] = (
    ("config", lambda c: c["name"]),
    ("nodes", lambda c: c["nodes"]),
    ("LLM budgets", lambda c: c["llm_budgets"]),
    ("clients", lambda c: c["clients"]),
    ("runs", lambda c: c["runs_in_window"]),
    ("runs/s", lambda c: c["runs_per_s"]),
    ("p50 s", lambda c: c["run_latency_s"]["p50"]),
    ("p95 s", lambda c: c["run_latency_s"]["p95"]),
    ("client errors", lambda c: sum(c["client_errors"].values())),
    ("machine CPU busy %", lambda c: c["cpu"]["machine_busy_percent"]),
    ("LLM rpm budget %", lambda c: c["llm"]["budget_requests_percent"]),
    ("LLM tpm budget %", lambda c: c["llm"]["budget_tokens_percent"]),
)
NODE_COLUMNS: tuple[Column, ...] = (
    ("config", lambda n: n["config"]),
    ("node", lambda n: n["node_id"]),
    ("clients", lambda n: n["clients"]),
    ("runs", lambda n: n["runs_in_window"]),
    ("runs/s", lambda n: n["runs_per_s"]),
    ("CPU % of a core", lambda n: n["cpu_percent_of_one_core"]),
    ("Trio thread on CPU %", lambda n: n["main_thread_on_cpu_percent"]),
    ("CPU ms/run", lambda n: _num(n["cpu_ms_per_run"])),
    ("peak RSS MB", lambda n: n["peak_rss_mb"]),
)
CPU_COLUMNS: tuple[Column, ...] = (
    ("config", lambda c: c["name"]),
    *(
        (name, lambda c, key=key: _num(c["cpu"]["ms_per_run"][key]))
        for name, key in (
            ("nodes", "nodes"),
            ("postgres", "postgres"),
            ("simulator", "simulator"),
            ("client", "client"),
            ("other jobs", "other"),
            ("machine busy", "machine_busy"),
        )
    ),
    ("iowait %", lambda c: c["cpu"]["machine_iowait_percent"]),
    ("CPU ceiling runs/s", lambda c: _num(c["cpu"]["cpu_ceiling_runs_per_s"])),
)


def _table(title: str, columns: Sequence[Column], rows: Sequence[Row]) -> Table:
    return Table(title, [h for h, _ in columns], [[cell(r) for _, cell in columns] for r in rows])


def report(result: dict[str, Any]) -> list[Table]:
    configs, settings = result["configurations"], result["settings"]
    nodes = [{"config": c["name"]} | n for c in configs for n in c["per_node"]]
    return [
        _table(
            f"End-to-end runs on one PostgreSQL log ({settings['window_s']:g} s window, "
            f"simulator {settings['latency_profile']} x{settings['time_scale']:g})",
            RUN_COLUMNS,
            configs,
        ),
        _table("Per node (runs counted from the node's own clients)", NODE_COLUMNS, nodes),
        _table(
            "CPU ms per run in the window (ceiling: all cores busy at our processes' cost per run)",
            CPU_COLUMNS,
            configs,
        ),
        target_table(result["target"]),
    ]


def target_table(t: dict[str, Any]) -> Table:
    rows: list[list[object]] = [
        [t["goal"], f"{t['ratio']:.2f}", f">= {t['target']:g}", t["met"], f"A: {t['bound']['A']}"],
        ["", "", "", "", f"B: {t['bound']['B']}"],
    ]
    if "diagnostic_ratio_raised_budgets" in t:
        ratio = f"{t['diagnostic_ratio_raised_budgets']:.2f}"
        rows.append(["diagnostic: the same with LLM budgets raised", ratio, "-", "-", ""])
    return Table("Target (issue 17)", ["target", "measured", "goal", "met", "bound"], rows)


def _num(value: float | None) -> float:
    return float("nan") if value is None else value


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Sizes]:
    parser = make_parser(
        __doc__,
        DEFAULT_OUT,
        quick_help="few clients, a few seconds, shipped rows only (smoke)",
        work_dir_help="where the cluster, the data dirs and the logs go",
    )
    parser.add_argument("--clients", type=int, default=None, help="WebSocket clients (all nodes)")
    parser.add_argument("--warmup-s", type=float, default=None, help="load before the window")
    parser.add_argument("--window-s", type=float, default=None, help="measured seconds")
    parser.add_argument("--drain-s", type=float, default=None, help="seconds for runs to end")
    parser.add_argument("--latency-profile", default=LATENCY_PROFILE, choices=("none", "realistic"))
    parser.add_argument(
        "--time-scale", type=float, default=TIME_SCALE, help="simulated latency x this"
    )
    parser.add_argument(
        "--raised-budget-rows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also the diagnostic rows with the LLM budgets raised (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        clients=base.clients if args.clients is None else args.clients,
        warmup_s=base.warmup_s if args.warmup_s is None else args.warmup_s,
        window_s=base.window_s if args.window_s is None else args.window_s,
        drain_s=base.drain_s if args.drain_s is None else args.drain_s,
    )
    if sizes.clients < 2:
        parser.error("--clients must be at least 2 (one per node in B)")
    if sizes.window_s <= 0 or sizes.warmup_s < 0 or sizes.drain_s < 0:
        parser.error("--window-s must be positive, --warmup-s and --drain-s not negative")
    if args.raised_budget_rows is None:
        args.raised_budget_rows = not args.quick
    return args, sizes


def main(argv: Sequence[str] | None = None) -> int:
    args, sizes = parse_args(argv)
    configs = SHIPPED + (RAISED if args.raised_budget_rows else ())
    result = result_header("bench_nodes", args.quick, argv, args.work_dir)
    result["settings"] = {
        **{k: getattr(sizes, k) for k in ("clients", "warmup_s", "window_s", "drain_s")},
        "goals": list(GOALS),
        "latency_profile": args.latency_profile,
        "time_scale": args.time_scale,
        "simulator_defaults_from": "load_ws (--latency-profile realistic --time-scale 0.1)",
        "server": "load_ws.server_env: shipped settings, provider openai -> simulator, "
        "max_connections clients + 100; store.backend postgres, one database per configuration",
        "llm_budgets_per_node": {"shipped": llm_budgets(False)}
        | ({"raised (diagnostic rows)": llm_budgets(True)} if args.raised_budget_rows else {}),
        "lease_ttl_s": ResumeConfig().lease_ttl_s,
        "configurations": [c.name for c in configs],
    }
    with (
        timed() as total,
        scratch_dir(args.work_dir, "bench-nodes-") as work,
        open_postgres_server(work / "pgdata") as pg,
    ):
        result["postgres"] = {
            "settings": server_settings(pg.get_uri()),
            "data_dir_filesystem": filesystem_of(work / "pgdata"),
            "pgserver": version("pgserver"),
        }
        result |= trio.run(run_all, work, pg, configs, args, sizes)
    result["target"] = target(result["configurations"])
    finish(result, args.out, report, seconds=total.seconds, markdown=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
