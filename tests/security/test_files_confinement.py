"""Escapes from the workspace through links, tried against the file tools on real files.

`Workspace.resolve` checks a path once; an attacker who can change the tree may swap a
folder or file for a symlink between that check and the open, or plant a hard link to a
file outside. The opens walk the checked path one name at a time without following a
link, and writes refuse hard-linked files, so each attempt ends in `PathNotAllowed` and
the file outside stays unread and unchanged. Every tool call is bounded by `fail_after`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.errors import PathNotAllowed
from agents.tools import AgentContext, AgentSettings
from agents.tools._base import Agent
from agents.tools._email import EmailAgent
from agents.tools._files import FilesAgent
from agents.tools._workspace import (
    Workspace,
    append_bytes,
    read_bytes,
    scan_folder,
    write_new,
    write_replace,
)

TIMEOUT_S = 10
SECRET = "top secret, outside the workspace"
SYMLINK = "in it is a symlink, and opening a workspace path follows none"
HARD_LINKS = "the file has 2 hard links"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "deep" / "secret.txt").write_text("inside")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


@pytest.fixture
def files(workspace: Path) -> FilesAgent:
    return FilesAgent(AgentContext(AgentSettings(max_file_bytes=1000), (workspace,)))


async def call(agent: Agent, action: str, **parameters: Any) -> Any:
    with trio.fail_after(TIMEOUT_S):
        return await agent.tools()[action].call(parameters)


def untouched(outside: Path) -> bool:
    names = sorted(p.name for p in outside.iterdir())
    return names == ["secret.txt"] and (outside / "secret.txt").read_text() == SECRET


def swap_for_link(path: Path, target: Path) -> None:
    """Replace `path` (a folder or file, or nothing) by a symlink to `target`."""
    if path.exists():
        path.rename(path.with_name(path.name + ".moved"))
    path.symlink_to(target, target_is_directory=target.is_dir())


@pytest.fixture
def swap_after_check(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Path, Path], None]]:
    """Makes `Workspace.resolve` swap a path for a symlink right after its check passed."""
    swaps: list[tuple[Path, Path]] = []
    original = Workspace.resolve

    def resolve_then_swap(self: Workspace, path: str) -> Path:
        real = original(self, path)
        while swaps:
            swap_for_link(*swaps.pop())
        return real

    monkeypatch.setattr(Workspace, "resolve", resolve_then_swap)
    yield lambda path, target: swaps.append((path, target))


# --- a symlinked folder in the middle of the path -----------------------------------


@pytest.mark.parametrize(
    ("action", "parameters"),
    [
        pytest.param("read", {"path": "docs/shared/secret.txt"}, id="read"),
        pytest.param("list", {"path": "docs/shared"}, id="list"),
        pytest.param("search", {"path": "docs/shared", "query": "secret"}, id="search"),
        pytest.param("write", {"path": "docs/shared/secret.txt", "content": "x"}, id="overwrite"),
        pytest.param(
            "write",
            {"path": "docs/shared/secret.txt", "content": "x", "mode": "append"},
            id="append",
        ),
        pytest.param(
            "write",
            {"path": "docs/shared/new.txt", "content": "x", "mode": "create"},
            id="create",
        ),
    ],
)
async def test_a_symlinked_intermediate_folder_leading_out_is_refused(
    files: FilesAgent, workspace: Path, outside: Path, action: str, parameters: dict[str, Any]
) -> None:
    (workspace / "docs" / "shared").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathNotAllowed):
        await call(files, action, **parameters)
    assert untouched(outside)


@pytest.mark.parametrize(
    ("action", "parameters"),
    [
        pytest.param("read", {"path": "docs/deep/secret.txt"}, id="read"),
        pytest.param("list", {"path": "docs/deep"}, id="list"),
        pytest.param("write", {"path": "docs/deep/secret.txt", "content": "x"}, id="overwrite"),
        pytest.param(
            "write",
            {"path": "docs/deep/secret.txt", "content": "x", "mode": "append"},
            id="append",
        ),
        pytest.param(
            "write",
            {"path": "docs/deep/new.txt", "content": "x", "mode": "create"},
            id="create",
        ),
    ],
)
async def test_a_folder_swapped_for_a_symlink_after_the_check_is_refused(
    files: FilesAgent,
    workspace: Path,
    outside: Path,
    swap_after_check: Callable[[Path, Path], None],
    action: str,
    parameters: dict[str, Any],
) -> None:
    """The race: `resolve` saw a real folder, the open meets a link out in its place."""
    swap_after_check(workspace / "docs" / "deep", outside)
    with pytest.raises(PathNotAllowed, match=f"'deep' {SYMLINK}"):
        await call(files, action, **parameters)
    assert untouched(outside)


async def test_a_folder_about_to_be_created_planted_as_a_symlink_is_refused(
    files: FilesAgent, workspace: Path, outside: Path, swap_after_check: Any
) -> None:
    swap_after_check(workspace / "new", outside)
    with pytest.raises(PathNotAllowed, match=f"'new' {SYMLINK}"):
        await call(files, "write", path="new/deeper/x.txt", content="x")
    assert untouched(outside)


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda real: read_bytes(real, 100), id="read_bytes"),
        pytest.param(lambda real: write_replace(real, b"x"), id="write_replace"),
        pytest.param(lambda real: write_new(real.with_name("new.txt"), b"x"), id="write_new"),
        pytest.param(lambda real: append_bytes(real, b"x", 100), id="append_bytes"),
        pytest.param(lambda real: scan_folder(real.parent), id="scan_folder"),
    ],
)
def test_the_open_itself_refuses_a_symlinked_folder_on_the_way(
    workspace: Path, outside: Path, operation: Callable[[Path], object]
) -> None:
    """No check at all before the call: the walk from `/` alone keeps the open inside."""
    real = Workspace.of([workspace]).resolve("docs/deep/secret.txt")
    swap_for_link(workspace / "docs", outside.parent)
    with pytest.raises(PathNotAllowed, match=f"'docs' {SYMLINK}"):
        operation(real)
    assert untouched(outside)


# --- a symlink as the last name --------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda real: read_bytes(real, 100), id="read_bytes"),
        pytest.param(lambda real: write_replace(real, b"pwned"), id="write_replace"),
        pytest.param(lambda real: append_bytes(real, b"pwned", 100), id="append_bytes"),
    ],
)
def test_a_symlink_as_the_last_name_is_refused(
    workspace: Path, outside: Path, operation: Callable[[Path], object]
) -> None:
    link = workspace / "docs" / "link.txt"
    link.symlink_to(outside / "secret.txt")
    with pytest.raises(PathNotAllowed, match=f"'link.txt' {SYMLINK}"):
        operation(link)
    assert untouched(outside)


def test_create_never_writes_through_a_symlink_as_the_last_name(
    workspace: Path, outside: Path
) -> None:
    link = workspace / "dangling.txt"
    link.symlink_to(outside / "planted.txt")
    with pytest.raises(FileExistsError):
        write_new(link, b"x")
    assert untouched(outside)


@pytest.mark.parametrize("mode", ["overwrite", "append"])
async def test_a_file_swapped_for_a_symlink_after_the_check_is_not_written(
    files: FilesAgent, workspace: Path, outside: Path, swap_after_check: Any, mode: str
) -> None:
    swap_after_check(workspace / "docs" / "deep" / "secret.txt", outside / "secret.txt")
    with pytest.raises(PathNotAllowed, match=f"'secret.txt' {SYMLINK}"):
        await call(files, "write", path="docs/deep/secret.txt", content="pwned", mode=mode)
    assert untouched(outside)


# --- hard links -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["overwrite", "append"])
async def test_a_hard_link_to_a_file_outside_is_never_written(
    files: FilesAgent, workspace: Path, outside: Path, mode: str
) -> None:
    os.link(outside / "secret.txt", workspace / "hard.txt")
    with pytest.raises(PathNotAllowed, match=HARD_LINKS):
        await call(files, "write", path="hard.txt", content="pwned", mode=mode)
    assert untouched(outside)
    assert (workspace / "hard.txt").read_text() == SECRET


async def test_a_hard_linked_file_may_be_read(
    files: FilesAgent, workspace: Path, outside: Path
) -> None:
    """By design (see `_workspace`): reading shows what the link's maker could read."""
    os.link(outside / "secret.txt", workspace / "hard.txt")
    assert (await call(files, "read", path="hard.txt"))["content"] == SECRET


