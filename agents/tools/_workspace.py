"""Workspace confinement: every path a tool touches lies inside a configured root.

A path from a plan is untrusted. It is relative (to the first root) or absolute, it may
not contain `..`, and once every symlink in it is resolved (up to the parent, for a file
that does not exist yet) it must still lie inside a root: a link that points out of the
workspace is refused like any other escape. Files are opened with `O_NOFOLLOW`, so a
file swapped for a symlink between the check and the open is refused too.

Everything here blocks (it stats and reads the disk): tools call it through
`trio.to_thread`.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.errors import FileTooLarge, PathNotAllowed, ToolError

DEFAULT_MAX_FILE_BYTES = 1024 * 1024
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
# Limits of the file system (Linux): longer names fail deep inside the OS calls.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


@dataclass(frozen=True)
class Workspace:
    """The real paths of the configured roots; `resolve` confines a path to them."""

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, roots: Sequence[Path]) -> Workspace:
        """Roots as given; their own symlinks are resolved on first use (that blocks)."""
        return cls(tuple(Path(r) for r in roots))

    def real_roots(self) -> tuple[Path, ...]:
        if not self.roots:
            raise ToolError("no workspace root is configured (agents.workspace_roots)")
        return tuple(root.resolve() for root in self.roots)

    def resolve(self, path: str) -> Path:
        """The real path of `path`, which must lie inside a root; `PathNotAllowed` if not."""
        roots = self.real_roots()
        if "\x00" in path:
            raise PathNotAllowed(path, "it contains a NUL character")
        _check_lengths(path)
        given = Path(path)
        if ".." in given.parts:
            raise PathNotAllowed(path, "'..' is not allowed in workspace paths")
        candidate = given if given.is_absolute() else roots[0] / given
        as_written = roots + tuple(root.absolute() for root in self.roots)
        if _root_of(as_written, Path(os.path.normpath(candidate))) is None:
            raise PathNotAllowed(path, "it is outside the workspace roots")
        real = candidate.resolve()
        if _root_of(roots, real) is None:
            raise PathNotAllowed(path, "a symlink in it leads outside the workspace")
        return real

    def display(self, real: Path) -> str:
        """How results name a path: relative to the first root, else absolute.

        Either form is accepted back by `resolve`, so a listed path can be read.
        """
        first = self.real_roots()[0]
        if real == first:
            return "."
        return real.relative_to(first).as_posix() if real.is_relative_to(first) else str(real)


def _check_lengths(path: str) -> None:
    """Names the file system can hold, in text it can encode; `PathNotAllowed` if not."""
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:
        raise PathNotAllowed(path[:100], "it is not valid Unicode text") from None
    too_long = any(len(name) > NAME_MAX_BYTES for name in encoded.split(b"/"))
    if too_long or len(encoded) > PATH_MAX_BYTES:
        limits = f"{NAME_MAX_BYTES} bytes a name, {PATH_MAX_BYTES} in all"
        raise PathNotAllowed(path[:100] + "...", f"it is too long ({limits})")


def _root_of(roots: Sequence[Path], path: Path) -> Path | None:
    return next((root for root in roots if path == root or path.is_relative_to(root)), None)


def read_bytes(real: Path, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes of a regular file, and its size; symlinks are not followed."""
    try:
        fd = os.open(real, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        raise ToolError(f"no such file: {real.name}") from None
    except OSError as exc:
        raise ToolError(f"cannot open {real.name}: {exc.strerror}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ToolError(f"{real.name} is not a regular file")
    with os.fdopen(fd, "rb") as file:
        return file.read(limit), info.st_size


def write_replace(real: Path, data: bytes) -> None:
    """Write `data` to `real` atomically: a temporary file beside it, then a rename."""
    _check_writable_target(real)
    temporary = real.with_name(f".{real.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o644)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, real)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_new(real: Path, data: bytes) -> None:
    """Create `real` with `data`; `FileExistsError` if something is already there."""
    real.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def append_bytes(real: Path, data: bytes, limit: int) -> int:
    """Append `data` to `real` (created if missing); the file's new size."""
    _check_writable_target(real)
    fd = os.open(real, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS, 0o644)
    with os.fdopen(fd, "ab") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{real.name} is not a regular file")
        size = info.st_size
        if size + len(data) > limit:
            raise FileTooLarge(f"{real.name} after appending", size + len(data), limit)
        file.write(data)
        return size + len(data)


def _check_writable_target(real: Path) -> None:
    if real.is_dir():
        raise ToolError(f"{real.name} is a directory")
    real.parent.mkdir(parents=True, exist_ok=True)
