"""Crash test: real server processes are SIGKILLed in the middle of runs, restarted,
and every run still finishes, no completed step runs twice, and the log audits clean.

The model is the simulator (realistic latency, scaled down) and the quotes come from
a loopback endpoint that answers after 50-300 ms and counts requests per symbol; both
live in this test's process, which is never killed. Each run asks for three symbols
of its own, one step each, so every step's side effect is countable: a symbol whose
`StepCompleted` was in the log when a process died must never be requested again.

Rounds (seeded): `autoagent run GOAL` killed soon after its first quote request;
more runs submitted; `autoagent serve` (which resumes unfinished runs) killed twice
at random moments once a few quotes were answered; a last `serve` finishes
everything and stops on SIGINT; `autoagent audit` checks the hash chain.
"""

from __future__ import annotations

import collections
import itertools
import os
import random
import re
import signal
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.offline._provider import OfflineProvider
from agents.runs._orchestrator import Orchestrator
from agents.tools._registry import AgentRegistry
from events import (
    FileKeyStore,
    LmdbEventLog,
    RecordedEvent,
    Sealer,
    StoreOptions,
    open_event_store,
)

from .conftest import QuoteEndpoint, price_of, start_quote_endpoint, start_simulator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = 1127
SUBMITTED_RUNS = 5  # besides the one started by `autoagent run`
# Each killed serve dies soon after a to b more quotes were answered: in the middle of
# the steps, with some completed, others in flight and other runs still planning.
KILL_AFTER_ANSWERS = ((1, 4), (2, 5))
WAIT_FOR_ANSWERS_S = 10
CRASH_TIMEOUT_S = 150  # each process start imports the openai SDK: seconds on a busy box
POLL_S = 0.1
TERMINAL = ("RunCompleted", "RunFailed", "RunCancelled")


def symbols_of(index: int) -> tuple[str, ...]:
    return tuple(f"Z{string.ascii_uppercase[index]}{c}" for c in "ABC")


def goal_of(symbols: tuple[str, ...]) -> str:
    first, second, third = symbols
    return f"get the price of {first} and get the price of {second} then get the price of {third}"