# --- what must keep working -------------------------------------------------------------


async def test_nested_paths_inside_the_workspace_still_work(
    files: FilesAgent, workspace: Path
) -> None:
    await call(files, "write", path="a/b/c/new.txt", content="one\n", mode="create")
    await call(files, "write", path="a/b/c/new.txt", content="two\n", mode="append")
    await call(files, "write", path=str(workspace / "a" / "b" / "other.txt"), content="x")
    assert (await call(files, "read", path="a/b/c/new.txt"))["content"] == "one\ntwo\n"
    listing = await call(files, "list", path="a", recursive=True)
    assert [e["path"] for e in listing["entries"]] == [
        "a/b",
        "a/b/c",
        "a/b/c/new.txt",
        "a/b/other.txt",
    ]
    found = await call(files, "search", query="two")
    assert found["results"] == [{"path": "a/b/c/new.txt", "matches": [{"line": 2, "text": "two"}]}]


async def test_symlinks_inside_the_workspace_still_resolve(
    files: FilesAgent, workspace: Path
) -> None:
    (workspace / "alias").symlink_to(workspace / "docs", target_is_directory=True)
    result = await call(files, "read", path="alias/deep/secret.txt")
    assert result["content"] == "inside" and result["file"] == "docs/deep/secret.txt"


# --- the email agent's outbox ---------------------------------------------------------


async def test_an_outbox_swapped_for_a_symlink_after_the_check_gets_no_draft(
    workspace: Path, outside: Path, swap_after_check: Any
) -> None:
    """Drafts are delivered through descriptors like every workspace write: a Maildir
    swapped for a link out between the check and the write is refused, not written."""
    email = EmailAgent(AgentContext(AgentSettings(outbox_path="docs/deep"), (workspace,)))
    draft = {"to": "a@example.com", "subject": "s", "body": "b"}
    first = await call(email, "draft", **draft)
    assert first["status"] == "drafted"
    assert len(list((workspace / "docs" / "deep" / "cur").iterdir())) == 1
    swap_after_check(workspace / "docs" / "deep", outside)
    with pytest.raises(PathNotAllowed, match=f"'deep' {SYMLINK}"):
        await call(email, "draft", **draft)
    assert untouched(outside)
