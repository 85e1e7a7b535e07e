"""Two nodes on one PostgreSQL log, in this process: what a client connected to node B
asks of a run node A executes reaches node A (approvals, cancels, forget)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from server.app import agent_server, open_application
from server.config import load_config
from server.errors import NodeIdInUse
from server.leases import Lease, PostgresRunLeases
from tests.security.principal_server import hash_embedder
from tests.server.ws_helpers import Client, open_client

TIMEOUT_S = 60
HELD = '["math.calculate"]'  # steps of this tool wait for a human
GOAL = "what is 17 * 23 + 4"


@asynccontextmanager
async def node(tmp_path: Path, url: str, name: str, ttl_s: float = 15.0) -> AsyncIterator[str]:
    """A node (the whole application and its WebSocket server) on the shared log;
    its WebSocket URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")} | {
        "AUTOAGENT_STORE__BACKEND": "postgres",
        "AUTOAGENT_STORE__URL": url,
        "AUTOAGENT_SERVER__NODE_ID": name,
        "AUTOAGENT_RESUME__LEASE_TTL_S": str(ttl_s),
        "AUTOAGENT_AGENTS__REQUIRE_APPROVAL": HELD,
        "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": f'["{tmp_path / name / "workspace"}"]',
    }
    config = load_config(env=env, data_dir=tmp_path / name / "data")
    async with (
        open_application(config, embedder_factory=hash_embedder) as app,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(agent_server(app).serve, "127.0.0.1", 0)
        try:
            yield f"ws://127.0.0.1:{port}/"
        finally:
            nursery.cancel_scope.cancel()


async def waiting_for_approval(client: Client) -> tuple[str, str]:
    """Send the goal; (run id, step id) once its step waits for a human."""
    reply = await client.request({"type": "message", "id": "goal", "text": GOAL})
    assert reply["type"] == "accepted", reply
    events = await client.events_until(("ApprovalRequested",))
    return reply["run_id"], events[-1]["data"]["step_id"]


async def approve(client: Client, run_id: str, step_id: str) -> None:
    frame = {"type": "approve", "id": 1, "run_id": run_id, "step_id": step_id}
    reply = await client.request(frame | {"decision": "approve"})
    assert reply["type"] == "approved", reply


@asynccontextmanager
async def held_on_a(tmp_path: Path, url: str) -> AsyncIterator[tuple[Client, Client, str, str]]:
    """Nodes a and b on one log, a client on each, and a run on node A whose step waits
    for a human: (client of A, client of B, run id, step id)."""
    async with node(tmp_path, url, "a") as url_a, node(tmp_path, url, "b") as url_b:
        async with open_client(url_a) as on_a, open_client(url_b) as on_b:
            run_id, step_id = await waiting_for_approval(on_a)
            yield on_a, on_b, run_id, step_id


async def ending(client: Client) -> dict[str, Any]:
    return (await client.events_until())[-1]


async def test_an_approval_given_on_node_b_wakes_the_step_on_node_a(
    tmp_path: Path, postgres_url: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with held_on_a(tmp_path, postgres_url) as (on_a, on_b, run_id, step_id):
            await approve(on_b, run_id, step_id)
            last = await ending(on_a)
    assert last["event_type"] == "RunCompleted", last
    assert "395" in last["data"]["answer"]


async def test_a_cancel_sent_to_node_b_cancels_the_run_node_a_executes(
    tmp_path: Path, postgres_url: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with held_on_a(tmp_path, postgres_url) as (on_a, on_b, run_id, _):
            reply = await on_b.request({"type": "cancel", "id": 1, "run_id": run_id})
            assert reply["type"] == "cancelled", reply
            events = await on_a.events_until()
    types = [e["event_type"] for e in events]
    assert types[-2:] == ["RunCancelRequested", "RunCancelled"], types


async def test_a_forget_on_node_b_ends_the_runs_node_a_executes_under_that_key_first(
    tmp_path: Path, postgres_url: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with held_on_a(tmp_path, postgres_url) as (on_a, on_b, _, _):
            reply = await on_b.request({"type": "forget", "id": 1, "scope": "me"})
            assert reply["type"] == "forgotten", reply
            assert reply["key_destroyed"], reply
            events = await on_a.events_until()
    assert events[-1]["event_type"] == "RunCancelled", events


async def test_a_node_that_stops_cleanly_hands_its_runs_over_without_waiting_the_ttl(
    tmp_path: Path, postgres_url: str
) -> None:
    """Its unfinished runs' leases are left expired (not deleted, which only the rare
    full scan would find), so the other node's next look takes them over."""
    ttl = 2.0
    watcher = await trio.to_thread.run_sync(
        lambda: PostgresRunLeases.open(postgres_url, "watcher", ttl)
    )
    try:
        with trio.fail_after(TIMEOUT_S):
            async with node(tmp_path, postgres_url, "b", ttl) as url_b:
                async with node(tmp_path, postgres_url, "a", ttl) as url_a:
                    async with open_client(url_a) as on_a:
                        run_id, step_id = await waiting_for_approval(on_a)
                left = await trio.to_thread.run_sync(watcher.leases)
                assert left in ([Lease(run_id, "a", True)], [Lease(run_id, "b", False)]), left
                while True:  # b's next look for expired leases takes it over
                    if await trio.to_thread.run_sync(watcher.holder, run_id) == "b":
                        break
                    await trio.sleep(0.1)
                async with open_client(url_b) as on_b:  # b waits for the approval again
                    await approve(on_b, run_id, step_id)
                    sub = await on_b.request(
                        {"type": "subscribe", "id": 2, "stream": f"run-{run_id}"}
                    )
                    assert sub["type"] == "subscribed", sub
                    last = await ending(on_b)
    finally:
        watcher.close()
    assert last["event_type"] == "RunCompleted", last


async def test_a_run_recorded_by_a_node_that_never_leased_it_is_taken_over(
    tmp_path: Path, postgres_url: str
) -> None:
    """Node a records a goal and stops before it leases the run (as if it died right
    then): node b finds the run among those recorded a TTL ago with no lease, and
    runs it (here: up to its approval)."""
    ttl = 1.0
    watcher = await trio.to_thread.run_sync(
        lambda: PostgresRunLeases.open(postgres_url, "watcher", ttl)
    )
    try:
        with trio.fail_after(TIMEOUT_S):
            async with node(tmp_path, postgres_url, "b", ttl) as url_b:
                env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOAGENT_")}
                config = load_config(
                    env=env
                    | {
                        "AUTOAGENT_STORE__BACKEND": "postgres",
                        "AUTOAGENT_STORE__URL": postgres_url,
                        "AUTOAGENT_AGENTS__ENABLED": '["math"]',
                    },
                    data_dir=tmp_path / "a" / "data",
                )
                async with open_application(config, embedder_factory=hash_embedder) as app:
                    run_id = (await app.orchestrator.submit(GOAL)).run_id  # never leased
                async with open_client(url_b) as on_b:
                    reply = await on_b.request(
                        {"type": "subscribe", "id": 1, "stream": f"run-{run_id}"}
                    )
                    assert reply["type"] == "subscribed", reply
                    events = await on_b.events_until(("ApprovalRequested",), wait=TIMEOUT_S)
                assert await trio.to_thread.run_sync(watcher.holder, run_id) == "b"
    finally:
        watcher.close()
    assert "RunResumed" in [e["event_type"] for e in events]


async def test_a_second_node_with_a_running_node_s_id_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    """Same node id: each would take the other's leases for its own. The second waits
    for the first one's presence to lapse (1.5 TTL at most), sees it renewed, and is
    refused; once the first stopped cleanly, the id is free at once."""
    ttl = 1.0
    with trio.fail_after(TIMEOUT_S):
        async with node(tmp_path, postgres_url, "a", ttl):
            with pytest.raises(BaseExceptionGroup) as refused:
                async with node(tmp_path / "twin", postgres_url, "a", ttl):
                    pass
        assert refused.group_contains(NodeIdInUse)
        async with node(tmp_path / "again", postgres_url, "a", ttl) as url:
            async with open_client(url) as client:
                await client.ping()


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> None:
    """Each test's database has its own keys: no key store cached from another test."""
    from server import _views

    _views._KEY_STORES.clear()
