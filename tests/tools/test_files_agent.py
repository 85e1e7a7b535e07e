"""The files agent on real files: list, read, write, search, limits, and every escape.

The escapes (`..`, absolute paths outside, symlinked files and folders leading out,
dangling links, writes through links) are each tried against the tool they threaten;
the file outside must stay unread and unchanged.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from agents.errors import InvalidParameters, ToolError
from agents.tools import AgentContext, AgentSettings
from agents.tools._files import FilesAgent
from agents.tools._workspace import FileTooLarge, PathNotAllowed, read_bytes

from .conftest import SECRET, call, context, names


@pytest.fixture
def files(workspace: Path) -> FilesAgent:
    (workspace / "notes.txt").write_text("first line\nthe Budget is 42\nlast line\n")
    (workspace / "docs").mkdir()
    (workspace / "docs" / "plan.md").write_text("# Plan\nraise the budget\n")
    (workspace / "docs" / "deep").mkdir()
    (workspace / "docs" / "deep" / "data.csv").write_text("a,b\n1,2\n")
    return FilesAgent(context(workspace, max_file_bytes=1000))


# --- list ---------------------------------------------------------------------------


async def test_list_shows_the_root_in_name_order(files: FilesAgent) -> None:
    result = await call(files, "list")
    assert result == {
        "folder": ".",
        "entries": [
            {"path": "docs", "type": "folder"},
            {"path": "notes.txt", "type": "file", "bytes": 38},
        ],
        "count": 2,
        "truncated": False,
    }


async def test_list_recursive_walks_subfolders_up_to_the_limit(files: FilesAgent) -> None:
    result = await call(files, "list", path="docs", recursive=True)
    assert [e["path"] for e in result["entries"]] == [
        "docs/deep",
        "docs/deep/data.csv",
        "docs/plan.md",
    ]
    limited = await call(files, "list", recursive=True, limit=2)
    assert limited["count"] == 2
    assert limited["truncated"] is True


async def test_list_of_a_file_is_an_error(files: FilesAgent) -> None:
    with pytest.raises(ToolError, match=re.escape("'notes.txt' is not a folder in the workspace")):
        await call(files, "list", path="notes.txt")


async def test_list_shows_symlinks_without_entering_them(
    files: FilesAgent, workspace: Path, outside: Path
) -> None:
    (workspace / "docs" / "out").symlink_to(outside, target_is_directory=True)
    result = await call(files, "list", path="docs", recursive=True)
    assert {"path": "docs/out", "type": "symlink"} in result["entries"]
    assert not any("secret" in e["path"] for e in result["entries"])


# --- read ---------------------------------------------------------------------------


async def test_read_returns_the_text(files: FilesAgent) -> None:
    result = await call(files, "read", path="docs/plan.md")
    assert result == {
        "file": "docs/plan.md",
        "content": "# Plan\nraise the budget\n",
        "bytes": 24,
        "truncated": False,
    }


async def test_read_accepts_an_absolute_path_inside_the_workspace(
    files: FilesAgent, workspace: Path
) -> None:
    result = await call(files, "read", path=str(workspace / "notes.txt"))
    assert result["file"] == "notes.txt"


async def test_read_is_bounded_by_max_bytes(files: FilesAgent) -> None:
    result = await call(files, "read", path="notes.txt", max_bytes=10)
    assert result["content"] == "first line"
    assert result["truncated"] is True
    assert result["bytes"] == 38


async def test_read_limit_cannot_exceed_the_configured_size(files: FilesAgent) -> None:
    with pytest.raises(InvalidParameters, match="max_bytes must be 1 to 1000, got 5000"):
        await call(files, "read", path="notes.txt", max_bytes=5000)


async def test_read_of_a_large_file_returns_its_first_part(
    files: FilesAgent, workspace: Path
) -> None:
    (workspace / "big.txt").write_text("x" * 5000)
    result = await call(files, "read", path="big.txt")
    assert len(result["content"]) == 1000
    assert result["truncated"] is True


async def test_read_refuses_binary_files(files: FilesAgent, workspace: Path) -> None:
    (workspace / "image.bin").write_bytes(b"\x89PNG\x00\x00data")
    with pytest.raises(ToolError, match=re.escape("'image.bin' is a binary file")):
        await call(files, "read", path="image.bin")


async def test_read_of_a_missing_file_is_an_error(files: FilesAgent) -> None:
    with pytest.raises(ToolError, match=re.escape("no such file: nothing.txt")):
        await call(files, "read", path="nothing.txt")


async def test_read_of_a_folder_is_an_error(files: FilesAgent) -> None:
    with pytest.raises(ToolError, match="docs is not a regular file"):
        await call(files, "read", path="docs")


# --- write --------------------------------------------------------------------------


async def test_write_creates_the_file_and_its_folders(files: FilesAgent, workspace: Path) -> None:
    result = await call(files, "write", path="out/new/result.txt", content="hello")
    assert result == {"path": "out/new/result.txt", "mode": "overwrite", "bytes": 5}
    assert (workspace / "out" / "new" / "result.txt").read_text() == "hello"


async def test_write_overwrites_atomically(files: FilesAgent, workspace: Path) -> None:
    await call(files, "write", path="notes.txt", content="replaced")
    assert (workspace / "notes.txt").read_text() == "replaced"
    assert names(workspace) == ["docs", "notes.txt"]


async def test_write_appends(files: FilesAgent, workspace: Path) -> None:
    result = await call(files, "write", path="notes.txt", content="more\n", mode="append")
    assert result["bytes"] == 43
    assert (workspace / "notes.txt").read_text().endswith("last line\nmore\n")


async def test_write_create_mode_never_overwrites(files: FilesAgent, workspace: Path) -> None:
    with pytest.raises(ToolError, match=re.escape("'notes.txt' already exists (mode create)")):
        await call(files, "write", path="notes.txt", content="x", mode="create")
    assert (workspace / "notes.txt").read_text().startswith("first line")
    await call(files, "write", path="fresh.txt", content="x", mode="create")
    assert (workspace / "fresh.txt").read_text() == "x"


async def test_write_over_the_size_limit_is_refused(files: FilesAgent, workspace: Path) -> None:
    with pytest.raises(FileTooLarge, match="the content is 1001 bytes, over the limit of 1000"):
        await call(files, "write", path="big.txt", content="x" * 1001)
    assert not (workspace / "big.txt").exists()


async def test_append_past_the_size_limit_is_refused(files: FilesAgent, workspace: Path) -> None:
    with pytest.raises(FileTooLarge, match=re.escape("notes.txt after appending is 1008 bytes")):
        await call(files, "write", path="notes.txt", content="x" * 970, mode="append")
    assert (workspace / "notes.txt").stat().st_size == 38


async def test_write_of_a_step_result_stores_it_as_json(files: FilesAgent, workspace: Path) -> None:
    result = {"expression": "2 + 3", "value": 5}
    await call(files, "write", path="result.json", content=result)
    assert json.loads((workspace / "result.json").read_text()) == result


async def test_write_to_a_folder_is_an_error(files: FilesAgent) -> None:
    with pytest.raises(ToolError, match="docs is a directory"):
        await call(files, "write", path="docs", content="x")


async def test_write_with_an_unknown_mode_is_invalid(files: FilesAgent) -> None:
    with pytest.raises(InvalidParameters, match="must be one of overwrite, append, create"):
        await call(files, "write", path="a.txt", content="x", mode="truncate")


# --- search -------------------------------------------------------------------------


async def test_search_by_name_glob(files: FilesAgent) -> None:
    result = await call(files, "search", glob="*.MD")
    assert result["results"] == [{"path": "docs/plan.md"}]


async def test_search_by_content_gives_lines(files: FilesAgent) -> None:
    result = await call(files, "search", query="budget")
    assert result["results"] == [
        {"path": "docs/plan.md", "matches": [{"line": 2, "text": "raise the budget"}]},
        {"path": "notes.txt", "matches": [{"line": 2, "text": "the Budget is 42"}]},
    ]
    assert result["scanned"] == 3


async def test_search_by_name_and_content(files: FilesAgent) -> None:
    result = await call(files, "search", query="budget", glob="*.txt")
    assert [r["path"] for r in result["results"]] == ["notes.txt"]


async def test_search_with_a_path_glob(files: FilesAgent) -> None:
    result = await call(files, "search", glob="docs/deep/*")
    assert [r["path"] for r in result["results"]] == ["docs/deep/data.csv"]


async def test_search_results_are_bounded(files: FilesAgent) -> None:
    result = await call(files, "search", glob="*", limit=1)
    assert result["count"] == 1
    assert result["truncated"] is True


async def test_search_needs_a_query_or_a_glob(files: FilesAgent) -> None:
    with pytest.raises(
        InvalidParameters, match=re.escape("files.search: give a query, a glob, or both")
    ):
        await call(files, "search")


async def test_search_skips_binary_and_oversized_files(files: FilesAgent, workspace: Path) -> None:
    (workspace / "blob.bin").write_bytes(b"budget\x00")
    (workspace / "huge.txt").write_text("budget " * 500)
    result = await call(files, "search", query="budget")
    assert [r["path"] for r in result["results"]] == ["docs/plan.md", "notes.txt"]


async def test_search_does_not_follow_symlinks_out(
    files: FilesAgent, workspace: Path, outside: Path
) -> None:
    (workspace / "linked").symlink_to(outside, target_is_directory=True)
    (workspace / "secret-link.txt").symlink_to(outside / "secret.txt")
    result = await call(files, "search", query="secret")
    assert result["results"] == []


# --- escapes ------------------------------------------------------------------------

DOTDOT = "'..' is not allowed in workspace paths"
OUTSIDE = "it is outside the workspace roots"
LINKED_OUT = "a symlink in it leads outside the workspace"


@pytest.mark.parametrize(
    ("action", "parameters"),
    [
        pytest.param("read", {"path": "../outside/secret.txt"}, id="read"),
        pytest.param("read", {"path": "docs/../../outside/secret.txt"}, id="read-nested"),
        pytest.param("read", {"path": "docs/.."}, id="read-dotdot-staying-inside"),
        pytest.param("list", {"path": ".."}, id="list"),
        pytest.param("write", {"path": "../outside/secret.txt", "content": "x"}, id="write"),
        pytest.param("search", {"path": "..", "query": "secret"}, id="search"),
    ],
)
async def test_dotdot_is_refused(
    files: FilesAgent, outside: Path, action: str, parameters: dict[str, Any]
) -> None:
    with pytest.raises(PathNotAllowed, match=DOTDOT):
        await call(files, action, **parameters)
    assert (outside / "secret.txt").read_text() == SECRET


@pytest.mark.parametrize("action", ["read", "list", "write", "search"])
async def test_absolute_path_outside_is_refused(
    files: FilesAgent, outside: Path, action: str
) -> None:
    target = outside / "secret.txt" if action in ("read", "write") else outside
    parameters: dict[str, Any] = {"path": str(target)}
    parameters |= {"content": "x"} if action == "write" else {}
    parameters |= {"query": "secret"} if action == "search" else {}
    with pytest.raises(PathNotAllowed, match=OUTSIDE):
        await call(files, action, **parameters)
    assert (outside / "secret.txt").read_text() == SECRET


async def test_etc_passwd_is_refused(files: FilesAgent) -> None:
    with pytest.raises(PathNotAllowed, match="path '/etc/passwd' is not allowed: " + OUTSIDE):
        await call(files, "read", path="/etc/passwd")


async def test_symlinked_file_leading_out_cannot_be_read(
    files: FilesAgent, workspace: Path, outside: Path
) -> None:
    (workspace / "innocent.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "read", path="innocent.txt")


async def test_symlinked_folder_leading_out_cannot_be_read_or_listed(
    files: FilesAgent, workspace: Path, outside: Path
) -> None:
    (workspace / "shared").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "read", path="shared/secret.txt")
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "list", path="shared")
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "search", path="shared", query="secret")


async def test_write_through_a_symlinked_folder_is_refused(
    files: FilesAgent, workspace: Path, outside: Path
) -> None:
    (workspace / "shared").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "write", path="shared/new.txt", content="x")
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "write", path="shared/deeper/new.txt", content="x")
    assert names(outside) == ["secret.txt"]


@pytest.mark.parametrize("mode", ["overwrite", "append", "create"])
async def test_write_through_a_symlinked_file_is_refused(
    files: FilesAgent, workspace: Path, outside: Path, mode: str
) -> None:
    (workspace / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "write", path="link.txt", content="pwned", mode=mode)
    assert (outside / "secret.txt").read_text() == SECRET


async def test_write_to_a_dangling_symlink_leading_out_is_refused(
    files: FilesAgent, workspace: Path, outside: Path
) -> None:
    (workspace / "dangling.txt").symlink_to(outside / "created-by-attacker.txt")
    with pytest.raises(PathNotAllowed, match=LINKED_OUT):
        await call(files, "write", path="dangling.txt", content="x")
    assert not (outside / "created-by-attacker.txt").exists()


async def test_symlinks_within_the_workspace_work(files: FilesAgent, workspace: Path) -> None:
    (workspace / "alias.txt").symlink_to(workspace / "notes.txt")
    result = await call(files, "read", path="alias.txt")
    assert result["file"] == "notes.txt"


async def test_a_symlinked_root_is_its_real_folder(tmp_path: Path, workspace: Path) -> None:
    (workspace / "a.txt").write_text("via the link")
    link = tmp_path / "root-link"
    link.symlink_to(workspace, target_is_directory=True)
    agent = FilesAgent(context(link))
    assert (await call(agent, "read", path="a.txt"))["content"] == "via the link"
    assert (await call(agent, "read", path=str(link / "a.txt")))["content"] == "via the link"


async def test_a_second_root_is_reachable_by_absolute_path(tmp_path: Path, workspace: Path) -> None:
    second = tmp_path / "second"
    second.mkdir()
    (second / "b.txt").write_text("second root")
    agent = FilesAgent(AgentContext(AgentSettings(), (workspace, second)))
    result = await call(agent, "read", path=str(second / "b.txt"))
    assert result == {
        "file": str((second / "b.txt").resolve()),
        "content": "second root",
        "bytes": 11,
        "truncated": False,
    }


async def test_nul_in_a_path_is_refused(files: FilesAgent) -> None:
    with pytest.raises(PathNotAllowed, match="it contains a NUL character"):
        await call(files, "read", path="notes.txt\x00.png")


async def test_without_a_workspace_root_the_tools_refuse() -> None:
    agent = FilesAgent(AgentContext())
    with pytest.raises(ToolError, match="no workspace root is configured"):
        await call(agent, "list")


def test_only_write_is_not_idempotent() -> None:
    specs = {spec.action: spec.idempotent for spec in FilesAgent.tool_specs()}
    assert specs == {"list": True, "read": True, "write": False, "search": True}


async def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(
    workspace: Path, outside: Path
) -> None:
    """O_NOFOLLOW: the open itself refuses a symlink, whatever the check saw."""
    link = workspace / "swapped.txt"
    os.symlink(outside / "secret.txt", link)
    with pytest.raises(PathNotAllowed, match=re.escape("'swapped.txt' in it is a symlink")):
        read_bytes(link, 100)
