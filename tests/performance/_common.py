"""Small helpers the benchmarks share: generated texts, percentiles, timing, machine notes,
JSON and tables."""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from server._runtime import tune_process
from server.bench._processes import http_get
from server.config import PerformanceConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Vocabulary of the generated texts (sentences, documents) the benchmarks embed.
WORDS = (
    "report revenue quarter growth market price share invoice customer contract meeting "
    "schedule project deadline budget forecast risk supplier order delivery warehouse "
    "team review plan goal result analysis data model server request latency memory "
    "document summary email calendar travel hotel flight weather city office policy"
).split()
# ~100 and ~200 characters: a user question and an assistant answer (one chat interaction).
USER_TEXT = ("What changed in the quarterly report since last week, and why? " * 2)[:100]
ASSISTANT_TEXT = (
    "Revenue is up 4% on last week, mostly from the new EU contracts; costs are flat. "
    "Two invoices moved to next quarter, which explains the dip in receivables. " * 2
)[:200]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Stopwatch:
    """Elapsed seconds of a `with timed() as sw:` block, in `sw.seconds`."""

    __slots__ = ("seconds", "start")

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds = 0.0


@contextmanager
def timed() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - watch.start


@dataclass(slots=True)
class Clock:
    """Wall and CPU seconds of a `with clocked() as clock:` block (filled in when it ends).

    On a loaded machine wall time includes waiting for a core; CPU time (this process,
    all its threads) does not, but does not count fsync waits either.
    """

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def clocked() -> Iterator[Clock]:
    clock = Clock()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        yield clock
    finally:
        clock.wall = time.perf_counter() - wall0
        clock.cpu = time.process_time() - cpu0


def filesystem_of(path: Path) -> str:
    """The mount point and filesystem type holding `path` (from /proc/mounts), or '?'."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    target = str(path.resolve())
    best = ("", "?")
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point, fstype = parts[1], parts[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, fstype)
    return f"{best[1]} at {best[0] or '?'}"


def git_revision() -> str:
    """The checked-out commit, with "+dirty" when the tree has changes; "?" without git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def machine_info(work_dir: Path) -> dict[str, Any]:
    """What a reader needs to compare runs: date, CPUs, Python, where the files were."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_revision(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "work_dir": str(work_dir),
        "work_dir_filesystem": filesystem_of(work_dir),
        "loadavg_start": load_average(),
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews fsync figures."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def write_json(path: Path, data: object, *, nan_as_null: bool = False) -> None:
    """`data` as indented JSON; with `nan_as_null`, standard JSON (no NaN, no Infinity)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(finite(data) if nan_as_null else data, indent=2, sort_keys=False)
    path.write_text(text + "\n")


def finite(value: Any) -> Any:
    """NaN and infinities as None, in nested dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def fmt(value: object, digits: int = 1) -> str:
    """A table cell: floats with thousands separators and `digits` decimals."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table of figures, printable as aligned text or as Markdown."""

    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]

    def _cells(self) -> list[list[str]]:
        return [[fmt(c) for c in row] for row in self.rows]

    def text(self) -> str:
        cells = self._cells()
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.headers)]
        lines = [
            f"\n{self.title}",
            "  ".join(h.rjust(w) for h, w in zip(self.headers, widths, strict=True)),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.headers) + " |",
            "|:---|" + "".join("---:|" for _ in self.headers[1:]),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self._cells()]
        return "\n".join(lines)


async def wait_until_warm(port: int) -> float:
    """Seconds until a server's /healthz lists nothing warming (the shipped server loads
    its embedder and catches its projections up in the background at start)."""
    started = time.monotonic()
    while True:
        health = json.loads(await http_get(port, "/healthz"))
        if not health.get("warming"):
            return time.monotonic() - started
        await trio.sleep(0.05)


# The collector and switch interval as the `autoagent` command sets them (`server._runtime`):
# benchmarks of the server's own work run with it, as the server does.
PYTHON_DEFAULT_THRESHOLDS = (700, 10, 10)


def shipped_collector() -> dict[str, Any]:
    """Set the collector and the switch interval as the shipped `performance` section
    does for the `autoagent` command; what was set, for the JSON."""
    tune_process(PerformanceConfig())
    return {
        "thresholds": list(gc.get_threshold()),
        "switch_interval_s": sys.getswitchinterval(),
        "set_as": "autoagent sets them (performance.gc_young_threshold and"
        " performance.switch_interval_ms, shipped defaults)",
    }


@contextmanager
def python_default_collector() -> Iterator[None]:
    """Python's own thresholds for a diagnostic row, the shipped ones restored after."""
    shipped = gc.get_threshold()
    gc.set_threshold(*PYTHON_DEFAULT_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*shipped)
