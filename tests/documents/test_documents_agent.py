"""The `documents` agent's tools end to end: a real LMDB store, the `documents`
projection followed live by a runner, files in a real workspace folder, and the agent
built from its context. Only the embedding model is a test double (`HashEmbedder`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.errors import InvalidParameters, ToolError
from agents.tools import AgentContext
from agents.tools._document_indexer import (
    CollectionModelConflict,
    IndexerOptions,
    InvalidCollection,
    NothingToIndex,
    TooManyDocuments,
)
from agents.tools._documents import DocumentsAccess, DocumentsAgent, UnknownCollection
from agents.tools._workspace import PathNotAllowed
from tests.tools.test_document_text import _pdf

from .conftest import RECIPE, REPORT, TIMEOUT_S, TRAVEL, HashEmbedder, Lab, open_lab, write_docs

DOCS = {
    "docs/report.md": REPORT,
    "docs/recipes/pancakes.txt": RECIPE,
    "docs/travel.html": TRAVEL,
    "docs/minutes.pdf": _pdf("Board minutes\nThe board approved the new warehouse in Porto."),
}


def paths(result: dict[str, Any], kind: str) -> list[str]:
    return [item if isinstance(item, str) else item["path"] for item in result[kind]]


def calls(lab: Lab) -> int:
    return lab.embedder.statistics().requests


async def test_search_and_list_see_another_agents_index_while_the_projections_linger(
    data_dir: Path, workspace: Path
) -> None:
    """What another run indexed a moment ago is found: a search waits for what the log
    holds, not only for its own agent's writes, even while the projections would wait
    an hour before applying a commit nobody waits for."""
    write_docs(workspace, DOCS)
    with trio.fail_after(TIMEOUT_S):
        async with open_lab(data_dir, workspace, linger_s=3600.0) as lab:
            await lab.call("index", path="docs")
            access = DocumentsAccess(
                lab.embedder, lab.projection, lab.runner.wait_for, IndexerOptions()
            )
            context = AgentContext(workspace_roots=(workspace,), store=lab.store, documents=access)
            other = DocumentsAgent(context)
            found = await other.tools()["search"].call({"query": "flight to lisbon", "k": 1})
            listing = await other.tools()["list"].call({})
    assert [p["path"] for p in found["passages"]] == ["docs/travel.html"]
    assert listing["count"] == len(DOCS)


async def test_index_then_search_finds_passages_of_every_supported_type(lab: Lab) -> None:
    write_docs(lab.workspace, DOCS)
    with trio.fail_after(TIMEOUT_S):
        result = await lab.call("index", path="docs")
        found = {}
        for query in ("revenue growth in europe", "flight to lisbon", "warehouse in porto"):
            found[query] = await lab.call("search", query=query, k=1)
    assert result["collection"] == "default" and result["target"] == "docs"
    assert sorted(paths(result, "indexed")) == sorted(DOCS)
    counts = result["counts"]
    assert (counts["indexed"], counts["unchanged"], counts["removed"]) == (4, 0, 0)
    assert counts["embedding_requests"] == 1  # every chunk of every file in one call
    assert counts["chunks"] == 4 and counts["seconds"] >= 0
    hits = {q: r["passages"][0] for q, r in found.items()}
    assert hits["revenue growth in europe"]["path"] == "docs/report.md"
    assert "twelve percent" in hits["revenue growth in europe"]["quote"]
    assert hits["flight to lisbon"]["path"] == "docs/travel.html"
    assert "alert" not in hits["flight to lisbon"]["quote"]  # script text is not indexed
    assert hits["warehouse in porto"]["path"] == "docs/minutes.pdf"
    assert "untrusted" in found["flight to lisbon"]["note"]


async def test_each_file_is_one_document_indexed_event_carrying_its_embeddings(
    lab: Lab,
) -> None:
    write_docs(lab.workspace, {"docs/report.md": REPORT})
    with trio.fail_after(TIMEOUT_S):
        await lab.call("index", path="docs", collection="work")
        (record,) = await lab.records("work")
    assert record.type == "DocumentIndexed"
    data = record.data
    assert (data["collection"], data["path"], data["model"]) == (
        "work",
        "docs/report.md",
        "test-hash",
    )
    assert data["size"] == len(REPORT.encode()) and len(data["sha256"]) == 64
    (chunk,) = data["chunks"]
    assert REPORT[chunk["offset"] :].startswith(chunk["text"][:20])
    assert len(chunk["embedding"]) == 4 * lab.embedder.dim


async def test_reindexing_unchanged_files_makes_no_embedding_request(lab: Lab) -> None:
    write_docs(lab.workspace, DOCS)
    with trio.fail_after(TIMEOUT_S):
        await lab.call("index", path="docs")
        before, events = calls(lab), len(await lab.records())
        again = await lab.call("index", path="docs")
        assert calls(lab) == before and len(await lab.records()) == events
    counts = again["counts"]
    assert (counts["unchanged"], counts["indexed"], counts["embedding_requests"]) == (4, 0, 0)


async def test_a_changed_file_is_reindexed_alone_and_its_old_text_is_gone(lab: Lab) -> None:
    write_docs(lab.workspace, DOCS)
    with trio.fail_after(TIMEOUT_S):
        await lab.call("index", path="docs")
        (lab.workspace / "docs/report.md").write_text("Headcount doubled in Singapore this year.")
        result = await lab.call("index", path="docs")
        old = await lab.call("search", query="revenue grew twelve percent europe", k=5)
        new = await lab.call("search", query="headcount doubled in singapore", k=1)
    assert paths(result, "indexed") == ["docs/report.md"]
    assert result["counts"]["unchanged"] == 3
    assert result["counts"]["embedding_requests"] == 1
    assert not any("twelve percent" in p["quote"] for p in old["passages"])
    assert new["passages"][0]["quote"] == "Headcount doubled in Singapore this year."


async def test_a_file_gone_from_the_folder_is_removed_from_the_index(lab: Lab) -> None:
    write_docs(lab.workspace, DOCS | {"other/keep.md": "kept elsewhere"})
    with trio.fail_after(TIMEOUT_S):
        await lab.call("index", path="docs")
        await lab.call("index", path="other")
        (lab.workspace / "docs/recipes/pancakes.txt").unlink()
        result = await lab.call("index", path="docs")
        listing = await lab.call("list")
        found = await lab.call("search", query="pancakes flour milk eggs", k=10)
        records = await lab.records()
    assert paths(result, "removed") == ["docs/recipes/pancakes.txt"]
    assert records[-1].type == "DocumentRemoved"
    assert records[-1].data == {"collection": "default", "path": "docs/recipes/pancakes.txt"}
    assert "docs/recipes/pancakes.txt" not in {p["path"] for p in found["passages"]}
    assert [d["path"] for d in listing["documents"]] == [
        "docs/minutes.pdf",
        "docs/report.md",
        "docs/travel.html",
        "other/keep.md",
    ]


async def test_a_single_file_can_be_indexed_and_removed_by_its_path(lab: Lab) -> None:
    write_docs(lab.workspace, DOCS)
    with trio.fail_after(TIMEOUT_S):
        result = await lab.call("index", path="docs/report.md")
        assert paths(result, "indexed") == ["docs/report.md"]
        (lab.workspace / "docs/report.md").unlink()
        result = await lab.call("index", path="docs/report.md")
        assert paths(result, "removed") == ["docs/report.md"]
        with pytest.raises(NothingToIndex, match=re.escape("nothing to index at 'docs/report.md'")):
            await lab.call("index", path="docs/report.md")


async def test_unsupported_types_are_skipped_with_a_note_and_unreadable_ones_listed(
    lab: Lab,
) -> None:
    files = {
        "docs/report.md": REPORT,
        "docs/sheet.docx": b"PK\x03\x04 not a document we read",
        "docs/broken.pdf": b"%PDF-1.4 this is not really a pdf",
        "docs/.hidden.md": "hidden files are ignored",
        "docs/empty.txt": "   \n",
    }
    write_docs(lab.workspace, files)
    with trio.fail_after(TIMEOUT_S):
        result = await lab.call("index", path="docs")
    assert sorted(paths(result, "indexed")) == ["docs/empty.txt", "docs/report.md"]
    (skipped,) = result["skipped"]
    assert skipped["path"] == "docs/sheet.docx"
    assert skipped["reason"].startswith("unsupported type ('.docx'); supported: .htm, .html")
    (unreadable,) = result["unreadable"]
    assert unreadable["path"] == "docs/broken.pdf" and unreadable["reason"]
    assert result["counts"]["chunks"] == 1  # the blank file has no chunk


async def test_a_file_over_the_size_limit_is_unreadable(data_dir: Path, workspace: Path) -> None:
    write_docs(workspace, {"docs/big.txt": "word " * 100, "docs/small.txt": "tiny"})
    async with open_lab(data_dir, workspace, options=IndexerOptions(max_file_bytes=100)) as lab:
        with trio.fail_after(TIMEOUT_S):
            result = await lab.call("index", path="docs")
    assert paths(result, "indexed") == ["docs/small.txt"]
    (unreadable,) = result["unreadable"]
    assert unreadable["path"] == "docs/big.txt"
    assert "500 bytes, over the limit of 100" in unreadable["reason"]


async def test_a_folder_with_too_many_files_is_refused(data_dir: Path, workspace: Path) -> None:
    write_docs(workspace, {f"docs/{i}.txt": f"file {i}" for i in range(4)})
    async with open_lab(data_dir, workspace, options=IndexerOptions(max_files=3)) as lab:
        with trio.fail_after(TIMEOUT_S), pytest.raises(TooManyDocuments, match="over 3 files"):
            await lab.call("index", path="docs")


async def test_chunks_are_embedded_in_batches_of_the_configured_size(
    data_dir: Path, workspace: Path
) -> None:
    write_docs(workspace, {f"docs/{i:02}.txt": f"document number {i}" for i in range(10)})
    options = IndexerOptions(embed_batch=4)
    async with open_lab(data_dir, workspace, options=options) as lab:
        with trio.fail_after(TIMEOUT_S):
            result = await lab.call("index", path="docs")
            records = await lab.records()
    assert result["counts"]["embedding_requests"] == 3  # 4 + 4 + 2 chunks
    assert [r.data["path"] for r in records] == [f"docs/{i:02}.txt" for i in range(10)]


@pytest.mark.parametrize(
    "path, reason",
    [
        pytest.param("../outside", "'..' is not allowed", id="dotdot"),
        pytest.param("/etc", "outside the workspace roots", id="absolute"),
        pytest.param("escape", "a symlink in it leads outside the workspace", id="symlink"),
    ],
)
async def test_paths_leaving_the_workspace_are_refused(
    lab: Lab, tmp_path: Path, path: str, reason: str
) -> None:
    outside = tmp_path / "outside"
    write_docs(outside, {"secret.md": "the secret plan"})
    os.symlink(outside, lab.workspace / "escape")
    with trio.fail_after(TIMEOUT_S), pytest.raises(PathNotAllowed, match=re.escape(reason)):
        await lab.call("index", path=path)
    assert await lab.records() == []


async def test_symlinks_inside_the_folder_are_not_followed(lab: Lab, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_docs(outside, {"secret.md": "the secret plan"})
    write_docs(lab.workspace, {"docs/report.md": REPORT})
    os.symlink(outside / "secret.md", lab.workspace / "docs/link.md")
    os.symlink(outside, lab.workspace / "docs/linked-folder")
    with trio.fail_after(TIMEOUT_S):
        result = await lab.call("index", path="docs")
    assert paths(result, "indexed") == ["docs/report.md"]
    assert result["skipped"] == [
        {"path": "docs/link.md", "reason": "a symbolic link (links are not followed)"},
        {"path": "docs/linked-folder", "reason": "a symbolic link (links are not followed)"},
    ]


@pytest.mark.parametrize(
    "action, parameters, message",
    [
        pytest.param("index", {}, "documents.index: missing parameter 'path'", id="no-path"),
        pytest.param("index", {"path": " "}, "parameter 'path' must not be empty", id="blank"),
        pytest.param(
            "index", {"path": "docs", "bogus": 1}, "unknown parameter 'bogus'", id="unknown"
        ),
        pytest.param("index", {"path": 3}, "parameter 'path' should be string, got int", id="type"),
        pytest.param(
            "index",
            {"path": "docs", "collection": "a/b"},
            "collection 'a/b' is not a valid name",
            id="collection",
        ),
        pytest.param("search", {}, "missing parameter 'query'", id="no-query"),
        pytest.param(
            "search", {"query": "x", "k": 0}, "'k' must be between 1 and 50, got 0", id="k"
        ),
        pytest.param("search", {"query": "x", "k": True}, "'k' should be integer", id="k-bool"),
        pytest.param("list", {"collection": ""}, "collection '' is not a valid name", id="list"),
    ],
)
async def test_bad_parameters_are_refused_with_a_clear_message(
    lab: Lab, action: str, parameters: dict[str, Any], message: str
) -> None:
    with trio.fail_after(TIMEOUT_S), pytest.raises(InvalidParameters, match=re.escape(message)):
        await lab.call(action, **parameters)


async def test_collection_names_are_checked_up_front() -> None:
    with pytest.raises(InvalidCollection, match="use 1-64 letters"):
        await (
            DocumentsAgent(AgentContext())
            .tools()["index"]
            .call({"path": "docs", "collection": "x" * 65})
        )


async def test_search_of_an_unknown_collection_names_the_known_ones(lab: Lab) -> None:
    write_docs(lab.workspace, {"docs/report.md": REPORT})
    with trio.fail_after(TIMEOUT_S):
        await lab.call("index", path="docs", collection="work")
        with pytest.raises(UnknownCollection, match=r"collection 'home' \(collections: work\)"):
            await lab.call("search", query="revenue", collection="home")


async def test_a_collection_of_another_model_is_not_mixed_into(
    data_dir: Path, workspace: Path
) -> None:
    write_docs(workspace, {"docs/report.md": REPORT})
    async with open_lab(data_dir, workspace) as lab:
        with trio.fail_after(TIMEOUT_S):
            await lab.call("index", path="docs")
    async with open_lab(data_dir, workspace, embedder=HashEmbedder(model="other")) as lab:
        with trio.fail_after(TIMEOUT_S):
            with pytest.raises(CollectionModelConflict, match="embedded with 'test-hash'"):
                await lab.call("index", path="docs")
            assert lab.embedder.statistics().requests == 0
            result = await lab.call("index", path="docs", collection="other")
    assert result["counts"]["indexed"] == 1


async def test_without_the_documents_index_the_tools_say_what_they_need() -> None:
    agent = DocumentsAgent(AgentContext())
    for action, parameters in (("index", {"path": "docs"}), ("search", {"query": "x"})):
        with pytest.raises(ToolError, match="documents need the documents index"):
            await agent.tools()[action].call(parameters)


async def test_a_restarted_stack_still_knows_what_is_unchanged(
    data_dir: Path, workspace: Path
) -> None:
    write_docs(workspace, DOCS)
    async with open_lab(data_dir, workspace) as lab:
        with trio.fail_after(TIMEOUT_S):
            await lab.call("index", path="docs")
    async with open_lab(data_dir, workspace) as lab:
        with trio.fail_after(TIMEOUT_S):
            result = await lab.call("index", path="docs")
            found = await lab.call("search", query="pancakes need flour and milk", k=1)
    assert result["counts"]["unchanged"] == 4 and result["counts"]["embedding_requests"] == 0
    assert found["passages"][0]["path"] == "docs/recipes/pancakes.txt"
