"""Peers measured side by side: each in its own venv under the temp dir, never the project's.

A peer is a standalone script beside this module (`peer_<name>.py`) that imports only
its library. `run_peer` makes the peer's venv if it is missing (`python -m venv`, then
`pip install` of the pinned requirements), runs the script there with a timeout, and
returns the JSON object it printed; when the venv cannot be made or the script fails it
returns `{"error": ...}` instead, so a benchmark goes on without its peer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARKER = "autoagent-requirements.txt"
INSTALL_TIMEOUT_S = 900.0
TAIL_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    script: Path
    requirements: tuple[str, ...]
    description: str


EVENTSOURCING = Peer(
    name="eventsourcing",
    script=HERE / "peer_eventsourcing.py",
    requirements=("eventsourcing==9.5.6",),
    description="eventsourcing 9.5 with its SQLite recorder (WAL, synchronous=FULL)",
)
# The same library and script, run with `--postgres` against a server the benchmark
# started; psycopg as the project pins it (binary build, pool), in a venv of its own.
EVENTSOURCING_POSTGRES = Peer(
    name="eventsourcing-postgres",
    script=HERE / "peer_eventsourcing.py",
    requirements=(
        "eventsourcing[postgres]==9.5.6",
        "psycopg[binary,pool]==3.3.9",
        "psycopg-pool==3.3.3",
    ),
    description="eventsourcing 9.5 with its PostgreSQL recorder (psycopg 3), same server",
)
LANGGRAPH = Peer(
    name="langgraph",
    script=HERE / "peer_langgraph.py",
    requirements=("langgraph==1.2.24", "langgraph-checkpoint-sqlite==3.1.2"),
    description='LangGraph 1.2 with SqliteSaver (WAL, synchronous=FULL), durability "sync"',
)


class PeerUnavailable(Exception):
    """The peer's venv could not be made, or its script did not print a result."""


def venv_dir(peer: Peer, root: Path | None = None) -> Path:
    return (root or Path(tempfile.gettempdir())) / f"autoagent-peer-{peer.name}"


def _run(
    command: Sequence[str], timeout: float, what: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`command`'s output; `env`: variables added to this process's environment."""
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"{what} timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise PeerUnavailable(f"{what} could not start: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-TAIL_CHARS:]
        raise PeerUnavailable(f"{what} exited with {done.returncode}: {tail}")
    return done


def ensure_venv(peer: Peer, root: Path | None = None, base_python: str | None = None) -> Path:
    """The python of the peer's venv, made and installed first when missing or stale.

    The venv counts as ready only when its marker file lists exactly the pinned
    requirements (written after a successful install)."""
    venv = venv_dir(peer, root)
    python = venv / "bin" / "python"
    marker = venv / MARKER
    wanted = "\n".join(peer.requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not python.exists():
        # The project's interpreter version, so both sides run the same Python.
        base = base_python or sys.executable
        options = [] if peer.requirements else ["--without-pip"]
        _run([base, "-m", "venv", *options, str(venv)], INSTALL_TIMEOUT_S, "python -m venv")
    if peer.requirements:
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run([*pip, *peer.requirements], INSTALL_TIMEOUT_S, "pip install")
    marker.write_text(wanted)
    return python


def run_peer(
    peer: Peer,
    work_dir: Path,
    args: Sequence[str] = (),
    *,
    timeout: float,
    root: Path | None = None,
    base_python: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The peer's JSON result with `venv`, `requirements` and `seconds` added, or
    `{"peer", "error"}` when its venv or its run failed. `env`: variables added to the
    script's environment (e.g. the connection of a server), never to pip's."""
    started = time.perf_counter()
    try:
        python = ensure_venv(peer, root, base_python)
        setup_s = time.perf_counter() - started
        # -I: no PYTHONPATH, no user site, no script dir on sys.path: only the venv.
        command = [str(python), "-I", str(peer.script), str(work_dir), *args]
        done = _run(command, timeout, f"{peer.script.name}", env)
        result = _parse(done.stdout, peer)
    except PeerUnavailable as exc:
        return {"peer": peer.name, "error": str(exc)}
    return result | {
        "venv": str(python.parent.parent),
        "requirements": list(peer.requirements),
        "setup_seconds": round(setup_s, 1),
        "seconds": round(time.perf_counter() - started - setup_s, 1),
    }


def _parse(stdout: str, peer: Peer) -> dict[str, Any]:
    try:
        result = json.loads(stdout)
    except json.JSONDecodeError as exc:
        tail = stdout[-TAIL_CHARS:]
        raise PeerUnavailable(f"{peer.script.name} printed no JSON: {tail!r}") from exc
    if not isinstance(result, dict):
        raise PeerUnavailable(f"{peer.script.name} printed {type(result).__name__}, not an object")
    return result


def peers_wanted(flag: bool | None, quick: bool) -> bool:
    """`--peers` / `--no-peers` as given; unset: on for a full run, off with `--quick`
    (the smoke tests stay fast and never need the package registry)."""
    return (not quick) if flag is None else flag


def add_peers_flag(parser: argparse.ArgumentParser, peer: Peer) -> None:
    """`--peers` / `--no-peers` (unset: see `peers_wanted`)."""
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"also measure {peer.description} in its own venv under "
        f"{venv_dir(peer)} (default: on, off with --quick)",
    )
