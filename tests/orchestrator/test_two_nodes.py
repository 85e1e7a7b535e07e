"""Two server nodes on one PostgreSQL log (real processes, a real `pgserver` cluster):
goals are sent to both through WebSocket clients, node A is SIGKILLed in the middle of
its runs, and node B takes them over once their leases expire and finishes them.

Checked afterwards: every run completed, each step completed exactly once, no quote
whose step had completed when A died was requested again (the quotes endpoint, in this
process, counts the real side effects), `autoagent audit` is clean, and a client
subscribed to `$all` on node B saw every position of the log exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import signal
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from events import PostgresEventLog, PostgresKeyStore, RecordedEvent, Sealer
from tests.server.ws_helpers import http_request, open_client

from .conftest import QuoteEndpoint, price_of, start_quote_endpoint, start_simulator
from .test_crash import ROOT, Child, goal_of, quoted_symbols, server_env, symbols_of

pytestmark = pytest.mark.slow

SEED = 4242
LEASE_TTL_S = 2.0
RUNS_ON_A = 4
RUNS_ON_B = 2
TIMEOUT_S = 150  # each process start imports the openai SDK: seconds on a busy box
POLL_S = 0.1
TERMINAL = ("RunCompleted", "RunFailed", "RunCancelled")


def read_log(url: str) -> list[RecordedEvent]:
    """Every record of the shared log, opened with the shared keys."""
    log = PostgresEventLog.open(url, readonly=True)
    keys = PostgresKeyStore.open(url, readonly=True)
    try:
        records: list[RecordedEvent] = []
        while batch := log.read(records[-1].position if records else 0, 1000):
            records.extend(batch)
        return Sealer(keys).open_many(records)
    finally:
        keys.close()
        log.close()


def run_streams(records: list[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    streams: dict[str, list[RecordedEvent]] = collections.defaultdict(list)
    for record in records:
        if record.stream.startswith("run-"):
            streams[record.stream].append(record)
    return dict(streams)


def completed_symbols(records: list[RecordedEvent]) -> set[str]:
    return {
        symbol
        for r in records
        if r.type == "StepCompleted"
        for symbol in quoted_symbols(r.data["result"])
    }


class Subscriber:
    """A client subscribed to `$all` on a node, keeping every position its events carry."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.ready = trio.Event()
        self._grew = trio.Event()

    async def follow(self, url: str) -> None:
        async with open_client(url) as client:
            reply = await client.request({"type": "subscribe", "id": 1, "stream": "$all"})
            assert reply["type"] == "subscribed", reply
            self.ready.set()
            with contextlib.suppress(ConnectionClosed):  # the node stops at the test's end
                while True:
                    frame = await client.receive(wait=TIMEOUT_S)
                    if frame["type"] == "event":
                        self.seen.append(frame["position"])
                        self._grew.set()
                        self._grew = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.seen) < count:
            await self._grew.wait()


async def ws_url(node: Child) -> str:
    port = (await node.wait_for_line(r"listening on ws://[^:]+:(\d+)")).group(1)
    return f"ws://127.0.0.1:{port}/"


async def send_goals(url: str, goals: list[str]) -> list[str]:
    """Each goal as a new session's message; the run ids accepted."""
    run_ids = []
    async with open_client(url) as client:
        for index, goal in enumerate(goals):
            reply = await client.request({"type": "message", "id": index, "text": goal})
            assert reply["type"] == "accepted", reply
            run_ids.append(reply["run_id"])
    return run_ids


