"""The server around the protocol: HTTP /healthz and /metrics on the WebSocket port,
backpressure from slow clients, and `autoagent serve` as a real process (signals, the
bind check, the token from the environment)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from agents.llm import RateLimiter
from events import RunRequested
from server.cli._main import main
from server.ws._limits import ServerLimits

from .ws_helpers import GOAL, TIMEOUT_S, Harness, http_request, open_client, serving, simulator

ROOT = Path(__file__).resolve().parents[2]
ENV_TOKEN = "env-s3cret-0123456789abcdef0123456789"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(tmp_path, lmdb=True) as harness:
        yield harness


# --- HTTP on the same port ------------------------------------------------------------


async def test_healthz_reports_store_head_and_projection_lag(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            await client.request({"type": "message", "id": 1, "text": GOAL})
            await client.events_until()
            await app.wait_runs_done()
            await app.runner.wait_for(app.store.head_position)
            status, headers, body = await http_request(app.port, "GET", "/healthz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok" and health["store"] == "open"
    assert health["head_position"] == app.store.head_position > 0
    assert health["projection_lag"] == 0
    assert set(health["projections"]) >= {"runs", "sessions", "metrics"}


async def test_metrics_are_prometheus_text_with_log_clients_runs_and_llm(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            await client.request({"type": "message", "id": 1, "text": GOAL})
            await client.events_until()
            await app.wait_runs_done()
            await app.runner.wait_for(app.store.head_position)
            status, headers, body = await http_request(app.port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert int(samples["autoagent_event_log_position"]) == app.store.head_position
    assert int(samples["autoagent_connected_clients"]) == 1
    assert int(samples["autoagent_runs_completed_total"]) == 1
    assert int(samples["autoagent_llm_calls_total"]) >= 2
    assert int(samples["autoagent_llm_tokens_total"]) > 0
    assert "autoagent_projection_lag_events" in samples
    assert any(k.startswith("autoagent_phase_latency_seconds_bucket{") for k in samples)
    assert 'autoagent_phase_latency_seconds_bucket{phase="run",le="+Inf"} 1' in text
    for name in ("autoagent_event_log_position", "autoagent_runs_completed_total"):
        assert f"# TYPE {name} " in text and f"# HELP {name} " in text
    # The offline model has no rate limiter: nothing waited for a budget.
    assert float(samples["autoagent_llm_budget_wait_seconds_total"]) == 0.0
    assert int(samples["autoagent_llm_rate_limited_total"]) == 0


async def test_the_frames_a_commit_brings_a_client_go_out_in_one_socket_write(
    app: Harness,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with app.client() as client:
            accepted = await client.request({"type": "message", "id": 1, "text": GOAL})
            events = await client.events_until()
            await app.wait_runs_done()
            _, _, body = await http_request(app.port, "GET", "/metrics")
    samples = metric_samples(body)
    frames, writes = (
        int(samples["autoagent_ws_frames_sent_total"]),
        int(samples["autoagent_ws_frame_writes_total"]),
    )
    # The hello, the acceptance and every event frame were sent...
    assert accepted["type"] == "accepted"
    assert frames >= len(events) + 1
    # ...in fewer writes: a run queues several events per commit (step started and
    # completed, verdicts), and its follower hands each commit's frames over at once.
    assert writes < frames
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)


def metric_samples(body: bytes) -> dict[str, str]:
    lines = body.decode().splitlines()
    return dict(line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))


async def test_metrics_count_the_time_llm_calls_waited_for_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget of 60,000 tokens a minute (1,000 a second), emptied first: the run's plan
    call, ~1,000 tokens and more, waits for the refill, and /metrics says how long."""
    monkeypatch.setenv("AUTOAGENT_WS_TEST_SIM_KEY", "sk-test")
    async with simulator(latency="none") as url:
        env = {"AUTOAGENT_LLM__TPM_LIMIT": "60000"}
        async with serving(tmp_path, llm_url=url, env=env) as app:
            limiter = getattr(app.orchestrator.provider, "limiter", None)
            assert isinstance(limiter, RateLimiter)
            _, _, before = await http_request(app.port, "GET", "/metrics")
            assert float(metric_samples(before)["autoagent_llm_budget_wait_seconds_total"]) == 0
            limiter.release(await limiter.acquire(60_000), used_tokens=60_000)
            with trio.fail_after(TIMEOUT_S):
                async with app.client() as client:
                    await client.request({"type": "message", "id": 1, "text": GOAL})
                    await client.events_until()
                    await app.wait_runs_done()
            _, _, after = await http_request(app.port, "GET", "/metrics")
    waited = float(metric_samples(after)["autoagent_llm_budget_wait_seconds_total"])
    # The limiter's arithmetic, not the machine's speed: the plan call reserves its
    # prompt (its system prompt alone is over 400 tokens) and 256 for the reply out of an
    # empty bucket that refills at 1,000 tokens a second, and every wait has the 0.5 s
    # margin added.
    assert waited >= 0.5 + 0.5, waited
    assert abs(waited - limiter.statistics().waited_s) < 1e-5


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/", 404),
        ("POST", "/healthz", 405),
        ("POST", "/metrics", 405),
    ],
    ids=["unknown-path", "root", "post-healthz", "post-metrics"],
)
async def test_other_http_requests_get_404_or_405(
    app: Harness, method: str, path: str, status: int
) -> None:
    with trio.fail_after(TIMEOUT_S):
        got, _, _ = await http_request(app.port, method, path)
        async with app.client() as client:  # and the WebSocket side is still there
            await client.ping()
    assert got == status


