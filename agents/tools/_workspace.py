"""Workspace confinement: every path a tool touches lies inside a configured root.

A path from a plan is untrusted. It is relative (to the first root) or absolute, it may
not contain `..`, and once every symlink in it is resolved (up to the parent, for a file
that does not exist yet) it must still lie inside a root: a link that points out of the
workspace is refused like any other escape.

The check and the open are two moments, so the open does not trust the check: it walks
the checked real path one name at a time from `/`, each folder opened relative to the
one before with `O_NOFOLLOW | O_DIRECTORY`, the file last with `O_NOFOLLOW`. A real path
holds no symlink, so a folder or file swapped for one after the check is refused
(`PathNotAllowed`) rather than followed out of the workspace. Writes (replace or append)
also refuse a file with more than one hard link: its other name may lie outside the
workspace, and writing would change that file too. Reading a hard-linked file is
allowed: it shows only what the link's owner could already read, and tools cannot make
links.

Everything here blocks (it stats and reads the disk): tools call it through
`trio.to_thread`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.errors import FileTooLarge, PathNotAllowed, ToolError

DEFAULT_MAX_FILE_BYTES = 1024 * 1024
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
# O_PATH (Linux) opens a folder for the walk without needing read permission on it.
_WALK_FLAGS = os.O_DIRECTORY | _OPEN_FLAGS | getattr(os, "O_PATH", os.O_RDONLY)
_LIST_FLAGS = os.O_DIRECTORY | os.O_RDONLY | _OPEN_FLAGS
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


def _open_folder(
    folder: Path, *, create: bool = False, flags: int = _WALK_FLAGS, target: Path | None = None
) -> int:
    """A descriptor of the real path `folder`, reached from `/` without following a link.

    Each name is opened relative to the folder before it with `O_NOFOLLOW`, so a folder
    swapped for a symlink since `Workspace.resolve` is refused, never followed.
    `create` makes missing folders on the way; `flags` are those of the last open;
    `target` is the path a refusal names (default `folder`).
    """
    fd = os.open("/", _WALK_FLAGS)
    try:
        names = folder.parts[1:]
        for depth, name in enumerate(names, 1):
            last = flags if depth == len(names) else _WALK_FLAGS
            child = _enter(fd, name, target or folder, create, last)
            os.close(fd)
            fd = child
        if not names and flags != _WALK_FLAGS:
            child = os.open(".", flags, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True, slots=True)
class FolderEntry:
    """One name in a folder, as `lstat` sees it: links are reported, never followed."""

    path: Path
    kind: str  # "file", "folder", "symlink" or "other"
    size: int  # bytes of a file, else 0


def scan_folder(folder: Path) -> list[FolderEntry]:
    """The entries of the real path `folder` in name order, read through a descriptor
    reached without following a link (so a folder swapped for one is refused)."""
    fd = _open_folder(folder, flags=_LIST_FLAGS)
    try:
        with os.scandir(fd) as scanner:
            entries = [_folder_entry(folder, entry) for entry in scanner]
    finally:
        os.close(fd)
    return sorted(entries, key=lambda entry: entry.path.name)


def _folder_entry(folder: Path, entry: os.DirEntry[str]) -> FolderEntry:
    if entry.is_symlink():
        return FolderEntry(folder / entry.name, "symlink", 0)
    if entry.is_dir(follow_symlinks=False):
        return FolderEntry(folder / entry.name, "folder", 0)
    if entry.is_file(follow_symlinks=False):
        size = entry.stat(follow_symlinks=False).st_size
        return FolderEntry(folder / entry.name, "file", size)
    return FolderEntry(folder / entry.name, "other", 0)


def _enter(parent: int, name: str, target: Path, create: bool, flags: int) -> int:
    """Open the folder `name` inside `parent`; `PathNotAllowed` if it is a symlink."""
    try:
        return os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    except NotADirectoryError:
        if stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode):
            raise PathNotAllowed(str(target), _swapped(name)) from None
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent)
    return _enter(parent, name, target, False, flags)


def _swapped(name: str) -> str:
    return f"{name!r} in it is a symlink, and opening a workspace path follows none"


@contextlib.contextmanager
def _opening(real: Path) -> Iterator[None]:
    """`O_NOFOLLOW` refusing the last name (ELOOP) becomes `PathNotAllowed`."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise PathNotAllowed(str(real), _swapped(real.name)) from exc


def _open_file(real: Path, flags: int, *, create_folders: bool = False) -> int:
    folder = _open_folder(real.parent, create=create_folders, target=real)
    try:
        with _opening(real):
            return os.open(real.name, flags | _OPEN_FLAGS, 0o644, dir_fd=folder)
    finally:
        os.close(folder)


def read_bytes(real: Path, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes of a regular file, and its size; symlinks are not followed."""
    try:
        fd = _open_file(real, os.O_RDONLY)
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
    folder = _open_folder(real.parent, create=True, target=real)
    try:
        _check_writable_target(folder, real)
        temporary = f".{real.name}.{uuid.uuid4().hex[:8]}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS
        fd = os.open(temporary, flags, 0o644, dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, real.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=folder)
            raise
    finally:
        os.close(folder)


def write_new(real: Path, data: bytes) -> None:
    """Create `real` with `data`; `FileExistsError` if something is already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with os.fdopen(_open_file(real, flags, create_folders=True), "wb") as file:
        file.write(data)


def append_bytes(real: Path, data: bytes, limit: int) -> int:
    """Append `data` to `real` (created if missing); the file's new size."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    with os.fdopen(_open_file(real, flags, create_folders=True), "ab") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{real.name} is not a regular file")
        _refuse_hard_links(real, info)
        size = info.st_size
        if size + len(data) > limit:
            raise FileTooLarge(f"{real.name} after appending", size + len(data), limit)
        file.write(data)
        return size + len(data)


def deliver_maildir(outbox: Path, data: bytes, flags: str = "") -> str:
    """Deliver one message into the Maildir `outbox` (made if missing), as Maildir
    delivery does - written whole under `tmp/`, then renamed into `cur/` - but through
    descriptors reached without following a link, like every other workspace write (the
    stdlib `mailbox` module opens by path). Returns the message's key."""
    folder = _open_folder(outbox, create=True)
    subfolders: dict[str, int] = {}
    try:
        for name in ("tmp", "new", "cur"):
            subfolders[name] = _enter(folder, name, outbox / name, True, _WALK_FLAGS)
        key = f"{time.time_ns()}.{uuid.uuid4().hex}.{socket.gethostname().replace('/', '-')}"
        creating = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS
        fd = os.open(key, creating, 0o600, dir_fd=subfolders["tmp"])
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        final = f"{key}:2,{flags}"
        os.rename(key, final, src_dir_fd=subfolders["tmp"], dst_dir_fd=subfolders["cur"])
        return key
    finally:
        for fd in subfolders.values():
            os.close(fd)
        os.close(folder)


def _check_writable_target(folder: int, real: Path) -> None:
    """What a replace would overwrite: no folder, no symlink, no hard-linked file."""
    try:
        info = os.lstat(real.name, dir_fd=folder)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        raise ToolError(f"{real.name} is a directory")
    if stat.S_ISLNK(info.st_mode):
        raise PathNotAllowed(str(real), _swapped(real.name))
    _refuse_hard_links(real, info)


def _refuse_hard_links(real: Path, info: os.stat_result) -> None:
    if info.st_nlink > 1:
        reason = (
            f"the file has {info.st_nlink} hard links; another name may lie outside the "
            "workspace, so it is never written"
        )
        raise PathNotAllowed(str(real), reason)
