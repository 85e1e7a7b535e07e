"""Wake-ups when a file is written (Linux inotify), for the watcher of a shared log.

Another process's commit to an LMDB log writes the log's data file (LMDB writes pages
with `pwrite`; this project never opens it with a writable shared map). An inotify
watch for `IN_MODIFY` turns each such write into a readable file descriptor, so an
idle store's commit thread waits on that descriptor (with its work, see
`events._committer`) instead of the store waking every `watch_interval_s` to look at
the log: an idle server stays asleep, and another process's records are noticed as
soon as they are written rather than at the next tick.

Where inotify is missing (not Linux, or the per-user limit of instances is reached)
`FileChanges.watch` returns None and the store falls back to looking every interval.
Reading the descriptor never blocks (it is non-blocking).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

_log = logging.getLogger(__name__)

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_DRAIN_BYTES = 4096
# One inotify event is 16 bytes plus a name (none for a watched file; at most 256):
# a read that left more room than one event needs took every event queued.
_ROOM_FOR_AN_EVENT = 16 + 256


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process's own C library
    except OSError:
        return None
    return libc if hasattr(libc, "inotify_init1") else None


class FileChanges:
    """An inotify descriptor watching one file for writes; owned by one task."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def watch(cls, path: Path) -> FileChanges | None:
        """Watch `path` for writes; None where that is not available (poll instead)."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            _log.warning(
                "cannot watch %s for other processes' writes (%s); looking every interval",
                path,
                os.strerror(ctypes.get_errno()),
            )
            return None
        if libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) < 0:
            reason = os.strerror(ctypes.get_errno())
            os.close(fd)
            _log.warning(
                "cannot watch %s for other processes' writes (%s); looking every interval",
                path,
                reason,
            )
            return None
        return cls(fd)

    @property
    def fileno(self) -> int:
        """The descriptor: readable while a write's notice is queued."""
        return self._fd

    def drain(self) -> bool:
        """Read every queued notice (never blocks); whether there was any."""
        seen = False
        while True:
            try:
                got = len(os.read(self._fd, _DRAIN_BYTES))
            except BlockingIOError:  # nothing (more) queued
                return seen
            seen = seen or got > 0
            if got <= _DRAIN_BYTES - _ROOM_FOR_AN_EVENT:
                return seen

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
