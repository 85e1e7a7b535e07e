"""Document search drops passages below the relevance threshold (`[agents]
documents_min_score`) and says plainly when nothing indexed is relevant; the offline
answer carries that sentence instead of a list of unrelated passages."""

from __future__ import annotations

from pathlib import Path

import trio

from agents.offline import _model as offline_model
from agents.tools._document_indexer import DEFAULT_MIN_SCORE, IndexerOptions
from server.config import load_config

from .conftest import RECIPE, REPORT, TIMEOUT_S, TRAVEL, Lab, open_lab, write_docs

DOCS = {"docs/report.md": REPORT, "docs/recipe.txt": RECIPE, "docs/travel.html": TRAVEL}


async def test_only_passages_at_or_above_the_threshold_are_returned(lab: Lab) -> None:
    write_docs(lab.workspace, DOCS)
    with trio.fail_after(TIMEOUT_S):
        await lab.call("index", path="docs")
        result = await lab.call("search", query="pancakes need flour and milk", k=3)
    assert [p["path"] for p in result["passages"]] == ["docs/recipe.txt"]
    assert all(p["score"] >= DEFAULT_MIN_SCORE for p in result["passages"])
    assert (result["min_score"], result["below_min_score"]) == (DEFAULT_MIN_SCORE, 2)
    assert "message" not in result


async def test_a_query_about_nothing_indexed_says_nothing_is_relevant(lab: Lab) -> None:
    write_docs(lab.workspace, DOCS)
    with trio.fail_after(TIMEOUT_S):
        await lab.call("index", path="docs")
        result = await lab.call("search", query="quantum chromodynamics lattice", k=3)
    assert result["passages"] == []
    assert result["message"] == (
        "Nothing in the indexed documents is relevant to 'quantum chromodynamics lattice': "
        "the 3 closest passage(s) score below 0.2."
    )


async def test_an_empty_index_says_nothing_is_indexed(lab: Lab) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await lab.call("search", query="revenue")
    assert result["passages"] == [] and "nothing is indexed" in result["message"]


async def test_the_threshold_is_configurable(data_dir: Path, workspace: Path) -> None:
    """A threshold of -1 keeps every nearest passage, however unrelated."""
    write_docs(workspace, DOCS)
    options = IndexerOptions(min_score=-1.0)
    with trio.fail_after(TIMEOUT_S):
        async with open_lab(data_dir, workspace, options=options) as lab:
            await lab.call("index", path="docs")
            result = await lab.call("search", query="quantum chromodynamics lattice", k=3)
    assert len(result["passages"]) == 3 and result["below_min_score"] == 0


def test_the_config_key_has_the_documented_default_and_bounds() -> None:
    assert load_config().agents.documents_min_score == DEFAULT_MIN_SCORE
    env = {"AUTOAGENT_AGENTS__DOCUMENTS_MIN_SCORE": "0.35"}
    assert load_config(env=env).agents.documents_min_score == 0.35


def test_the_offline_answer_says_nothing_is_relevant() -> None:
    result = {
        "query": "revenue",
        "collection": None,
        "passages": [],
        "min_score": 0.2,
        "below_min_score": 3,
        "message": "Nothing in the indexed documents is relevant to 'revenue': ...",
    }
    item = {"id": "s1", "agent": "documents", "action": "search", "result": result}
    answer = offline_model.answer("search the documents for revenue", [item])["answer"]
    assert answer.startswith("Nothing in the indexed documents is relevant to 'revenue'")
