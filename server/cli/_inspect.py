"""`sessions list|show` and `runs list|show`: what the projections know, as tables,
timelines or JSON. `runs show` prints each step's tool, timing, overlaps and verdict as a
table, then each step's call (parameters), its result or error and the verifier's notes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from events import RecordedEvent
from projections import (
    get_run,
    get_session,
    list_runs,
    list_sessions,
    opened_run,
    opened_session,
)
from server._render import dumps, iso_time, table
from server._views import LiveView, open_live_view
from server.cli._admin import opened
from server.cli._gantt import critical_path, render_gantt
from server.config import Config
from server.errors import InputError

DETAIL_CHARS = 100  # parameters, results and notes are clipped to this many characters


def sessions_list(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    with open_live_view(config, ["sessions"]) as view:
        sessions = list_sessions(view.state)
    if args.json:
        out.write(dumps([{k: v for k, v in s.items() if k != "window"} for s in sessions]) + "\n")
        return 0
    rows = [
        (
            s["session_id"],
            s["user"],
            s["messages"],
            len(s["runs"]),
            iso_time(s["last_ts"]),
            "closed" if s["closed"] else "open",
        )
        for s in sessions
    ]
    out.write(table(["session", "user", "messages", "runs", "last activity", "state"], rows) + "\n")
    return 0


def sessions_show(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    with open_live_view(config, ["sessions"]) as view:
        session = get_session(view.state, args.id)
        if session is not None:  # the stored window holds sealed stubs: open its texts
            records = _stream(config, view, f"session-{args.id}")
            folded = opened_session(records, config.performance.session_window)
            if folded is not None:  # runs are counted from run streams: keep the stored
                session = {**session, "window": folded["window"], "context": folded["context"]}
    if session is None:
        raise InputError(f"no session with id {args.id!r}")
    if args.json:
        out.write(dumps(session, indent=2) + "\n")
        return 0
    out.write(
        f"session {session['session_id']}  user {session['user']}  "
        f"{session['messages']} messages  {'closed' if session['closed'] else 'open'}\n"
    )
    out.write(f"context: {dumps(session['context'])}\n")
    out.write(f"runs: {', '.join(session['runs']) or '-'}\n")
    out.write(f"last {len(session['window'])} messages:\n")
    for message in session["window"]:
        out.write(f"  [{iso_time(message['ts'])}] {message['role']}: {message['text']}\n")
    return 0


def runs_list(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    with open_live_view(config, ["runs"]) as view:
        runs = list_runs(view.state, args.status)
        reader = opened(config, view.log)
        for run in runs:  # the stored goal is a sealed stub: open it from the log
            first = reader.read_stream(f"run-{run['run_id']}", 0, 1)
            if first and first[0].type == "RunRequested":
                run["goal"] = first[0].data["goal"]
    runs.sort(key=lambda r: r["requested_ts"])
    if args.json:
        out.write(
            dumps([{k: v for k, v in r.items() if k not in ("plan", "steps")} for r in runs]) + "\n"
        )
        return 0
    rows = [
        (
            r["run_id"],
            r["session_id"],
            r["status"],
            len(r["steps"]),
            _run_duration(r),
            _clip(r["goal"] or "", 50),
        )
        for r in runs
    ]
    out.write(table(["run", "session", "status", "steps", "duration s", "goal"], rows) + "\n")
    return 0


def runs_show(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    with open_live_view(config, ["runs"]) as view:
        run = get_run(view.state, args.id)
        if run is not None:  # the stored view holds sealed stubs: fold the opened stream
            run = opened_run(_stream(config, view, f"run-{args.id}")) or run
    if run is None:
        raise InputError(f"no run with id {args.id!r}")
    if getattr(args, "gantt", None):
        Path(args.gantt).write_text(render_gantt(run), encoding="utf-8")
    if args.json:
        out.write(dumps({**run, "timeline": timeline(run)}, indent=2) + "\n")
        return 0
    out.write(f"run {run['run_id']}  session {run['session_id']}  status {run['status']}\n")
    out.write(f"goal: {run['goal']}\n")
    if run["answer"] is not None:
        out.write(f"answer: {run['answer']}\n")
    if run["reason"]:
        out.write(f"reason: {run['reason']}\n")
    tools = _tools(run)
    rows = [
        (
            t["step_id"],
            tools.get(t["step_id"], "-"),
            t["status"],
            t["attempts"],
            t["start_s"],
            t["end_s"],
            t["duration_s"],
            _verdict(run["steps"][t["step_id"]]),
            ", ".join(t["overlaps"]) or "-",
        )
        for t in timeline(run)
    ]
    headers = [
        "step",
        "tool",
        "status",
        "attempts",
        "start s",
        "end s",
        "duration s",
        "verified",
        "overlapped with",
    ]
    path = critical_path(run)
    if path:
        durations = [_step_seconds(run["steps"][sid]) for sid in path]
        total = sum(d for d in durations if d is not None)
        out.write(f"critical path: {' -> '.join(path)} ({total:.3f} s)\n")
    out.write(table(headers, rows) + "\n")
    _write_step_details(run, out)
    return 0


def _stream(config: Config, view: LiveView, stream: str) -> list[RecordedEvent]:
    """Every record of `stream`, opened with the data dir's keys."""
    reader = opened(config, view.log)
    records: list[RecordedEvent] = []
    while batch := reader.read_stream(stream, records[-1].version if records else 0, 1000):
        records.extend(batch)
    return records