async def test_garbage_on_the_port_gets_400_and_the_server_goes_on(app: Harness) -> None:
    with trio.fail_after(TIMEOUT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", app.port)
        async with stream:
            await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(1024):
                data += chunk
        async with app.client() as client:
            await client.ping()
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")


# --- backpressure ---------------------------------------------------------------------


async def flood(app: Harness, events: int, payload_bytes: int) -> None:
    goal = "x" * payload_bytes
    for i in range(events):
        await app.store.append(f"run-big{i}", [RunRequested(f"big{i}", "s", goal)])


async def test_slow_subscriber_is_bounded_and_does_not_slow_others(tmp_path: Path) -> None:
    limits = ServerLimits(send_queue_frames=8, slow_client_timeout_s=30)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits) as app:
            async with app.client() as slow, app.client() as fast:
                await slow.request({"type": "subscribe", "id": 1, "stream": "$all"})
                pings = []
                queued = []
                for _ in range(10):
                    await flood(app, 30, 20_000)
                    pings.append(await fast.ping())
                    queued.extend(
                        c._out_send.statistics().current_buffer_used for c in app.app.connections
                    )
                # The slow one is behind: its queue is full but never over its bound...
                assert max(queued) == limits.send_queue_frames
                assert max(pings) < 0.5
                # ...and once it reads, it gets everything, in order, from the log.
                events = await slow.events(300)
    assert [e["position"] for e in events] == list(range(1, 301))


async def test_slow_subscriber_past_the_timeout_is_closed_with_1013(tmp_path: Path) -> None:
    timeout = 0.5
    limits = ServerLimits(send_queue_frames=8, slow_client_timeout_s=timeout)
    with trio.fail_after(TIMEOUT_S):
        async with serving(tmp_path, limits) as app:
            async with app.client() as slow, app.client() as fast:
                await slow.request({"type": "subscribe", "id": 1, "stream": "$all"})
                (stuck,) = [c for c in app.app.connections if c.subscriptions]
                pings = []
                for _ in range(40):  # until the server gives up on the slow client
                    await flood(app, 10, 50_000)
                    pings.append(await fast.ping())
                    if stuck.ws.closed is not None or stuck not in app.app.connections:
                        break
                    await trio.sleep(timeout / 5)
                assert stuck.ws.closed is not None or stuck not in app.app.connections
                # It reads again: what it gets is in order, then a clean close 1013.
                code = await slow.closed_code()
                await fast.ping()
                assert max(pings) < 0.5
    events = [f for f in slow.seen if f["type"] == "event"]
    assert [e["position"] for e in events] == list(range(1, len(events) + 1))
    assert code == 1013


# --- `autoagent serve` as a process ----------------------------------------------------

LISTENING = re.compile(r"listening on ws://([\d.]+):(\d+)")


def spawn_serve(
    tmp_path: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")}
    environ |= {
        "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
        "AUTOAGENT_STORE__SYNC": "false",
        **(env or {}),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "server",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            *argv,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


async def wait_listening(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    while True:
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line, f"serve exited with {proc.wait()} before listening"
        found = LISTENING.search(line)
        if found:
            return int(found.group(2))


def test_serve_on_all_interfaces_without_a_token_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOAGENT_TOKEN", raising=False)
    out = io.StringIO()
    argv = ["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path / "data")]
    assert main(argv, out=out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoagent: error: ")
    assert "0.0.0.0" in err and "token" in err
    assert "listening" not in out.getvalue()


@pytest.mark.slow
async def test_serve_with_env_token_wants_hello_and_sigint_closes_with_1001_exit_0(
    tmp_path: Path,
) -> None:
    proc = spawn_serve(tmp_path, "--port", "0", env={"AUTOAGENT_TOKEN": ENV_TOKEN})
    try:
        with trio.fail_after(TIMEOUT_S):
            port = await wait_listening(proc)
            url = f"ws://127.0.0.1:{port}/"
            async with open_client(url) as wrong:
                await wrong.send({"type": "hello", "id": 1, "token": "guess"})
                assert await wrong.closed_code() == 1008
            assert [f["code"] for f in wrong.seen] == ["unauthorized"]
            async with open_client(url) as client:
                reply = await client.request({"type": "hello", "id": 2, "token": ENV_TOKEN})
                assert reply["type"] == "welcome"
                reply = await client.request({"type": "message", "id": 3, "text": GOAL})
                assert reply["type"] == "accepted"
                assert (await client.events_until())[-1]["event_type"] == "RunCompleted"
                proc.send_signal(signal.SIGINT)
                with pytest.raises(ConnectionClosed) as closed:
                    await client.events(1)
            code = await trio.to_thread.run_sync(proc.wait)
    finally:
        proc.kill()
        out, err = proc.communicate()
    assert code == 0, err
    assert "stopped cleanly" in out
    assert closed.value.reason.code == 1001
