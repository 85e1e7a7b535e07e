"""One data dir, several processes: one `serve` at a time, any number of `autoagent run`.

- The data dir's lock (`server._datadir`): taken by the first `serve`, which records its
  pid and WebSocket URL in it; a second `serve` is refused at start with one line naming
  the running one; the OS drops the lock of a SIGKILLed server, so the next one starts.
- A server under load (WebSocket goals in a shared session, memories written) while
  several `autoagent run` processes append to the same streams (`memory-local`, the
  shared session): stream versions stay contiguous with no duplicate, `audit` and
  `replay --verify` are clean, /healthz reports the log's real head, and a `$all`
  subscriber of the server receives every position exactly once.

Real processes (`python -m server ...`), a real LMDB data dir, WebSockets on
127.0.0.1 port 0; memories are embedded by the OpenAI-compatible simulator in the test's
nursery (the local model would take seconds to load in every process).
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.offline._simulator import Simulator, SimulatorOptions
from events import LmdbEventLog, RecordedEvent
from server._datadir import LOCK_FILE, ServerRecord, client_url, open_data_dir_lock, running_server
from server.errors import DataDirInUse

from .ws_helpers import Client, http_request, open_client

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "AUTOAGENT_TEST_SHARED_KEY"
START_TIMEOUT_S = 30.0  # a process up, on a loaded CI machine
TEST_TIMEOUT_S = 90.0
RUN_PROCESSES = 3
SERVER_GOALS = 6
TERMINAL = ("RunCompleted", "RunFailed", "RunCancelled")


# --- the lock, in this process ---------------------------------------------------------


async def test_the_lock_records_pid_then_url_and_a_second_holder_is_refused(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with trio.fail_after(10):
        async with open_data_dir_lock(data) as lock:
            assert running_server(data) == ServerRecord(os.getpid(), None)
            lock.record_url("ws://127.0.0.1:4321/")
            assert running_server(data) == ServerRecord(os.getpid(), "ws://127.0.0.1:4321/")
            with pytest.raises(DataDirInUse) as refused:
                async with open_data_dir_lock(data):
                    raise AssertionError("a second holder got the lock")
        assert running_server(data) is None
        async with open_data_dir_lock(data):  # free again
            pass
    assert (refused.value.pid, refused.value.url) == (os.getpid(), "ws://127.0.0.1:4321/")
    assert str(refused.value) == (
        f"data dir {data.resolve()} is in use by another autoagent serve (pid {os.getpid()}, "
        "listening on ws://127.0.0.1:4321/); stop it first or pass another --data-dir"
    )
    assert (data / LOCK_FILE).read_bytes() == b""  # released: names nobody


async def test_a_starting_server_waits_out_a_clients_brief_probe_of_the_lock(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with open_data_dir_lock(data):
        pass  # the lock file exists, held by nobody
    fd = os.open(data / LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # what `running_server` holds for a moment
        taken = trio.Event()

        async def start() -> None:
            async with open_data_dir_lock(data):
                taken.set()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(start)
                await trio.sleep(0.05)
                assert not taken.is_set()
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    assert taken.is_set()


def test_running_server_of_a_data_dir_without_a_lock_file_is_none(tmp_path: Path) -> None:
    assert running_server(tmp_path) is None


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "ws://127.0.0.1:80/"),
        ("0.0.0.0", "ws://127.0.0.1:80/"),
        ("::", "ws://[::1]:80/"),
        ("::1", "ws://[::1]:80/"),
        ("localhost", "ws://localhost:80/"),
    ],
    ids=["loopback", "any-v4", "any-v6", "loopback-v6", "name"],
)
def test_client_url_reaches_a_wildcard_bind_on_loopback(host: str, url: str) -> None:
    assert client_url(host, 80) == url


# --- real `serve` processes ------------------------------------------------------------------


def base_env(tmp_path: Path, sim_port: int | None = None) -> dict[str, str]:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")}
    env |= {
        "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
        "AUTOAGENT_STORE__SYNC": "false",
        "AUTOAGENT_SERVER__PORT": "0",
    }
    if sim_port is not None:
        env |= {
            "AUTOAGENT_EMBEDDINGS__PROVIDER": "openai",
            "AUTOAGENT_EMBEDDINGS__MODEL": "text-embedding-3-small",
            "AUTOAGENT_LLM__BASE_URL": f"http://127.0.0.1:{sim_port}/v1",
            "AUTOAGENT_LLM__API_KEY_ENV": KEY_ENV,
            KEY_ENV: "sk-test",
        }
    return env


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "server", *argv]


async def start_serve(
    nursery: trio.Nursery, data: Path, env: dict[str, str], logs: Path
) -> tuple[trio.Process, ServerRecord]:
    """`serve` on `data`, its output in files under `logs`; returns once its lock file
    names its URL (it listens: the URL is recorded right after the bind)."""
    await trio.Path(logs).mkdir(exist_ok=True)
    with (logs / "serve.out").open("wb") as out, (logs / "serve.err").open("wb") as err:
        process = await trio.lowlevel.open_process(
            command("serve", "--data-dir", str(data)), cwd=ROOT, env=env, stdout=out, stderr=err
        )
    nursery.start_soon(_reap_on_cancel, process)
    while True:
        record = running_server(data)
        if record is not None and record.pid == process.pid and record.url is not None:
            return process, record
        assert process.poll() is None, (logs / "serve.err").read_text()
        await trio.sleep(0.05)


async def _reap_on_cancel(process: trio.Process) -> None:
    """Kill the process if the test ends (or fails) with it still running."""
    try:
        await trio.sleep_forever()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def stop(process: trio.Process) -> int:
    process.send_signal(signal.SIGINT)
    return await process.wait()


@pytest.mark.slow
async def test_second_serve_is_refused_naming_the_first_and_a_killed_ones_lock_is_free(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    data, env = tmp_path / "data", base_env(tmp_path)
    with trio.fail_after(TEST_TIMEOUT_S):
        first, record = await start_serve(nursery, data, env, tmp_path / "first")
        port = int(record.url.rsplit(":", 1)[1].strip("/")) if record.url else 0
        assert record == ServerRecord(first.pid, f"ws://127.0.0.1:{port}/")
        second = await trio.run_process(
            command("serve", "--data-dir", str(data)),
            cwd=ROOT,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        first.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
        await first.wait()
        after_kill = running_server(data)
        third, third_record = await start_serve(nursery, data, env, tmp_path / "third")
        assert await stop(third) == 0
    assert second.returncode == 2
    assert second.stderr.decode() == (
        f"autoagent: error: data dir {data.resolve()} is in use by another autoagent serve "
        f"(pid {first.pid}, listening on ws://127.0.0.1:{port}/); stop it first or pass "
        "another --data-dir\n"
    )
    assert second.stdout == b""  # refused before opening anything
    assert after_kill is None
    assert third_record.pid == third.pid
    assert running_server(data) is None


# --- a server under load beside `autoagent run` processes ------------------------------------


class Everything:
    """Every `event` frame of one client's `$all` subscription from the beginning."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._arrived = trio.Event()

    async def collect(self, client: Client) -> None:
        reply = await client.request({"type": "subscribe", "id": "all", "stream": "$all"})
        assert reply["type"] == "subscribed", reply
        while True:
            frame = await client.receive(wait=TEST_TIMEOUT_S)
            assert frame["type"] == "event", frame
            self.seen.append(frame)
            self._arrived.set()
            self._arrived = trio.Event()

    async def wait_for(self, position: int) -> None:
        while not self.seen or self.seen[-1]["position"] < position:
            await self._arrived.wait()


