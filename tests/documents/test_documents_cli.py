"""`autoagent documents index|search|list`, `autoagent run` with documents goals and
`autoagent replay --verify` over a real data dir, in-process (`server.cli.main` in a
worker thread). Embeddings come from the real `OpenAIEmbedder` against the simulator
in the test's nursery, which counts every `/v1/embeddings` request it serves."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import trio

from agents.offline._simulator import Simulator, SimulatorOptions
from server.cli._main import main

from .conftest import RECIPE, REPORT, TIMEOUT_S, TRAVEL, write_docs

KEY_ENV = "AUTOAGENT_TEST_EMBEDDINGS_KEY"
DOCS = {"docs/report.md": REPORT, "docs/recipe.txt": RECIPE, "docs/travel.html": TRAVEL}


@pytest.fixture
async def sim(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Simulator:
    """A simulator serving embeddings, and the environment pointing the CLI at it."""
    for name in list(os.environ):
        if name.startswith("AUTOAGENT_"):
            monkeypatch.delenv(name)
    simulator = Simulator(SimulatorOptions(api_key="sk-test", embedding_dim=1536))
    port = await nursery.start(simulator.serve)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    environment = {
        "AUTOAGENT_EMBEDDINGS__PROVIDER": "openai",
        "AUTOAGENT_EMBEDDINGS__MODEL": "text-embedding-3-small",
        "AUTOAGENT_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1",
        "AUTOAGENT_LLM__API_KEY_ENV": KEY_ENV,
        KEY_ENV: "sk-test",
        "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
        "AUTOAGENT_STORE__SYNC": "false",
        "AUTOAGENT_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    write_docs(workspace, DOCS)
    return simulator


def embedding_requests(sim: Simulator) -> int:
    return sim.statistics().by_endpoint.get("/v1/embeddings", 0)


async def cli(*argv: str) -> tuple[int, str]:
    def run() -> tuple[int, str]:
        out = io.StringIO()
        return main(list(argv), out=out), out.getvalue()

    return await trio.to_thread.run_sync(run)


async def test_index_twice_embeds_once_then_nothing(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("documents", "index", "docs", "--json")
        assert code == 0, out
        first = json.loads(out)
        assert embedding_requests(sim) == 1
        code, out = await cli("documents", "index", "docs", "--json")
        assert code == 0
        second = json.loads(out)
    assert embedding_requests(sim) == 1  # the unchanged files cost no request
    assert (first["counts"]["indexed"], first["counts"]["embedding_requests"]) == (3, 1)
    assert (second["counts"]["unchanged"], second["counts"]["embedding_requests"]) == (3, 0)


async def test_without_batching_each_document_is_one_request(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_docs(
        tmp_path / "workspace", {f"many/{i:02}.md": f"note {i} on topic {i}" for i in range(12)}
    )
    monkeypatch.setenv("AUTOAGENT_FEATURES__BATCH_EMBEDDINGS", "false")
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("documents", "index", "many", "--json")
    assert code == 0, out
    assert json.loads(out)["counts"]["embedding_requests"] == embedding_requests(sim) == 12


async def test_search_and_list_print_what_was_indexed(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("documents", "index", "docs", "--collection", "trips")
        assert code == 0
        progress = capsys.readouterr().err
        code, found = await cli("documents", "search", "flight to lisbon", "--k", "2", "--json")
        assert code == 0
        code, plain = await cli("documents", "search", "flight to lisbon", "--k", "1")
        code, listing = await cli("documents", "list")
    assert out.startswith("collection 'trips', docs: 3 indexed, 0 unchanged, 0 removed")
    assert "(3 chunks, 1 embedding request, " in out
    assert progress.splitlines()[-1] == "indexing files: 3/3 (3 chunks embedded)"
    # The second nearest passage (the recipe) is not about the flight: it is dropped.
    passages = json.loads(found)["passages"]
    assert [p["path"] for p in passages] == ["docs/travel.html"]
    assert json.loads(found)["below_min_score"] == 1
    assert plain.startswith("1. trips:docs/travel.html @0 (score ")
    assert "> Trip Lisbon trip The flight to Lisbon leaves on Friday morning" in plain
    assert listing.splitlines()[2].split() == ["trips", "docs/recipe.txt", "1", str(len(RECIPE))]
    assert listing.splitlines()[-1] == "3 documents in 1 collection(s)"


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(
            ["documents", "index", "../elsewhere"],
            "path '../elsewhere' is not allowed: '..' is not allowed in workspace paths",
            id="escape",
        ),
        pytest.param(["documents", "index", "nowhere"], "nothing to index at 'nowhere'", id="none"),
        pytest.param(
            ["documents", "search", "x", "--k", "0"], "--k 0 is not between 1 and 50", id="k"
        ),
        pytest.param(
            ["documents", "list", "--collection", "a b"],
            "collection 'a b' is not a valid name",
            id="collection",
        ),
    ],
)
async def test_errors_are_one_line_and_exit_2(
    sim: Simulator, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli(*argv)
    err = capsys.readouterr().err
    assert (code, out) == (2, "")
    assert err.startswith("autoagent: error: ") and err.count("\n") == 1, err
    assert message in err


async def test_a_run_indexes_then_searches_and_replay_verifies_the_index(sim: Simulator) -> None:
    # The simulator's embeddings hash words, so the query shares words with the report
    # ("revenue grew") to score above the relevance threshold.
    goal = "index the documents in docs and search the documents for how revenue grew"
    with trio.fail_after(TIMEOUT_S):
        code, out = await cli("run", goal, "--json")
        assert code == 0, out
        report = json.loads(out)
        code, verified = await cli("replay", "--verify", "--projection", "documents")
    assert report["status"] == "completed", report["reason"]
    [plan] = [e["data"]["steps"] for e in report["events"] if e["type"] == "PlanCreated"]
    assert [(s["agent"], s["action"], s["dependencies"]) for s in plan] == [
        ("documents", "index", []),
        ("documents", "search", ["s1"]),
    ]
    assert "Indexed 3 document(s) from docs into collection 'default'" in report["answer"]
    assert "docs/report.md" in report["answer"].split("match 'revenue grew'")[1]
    assert code == 0, verified
