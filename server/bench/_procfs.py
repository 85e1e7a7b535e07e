"""What a child process costs, read from Linux's /proc: memory, CPU, scheduler waits.

`peak_rss_mb` is the kernel's own high-water mark of the resident set (VmHWM), so no
peak between two samples is missed. `Sampler` records RSS and CPU every half second
for figures over a window (CPU percent, the main thread's time waiting for a CPU,
which says how much of a latency is other jobs taking the machine).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 0.5

# time, RSS MB, process CPU s, main thread on-CPU s, main thread runqueue wait s
Sample = tuple[float, float, float, float, float]


def status_kb(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM...); 0 when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    return status_kb(pid, "VmHWM") / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process, all threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def threads_on_cpu_s(pid: int) -> dict[int, float]:
    """Seconds on a CPU of each live thread of the process, by thread id (the
    scheduler's own nanosecond count, not clock ticks: an idle process's few
    milliseconds show)."""
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return seconds


def threads_slices(pid: int) -> dict[int, int]:
    """Times each live thread of the process was put on a CPU (schedstat's third
    field), by thread id: at low load, how often it woke up."""
    slices: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            slices[int(task.name)] = int((task / "schedstat").read_text().split()[2])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return slices


def threads_cpu_between(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds the threads spent between two `threads_on_cpu_s` samples: a thread
    that ended meanwhile is left out (its time before the first sample must not count
    against the interval), one that started is counted whole."""
    return sum(spent - before.get(tid, 0.0) for tid, spent in after.items())


def schedstat_s(pid: int) -> tuple[float, float]:
    """The main thread's seconds on a CPU and seconds runnable but waiting for one."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sampler:
    """RSS and CPU of one process, sampled while `run` runs."""

    pid: int
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        row = (time.monotonic(), rss_mb(self.pid), cpu_s(self.pid), *schedstat_s(self.pid))
        self.samples.append(row)
        return row

    async def run(self, every: float = SAMPLE_EVERY_S) -> None:
        """Sample until cancelled; a process that has gone is skipped, not an error."""
        while True:
            with contextlib.suppress(OSError, ValueError):
                self.sample()
            await trio.sleep(every)

    def _window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s[0] <= end]

    def cpu_percent(self, start: float, end: float) -> float:
        window = self._window(start, end)
        if len(window) < 2:
            return float("nan")
        return 100 * (window[-1][2] - window[0][2]) / (window[-1][0] - window[0][0])

    def main_thread_percent(self, start: float, end: float) -> tuple[float, float]:
        """The main thread's share of wall time on a CPU, and runnable but not running."""
        window = self._window(start, end)
        if len(window) < 2:
            return float("nan"), float("nan")
        wall = window[-1][0] - window[0][0]
        return (
            100 * (window[-1][3] - window[0][3]) / wall,
            100 * (window[-1][4] - window[0][4]) / wall,
        )

    def rss_max(self) -> float:
        return max((s[1] for s in self.samples), default=float("nan"))