async def server_goals(client: Client, session: str, count: int) -> list[str]:
    """`count` goals in `session` over the WebSocket, one after the other (remember,
    then compute, ...); the terminal event type of each."""
    ends = []
    for n in range(count):
        text = f"remember that server fact {n} is true" if n % 2 == 0 else f"what is {n} + {n}"
        reply = await client.request(
            {"type": "message", "id": f"g{n}", "text": text, "session_id": session}
        )
        assert reply["type"] == "accepted", reply
        events = await client.events_until(TERMINAL, wait=START_TIMEOUT_S)
        ends.append(events[-1]["event_type"])
    return ends


async def run_goal(data: Path, env: dict[str, str], session: str, n: int) -> dict[str, Any]:
    """`autoagent run --json --in-process` of a memory goal in `session`, in its own
    process: it appends to the log itself, beside the server (not through it)."""
    goal = f"remember that run fact {n} is true"
    argv = ("run", goal, "--session", session, "--json", "--in-process", "--data-dir", str(data))
    done = await trio.run_process(
        command(*argv),
        cwd=ROOT,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def read_all(data: Path) -> list[RecordedEvent]:
    log = LmdbEventLog.open(data, readonly=True)
    try:
        return log.read(0, 1_000_000)
    finally:
        log.close()


async def health_head(port: int) -> int:
    status, _, body = await http_request(port, "GET", "/healthz")
    assert status == 200, body
    head: int = json.loads(body)["head_position"]
    return head


async def settled_head(data: Path, port: int) -> int:
    """The log's head once it stops moving (a run's session reply comes just after its
    RunCompleted) and the server's /healthz reports that same head."""
    previous = -1
    while True:
        head = len(await trio.to_thread.run_sync(read_all, data))
        if head == previous and await health_head(port) == head:
            return head
        previous = head
        await trio.sleep(0.3)


@pytest.mark.slow
async def test_server_under_load_beside_run_processes_keeps_the_log_and_its_subscribers_exact(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    data, session = tmp_path / "data", "shared"
    simulator = Simulator(SimulatorOptions(api_key="sk-test", embedding_dim=1536))
    env = base_env(tmp_path, await nursery.start(simulator.serve))
    everything = Everything()
    with trio.fail_after(TEST_TIMEOUT_S):
        server, record = await start_serve(nursery, data, env, tmp_path / "logs")
        assert record.url is not None
        port = int(record.url.rsplit(":", 1)[1].strip("/"))
        async with open_client(record.url) as watcher, open_client(record.url) as user:
            async with trio.open_nursery() as subscribers:
                subscribers.start_soon(everything.collect, watcher)
                first = await user.request(
                    {"type": "message", "id": "s", "text": "what is 1 + 1", "session_id": session}
                )
                assert first["type"] == "accepted", first
                await user.events_until(TERMINAL, wait=START_TIMEOUT_S)
                reports: list[dict[str, Any]] = []
                ends: list[str] = []

                async def one_run(n: int) -> None:
                    reports.append(await run_goal(data, env, session, n))

                async def goals() -> None:
                    ends.extend(await server_goals(user, session, SERVER_GOALS))

                async with trio.open_nursery() as load:
                    load.start_soon(goals)
                    for n in range(RUN_PROCESSES):
                        load.start_soon(one_run, n)
                head = await settled_head(data, port)
                await everything.wait_for(head)
                subscribers.cancel_scope.cancel()
        assert await stop(server) == 0, (tmp_path / "logs" / "serve.err").read_text()
        audit = await trio.run_process(
            command("audit", "--data-dir", str(data)), cwd=ROOT, env=env, capture_stdout=True
        )
        verify = await trio.run_process(
            command("replay", "--verify", "--data-dir", str(data)),
            cwd=ROOT,
            env=env,
            capture_stdout=True,
        )
    records = read_all(data)
    assert [r.position for r in records] == list(range(1, head + 1))
    versions = collections.defaultdict(list)
    for r in records:
        versions[r.stream].append(r.version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values()), versions
    # The memory tools act for the principal of the run: the local one, for the server
    # without tokens and for the `autoagent run` processes alike.
    memories = [r for r in records if r.stream == "memory-local"]
    assert len(memories) == RUN_PROCESSES + (SERVER_GOALS + 1) // 2
    assert ends == ["RunCompleted"] * SERVER_GOALS
    assert [report["status"] for report in reports] == ["completed"] * RUN_PROCESSES
    assert [f["position"] for f in everything.seen] == list(range(1, head + 1))  # once each
    assert audit.returncode == 0 and verify.returncode == 0
    assert verify.stdout.decode().startswith("ok: "), verify.stdout


# --- `autoagent stats` asks the running server ------------------------------------------------


@pytest.mark.slow
async def test_stats_reports_the_running_servers_health(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    data, env = tmp_path / "data", base_env(tmp_path)
    with trio.fail_after(TEST_TIMEOUT_S):
        server, record = await start_serve(nursery, data, env, tmp_path / "logs")
        running = await trio.run_process(
            command("stats", "--json", "--data-dir", str(data)),
            cwd=ROOT,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
        )
        assert await stop(server) == 0
        stopped = await trio.run_process(
            command("stats", "--json", "--data-dir", str(data)),
            cwd=ROOT,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
        )
    seen = json.loads(running.stdout)["server"]
    assert (seen["pid"], seen["url"]) == (record.pid, record.url)
    assert seen["health"]["status"] == "ok"
    assert seen["health"]["stopped_projections"] == {}
    assert json.loads(stopped.stdout)["server"] is None


def test_stats_names_a_stopped_projection_of_the_running_server() -> None:
    from server.cli._admin import _server_line

    health = {
        "status": "degraded",
        "stopped_projections": {"metrics": "ValueError: bad data at position 12"},
        "warming": ["embedder"],
    }
    line = _server_line({"pid": 7, "url": "ws://127.0.0.1:1/", "health": health})
    assert line == (
        "server         pid 7, ws://127.0.0.1:1/: degraded\n"
        "  projection metrics STOPPED: ValueError: bad data at position 12\n"
        "  warming: embedder\n\n"
    )
    assert _server_line(None) == "server         none running on this data dir\n\n"
    quiet = {"status": "ok", "node": {"id": "a", "runs_leased": 2, "runs_taken_over": 0}}
    line = _server_line({"pid": 7, "url": "ws://127.0.0.1:1/", "health": quiet})
    assert line == "server         pid 7, ws://127.0.0.1:1/: ok\n\n"  # nothing moved: no line
    moved = {"status": "ok", "node": {"id": "b", "runs_leased": 1, "runs_taken_over": 3}}
    line = _server_line({"pid": 7, "url": "ws://127.0.0.1:1/", "health": moved})
    assert line.endswith("\n  node b: 1 run(s) leased, 3 taken over, 0 lost\n\n")
