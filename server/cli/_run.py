"""`autoagent run "GOAL"`, `runs resume|retry|cancel ID` and `approve RUN STEP DECISION`.

Through a running server when one holds the data dir (the URL it recorded there) or
`--server` names one (`server.cli._client`): the run executes in the server, and `run`,
`resume` and `retry` follow its events on the connection, showing each step as it
happens - plain lines when stdout is not a terminal, a live status line on one - until
the run ends. `runs cancel` and `approve` act on a run a server executes, so they need
one; without, they say so in one line (exit 2). A run left unfinished while no server
runs is resumed by the next `serve`, and can be cancelled then.

Without a server, `run`, `resume` and `retry` drive the run in this process: the
application comes from `server.app` with only the `memory` and `documents` projections
of the enabled agents (caught up from their saved snapshots, followed live, saved on
exit), so a goal can remember and recall, index and search.

Either way `--json` prints the outcome with the run's events and the exit code is 0
when the run completed, 1 when it failed or was cancelled. The events are the records
of the run's stream as `events export` prints them; through a server named by
`--server` (whose log may be elsewhere), or when the log cannot be opened here, they are
the event frames it sent, with the fields the protocol carries (position, stream, type,
ts, time, data).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Mapping
from typing import Any, TextIO

import trio

from agents.runs import RunResult, load_run
from events import TERMINAL_RUN_STATUS, AutoagentError, EventStoreError
from server._render import dumps, iso_time, record_as_dict
from server.app import Application, open_application
from server.cli._admin import open_readonly, opened
from server.cli._client import (
    ServerClient,
    open_server_client,
    require_server,
    server_url,
    token_of,
)
from server.config import Config
from server.errors import RunElsewhere
from server.leases import LeaseKeeper, MemoryRunLeases

EXIT_OK, EXIT_RUN_FAILED = 0, 1
MAX_RUN_EVENTS = 100_000
REQUEST_RETRY_S = 1.0
LOCAL_NODE = "cli"  # the lease holder's name of a run executed by this command alone


# --- in this process ----------------------------------------------------------------------


async def _run(
    config: Config,
    goal: str | None,
    run_id: str | None,
    session: str | None,
    *,
    retry: bool = False,
) -> tuple[RunResult, list[dict[str, Any]]]:
    # A node of its own in the run leases: never mistaken for a server on this data dir.
    node = f"{config.server.node_name(config.store.data_path)}/cli-{os.getpid()}"
    async with open_application(config, every_projection=False, node_id=node) as app:
        if goal is not None:
            submitted = await app.orchestrator.submit(goal, session)
            result = await _leased(app, submitted.run_id, resume=False)
        elif retry:
            assert run_id is not None
            submitted = await app.orchestrator.retry(run_id)
            result = await _leased(app, submitted.run_id, resume=False)
        else:
            assert run_id is not None
            result = await _leased(app, run_id, resume=True)
        records = await app.store.open(
            await app.store.read_stream(f"run-{result.run_id}", 0, MAX_RUN_EVENTS)
        )
    return result, [record_as_dict(r) for r in records]


async def _leased(app: Application, run_id: str, *, resume: bool) -> RunResult:
    """Execute the run under this process's lease on it, as a server node does: on a
    PostgreSQL log shared with server nodes, a run one of them executes is refused,
    none of them takes this one over while this process renews its lease, and what
    their clients ask of it (cancel, approve; a forget cancels) reaches it through its
    stream."""
    leases = app.leases or MemoryRunLeases(LOCAL_NODE, app.config.resume.lease_ttl_s)
    keeper, scope, ended = LeaseKeeper(leases), trio.CancelScope(), False
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.keep)
        if not await keeper.hold(run_id, scope):
            holder = await trio.to_thread.run_sync(leases.holder, run_id)
            raise RunElsewhere(f"run {run_id} is executed by node {holder!r}; ask that node")
        if keeper.shared:
            nursery.start_soon(_follow_run_requests, app, run_id)
        try:
            with scope:
                result = await app.orchestrator.execute(run_id, resume=resume)
                ended = True
        finally:
            await keeper.let_go(run_id, scope, ended=ended)
        nursery.cancel_scope.cancel()
    if not ended:
        raise RunElsewhere(f"run {run_id}: its lease was lost; a server node will take it over")
    return result


async def _follow_run_requests(app: Application, run_id: str) -> None:
    """Cancels and approvals other nodes' clients record in the run's stream."""
    orchestrator = app.orchestrator
    while True:
        try:
            # From the start each time: acting on a request twice changes nothing.
            async for record in app.store.subscribe(stream=f"run-{run_id}"):
                if record.type == "RunCancelRequested":
                    orchestrator.cancel(run_id)
                elif record.type in ("ApprovalGranted", "ApprovalDenied"):
                    step_id = str(record.data.get("step_id"))
                    decision = (await load_run(app.store, run_id)).decisions.get(step_id)
                    if decision is not None:
                        orchestrator.approvals.resolve_if_waiting(run_id, step_id, decision)
        except EventStoreError:  # a dropped connection: read the stream again shortly
            await trio.sleep(REQUEST_RETRY_S)


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


# --- the commands -------------------------------------------------------------------------


def run_goal(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    url = server_url(config, args)
    if url is not None:
        fields = {"text": args.goal, "session_id": args.session}
        request = _Request("message", "accepted", {k: v for k, v in fields.items() if v})
        return _followed(config, args, url, request, out)
    result, events = trio.run(_run, config, args.goal, None, args.session)
    return _report(result, events, args.json, out)


def resume_run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    url = server_url(config, args)
    if url is not None:
        request = _Request("resume", "resumed", {"run_id": args.id})
        return _followed(config, args, url, request, out)
    result, events = trio.run(_run, config, None, args.id, None)
    return _report(result, events, args.json, out)


def retry_run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """A failed or cancelled run again, as a new run: its id, then its outcome."""
    url = server_url(config, args)
    if url is not None:
        request = _Request("retry", "retried", {"run_id": args.id})
        return _followed(config, args, url, request, out)
    result, events = trio.run(functools.partial(_run, config, None, args.id, None, retry=True))
    if not args.json:
        out.write(f"run {args.id} retried as run {result.run_id}\n")
    return _report(result, events, args.json, out)


def cancel_run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Stop a run the server executes (or mark one it holds unfinished as cancelled)."""
    url = require_server(config, args, "runs cancel")
    trio.run(_one_request, url, token_of(args), "cancel", "cancelled", {"run_id": args.id})
    if args.json:
        out.write(dumps({"run_id": args.id, "cancelled": True}) + "\n")
    else:
        out.write(f"run {args.id} cancelled\n")
    return EXIT_OK


