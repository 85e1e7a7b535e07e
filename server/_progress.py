"""Progress of a long command on stderr: a bar on a terminal, plain lines otherwise.

On a terminal the bar (`render.Progress`) is redrawn in place. Anywhere else (a log
file, CI, a pipe) a redrawn bar is noise, so a plain line is written every few seconds
and once at the end. Nothing ever goes to stdout, which belongs to the command's result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from server._render import Progress

PLAIN_EVERY_S = 2.0


class ProgressLine:
    """`update(done, total, note)` as often as you like; `close()` at the end."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        *,
        every_s: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.bar = Progress(label, self.stream)
        self.every_s = every_s
        self.clock = clock
        self._last_line: float | None = None
        self._last: tuple[int, int, str] | None = None

    def update(self, done: int, total: int, note: str = "") -> None:
        if self.bar.enabled:
            self.bar.update(done, total)
            if note:
                self.stream.write(f" {note}")
                self.stream.flush()
            return
        now = self.clock()
        due = self._last_line is None or now - self._last_line >= self.every_s
        self._last = (done, total, note)
        if due or done >= total:
            self._write_line(done, total, note)
            self._last_line = now

    def _write_line(self, done: int, total: int, note: str) -> None:
        self.stream.write(f"{self.label}: {done}/{total}" + (f" {note}" if note else "") + "\n")
        self.stream.flush()
        self._last = None

    def close(self) -> None:
        """End the bar's line; in plain mode write the last state if it was not shown."""
        if self.bar.enabled:
            self.bar.close()
        elif self._last is not None:
            self._write_line(*self._last)
