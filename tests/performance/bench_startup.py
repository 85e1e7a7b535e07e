"""Start-up with the shipped defaults: what `make run` and every `autoagent` command cost
before they do anything.

From the project root:

    .venv/bin/python -m tests.performance.bench_startup [--quick] [--out PATH] [--markdown]

The shipped configuration (LMDB in a fresh data dir, the offline model, the local
embedder), only the port and the directories changed, each process started as a user
starts it (`python -m server ...`; `--code DIR` runs another checkout's `server`, for a
baseline measured in the same run):
1. `serve`, `--repeats` times: seconds from spawn to the "listening" line and on to the
   first /healthz that lists nothing warming; the server's RSS and CPU seconds then.
2. A one-shot command on that data dir, `--repeats` times: `autoagent stats --json`
   (it opens the log and the projections, as `runs`, `events` and `audit` do): the
   process's wall time from spawn to exit.

Writes JSON (default `tests/performance/results/bench_startup.json`) and prints tables.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from server.bench._config import to_toml
from server.bench._processes import PACKAGE_PARENT, child_env, http_get
from server.bench._procfs import cpu_s, rss_mb

from ._cli import finish, make_parser, result_header, scratch_dir
from ._common import RESULTS_DIR, Table, wait_until_warm

DEFAULT_OUT = RESULTS_DIR / "bench_startup.json"
LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)")
REPEATS, QUICK_REPEATS = 5, 2
TIMEOUT_S = 120


def shipped_config(root: Path) -> Path:
    """The shipped configuration: every key left to its default but the port and the
    directories (so the same file serves another checkout's code, whatever its keys)."""
    settings = {
        "server": {"host": "127.0.0.1", "port": 0},
        "store": {"data_dir": str(root / "data")},
        "agents": {"workspace_roots": [str(root / "workspace")]},
    }
    path = root / "config.toml"
    path.write_text(to_toml(settings))
    return path


def code_env(code: Path) -> dict[str, str]:
    """The environment of a process running the `server` package of checkout `code`."""
    return child_env() | {"PYTHONPATH": str(code)}


async def one_start(root: Path, code: Path) -> dict[str, Any]:
    """`serve` once: seconds to listening and to warm, RSS and CPU once warm."""
    argv = [sys.executable, "-u", "-m", "server", "--config", str(shipped_config(root)), "serve"]
    started = time.perf_counter()
    spawn = functools.partial(
        subprocess.Popen,
        argv,
        cwd=root,
        env=code_env(code),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process: subprocess.Popen[str] = await trio.to_thread.run_sync(spawn)
    try:
        with trio.fail_after(TIMEOUT_S):
            port = await trio.to_thread.run_sync(_listening_port, process)
            listening = time.perf_counter() - started
            await wait_until_warm(port)
            warm = time.perf_counter() - started
            health = json.loads(await http_get(port, "/healthz"))
        rss, cpu = rss_mb(process.pid), cpu_s(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        await trio.to_thread.run_sync(_finish, process)
    return {
        "listening_s": listening,
        "warm_s": warm,
        "rss_warm_mb": rss,
        "cpu_s_at_warm": cpu,
        "warming_at_end": health.get("warming"),
    }


def _listening_port(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    for line in process.stdout:
        found = LISTENING.search(line)
        if found:
            return int(found.group(1))
    raise RuntimeError(f"serve exited with {process.wait()} before listening")


def _finish(process: subprocess.Popen[str]) -> None:
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def one_command(root: Path, code: Path) -> float:
    """Seconds of one `autoagent stats --json` process on `root`'s data dir."""
    argv = [sys.executable, "-m", "server", "--config", str(root / "config.toml"), "stats"]
    started = time.perf_counter()
    done = subprocess.run(
        [*argv, "--json"], cwd=root, env=code_env(code), capture_output=True, timeout=TIMEOUT_S
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"stats exited with {done.returncode}: {done.stderr.decode()[-500:]}")
    return seconds


async def measure(work: Path, repeats: int, code: Path) -> dict[str, Any]:
    starts = []
    for n in range(repeats):
        root = work / f"start-{n}"
        root.mkdir()
        starts.append(await one_start(root, code))
    first = work / "start-0"
    commands = [await trio.to_thread.run_sync(one_command, first, code) for _ in range(repeats)]
    return {
        "code": str(code),
        "code_git": _git(code),
        "repeats": repeats,
        "serve": starts,
        "serve_median": {
            key: statistics.median(s[key] for s in starts)
            for key in ("listening_s", "warm_s", "rss_warm_mb", "cpu_s_at_warm")
        },
        "stats_command_s": commands,
        "stats_command_median_s": statistics.median(commands),
    }


def report(result: dict[str, Any]) -> list[Table]:
    median = result["serve_median"]
    return [
        Table(
            f"`serve` with the shipped defaults, median of {result['repeats']} fresh starts "
            f"(code from {result['code']}, git {result['code_git']})",
            [
                "to listening s",
                "to warm s",
                "RSS once warm MB",
                "CPU s once warm",
                "`stats --json` s",
            ],
            [
                [
                    f"{median['listening_s']:.2f}",
                    f"{median['warm_s']:.2f}",
                    f"{median['rss_warm_mb']:.0f}",
                    f"{median['cpu_s_at_warm']:.2f}",
                    f"{result['stats_command_median_s']:.2f}",
                ]
            ],
        )
    ]


def _git(code: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__, DEFAULT_OUT)
    parser.add_argument(
        "--code",
        type=Path,
        default=PACKAGE_PARENT,
        help="the checkout whose `server` the processes run (default: this one)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = result_header("bench_startup", args.quick, argv, Path.cwd())
    with scratch_dir(None, "startup-") as work:
        repeats = QUICK_REPEATS if args.quick else REPEATS
        result |= trio.run(measure, work, repeats, args.code.resolve())
    finish(result, args.out, report, seconds=time.perf_counter() - started, markdown=args.markdown)


if __name__ == "__main__":
    main()
