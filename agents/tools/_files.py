"""The `files` agent: list, read, write and search files inside the workspace roots.

Every path goes through `Workspace.resolve` (no `..`, nothing outside a root, no symlink
escape), and every open re-walks it without following a link (see `_workspace`); reads
and writes are bounded by `agents.max_file_bytes`, listings and searches by a result
limit; walks never follow symlinks. File contents are untrusted data: they
are returned as values, never acted on. All disk work runs in `trio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import trio

from agents.errors import FileTooLarge, InvalidParameters, PathNotAllowed, ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._context import AgentContext, positive_or
from agents.tools._workspace import (
    DEFAULT_MAX_FILE_BYTES,
    FolderEntry,
    Workspace,
    append_bytes,
    read_bytes,
    scan_folder,
    write_new,
    write_replace,
)

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
MAX_SCANNED_FILES = 10_000
MATCHES_PER_FILE = 3
MATCH_TEXT_CHARS = 200
BINARY_SNIFF_BYTES = 8192

_PATH = {"type": "string", "description": "relative to the workspace root, or absolute inside it"}
_LIMIT = {"type": "integer", "description": f"most results to return (1-{MAX_LIMIT})"}

LIST = ToolSpec(
    agent="files",
    action="list",
    description="List the files and folders in a workspace folder (recursively if asked).",
    parameters={
        "type": "object",
        "properties": {
            "path": _PATH | {"description": "folder to list; default the workspace root"},
            "recursive": {"type": "boolean", "description": "include subfolders"},
            "limit": _LIMIT,
        },
        "required": [],
    },
    idempotent=True,
    keywords=("list", "files", "folder", "folders", "directory", "workspace", "ls"),
)
READ = ToolSpec(
    agent="files",
    action="read",
    description="Read a text file in the workspace.",
    parameters={
        "type": "object",
        "properties": {
            "path": _PATH,
            "max_bytes": {"type": "integer", "description": "read at most this many bytes"},
        },
        "required": ["path"],
    },
    idempotent=True,
    keywords=("read", "open", "file", "cat", "contents"),
)
WRITE = ToolSpec(
    agent="files",
    action="write",
    description="Write text to a file in the workspace (overwrite, append, or create only).",
    parameters={
        "type": "object",
        "properties": {
            "path": _PATH,
            "content": {"type": "string", "description": "the text to write"},
            "mode": {
                "type": "string",
                "enum": ["overwrite", "append", "create"],
                "default": "overwrite",
                "description": "create fails if the file exists",
            },
        },
        "required": ["path", "content"],
    },
    idempotent=False,
    keywords=("write", "save", "file"),
)
SEARCH = ToolSpec(
    agent="files",
    action="search",
    description=("Search workspace files by name (a glob like *.md) and by the text they contain."),
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "text to find in files (any case)"},
            "glob": {"type": "string", "description": "file name pattern, e.g. *.md"},
            "path": _PATH | {"description": "folder to search; default the workspace root"},
            "limit": _LIMIT,
        },
        "required": [],
    },
    idempotent=True,
    keywords=("search", "find", "grep", "files", "named", "containing"),
)


class _FileTool(Tool):
    def __init__(self, workspace: Workspace, max_bytes: int) -> None:
        self._workspace = workspace
        self._max_bytes = max_bytes


def _limit(parameters: Mapping[str, Any], default: int = DEFAULT_LIMIT) -> int:
    limit = parameters.get("limit", default)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidParameters(f"limit must be 1 to {MAX_LIMIT}, got {limit}")
    return int(limit)


class ListTool(_FileTool):
    spec = LIST

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        path = parameters.get("path") or "."
        recursive = bool(parameters.get("recursive", False))
        limit = _limit(parameters)
        return await trio.to_thread.run_sync(self._list, path, recursive, limit)

    def _list(self, path: str, recursive: bool, limit: int) -> dict[str, Any]:
        folder = self._workspace.resolve(path)
        if not folder.is_dir():
            raise ToolError(f"{path!r} is not a folder in the workspace")
        entries: list[dict[str, Any]] = []
        for entry in _walk(folder, recursive):
            if len(entries) == limit:
                return _listing(self._workspace, folder, entries, truncated=True)
            entries.append(_describe(self._workspace, entry))
        return _listing(self._workspace, folder, entries, truncated=False)


def _listing(
    workspace: Workspace, folder: Path, entries: list[dict[str, Any]], *, truncated: bool
) -> dict[str, Any]:
    path = workspace.display(folder)
    return {"folder": path, "entries": entries, "count": len(entries), "truncated": truncated}


def _walk(folder: Path, recursive: bool) -> Iterator[FolderEntry]:
    """Entries in name order, depth first; symlinked folders are listed, never entered.

    A stack of iterators rather than recursion, so a deep tree cannot exhaust the stack;
    a subfolder that cannot be read is skipped, the folder asked for is an error.
    """
    try:
        stack = [iter(scan_folder(folder))]
    except OSError as exc:
        raise ToolError(f"cannot list {folder.name or folder}: {exc.strerror}") from exc
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        yield entry
        if recursive and entry.kind == "folder":
            with contextlib.suppress(OSError, PathNotAllowed):
                stack.append(iter(scan_folder(entry.path)))


def _describe(workspace: Workspace, entry: FolderEntry) -> dict[str, Any]:
    described: dict[str, Any] = {"path": workspace.display(entry.path), "type": entry.kind}
    if entry.kind == "file":
        described["bytes"] = entry.size
    return described


class ReadTool(_FileTool):
    spec = READ

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        limit = parameters.get("max_bytes", self._max_bytes)
        if not 1 <= limit <= self._max_bytes:
            raise InvalidParameters(f"max_bytes must be 1 to {self._max_bytes}, got {limit}")
        return await trio.to_thread.run_sync(self._read, parameters["path"], limit)

    def _read(self, path: str, limit: int) -> dict[str, Any]:
        real = self._workspace.resolve(path)
        data, size = read_bytes(real, limit)
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise ToolError(f"{path!r} is a binary file; only text files can be read")
        return {
            "file": self._workspace.display(real),
            "content": data.decode("utf-8", errors="replace"),
            "bytes": size,
            "truncated": size > len(data),
        }


class WriteTool(_FileTool):
    spec = WRITE

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        parameters = _content_as_text(parameters)
        require_valid(self.spec, parameters)
        data = parameters["content"].encode("utf-8")
        if len(data) > self._max_bytes:
            raise FileTooLarge("the content", len(data), self._max_bytes)
        mode = parameters.get("mode") or "overwrite"
        return await trio.to_thread.run_sync(self._write, parameters["path"], data, mode)

    def _write(self, path: str, data: bytes, mode: str) -> dict[str, Any]:
        real = self._workspace.resolve(path)
        size = len(data)
        try:
            if mode == "append":
                size = append_bytes(real, data, self._max_bytes)
            elif mode == "create":
                write_new(real, data)
            else:
                write_replace(real, data)
        except FileExistsError:
            raise ToolError(f"{path!r} already exists (mode create)") from None
        except OSError as exc:  # a folder in the way, permissions, a full disk
            raise ToolError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
        return {"path": self._workspace.display(real), "mode": mode, "bytes": size}


def _content_as_text(parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    """A non-text `content` (an earlier step's result) is written as JSON."""
    content = parameters.get("content")
    if content is None or isinstance(content, str):
        return parameters
    text = json.dumps(content, ensure_ascii=False, indent=2, default=str)
    return {**parameters, "content": text}


class SearchTool(_FileTool):
    spec = SEARCH

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        query, glob = parameters.get("query") or "", parameters.get("glob") or ""
        if not query and not glob:
            raise InvalidParameters("files.search: give a query, a glob, or both")
        path, limit = parameters.get("path") or ".", _limit(parameters, 50)
        return await trio.to_thread.run_sync(self._search, path, query, glob, limit)

    def _search(self, path: str, query: str, glob: str, limit: int) -> dict[str, Any]:
        folder = self._workspace.resolve(path)
        if not folder.is_dir():
            raise ToolError(f"{path!r} is not a folder in the workspace")
        found: list[dict[str, Any]] = []
        scanned = 0
        for entry in _walk(folder, recursive=True):
            if entry.kind != "file":
                continue
            scanned += 1
            if len(found) == limit or scanned > MAX_SCANNED_FILES:
                return _results(found, scanned - 1, truncated=True)
            hit = self._match(folder, entry, query, glob)
            if hit is not None:
                found.append(hit)
        return _results(found, scanned, truncated=False)

    def _match(
        self, folder: Path, entry: FolderEntry, query: str, glob: str
    ) -> dict[str, Any] | None:
        relative = entry.path.relative_to(folder).as_posix()
        if glob and not _glob_matches(relative, entry.path.name, glob):
            return None
        hit: dict[str, Any] = {"path": self._workspace.display(entry.path)}
        if not query:
            return hit
        matches = self._lines_containing(entry.path, query)
        return hit | {"matches": matches} if matches else None

    def _lines_containing(self, path: Path, query: str) -> list[dict[str, Any]]:
        try:
            data, size = read_bytes(path, self._max_bytes)
        except ToolError:
            return []  # vanished or unreadable since the walk: not a match
        if size > self._max_bytes or b"\x00" in data[:BINARY_SNIFF_BYTES]:
            return []
        wanted = query.casefold()
        matches: list[dict[str, Any]] = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if wanted in line.casefold():
                matches.append({"line": number, "text": line.strip()[:MATCH_TEXT_CHARS]})
                if len(matches) == MATCHES_PER_FILE:
                    break
        return matches


def _glob_matches(relative: str, name: str, glob: str) -> bool:
    """Case-insensitive; a glob with a `/` matches the path below the folder searched."""
    target = relative if "/" in glob else name
    return fnmatch.fnmatchcase(target.casefold(), glob.casefold())


def _results(found: list[dict[str, Any]], scanned: int, *, truncated: bool) -> dict[str, Any]:
    return {"results": found, "count": len(found), "scanned": scanned, "truncated": truncated}


class FilesAgent(Agent):
    name = "files"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (LIST, READ, WRITE, SEARCH)

    def __init__(self, context: AgentContext) -> None:
        workspace = Workspace.of(context.workspace_roots)
        max_bytes = int(positive_or(context.settings.max_file_bytes, DEFAULT_MAX_FILE_BYTES))
        self._tools: dict[str, Tool] = {
            "list": ListTool(workspace, max_bytes),
            "read": ReadTool(workspace, max_bytes),
            "write": WriteTool(workspace, max_bytes),
            "search": SearchTool(workspace, max_bytes),
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
