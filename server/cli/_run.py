"""`autoagent run "GOAL"`, `autoagent runs resume ID` and `runs retry ID`: drive a run in
this process.

The run's events go to the data dir's log like any other; `--json` prints them with
the answer, so a script can see exactly what happened. The application comes from
`server.app` with only the `memory` and `documents` projections of the enabled agents
(caught up from their saved snapshots, followed live, saved on exit), so a goal can
remember and recall, index and search.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, TextIO

import trio

from agents.runs import RunResult
from server._render import dumps, record_as_dict
from server.app import open_application
from server.config import Config

EXIT_OK, EXIT_RUN_FAILED = 0, 1


async def _run(
    config: Config,
    goal: str | None,
    run_id: str | None,
    session: str | None,
    *,
    retry: bool = False,
) -> tuple[RunResult, list[dict[str, Any]]]:
    async with open_application(config, every_projection=False) as app:
        if goal is not None:
            result = await app.orchestrator.run_goal(goal, session)
        elif retry:
            assert run_id is not None
            submitted = await app.orchestrator.retry(run_id)
            result = await app.orchestrator.execute(submitted.run_id)
        else:
            assert run_id is not None
            result = await app.orchestrator.execute(run_id, resume=True)
        records = await app.store.open(
            await app.store.read_stream(f"run-{result.run_id}", 0, 100_000)
        )
    return result, [record_as_dict(r) for r in records]


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


def retry_run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """A failed or cancelled run again, as a new run: its id, then its outcome."""
    result, events = trio.run(functools.partial(_run, config, None, args.id, None, retry=True))
    if not args.json:
        out.write(f"run {args.id} retried as run {result.run_id}\n")
    return _report(result, events, args.json, out)
