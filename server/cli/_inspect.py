"""`sessions list|show` and `runs list|show`: what the projections know, as tables,
timelines or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from projections import get_run, get_session, list_runs, list_sessions
from server._render import dumps, iso_time, table
from server._views import open_live_view
from server.cli._gantt import render_gantt
from server.config import Config
from server.errors import InputError


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
    rows = [
        (
            t["step_id"],
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
        "status",
        "attempts",
        "start s",
        "end s",
        "duration s",
        "verified",
        "overlapped with",
    ]
    out.write(table(headers, rows) + "\n")
    return 0


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
