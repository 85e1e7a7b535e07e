"""The run timeline as SVG: one bar per step, verification bars, the critical path."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from server.cli._gantt import critical_path, render_gantt

SVG = "{http://www.w3.org/2000/svg}"
S = 1_000_000_000


def step(
    sid: str,
    start: float,
    end: float | None,
    status: str = "completed",
    verified: float | None = None,
) -> dict[str, Any]:
    verification = (
        {"passed": True, "confidence": 0.9, "notes": "", "ts": int(verified * S)}
        if verified
        else None
    )
    return {
        "step_id": sid,
        "status": status,
        "attempts": 1,
        "started_ts": int(start * S),
        "ended_ts": int(end * S) if end is not None else None,
        "duration_s": None,
        "result": None,
        "error": None,
        "verification": verification,
    }


def diamond() -> dict[str, Any]:
    plan = [
        {"id": "a", "dependencies": []},
        {"id": "b", "dependencies": []},
        {"id": "c", "dependencies": ["a", "b"]},
        {"id": "x", "dependencies": []},
    ]
    steps = {
        "a": step("a", 1.0, 1.2, verified=1.5),
        "b": step("b", 1.0, 1.4),
        "c": step("c", 1.4, 2.0),
        "x": step("x", 1.0, 1.1, status="failed"),
    }
    return {
        "run_id": "r1",
        "status": "completed",
        "requested_ts": 1 * S,
        "ended_ts": int(2.1 * S),
        "plan": plan,
        "steps": steps,
    }


def bars(svg: str, kind: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {e.get("data-step", ""): e for e in root.iter(f"{SVG}rect") if e.get("class") == kind}


def test_critical_path_follows_the_dependency_that_ended_last() -> None:
    assert critical_path(diamond()) == ["b", "c"]


def test_svg_has_one_bar_per_step_coloured_by_status() -> None:
    steps = bars(render_gantt(diamond()), "step")
    assert set(steps) == {"a", "b", "c", "x"}
    assert steps["x"].get("data-status") == "failed"
    assert steps["x"].get("fill") != steps["a"].get("fill")


def test_parallel_steps_start_at_the_same_x_and_dependents_after() -> None:
    steps = bars(render_gantt(diamond()), "step")
    assert steps["a"].get("x") == steps["b"].get("x")
    b_end = float(steps["b"].get("x", 0)) + float(steps["b"].get("width", 0))
    assert abs(float(steps["c"].get("x", 0)) - b_end) < 0.5


def test_critical_steps_are_marked_and_verifications_drawn() -> None:
    svg = render_gantt(diamond())
    marked = {sid for sid, e in bars(svg, "step").items() if e.get("data-critical") == "true"}
    assert marked == {"b", "c"}
    assert set(bars(svg, "verification")) == {"a"}


def test_run_without_started_steps_still_renders() -> None:
    run = {
        "run_id": "r2",
        "status": "failed",
        "requested_ts": S,
        "ended_ts": 2 * S,
        "plan": [],
        "steps": {},
    }
    root = ET.fromstring(render_gantt(run))
    assert root.tag == f"{SVG}svg"
