"""One `autoagent serve` per data dir: a lock file naming the server that holds it.

`serve.lock` in the data dir is locked with `fcntl.flock` for as long as a server runs.
The OS drops the lock when the process ends, however it ends (SIGKILL, a crash), so a
stale file never blocks the next start. The file holds one JSON line naming the holder:
`{"pid": ..., "url": null}` as soon as the lock is taken, the WebSocket URL once the
server listens (`DataDirLock.record_url`); `running_server` reads it for a client. The
file is emptied on release and never deleted (deleting a lock file lets two processes
hold locks on two different files of one name).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio

from server.errors import DataDirInUse

LOCK_FILE = "serve.lock"
# A client's `running_server` holds a shared lock for microseconds; a starting server
# that meets one tries again for this long before it reports the data dir in use.
_BUSY_RETRIES, _BUSY_WAIT_S = 20, 0.01


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """What the lock file says of the server holding it (None: not written yet)."""

    pid: int | None
    url: str | None


class DataDirLock:
    """The held lock of one data dir."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.pid = os.getpid()
        _write(fd, ServerRecord(self.pid, None))

    def record_url(self, url: str) -> None:
        """Name the URL clients reach this server at (once it listens)."""
        _write(self._fd, ServerRecord(self.pid, url))


@contextlib.asynccontextmanager
async def open_data_dir_lock(data_dir: Path) -> AsyncIterator[DataDirLock]:
    """Hold `data_dir` for one server until exit; `DataDirInUse` if another holds it."""
    fd = await trio.to_thread.run_sync(_open_lock_file, data_dir)
    try:
        for attempt in range(_BUSY_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _BUSY_RETRIES - 1:
                    raise await trio.to_thread.run_sync(_in_use, data_dir, fd) from None
                await trio.sleep(_BUSY_WAIT_S)
        try:
            yield DataDirLock(fd)
        finally:
            os.ftruncate(fd, 0)  # still locked: no reader sees this server after it stops
    finally:
        os.close(fd)  # releases the lock


def running_server(data_dir: Path) -> ServerRecord | None:
    """The server holding `data_dir` now, or None when none does."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        return None  # nobody holds it (closing the file drops the probe's lock)
    finally:
        os.close(fd)


def client_url(host: str, port: int) -> str:
    """The URL a local client reaches a server listening on `host`:`port` at."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"ws://{host}:{port}/"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"ws://{shown}:{port}/"


def _open_lock_file(data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    return os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _in_use(data_dir: Path, fd: int) -> DataDirInUse:
    holder = _read(fd)
    return DataDirInUse(data_dir.resolve(), holder.pid, holder.url)


def _write(fd: int, record: ServerRecord) -> None:
    # One pwrite of a short line: a reader sees the old line or the new one, whole.
    line = json.dumps({"pid": record.pid, "url": record.url}).encode() + b"\n"
    os.pwrite(fd, line, 0)
    os.ftruncate(fd, len(line))


def _read(fd: int) -> ServerRecord:
    """The record in the file; fields None when it is empty or not ours."""
    try:
        data = json.loads(os.pread(fd, 4096, 0))
    except ValueError:
        return ServerRecord(None, None)
    if not isinstance(data, dict):
        return ServerRecord(None, None)
    pid, url = data.get("pid"), data.get("url")
    return ServerRecord(
        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        url if isinstance(url, str) else None,
    )