def server_env(sim_url: str, quotes: QuoteEndpoint, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")}
    return env | {
        "AUTOAGENT_LLM__PROVIDER": "openai",
        "AUTOAGENT_LLM__BASE_URL": sim_url,
        "OPENAI_API_KEY": "test",
        "AUTOAGENT_AGENTS__QUOTE_ENDPOINT": quotes.url,
        "AUTOAGENT_AGENTS__ENABLED": '["math", "clock", "quotes"]',
        "AUTOAGENT_DATA_DIR": str(data),
        "AUTOAGENT_SERVER__PORT": "0",
    }


_started = itertools.count()


class Child:
    """A `python -m server ...` process; its stdout lines are collected as they come."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._changed = trio.Event()

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, argv: list[str], env: dict[str, str], logs: Path
    ) -> Child:
        name = f"{argv[0]}-{next(_started)}"
        with (logs / f"{name}.err").open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-u", "-m", "server", *argv],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        child = cls(name, process)
        nursery.start_soon(child._read)
        return child

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async with self.process.stdout:
            while chunk := await self.process.stdout.receive_some():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                self.lines.extend(line.decode() for line in complete)
                self._changed.set()
                self._changed = trio.Event()
        self._changed.set()

    async def wait_for_line(self, pattern: str) -> re.Match[str]:
        """The first stdout line matching `pattern`; fails if the process exits first."""
        while True:
            for line in self.lines:
                if found := re.search(pattern, line):
                    return found
            if self.process.returncode is not None or self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited without printing {pattern!r}")
            await self._changed.wait()

    async def kill(self) -> None:
        self.process.kill()  # SIGKILL: no cleanup, no flush, mid-whatever
        await self.process.wait()


@dataclass
class Kill:
    """What the log and the endpoint said when a process was killed."""

    requests: collections.Counter[str]
    completed: set[str]
    unfinished: int
    partial: set[str]  # completed symbols of runs that had not finished


def read_log(data: Path) -> list[RecordedEvent]:
    """Every record, opened with the data dir's keys (the log holds goals sealed)."""
    log = LmdbEventLog.open(data, readonly=True)
    try:
        records: list[RecordedEvent] = []
        while batch := log.read(records[-1].position if records else 0, 1000):
            records.extend(batch)
        return Sealer(FileKeyStore(data / "keys", readonly=True)).open_many(records)
    finally:
        log.close()


def quoted_symbols(result: Any) -> list[str]:
    quotes = result.get("quotes", [result]) if isinstance(result, dict) else []
    return [str(q["symbol"]) for q in quotes if isinstance(q, dict) and "symbol" in q]


def run_streams(records: list[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    streams: dict[str, list[RecordedEvent]] = collections.defaultdict(list)
    for record in records:
        if record.stream.startswith("run-"):
            streams[record.stream].append(record)
    return dict(streams)


async def snapshot(data: Path, quotes: QuoteEndpoint) -> Kill:
    records = await trio.to_thread.run_sync(read_log, data)
    completed = {
        symbol
        for r in records
        if r.type == "StepCompleted"
        for symbol in quoted_symbols(r.data["result"])
    }
    unfinished = [s for s in run_streams(records).values() if s[-1].type not in TERMINAL]
    partial = {
        symbol
        for stream in unfinished
        for r in stream
        if r.type == "StepCompleted"
        for symbol in quoted_symbols(r.data["result"])
    }
    return Kill(collections.Counter(quotes.requests), completed, len(unfinished), partial)


async def wait_until_every_run_is_finished(data: Path, runs: int) -> None:
    """Poll the log (read-only, beside the server) until `runs` runs have ended."""
    while True:
        streams = run_streams(await trio.to_thread.run_sync(read_log, data))
        if len(streams) == runs and all(s[-1].type in TERMINAL for s in streams.values()):
            return
        await trio.sleep(POLL_S)


async def submit_runs(data: Path, goals: list[str]) -> None:
    """Record the user messages and run requests, as a server does before running them."""
    async with open_event_store(data, StoreOptions()) as store:
        orchestrator = Orchestrator(store, OfflineProvider(), AgentRegistry({}))
        for goal in goals:
            await orchestrator.submit(goal)


async def test_killed_server_resumes_every_run_without_repeating_completed_steps(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    rng = random.Random(SEED)
    data, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    _, sim_url = await start_simulator(
        nursery, latency_profile="realistic", time_scale=0.05, seed=SEED
    )
    quotes = await start_quote_endpoint(nursery, delay_s=(0.05, 0.3), seed=SEED)
    env = server_env(sim_url, quotes, data)
    kills: list[Kill] = []
    with trio.fail_after(CRASH_TIMEOUT_S):
        child = await Child.start(nursery, ["run", goal_of(symbols_of(0))], env, logs)
        await quotes.wait_for_request(symbols_of(0))
        await trio.sleep(rng.uniform(0.0, 0.15))
        await child.kill()
        kills.append(await snapshot(data, quotes))

        await submit_runs(data, [goal_of(symbols_of(i)) for i in range(1, SUBMITTED_RUNS + 1)])
        for answers in KILL_AFTER_ANSWERS:
            child = await Child.start(nursery, ["serve"], env, logs)
            await child.wait_for_line("event store open at")
            with trio.move_on_after(WAIT_FOR_ANSWERS_S):
                await quotes.wait_for_answers(quotes.answered + rng.randint(*answers))
            await trio.sleep(rng.uniform(0.1, 0.3))
            await child.kill()
            kills.append(await snapshot(data, quotes))

        child = await Child.start(nursery, ["serve"], env, logs)
        # ready (signal handlers in place) before anything is asked of it: when every run
        # already finished before the last kill, the SIGINT below would come at once
        await child.wait_for_line("event store open at")
        if kills[-1].unfinished:
            resumed = await child.wait_for_line(r"resumed (\d+) unfinished run\(s\)")
            assert int(resumed.group(1)) == kills[-1].unfinished
        await wait_until_every_run_is_finished(data, SUBMITTED_RUNS + 1)
        child.process.send_signal(signal.SIGINT)
        assert await child.process.wait() == 0, (logs / f"{child.name}.err").read_text()
        assert "autoagent: stopped cleanly" in child.lines

    assert any(kill.unfinished for kill in kills), f"no kill interrupted a run: {kills}"
    assert any(kill.partial for kill in kills), f"no kill left a run half done: {kills}"
    streams = run_streams(await trio.to_thread.run_sync(read_log, data))
    assert len(streams) == SUBMITTED_RUNS + 1
    for stream, records in streams.items():
        assert records[-1].type == "RunCompleted", (stream, [r.type for r in records])
        completed = [r.data["step_id"] for r in records if r.type == "StepCompleted"]
        steps = [(r.type, r.data.get("step_id"), r.data.get("attempt")) for r in records]
        assert sorted(completed) == ["s1", "s2", "s3"], steps  # each step completed once
        symbols = re.findall(r"\bZ[A-Z]{2}\b", records[0].data["goal"])
        answer = records[-1].data["answer"]
        assert all(f"{s}" in answer and str(price_of(s)) in answer for s in symbols), answer
    for kill in kills:
        again = {s: quotes.requests[s] - kill.requests[s] for s in kill.completed}
        assert not {s: n for s, n in again.items() if n}, f"completed, then requested: {kills}"
    all_symbols = [s for i in range(SUBMITTED_RUNS + 1) for s in symbols_of(i)]
    assert set(quotes.requests) == set(all_symbols)

    audit = await trio.run_process(
        [sys.executable, "-m", "server", "audit", "--data-dir", str(data)],
        cwd=ROOT,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout.decode() + audit.stderr.decode()