def _tools(run: dict[str, Any]) -> dict[str, str]:
    """Each planned step's tool as `agent.action`."""
    return {
        str(p.get("id")): f"{p.get('agent', '?')}.{p.get('action', '?')}"
        for p in run.get("plan") or []
    }


def _write_step_details(run: dict[str, Any], out: TextIO) -> None:
    """Per step: the tool with its parameters, what came of it, and the verifier's notes."""
    planned = {str(p.get("id")): p for p in run.get("plan") or []}
    tools = _tools(run)
    for t in timeline(run):
        sid = t["step_id"]
        step = run["steps"][sid]
        parameters = (planned.get(sid) or {}).get("parameters")
        call = f"{tools.get(sid, '?')}({_clip(dumps(parameters or {}), DETAIL_CHARS)})"
        out.write(f"\n{sid}: {call}\n")
        out.write(f"  {_outcome(step)}\n")
        verification = step.get("verification")
        if verification:
            notes = _clip(_one_line(verification.get("notes") or ""), DETAIL_CHARS)
            out.write(f"  verified: {_verdict(step)}{': ' + notes if notes else ''}\n")


def _outcome(step: dict[str, Any]) -> str:
    """What came of a step, on one line: its result, error or reason for being skipped."""
    status = step["status"]
    error = step.get("error") or {}
    if status == "completed":
        return f"result: {_clip(_one_line(step.get('result')), DETAIL_CHARS)}"
    if status == "failed":
        return f"failed: {error.get('error_type', 'error')}: {error.get('message', '')}"
    if status == "skipped":
        return f"skipped: {error.get('reason', '')}"
    return f"{status}: no result yet"


def _one_line(value: object) -> str:
    text = value if isinstance(value, str) else dumps(value)
    return " ".join(text.split())


def timeline(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each step's start and end relative to the run's request, and the steps it overlapped."""
    origin = run["requested_ts"]
    spans = {
        sid: (s["started_ts"], s["ended_ts"])
        for sid, s in run["steps"].items()
        if s["started_ts"] is not None
    }
    result = []
    for sid, step in run["steps"].items():
        start, end = spans.get(sid, (None, None))
        result.append(
            {
                "step_id": sid,
                "status": step["status"],
                "attempts": step["attempts"],
                "start_s": _rel(start, origin),
                "end_s": _rel(end, origin),
                "duration_s": step["duration_s"],
                "overlaps": _overlaps(sid, spans),
            }
        )
    return sorted(result, key=lambda t: (t["start_s"] is None, t["start_s"] or 0.0))


def _overlaps(sid: str, spans: dict[str, tuple[int, int | None]]) -> list[str]:
    start, end = spans.get(sid, (None, None))
    if start is None or end is None:
        return []
    return sorted(
        other
        for other, (o_start, o_end) in spans.items()
        if other != sid and o_end is not None and o_start < end and start < o_end
    )


def _rel(ts: int | None, origin: int) -> float | None:
    return None if ts is None else round((ts - origin) / 1e9, 3)


def _run_duration(run: dict[str, Any]) -> float | None:
    end: int = run["ended_ts"] or run["last_ts"]
    start: int = run["requested_ts"]
    return round((end - start) / 1e9, 3)


def _verdict(step: dict[str, Any]) -> str:
    verification = step.get("verification")
    if not verification:
        return "-"
    return f"{'yes' if verification['passed'] else 'NO'} ({verification['confidence']:.2f})"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _step_seconds(step: dict[str, Any]) -> float | None:
    """A step's recorded duration, else its span; None when it never ran."""
    if step.get("duration_s") is not None:
        return float(step["duration_s"])
    if step.get("started_ts") is None or step.get("ended_ts") is None:
        return None
    return max(0.0, float(step["ended_ts"] - step["started_ts"]) / 1e9)
