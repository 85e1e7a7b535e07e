"""`autoagent documents index` through the running server, and the `index_documents`
request it sends (`server.ws._indexing`).

The server is the real application (`open_application` + `agent_server`, LMDB data dir,
127.0.0.1 port 0) holding its data dir with its URL recorded, as `autoagent serve`
does. Documents are embedded by the tests' hash embedder (no model loads), held at a
gate where a test needs a pass in progress. The CLI runs in a worker thread as in
`test_cli_client.py`, and as a real process for `--in-process`: an LMDB environment
opens once per process, so indexing in the CLI's own process beside the server needs
one of its own (it embeds through the simulator).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.embeddings import Embedder
from agents.embeddings._embedder import Vectors
from agents.offline._simulator import Simulator, SimulatorOptions
from events import RecordedEvent
from server._datadir import client_url, open_data_dir_lock
from server.app import Application, agent_server, open_application
from server.config import load_config
from server.ws import AgentServer, _indexing
from tests.documents.conftest import RECIPE, REPORT, TRAVEL, write_docs
from tests.memory.conftest import HashEmbedder
from tests.server.test_cli_client import cli, one_error_line
from tests.server.ws_helpers import Client, open_client

TIMEOUT_S = 30
DOCS: dict[str, str | bytes] = {
    "docs/report.md": REPORT,
    "docs/recipe.txt": RECIPE,
    "docs/travel.html": TRAVEL,
}
ROOT_TOKEN = "docs-root-token-0123456789abcdef01234"
ANA_TOKEN = "docs-ana-token-0123456789abcdef012345"
ANA = '[{name = "ana", role = "user", token_env = "DOCS_ANA_TOKEN"}]'
KEY_ENV = "AUTOAGENT_TEST_EMBEDDINGS_KEY"
REPORT_KEYS = {
    "collection",
    "target",
    "counts",
    "indexed",
    "removed",
    "skipped",
    "unreadable",
    "truncated",
}


class GatedEmbedder(HashEmbedder):
    """The hash embedder, waiting at `gate` (open unless a test closes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.gate.set()

    async def _embed_texts(self, texts: list[str]) -> Vectors:
        await self.gate.wait()
        return await super()._embed_texts(texts)


@dataclass
class Served:
    app: Application
    server: AgentServer
    url: str
    embedder: GatedEmbedder

    async def docs_records(self, collection: str = "default") -> list[RecordedEvent]:
        return await self.app.store.read_stream(f"docs-{collection}")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace holding `docs/` (three documents); the data dir. The working
    directory is `tmp_path`, where no `docs` lies."""
    for name in [n for n in os.environ if n.startswith("AUTOAGENT_")]:
        monkeypatch.delenv(name)
    workspace = tmp_path / "workspace"
    write_docs(workspace, DOCS)
    monkeypatch.setenv("AUTOAGENT_AGENTS__WORKSPACE_ROOTS", json.dumps([str(workspace)]))
    monkeypatch.setenv("AUTOAGENT_STORE__SYNC", "false")
    monkeypatch.setenv("AUTOAGENT_STORE__MAP_SIZE_MB", "64")
    monkeypatch.setenv("DOCS_ANA_TOKEN", ANA_TOKEN)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


@asynccontextmanager
async def serving(data: Path, **settings: str) -> AsyncIterator[Served]:
    """The application served on 127.0.0.1:0, holding `data` with its URL recorded."""
    env = {**os.environ, **{f"AUTOAGENT_{k.upper()}": v for k, v in settings.items()}}
    config = load_config(env=env, data_dir=data)
    embedder = GatedEmbedder()

    @asynccontextmanager
    async def gated(config: object) -> AsyncIterator[Embedder]:
        yield embedder

    async with (
        open_data_dir_lock(data) as lock,
        open_application(config, embedder_factory=gated) as app,
        trio.open_nursery() as nursery,
    ):
        server = agent_server(app)
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        url = client_url("127.0.0.1", port)
        lock.record_url(url)
        try:
            yield Served(app, server, url, embedder)
        finally:
            nursery.cancel_scope.cancel()


async def frames_until(client: Client, kind: str) -> list[dict[str, Any]]:
    """Frames up to and with the first of type `kind`."""
    frames = [await client.receive()]
    while frames[-1]["type"] != kind:
        frames.append(await client.receive())
    return frames


def progress(frame: dict[str, Any]) -> tuple[int, int, int] | None:
    """The counts of an `index_progress` frame; None for any other frame."""
    if frame["type"] != "index_progress":
        return None
    return frame["files_done"], frame["files_total"], frame["chunks_embedded"]


# --- the CLI through the server -----------------------------------------------------------------


async def test_documents_index_goes_through_the_server_whose_search_finds_the_passage(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path / "workspace")  # `docs` is here: sent as an absolute path
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served:
            plain = await cli(env, "documents", "index", "docs", capsys=capsys)
            again = await cli(env, "documents", "index", "docs", "--json", capsys=capsys)
            records = await served.docs_records()
            service = await served.server.documents_service(None)
            found = await service.search("flight to lisbon", 2, None)
    assert plain.code == 0, plain
    assert plain.out.startswith(
        "collection 'default', docs: 3 indexed, 0 unchanged, 0 removed, 0 skipped, "
        "0 unreadable (3 chunks, 1 embedding request, "
    )
    assert plain.err.splitlines()[-1] == "indexing files: 3/3 (3 chunks embedded)"
    assert again.code == 0 and again.err == ""  # --json: no progress line
    report = json.loads(again.out)
    assert set(report) == REPORT_KEYS
    assert (report["target"], report["counts"]["unchanged"]) == ("docs", 3)
    assert report["counts"]["embedding_requests"] == 0
    # The server's agent indexed, with its embedder, into its log.
    assert sorted(r.data["path"] for r in records) == sorted(DOCS)
    assert {(r.type, r.data["model"]) for r in records} == {("DocumentIndexed", "test-hash")}
    assert [p["path"] for p in found["passages"]] == ["docs/travel.html"]


async def test_a_refused_index_is_one_error_frame_and_one_cli_line(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = (tmp_path / "workspace").resolve()
    refused: list[tuple[dict[str, Any], str, str]] = [
        ({"path": "nowhere"}, "not_found", "nothing to index at 'nowhere': no such file"),
        ({"path": "/etc"}, "forbidden", "path '/etc' is not allowed: it is outside the"),
        ({"path": "../x"}, "forbidden", "path '../x' is not allowed: '..' is not allowed"),
        ({"path": "docs", "collection": "a b"}, "bad_request", "collection 'a b' is not a"),
        ({"path": ""}, "bad_request", "index_documents: field 'path' must be a string of 1"),
        ({"path": 7}, "bad_request", "index_documents: field 'path' must be a string of 1"),
        ({}, "bad_request", "index_documents: missing field 'path'"),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served:
            head = served.app.store.head_position
            async with open_client(served.url) as client:
                answers = [
                    await client.request({"type": "index_documents", "id": n, **fields})
                    for n, (fields, _, _) in enumerate(refused)
                ]
                await client.ping()  # the connection stays up
            nowhere = await cli(env, "documents", "index", "nowhere", capsys=capsys)
            outside = await cli(env, "documents", "index", "/etc", "--json", capsys=capsys)
            appended = served.app.store.head_position - head
    for n, (answer, (_, code, message)) in enumerate(zip(answers, refused, strict=True)):
        assert (answer["type"], answer["id"], answer["code"]) == ("error", n, code), answer
        assert answer["message"].startswith(message), answer
    assert one_error_line(nowhere) == (
        "autoagent: error: the server refused: nothing to index at 'nowhere': no such file "
        f"or folder (looked for {workspace / 'nowhere'}; the workspace is {workspace}) "
        "(not_found)\n"
    )
    assert one_error_line(outside) == (
        "autoagent: error: the server refused: path '/etc' is not allowed: it is outside "
        "the workspace roots (forbidden)\n"
    )
    assert (nowhere.out, outside.out, appended) == ("", "", 0)


# --- the request: progress, other requests meanwhile, limits ----------------------------------


async def test_index_documents_sends_progress_and_the_connection_serves_meanwhile(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_indexing, "KEEPALIVE_S", 0.05)
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served, open_client(served.url) as client:
            served.embedder.gate = trio.Event()  # the pass waits at its embedding batch
            await client.send({"type": "index_documents", "id": "ix", "path": "docs"})
            held = [await client.receive()]
            # Files 1 and 2 are read; the third waits with them for the embedding.
            while progress(held[-1]) != (2, 3, 0):
                held.append(await client.receive())
            await client.send({"type": "ping", "id": "meanwhile"})
            meanwhile = await frames_until(client, "pong")
            again = await client.request({"type": "index_documents", "id": "ix2", "path": "x"})
            while sum(progress(f) == (2, 3, 0) for f in client.seen) < 3:  # kept alive
                await client.receive()
            assert await served.docs_records() == []
            served.embedder.gate.set()
            done = await frames_until(client, "documents_indexed")
            first_pass = list(client.seen)
            await client.send({"type": "index_documents", "id": "ix3", "path": "docs"})
            later = (await frames_until(client, "documents_indexed"))[-1]
    frames = [f for f in first_pass if f["type"] == "index_progress"]
    assert {f["id"] for f in frames} == {"ix"}
    assert set(frames[0]) == {"type", "id", "files_done", "files_total", "chunks_embedded"}
    assert all(progress(f) in {(0, 0, 0), (1, 3, 0), (2, 3, 0)} for f in held)
    assert meanwhile[-1] == {"type": "pong", "id": "meanwhile"}
    assert (again["type"], again["code"]) == ("error", "rate_limited")
    busy = "an index_documents request is already in progress on this connection"
    assert again["message"] == busy
    assert progress(done[-2]) == (3, 3, 3)  # the last state, then the report
    report = done[-1]["report"]
    assert (done[-1]["id"], set(report), report["counts"]["indexed"]) == ("ix", REPORT_KEYS, 3)
    assert later["id"] == "ix3"  # one at a time: the next may come
    assert later["report"]["counts"]["unchanged"] == 3


async def test_a_user_principal_may_index_documents(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded = {"server__tokens": json.dumps([ROOT_TOKEN]), "server__principals": ANA}
    with trio.fail_after(TIMEOUT_S):
        async with serving(env, **guarded) as served:
            async with open_client(served.url) as client:
                welcome = await client.request({"type": "hello", "id": "h", "token": ANA_TOKEN})
                await client.send({"type": "index_documents", "id": "ix", "path": "docs"})
                frames = await frames_until(client, "documents_indexed")
            by_ana = await cli(
                env, "documents", "index", "docs", "--token", ANA_TOKEN, capsys=capsys
            )
            anonymous = await cli(env, "documents", "index", "docs", capsys=capsys)
    assert (welcome["principal"], welcome["role"]) == ("ana", "user")
    assert frames[-1]["report"]["counts"]["indexed"] == 3
    assert by_ana.code == 0 and "3 unchanged" in by_ana.out
    assert "send hello with a valid token first (unauthorized)" in one_error_line(anonymous)


async def test_a_server_without_the_documents_agent_says_so(env: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(env, agents__enabled='["math"]') as served:
            async with open_client(served.url) as client:
                answer = await client.request({"type": "index_documents", "id": 1, "path": "docs"})
    assert answer == {
        "type": "error",
        "id": 1,
        "code": "not_found",
        "message": "the documents agent is not enabled on this server (agents.enabled)",
    }


async def test_a_bug_while_indexing_ends_that_connection_alone(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> dict[str, Any]:
        raise RuntimeError("a bug in the indexer")

    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served, open_client(served.url) as other:
            service = await served.server.documents_service(None)
            monkeypatch.setattr(service, "index", broken)
            async with open_client(served.url) as client:
                await client.send({"type": "index_documents", "id": "ix", "path": "docs"})
                code = await client.closed_code()
            await other.ping()
    assert code == 1011
    assert client.seen[-1] == {
        "type": "error",
        "id": "ix",
        "code": "internal",
        "message": "internal server error; this connection is closed",
    }


# --- --in-process beside the server -------------------------------------------------------------


@pytest.mark.slow
async def test_in_process_indexes_in_the_cli_process_into_the_shared_log(
    env: Path, tmp_path: Path, nursery: trio.Nursery
) -> None:
    simulator = Simulator(SimulatorOptions(api_key="sk-test", embedding_dim=1536))
    port = await nursery.start(simulator.serve)
    environ = {
        **os.environ,
        "AUTOAGENT_EMBEDDINGS__PROVIDER": "openai",
        "AUTOAGENT_EMBEDDINGS__MODEL": "text-embedding-3-small",
        "AUTOAGENT_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1",
        "AUTOAGENT_LLM__API_KEY_ENV": KEY_ENV,
        KEY_ENV: "sk-test",
    }
    argv = ["documents", "index", "docs", "--collection", "here", "--in-process", "--json"]
    with trio.fail_after(TIMEOUT_S):
        async with serving(env) as served:
            done: subprocess.CompletedProcess[bytes] = await trio.run_process(
                [sys.executable, "-m", "server", *argv, "--data-dir", str(env)],
                cwd=tmp_path,
                env=environ,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            seen = await _first(served, "docs-here", len(DOCS))
    report = json.loads(done.stdout)
    assert (report["collection"], report["counts"]["indexed"]) == ("here", 3)
    # Embedded here (the simulator's model, not the server's), seen by the server.
    assert {r.data["model"] for r in seen} == {"text-embedding-3-small"}
    assert simulator.statistics().by_endpoint.get("/v1/embeddings", 0) == 1
    assert served.embedder.calls == 0


async def _first(served: Served, stream: str, count: int) -> list[RecordedEvent]:
    """The first `count` records of `stream`, once the server's store has seen them."""
    seen: list[RecordedEvent] = []
    async for record in served.app.store.subscribe(after=0, stream=stream):
        seen.append(record)
        if len(seen) == count:
            break
    return seen