async def test_a_killed_node_s_runs_are_finished_by_the_other_node_exactly_once(
    tmp_path: Path, nursery: trio.Nursery, postgres_url: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    _, sim_url = await start_simulator(
        nursery, latency_profile="realistic", time_scale=0.05, seed=SEED
    )
    quotes: QuoteEndpoint = await start_quote_endpoint(nursery, delay_s=(0.3, 0.8), seed=SEED)

    def env_of(node: str) -> dict[str, str]:
        return server_env(sim_url, quotes, tmp_path / node) | {
            "AUTOAGENT_STORE__BACKEND": "postgres",
            "AUTOAGENT_STORE__URL": postgres_url,
            "AUTOAGENT_SERVER__NODE_ID": node,
            "AUTOAGENT_RESUME__LEASE_TTL_S": str(LEASE_TTL_S),
        }

    with trio.fail_after(TIMEOUT_S):
        node_a = await Child.start(nursery, ["serve"], env_of("node-a"), logs)
        node_b = await Child.start(nursery, ["serve"], env_of("node-b"), logs)
        url_a, url_b = [await ws_url(node) for node in (node_a, node_b)]
        await node_b.wait_for_line(r"^autoagent: node node-b, runs leased for 2 s")
        on_b = Subscriber()
        nursery.start_soon(on_b.follow, url_b)
        await on_b.ready.wait()

        goals_a = [goal_of(symbols_of(i)) for i in range(RUNS_ON_A)]
        goals_b = [goal_of(symbols_of(i)) for i in range(RUNS_ON_A, RUNS_ON_A + RUNS_ON_B)]
        runs_a = await send_goals(url_a, goals_a)
        runs_b = await send_goals(url_b, goals_b)
        await quotes.wait_for_answers(3)  # A is in the middle of its runs' steps
        await node_a.kill()
        killed_at = trio.current_time()
        requests_at_kill = collections.Counter(quotes.requests)
        at_kill = await trio.to_thread.run_sync(read_log, postgres_url)
        unfinished_at_kill = [
            s for s, records in run_streams(at_kill).items() if records[-1].type not in TERMINAL
        ]
        completed_at_kill = completed_symbols(at_kill)

        while True:
            records = await trio.to_thread.run_sync(read_log, postgres_url)
            streams = run_streams(records)
            if len(streams) == len(runs_a) + len(runs_b) and all(
                s[-1].type in TERMINAL for s in streams.values()
            ):
                break
            await trio.sleep(POLL_S)
        finished_after_s = trio.current_time() - killed_at
        head = records[-1].position
        await on_b.wait_for(head)
        port_b = int(url_b.rsplit(":", 1)[1].strip("/"))
        status, _, body = await http_request(port_b, "GET", "/healthz")
        node_b.process.send_signal(signal.SIGINT)
        assert await node_b.process.wait() == 0, (logs / f"{node_b.name}.err").read_text()

    assert any(s[len("run-") :] in runs_a for s in unfinished_at_kill), "A had no run in flight"
    health = json.loads(body)["node"]
    assert status == 200 and health["id"] == "node-b", health
    assert health["runs_taken_over"] >= 1 and health["runs_leased"] == 0, health
    for stream, run_records in streams.items():
        types = [(r.type, r.data.get("step_id")) for r in run_records]
        assert run_records[-1].type == "RunCompleted", (stream, types)
        completed = [r.data["step_id"] for r in run_records if r.type == "StepCompleted"]
        assert sorted(completed) == ["s1", "s2", "s3"], types  # each step completed once
        symbols = re.findall(r"\bZ[A-Z]{2}\b", run_records[0].data["goal"])
        answer = run_records[-1].data["answer"]
        assert all(s in answer and str(price_of(s)) in answer for s in symbols), answer
    taken_over = [s for s in unfinished_at_kill if any(r.type == "RunResumed" for r in streams[s])]
    assert taken_over, "no run of node A was resumed"
    again = {s: quotes.requests[s] - requests_at_kill[s] for s in completed_at_kill}
    assert not {s: n for s, n in again.items() if n}, f"completed, then requested: {again}"
    assert sorted(on_b.seen) == list(range(1, head + 1)), "B's subscriber: not every position once"
    print(f"node A killed; node B finished its runs {finished_after_s:.1f} s later")

    audit = await trio.run_process(
        [sys.executable, "-m", "server", "audit"],
        cwd=ROOT,
        env=env_of("node-b"),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout.decode() + audit.stderr.decode()
