"""The memory agent as the server wires it: `open_application` with the running
`memory` projection, goals planned by the offline model, the key store in
`<data_dir>/keys`. Only the embedding model is the test double."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from agents.embeddings._embedder import Embedder
from events import SessionStarted
from projections import MemoryProjection, MemoryStateStore
from server.app import open_application
from server.config import load_config

from .conftest import TIMEOUT_S, HashEmbedder


@asynccontextmanager
async def hash_embedder(config: object) -> AsyncIterator[Embedder]:
    yield HashEmbedder()


async def test_goals_remember_then_recall_through_the_server_wiring(tmp_path: Path) -> None:
    config = load_config(
        env={
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(tmp_path / "workspace")]),
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_STORE__MAP_SIZE_MB": "64",
        },
        data_dir=tmp_path / "data",
    )
    with trio.fail_after(TIMEOUT_S):
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=hash_embedder
        ) as app:
            memory = app.runner.projection("memory")
            assert isinstance(memory, MemoryProjection)
            saved = await app.orchestrator.run_goal("remember that my sister lives in lisbon")
            assert saved.status == "completed", saved.reason
            found = await app.orchestrator.run_goal("recall where my sister lives")
            assert found.status == "completed", found.reason
    assert "lisbon" in (found.answer or "")
    # The local principal's key (which also seals its memories) and one key per
    # session, wrapped with it.
    keys = [json.loads(path.read_bytes()) for path in (tmp_path / "data" / "keys").iterdir()]
    assert sorted(k["user"] for k in keys) == sorted(
        ["local", f"session:{saved.session_id}", f"session:{found.session_id}"]
    )
    assert all(k.get("wrapped_by") == "local" for k in keys if k["user"] != "local")


async def test_recall_right_after_start_waits_for_the_background_catch_up(
    tmp_path: Path,
) -> None:
    """The projections catch up in the background: a recall sent at once must still see
    a memory that sits behind thousands of older events in the log."""
    config = load_config(
        env={
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(tmp_path / "workspace")]),
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_STORE__MAP_SIZE_MB": "256",
        },
        data_dir=tmp_path / "data",
    )
    with trio.fail_after(TIMEOUT_S * 4):
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=hash_embedder
        ) as app:
            for batch in range(30):  # old history first, the memory after it
                filler = [SessionStarted(f"old-{batch}-{i}") for i in range(1000)]
                await app.store.append(f"session-old-{batch}", filler)
            saved = await app.orchestrator.run_goal("remember that my sister lives in lisbon")
            assert saved.status == "completed", saved.reason
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=hash_embedder
        ) as app:  # a fresh state store: the whole log is caught up in the background
            found = await app.orchestrator.run_goal("recall where my sister lives")
    assert found.status == "completed", found.reason
    assert "lisbon" in (found.answer or "")
