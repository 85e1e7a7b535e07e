"""Child processes of benchmarks: `autoagent sim` and `autoagent serve` on loopback.

Each runs as `python -m server ...` with its output in a log file; the address it prints
once listening is parsed from that log (`wait_for_line`), so port 0 works. Stopping
sends SIGINT (the servers' clean shutdown) and kills after a timeout. Used by
`autoagent bench` and by the WebSocket load test (`tests/performance/load_ws.py`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from server.errors import ServiceFailed

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
SIMULATOR_ADDRESS = re.compile(r"at (http://[\d.]+:\d+/v1)")
SERVER_ADDRESS = re.compile(r"listening on ws://[\d.]+:(\d+)")
# The directory holding the `server` package, so `python -m server` in a child runs this
# very code whatever the child's working directory.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    """A child `python -m server` process and the log file holding its output."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGINT, then SIGKILL after `timeout`; the exit code (None if killed)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                return None
        return self.popen.returncode

    async def aclose(self) -> int | None:
        """`stop` without blocking the Trio loop; shielded, so it also runs when cancelled."""
        with trio.CancelScope(shield=True):
            code = await trio.to_thread.run_sync(self.stop)
        return code


def child_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any AUTOAGENT_* setting, plus `overrides`.

    The caller's own overrides must not leak into a benchmark's servers unseen.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + (os.pathsep + path if path else "")
    return env | dict(overrides or {})


def spawn(
    name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path
) -> ServiceProcess:
    """Start `python -m server <argv>` with stdout and stderr into `log`."""
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            [sys.executable, "-u", "-m", "server", *argv],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )
    return ServiceProcess(name, popen, log)


async def wait_for_line(process: ServiceProcess, pattern: re.Pattern[str]) -> re.Match[str]:
    """The first match of `pattern` in the process's output; ServiceFailed if it exits first."""
    with trio.move_on_after(START_TIMEOUT_S):
        while True:
            found = pattern.search(process.output())
            if found:
                return found
            if process.popen.poll() is not None:
                code = process.popen.returncode
                raise ServiceFailed(process.name, f"exited with {code}", process.output())
            await trio.sleep(0.1)
    problem = f"did not listen within {START_TIMEOUT_S:g} s"
    raise ServiceFailed(process.name, problem, process.output())


async def start_simulator(
    work: Path, argv: Sequence[str], env: Mapping[str, str], name: str = "simulator"
) -> tuple[ServiceProcess, str]:
    """`autoagent sim --port 0 <argv>`; the process and its base URL (`http://.../v1`)."""
    process, address = await _start(work, name, "sim", argv, env, SIMULATOR_ADDRESS)
    return process, address


async def start_server(
    work: Path, name: str, argv: Sequence[str], env: Mapping[str, str]
) -> tuple[ServiceProcess, int]:
    """`autoagent serve --port 0 <argv>`; the process and its port on 127.0.0.1."""
    process, port = await _start(work, name, "serve", argv, env, SERVER_ADDRESS)
    return process, int(port)


async def _start(
    work: Path,
    name: str,
    command: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    address: re.Pattern[str],
) -> tuple[ServiceProcess, str]:
    """Spawn `autoagent <command> --port 0 <argv>` and wait for the line giving its address."""
    process = spawn(name, [command, "--port", "0", *argv], env, work / f"{name}.log", work)
    try:
        found = await wait_for_line(process, address)
    except BaseException:
        await process.aclose()
        raise
    return process, found.group(1)


async def http_get(port: int, path: str) -> str:
    """The body of one plain HTTP GET on 127.0.0.1 (the server's and simulator's own)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")


async def metric_samples(port: int, names: Iterable[str]) -> dict[str, float]:
    """The server's /metrics samples named `names` (plain counters and gauges), by name;
    a name it does not report is left out."""
    wanted = set(names)
    samples: dict[str, float] = {}
    for line in (await http_get(port, "/metrics")).splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            samples[name] = float(value)
    return samples


def port_of(url: str) -> int:
    """The port of `http://host:port/...`."""
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
