"""The memory agent as the server wires it: `open_orchestrator` with the running
`memory` projection, goals planned by the offline model, the key store in
`<data_dir>/keys`. Only the embedding model is the test double."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from agents.embeddings._embedder import Embedder
from events import open_event_store
from projections import MemoryProjection, MemoryStateStore, ProjectionRunner, build_projections
from server import app as agent_wiring
from server._views import memory_keys, memory_options
from server.app import open_orchestrator
from server.config import load_config

from .conftest import STORE_OPTIONS, TIMEOUT_S, HashEmbedder


@asynccontextmanager
async def hash_embedder(config: object) -> AsyncIterator[Embedder]:
    yield HashEmbedder()


async def test_goals_remember_then_recall_through_the_server_wiring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_wiring, "open_configured_embedder", hash_embedder)
    config = load_config(
        env={"AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(tmp_path / "workspace")])},
        data_dir=tmp_path / "data",
    )
    keys = memory_keys(config)
    projections = build_projections(None, 20, keys=keys, memory=memory_options(config))
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_event_store(config.store.data_path, STORE_OPTIONS) as store,
            trio.open_nursery() as nursery,
        ):
            runner = ProjectionRunner(store.log, MemoryStateStore(), projections)
            await nursery.start(runner.run, store)
            memory = runner.projection("memory")
            assert isinstance(memory, MemoryProjection) and memory.keys is keys
            async with open_orchestrator(
                config, store, memory_index=memory, wait_for=runner.wait_for
            ) as orchestrator:
                saved = await orchestrator.run_goal("remember that my sister lives in lisbon")
                assert saved.status == "completed", saved.reason
                found = await orchestrator.run_goal("recall where my sister lives")
                assert found.status == "completed", found.reason
            nursery.cancel_scope.cancel()
    assert "lisbon" in (found.answer or "")
    assert len(list((tmp_path / "data" / "keys").iterdir())) == 1
