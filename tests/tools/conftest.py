"""Fixtures of the tool tests: a real workspace in `tmp_path` and a place outside it.

- `workspace`: the root the agents are confined to; `outside`: a folder next to it
  holding `secret.txt`, which no tool may read or overwrite.
- `call(agent, action, **parameters)`: one tool call bounded by `fail_after`.
- `names(folder)`: what a folder holds, to show nothing was written where it must not be.
- `offline_llm`: the offline model as an `LLMProvider`, what the writer uses.

Every I/O of these tests runs under `trio.fail_after(TIMEOUT_S)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.llm._provider import LLMProvider
from agents.offline._provider import OfflineProvider
from agents.tools import AgentContext, AgentSettings
from agents.tools._base import Agent

TIMEOUT_S = 10
SECRET = "top secret, outside the workspace"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


@pytest.fixture
async def offline_llm() -> AsyncIterator[LLMProvider]:
    provider = OfflineProvider()
    try:
        yield provider
    finally:
        await provider.aclose()


def context(root: Path, llm: Any = None, **settings: Any) -> AgentContext:
    return AgentContext(AgentSettings(**settings), (root,), llm=llm)


def names(folder: Path) -> list[str]:
    """The names in a folder, sorted (a plain function: tests assert on it after awaits)."""
    return sorted(p.name for p in folder.iterdir())


async def call(agent: Agent, action: str, **parameters: Any) -> Any:
    with trio.fail_after(TIMEOUT_S):
        return await agent.tools()[action].call(parameters)
