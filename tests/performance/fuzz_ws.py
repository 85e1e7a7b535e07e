"""WebSocket fuzz run: N random frames against `autoagent serve` in its own process.

From the project root:

    .venv/bin/python -m tests.performance.fuzz_ws [--frames 100000] [--connections 8]
        [--seed S] [--json PATH] [--work-dir DIR] [--quick] [--markdown]

The server (`python -m server serve --port 0 --data-dir <tmp>`, the offline model, the
request rate limit raised so the fuzzing is not all `rate_limited`) prints its address;
this process parses it (`server.bench._processes`, shared with `autoagent bench`). The
frames come from `tests.server.frames.RandomFrames`: the protocol's own message types
with plausible or arbitrary JSON in every field, and text that is no frame at all (see
that module). `--connections` clients share the N frames; each sends one frame, reads
up to the first frame that is not an event (the reply: runs and subscriptions stream
events meanwhile), and checks it:

- the reply is never an `internal` error;
- it echoes the frame's id when the frame had a valid one (`id_mismatches` otherwise);
- the connection stays open; a close is counted by code, and one the protocol does not
  provide for here (anything but 1013, "client too slow", with no tokens configured and
  frames far below the size limits) is `unexpected_closes`; the client then reconnects.

At the end a fresh connection must get `pong` (`server_up`), /healthz is read, the server
is stopped with SIGINT (`server_exit_code` 0 is a clean stop), and its log is searched
for tracebacks (each a failure boundary that caught something: worth reading). Exit
status 0 when the server stayed up and no frame got `internal`, a wrong id or an
unexpected close.

Writes JSON (default `tests/performance/results/fuzz_ws.json`) and prints a table.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from server.bench import _processes as bench_processes
from server.bench._processes import ServiceProcess, child_env, http_get
from tests.server.frames import RandomFrames, expected_id

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, Table

DEFAULT_OUT = RESULTS_DIR / "fuzz_ws.json"
REPLY_TIMEOUT_S = 30.0
# Closes the protocol provides for in this set-up: 1013 when a client falls too far
# behind the events it subscribed to (each connection may subscribe to `$all` often).
EXPECTED_CLOSES = {1013}
SAMPLES = 10


@dataclass
class FuzzStats:
    sent: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    events: int = 0
    internal: int = 0
    id_mismatches: int = 0
    unanswered: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    connects: int = 0
    samples: list[str] = field(default_factory=list)

    def note(self, what: str, frame: str, detail: object) -> None:
        if len(self.samples) < SAMPLES:
            self.samples.append(f"{what}: frame {frame[:200]!r} -> {str(detail)[:300]}")

    @property
    def unexpected_closes(self) -> int:
        return sum(n for code, n in self.closes.items() if code not in EXPECTED_CLOSES)


class Quota:
    """The frames left to send, shared by the connections."""

    def __init__(self, frames: int) -> None:
        self.left = frames

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


async def reply_to(ws: Any, stats: FuzzStats) -> dict[str, Any]:
    """The next frame that is not an event."""
    with trio.fail_after(REPLY_TIMEOUT_S):
        while True:
            frame = json.loads(await ws.get_message())
            if frame.get("type") != "event":
                return dict(frame)
            stats.events += 1


async def fuzz_connection(url: str, frames: RandomFrames, quota: Quota, stats: FuzzStats) -> None:
    """Send frames until the quota is spent, reconnecting after any close."""
    while quota.left > 0:
        stats.connects += 1
        try:
            async with open_websocket_url(url) as ws:
                while quota.take():
                    text = frames.text()
                    await ws.send_message(text)
                    stats.sent += 1
                    reply = await reply_to(ws, stats)
                    check(text, reply, stats)
                    frames.remember(reply)
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason is not None else 1006
            stats.closes[code] += 1
            if code not in EXPECTED_CLOSES:
                stats.note("close", text, closed.reason)
        except trio.TooSlowError:
            stats.unanswered += 1
            stats.note("no reply", text, f"nothing within {REPLY_TIMEOUT_S:g} s")
        except (HandshakeError, OSError) as exc:
            stats.closes[0] += 1  # could not even connect: the server is gone
            stats.note("connect", "", exc)
            return


def check(text: str, reply: dict[str, Any], stats: FuzzStats) -> None:
    kind = reply.get("type", "?")
    stats.replies[f"error:{reply.get('code')}" if kind == "error" else str(kind)] += 1
    if reply.get("code") == "internal":
        stats.internal += 1
        stats.note("internal", text, reply)
    if reply.get("id") != expected_id(text):
        stats.id_mismatches += 1
        stats.note("id", text, reply)


async def still_up(port: int) -> bool:
    """A fresh connection gets its pong."""
    try:
        with trio.fail_after(REPLY_TIMEOUT_S):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send_message(json.dumps({"type": "ping", "id": "still-up"}))
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame.get("type") == "pong":
                        return bool(frame.get("id") == "still-up")
    except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, ValueError):
        return False


async def start_server(work: Path, connections: int) -> tuple[ServiceProcess, int]:
    workspace = work / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    env = child_env(
        {
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_SERVER__REQUESTS_PER_SECOND": "1000000",
            "AUTOAGENT_SERVER__MAX_RUNS_PER_SESSION": "1000000",
            "AUTOAGENT_SERVER__MAX_CONNECTIONS": str(connections + 10),
        }
    )
    argv = ["--data-dir", str(work / "data")]
    return await bench_processes.start_server(work, "fuzz-serve", argv, env)


async def fuzz(args: Any, work: Path) -> dict[str, Any]:
    server, port = await start_server(work, args.connections)
    stats = FuzzStats()
    quota = Quota(args.frames)
    started = time.perf_counter()
    try:
        async with trio.open_nursery() as nursery:
            for index in range(args.connections):
                frames = RandomFrames(args.seed * 1000 + index)
                nursery.start_soon(fuzz_connection, f"ws://127.0.0.1:{port}/", frames, quota, stats)
        seconds = time.perf_counter() - started
        up = await still_up(port) and server.popen.poll() is None
        health = await healthz(port) if up else {}
    finally:
        exit_code = await server.aclose()
    output = server.output()
    return {
        "frames_sent": stats.sent,
        "frames_per_s": round(stats.sent / seconds, 1) if seconds else None,
        "replies_by_code": dict(sorted(stats.replies.items())),
        "events_received": stats.events,
        "internal": stats.internal,
        "id_mismatches": stats.id_mismatches,
        "unanswered": stats.unanswered,
        "closes_by_code": {str(k): v for k, v in sorted(stats.closes.items())},
        "unexpected_closes": stats.unexpected_closes,
        "connections_opened": stats.connects,
        "server_up": up,
        "healthz_status": health.get("status"),
        "stopped_projections": health.get("stopped_projections"),
        "server_exit_code": exit_code,
        "logged_tracebacks": output.count(TRACEBACK),
        "traceback_samples": _tracebacks(output)[:3],
        "samples": stats.samples,
    }


TRACEBACK = "Traceback (most recent call last)"


def _tracebacks(output: str) -> list[str]:
    """Each traceback in the server's output with the lines before it that name it."""
    found = []
    start = output.find(TRACEBACK)
    while start >= 0:
        end = output.find(TRACEBACK, start + 1)
        block = output[
            max(0, output.rfind("\n", 0, max(0, start - 1)) + 1) : end if end >= 0 else None
        ]
        found.append(block[:4000])
        start = end
    return found


