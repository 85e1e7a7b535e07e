"""The documents agent as the server wires it, its `[agents]` config keys, and the
offline model's plans for documents goals over the whole installed tool catalog."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.embeddings._embedder import Embedder
from agents.offline import _model as offline_model
from agents.tools._registry import AgentRegistry
from projections import DocumentsProjection, MemoryStateStore
from server.app import indexer_options, open_application
from server.config import load_config
from server.errors import ConfigError

from .conftest import RECIPE, REPORT, TIMEOUT_S, HashEmbedder, write_docs

CATALOG = AgentRegistry.from_entry_points().catalog().specs


@asynccontextmanager
async def hash_embedder(config: object) -> AsyncIterator[Embedder]:
    yield HashEmbedder()


async def test_goals_index_then_search_through_the_server_wiring(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    write_docs(workspace, {"docs/report.md": REPORT, "docs/recipe.txt": RECIPE})
    config = load_config(
        env={
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
            "AUTOAGENT_AGENTS__DOCUMENTS_CHUNK_CHARS": "400",
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_STORE__MAP_SIZE_MB": "64",
        },
        data_dir=tmp_path / "data",
    )
    with trio.fail_after(TIMEOUT_S):
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=hash_embedder
        ) as app:
            documents = app.runner.projection("documents")
            assert isinstance(documents, DocumentsProjection)
            result = await app.orchestrator.run_goal(
                "index the documents in docs and search the documents for pancakes "
                "need flour and milk"
            )
            files = documents.statistics().files
    assert result.status == "completed", result.reason
    assert "docs/recipe.txt (" in (result.answer or "")
    assert files == 2


def test_config_keys_reach_the_indexer() -> None:
    config = load_config(
        env={
            "AUTOAGENT_AGENTS__DOCUMENTS_CHUNK_CHARS": "800",
            "AUTOAGENT_AGENTS__DOCUMENTS_MAX_FILE_BYTES": "1000",
        }
    )
    options = indexer_options(config)
    assert (options.chunk_chars, options.overlap, options.max_file_bytes) == (800, 100, 1000)
    assert indexer_options(load_config()).chunk_chars == 1200


@pytest.mark.parametrize(
    "key, value, message",
    [
        pytest.param(
            "DOCUMENTS_CHUNK_CHARS",
            "99",
            "agents.documents_chunk_chars: must be at least 100",
            id="small",
        ),
        pytest.param(
            "DOCUMENTS_MAX_FILE_BYTES",
            "0",
            "agents.documents_max_file_bytes: must be greater than 0",
            id="zero",
        ),
        pytest.param(
            "DOCUMENTS_CHUNK_SIZE",
            "500",
            "unknown key 'documents_chunk_size'; did you mean 'documents_chunk_chars'?",
            id="typo",
        ),
    ],
)
def test_bad_documents_keys_are_errors_naming_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={f"AUTOAGENT_AGENTS__{key}": value})


def plan(goal: str) -> list[tuple[str, dict[str, Any], list[str]]]:
    result = offline_model.plan(goal, CATALOG)
    assert result["steps"], result.get("error")
    return [
        (f"{s['agent']}.{s['action']}", s["parameters"], s["dependencies"]) for s in result["steps"]
    ]


@pytest.mark.parametrize(
    "goal, expected",
    [
        pytest.param(
            "index the documents in docs",
            [("documents.index", {"path": "docs"}, [])],
            id="index",
        ),
        pytest.param(
            "index the reports folder into collection work",
            [("documents.index", {"path": "reports", "collection": "work"}, [])],
            id="index-folder-collection",
        ),
        pytest.param(
            "reindex docs/q3.pdf",
            [("documents.index", {"path": "docs/q3.pdf"}, [])],
            id="index-file",
        ),
        pytest.param(
            "search the documents for quarterly revenue",
            [("documents.search", {"query": "quarterly revenue"}, [])],
            id="search",
        ),
        pytest.param(
            "search the documents in collection work for the budget",
            [("documents.search", {"query": "budget", "collection": "work"}, [])],
            id="search-collection",
        ),
        pytest.param(
            "what do my documents say about the budget",
            [("documents.search", {"query": "budget"}, [])],
            id="question",
        ),
        pytest.param("list the indexed documents", [("documents.list", {}, [])], id="list"),
        pytest.param(
            "index the documents in docs and search the documents for revenue",
            [
                ("documents.index", {"path": "docs"}, []),
                ("documents.search", {"query": "revenue"}, ["s1"]),
            ],
            id="index-and-search",
        ),
        pytest.param(
            "index the documents in the workspace and list the indexed documents",
            [("documents.index", {"path": "."}, []), ("documents.list", {}, ["s1"])],
            id="index-and-list",
        ),
    ],
)
def test_the_offline_model_plans_documents_goals(
    goal: str, expected: list[tuple[str, dict[str, Any], list[str]]]
) -> None:
    assert plan(goal) == expected


@pytest.mark.parametrize(
    "goal, tool",
    [
        pytest.param("find files named report", "files.search", id="files-search"),
        pytest.param("list the files in docs", "files.list", id="files-list"),
        pytest.param("search my emails for invoices", "email.search", id="email-search"),
        pytest.param("write a report", "writer.create_report", id="report"),
    ],
)
def test_other_goals_still_go_to_their_own_tools(goal: str, tool: str) -> None:
    assert plan(goal)[0][0] == tool


def test_the_offline_answer_renders_documents_results() -> None:
    results = [
        {
            "agent": "documents",
            "action": "index",
            "result": {
                "collection": "default",
                "target": "docs",
                "counts": {"indexed": 2, "unchanged": 1, "removed": 0, "skipped": 1},
            },
        },
        {
            "agent": "documents",
            "action": "search",
            "result": {
                "query": "revenue",
                "passages": [{"path": "docs/report.md", "score": 0.8, "quote": "Revenue\n grew"}],
            },
        },
    ]
    assert offline_model.answer("goal", results)["answer"].splitlines() == [
        "Results:",
        "- Indexed 2 document(s) from docs into collection 'default' (0 chunks; 1 unchanged, "
        "0 removed, 1 skipped, 0 unreadable)",
        "- 1 passage(s) match 'revenue': docs/report.md (0.8): \"Revenue grew\"",
    ]
