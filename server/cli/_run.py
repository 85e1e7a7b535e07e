"""`autoagent run "GOAL"` and `autoagent runs resume ID`: drive a run in this process.

The run's events go to the data dir's log like any other; `--json` prints them with
the answer, so a script can see exactly what happened. The `memory` and `documents`
projections of the enabled agents run in this process too (caught up from their saved
snapshots, followed live, saved on exit), so a goal can remember and recall, index
and search.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TextIO

import trio

from agents.runs import RunResult
from events import EventStore, open_event_store
from server._live_indexes import LiveIndexes, open_live_indexes
from server._render import dumps, record_as_dict
from server.app import open_orchestrator
from server.cli._serve import store_options
from server.config import Config

EXIT_OK, EXIT_RUN_FAILED = 0, 1


async def _run(
    config: Config, goal: str | None, run_id: str | None, session: str | None
) -> tuple[RunResult, list[dict[str, Any]]]:
    async with (
        open_event_store(config.store.data_path, store_options(config)) as store,
        _indexes(config, store) as live,
        open_orchestrator(
            config,
            store,
            memory_index=live.memory if live else None,
            documents_index=live.documents if live else None,
            wait_for=live.wait_for if live else None,
        ) as orchestrator,
    ):
        if goal is not None:
            result = await orchestrator.run_goal(goal, session)
        else:
            assert run_id is not None
            result = await orchestrator.execute(run_id, resume=True)
        records = await store.read_stream(f"run-{result.run_id}", 0, 100_000)
    return result, [record_as_dict(r) for r in records]


@contextlib.asynccontextmanager
async def _indexes(config: Config, store: EventStore) -> AsyncIterator[LiveIndexes | None]:
    """The live memory and documents projections, for the agents that are enabled."""
    memory = "memory" in config.agents.enabled
    documents = "documents" in config.agents.enabled
    if not (memory or documents):
        yield None
        return
    async with open_live_indexes(config, store, memory=memory, documents=documents) as live:
        yield live


def _report(result: RunResult, events: list[dict[str, Any]], as_json: bool, out: TextIO) -> int:
    if as_json:
        out.write(
            dumps(
                {
                    "run_id": result.run_id,
                    "session_id": result.session_id,
                    "status": result.status,
                    "answer": result.answer,
                    "reason": result.reason,
                    "events": events,
                },
                indent=2,
            )
            + "\n"
        )
    elif result.status == "completed":
        out.write(f"{result.answer}\n")
    else:
        out.write(f"run {result.run_id} {result.status}: {result.reason}\n")
    return EXIT_OK if result.status == "completed" else EXIT_RUN_FAILED


def run_goal(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    result, events = trio.run(_run, config, args.goal, None, args.session)
    return _report(result, events, args.json, out)


def resume_run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    result, events = trio.run(_run, config, None, args.id, None)
    return _report(result, events, args.json, out)