def approve_step(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Decide on a step that waits for a human; the run goes on in the server."""
    url = require_server(config, args, "approve")
    fields = {"run_id": args.run_id, "step_id": args.step_id, "decision": args.decision}
    if args.note:
        fields["note"] = args.note
    trio.run(_one_request, url, token_of(args), "approve", "approved", fields)
    if args.json:
        out.write(dumps(fields) + "\n")
    else:
        decided = "approved" if args.decision == "approve" else "denied"
        out.write(f"step {args.step_id} of run {args.run_id} {decided}\n")
    return EXIT_OK


async def _one_request(
    url: str, token: str, kind: str, reply: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    async with open_server_client(url, token) as client:
        return await client.request(kind, reply, **fields)


# --- through a running server ---------------------------------------------------------------


class _Request:
    """What starts or continues a run on the server: a request and the reply it awaits."""

    def __init__(self, kind: str, reply: str, fields: Mapping[str, Any]) -> None:
        self.kind = kind
        self.reply = reply
        self.fields = fields


def _followed(
    config: Config, args: argparse.Namespace, url: str, request: _Request, out: TextIO
) -> int:
    """Send `request`, show the run's steps until it ends; its outcome, as in-process."""
    view = None if args.json else StepView(out, live=out.isatty())
    run_id, session_id, frames = trio.run(_follow, url, token_of(args), request, view)
    if view is not None:
        view.close()
    result = _result_of(run_id, session_id, frames)
    events: list[dict[str, Any]] = []
    if args.json:
        # The server holds this data dir: its log here has the run's records in full.
        local = None if getattr(args, "server", None) else _local_events(config, run_id)
        events = local if local is not None else [_frame_as_event(f) for f in frames]
    return _report(result, events, args.json, out)


async def _follow(
    url: str, token: str, request: _Request, view: StepView | None
) -> tuple[str, str, list[dict[str, Any]]]:
    """The run's id, session and every event frame of its stream up to its end."""
    async with open_server_client(url, token) as client:
        reply = await client.request(request.kind, request.reply, **request.fields)
        run_id = str(reply.get("new_run_id") or reply.get("run_id"))
        if view is not None:
            view.started(run_id)
            if request.kind == "retry":
                view.line(f"run {request.fields['run_id']} retried as run {run_id}")
        frames = []
        async for frame in client.follow_run(run_id):
            frames.append(frame)
            if view is not None:
                view.show(frame)
        if request.kind == "resume":  # followed from the resume on: read it from the start
            frames = await _whole_run(client, run_id)
    session_id = str(reply.get("session_id") or _session_of(frames))
    return run_id, session_id, frames


async def _whole_run(client: ServerClient, run_id: str) -> list[dict[str, Any]]:
    """Every event of a finished run's stream: its one terminal event ends it."""
    await client.request("subscribe", "subscribed", stream=f"run-{run_id}", after=0)
    return [frame async for frame in client.follow_run(run_id)]


def _session_of(frames: list[dict[str, Any]]) -> str:
    for frame in frames:
        if frame.get("event_type") == "RunRequested":
            return str(_data(frame).get("session_id", ""))
    return ""


def _result_of(run_id: str, session_id: str, frames: list[dict[str, Any]]) -> RunResult:
    """The outcome its terminal event states, as `Orchestrator.execute` returns it."""
    last = frames[-1] if frames else {}
    status = TERMINAL_RUN_STATUS.get(str(last.get("event_type")), "unknown")
    data = _data(last)
    if status == "completed":
        return RunResult(run_id, session_id, status, str(data.get("answer", "")))
    return RunResult(run_id, session_id, status, None, str(data.get("reason") or status))


def _local_events(config: Config, run_id: str) -> list[dict[str, Any]] | None:
    """The run's records from the data dir's log; None when this process cannot open it
    (an LMDB environment opens once per process: not beside a server in this one)."""
    try:
        reader = opened(config, open_readonly(config))
    except AutoagentError:
        return None
    try:
        return [record_as_dict(r) for r in reader.read_stream(f"run-{run_id}", 0, MAX_RUN_EVENTS)]
    finally:
        reader.close()


def _frame_as_event(frame: dict[str, Any]) -> dict[str, Any]:
    """An event frame under the names `events export` uses for the same fields."""
    ts = frame.get("ts")
    return {
        "position": frame.get("position"),
        "stream": frame.get("stream"),
        "type": frame.get("event_type"),
        "ts": ts,
        "time": iso_time(ts) if isinstance(ts, int) else None,
        "data": frame.get("data"),
    }


def _data(frame: Mapping[str, Any]) -> Mapping[str, Any]:
    data = frame.get("data")
    return data if isinstance(data, dict) else {}


# --- showing the steps ------------------------------------------------------------------------


class StepView:
    """A run's steps as its events arrive.

    Plain lines ("s1 quotes.get started", "s1 completed in 0.12 s") when the output is
    not a terminal; on a terminal the same lines, under one status line that is redrawn
    in place (carriage return) with the steps running and how long the run has taken.
    A step's tool comes from the plan; a step the streamed plan starts before the plan
    is recorded waits for it, so every start line names its tool.
    """

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out = out
        self.live = live
        self.run_id = ""
        self._tools: dict[str, str] = {}
        self._waiting: list[dict[str, Any]] = []  # starts seen before the plan
        self._running: set[str] = set()
        self._done = 0
        self._began = time.monotonic()
        self._status_shown = False

    def started(self, run_id: str) -> None:
        self.run_id = run_id

    def show(self, frame: Mapping[str, Any]) -> None:
        kind, data = str(frame.get("event_type")), _data(frame)
        step = str(data.get("step_id", ""))
        if kind == "PlanCreated":
            self._plan(data)
            return
        if kind == "StepStarted" and step not in self._tools:
            self._waiting.append(dict(frame))
            return
        self._track(kind, step)
        line = self.describe(kind, data)
        if line is not None:
            self.line(line)

    def close(self) -> None:
        for frame in self._waiting:  # no plan ever came: show them bare
            self.line(self.describe("StepStarted", _data(frame)) or "")
        self._waiting.clear()
        self._clear_status()
        self.out.flush()

    def _plan(self, data: Mapping[str, Any]) -> None:
        steps = data.get("steps")
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict):
                self._tools[str(step.get("id"))] = f"{step.get('agent')}.{step.get('action')}"
        planned = ", ".join(f"{s} {t}" for s, t in self._tools.items())
        self.line(f"plan: {planned or 'no steps'}")
        waiting, self._waiting = self._waiting, []
        for frame in waiting:
            self.show(frame)

    def _track(self, kind: str, step: str) -> None:
        if kind == "StepStarted":
            self._running.add(step)
        elif kind in ("StepCompleted", "StepFailed", "StepSkipped"):
            self._running.discard(step)
            self._done += 1

    def describe(self, kind: str, data: Mapping[str, Any]) -> str | None:
        """The line for one event; None for those not worth a line."""
        step = str(data.get("step_id", ""))
        tool = self._tools.get(step, "")
        named = f"{step} {tool}".rstrip()
        by = f" by {data['by']}" if data.get("by") else ""
        note = f": {data['note']}" if data.get("note") else ""
        match kind:
            case "RunRequested":
                return f"run {data.get('run_id')} in session {data.get('session_id')}"
            case "RunResumed":
                return f"run {data.get('run_id')} resumed"
            case "StepStarted":
                attempt = data.get("attempt", 1)
                again = f" (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else ""
                return f"{named} started{again}"
            case "StepCompleted":
                duration = data.get("duration_s")
                took = f" in {duration:.2f} s" if isinstance(duration, int | float) else ""
                return f"{step} completed{took}"
            case "StepFailed":
                return f"{step} failed: {data.get('error_type')}: {data.get('message')}"
            case "StepSkipped":
                return f"{step} skipped: {data.get('reason')}"
            case "VerificationCompleted":
                if data.get("passed"):
                    return f"{step} verified"
                return f"{step} failed verification: {data.get('notes')}"
            case "ApprovalRequested":
                named = f"{step} {data.get('tool') or tool}".rstrip()
                return (
                    f"{named} waits for approval: autoagent approve {self.run_id} {step} "
                    "approve|deny"
                )
            case "ApprovalGranted":
                return f"{step} approved{by}{note}"
            case "ApprovalDenied":
                return f"{step} denied{by}{note}"
            case "ReplanRequested":
                return f"replanning: {data.get('reason')}"
            case _:
                return None

    def line(self, text: str) -> None:
        """One line of its own, above the status line."""
        self._clear_status()
        self.out.write(text + "\n")
        if self.live:
            self._draw_status()
        self.out.flush()

    def _draw_status(self) -> None:
        running = ", ".join(f"{s} {self._tools.get(s, '')}".rstrip() for s in sorted(self._running))
        took = time.monotonic() - self._began
        status = f"running {running}" if running else "working"
        self.out.write(f"\r{status} | {self._done} step(s) done | {took:.1f} s")
        self._status_shown = True

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self._status_shown = False
