"""A real server with principals for the hostile-client tests: `open_application` and
`agent_server` exactly as `autoagent serve` wires them (LMDB log, sealing with the
file key store, projections), on 127.0.0.1 port 0, with three principals:

- `root` by an admin token (`server.tokens`, principal name `admin`);
- `ana` and `bob`, role `user`, their tokens read from environment variables.

Memories are embedded by the tests' deterministic hash embedder, so no model loads.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from agents.embeddings import Embedder
from server.app import Application, agent_server, open_application
from server.config import Config, load_config
from server.ws import AgentServer
from tests.memory.conftest import HashEmbedder
from tests.server.ws_helpers import Client, open_client

ROOT_TOKEN = "root-token-0123456789abcdef0123456789"
ANA_TOKEN = "ana-token-0123456789abcdef0123456789ab"
BOB_TOKEN = "bob-token-0123456789abcdef0123456789ab"
TOKEN_ENV = {"ANA_TOKEN": ANA_TOKEN, "BOB_TOKEN": BOB_TOKEN}
TIMEOUT_S = 30


@asynccontextmanager
async def hash_embedder(config: object) -> AsyncIterator[Embedder]:
    yield HashEmbedder()


def principal_config(tmp_path: Path) -> Config:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    principals = (
        '[{name = "ana", role = "user", token_env = "ANA_TOKEN"}, '
        '{name = "bob", role = "user", token_env = "BOB_TOKEN"}]'
    )
    return load_config(
        env={
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(workspace)]),
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_SERVER__REQUESTS_PER_SECOND": "1000",
            "AUTOAGENT_STORE__MAP_SIZE_MB": "64",
            "AUTOAGENT_SERVER__TOKENS": json.dumps([ROOT_TOKEN]),
            "AUTOAGENT_SERVER__PRINCIPALS": principals,
        },
        data_dir=tmp_path / "data",
    )


@dataclass
class Running:
    app: Application
    server: AgentServer
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def settled(self) -> None:
        """Until no run executes (a run appends its session's reply after RunCompleted)."""
        while self.app.orchestrator.running():  # noqa: ASYNC110 - polls state of another owner
            await trio.sleep(0.01)

    @asynccontextmanager
    async def client(self, token: str) -> AsyncIterator[Client]:
        """A client that has said hello with `token` (the welcome checked)."""
        async with open_client(self.url) as client:
            welcome = await client.request({"type": "hello", "id": "h", "token": token})
            assert welcome["type"] == "welcome", welcome
            yield client


@asynccontextmanager
async def running_server(config: Config) -> AsyncIterator[Running]:
    async with (
        open_application(config, embedder_factory=hash_embedder) as app,
        trio.open_nursery() as nursery,
    ):
        server = agent_server(app)
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        try:
            yield Running(app, server, port)
        finally:
            nursery.cancel_scope.cancel()


async def ask(
    client: Client, text: str, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a goal; its `accepted` reply and its events up to the run's end."""
    accepted = await client.request({"type": "message", "id": "m", "text": text, **fields})
    assert accepted["type"] == "accepted", accepted
    events = await client.events_until(wait=TIMEOUT_S)
    return accepted, events


def every_file(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path