async def healthz(port: int) -> dict[str, Any]:
    try:
        with trio.fail_after(REPLY_TIMEOUT_S):
            health = json.loads(await http_get(port, "/healthz"))
    except (OSError, ValueError, trio.TooSlowError):
        return {}
    return dict(health) if isinstance(health, dict) else {}


def passed(results: dict[str, Any]) -> bool:
    return bool(
        results["server_up"]
        and results["frames_sent"] > 0
        and not results["internal"]
        and not results["id_mismatches"]
        and not results["unanswered"]
        and not results["unexpected_closes"]
    )


def report(result: dict[str, Any]) -> list[Table]:
    r = result["results"]
    rows = [
        ["frames sent", r["frames_sent"]],
        ["frames/s", r["frames_per_s"]],
        ["internal replies", r["internal"]],
        ["wrong ids", r["id_mismatches"]],
        ["unanswered", r["unanswered"]],
        ["unexpected closes", r["unexpected_closes"]],
        ["server up (pong)", r["server_up"]],
        ["server exit code", r["server_exit_code"]],
        ["tracebacks in the server log", r["logged_tracebacks"]],
    ]
    codes = [[code, count] for code, count in r["replies_by_code"].items()]
    return [Table("WebSocket fuzz", ["", "value"], rows), Table("Replies", ["reply", "n"], codes)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(
        __doc__,
        DEFAULT_OUT,
        out_flag="--json",
        quick_help="300 frames (smoke)",
        work_dir_help="parent of the temp dir",
    )
    parser.add_argument("--frames", type=int, default=None, help="frames to send (100000)")
    parser.add_argument("--connections", type=int, default=8, help="clients sharing them")
    parser.add_argument("--seed", type=int, default=1, help="of the frame generators")
    args = parser.parse_args(argv)
    if args.frames is None:
        args.frames = 300 if args.quick else 100_000
    started = time.monotonic()
    with scratch_dir(args.work_dir, "fuzz_ws-") as work:
        result = result_header("fuzz_ws", args.quick, argv, work)
        result["settings"] = {
            "frames": args.frames,
            "connections": args.connections,
            "seed": args.seed,
        }
        result["results"] = trio.run(fuzz, args, work)
    result["passed"] = passed(result["results"])
    finish(result, args.out, report, seconds=time.monotonic() - started, markdown=args.markdown)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
