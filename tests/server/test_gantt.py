"""The run timeline as SVG: one bar per step, verification bars, the critical path."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from server.cli._gantt import critical_path, longest_chain, render_gantt

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


# A diamond: start fans out to a slow and a fast branch, which join in end.
DIAMOND = {"start": [], "slow": ["start"], "fast": ["start"], "end": ["slow", "fast"]}


@pytest.mark.parametrize(
    ("durations", "chain", "total"),
    [
        ({"start": 1.0, "slow": 5.0, "fast": 2.0, "end": 0.5}, ["start", "slow", "end"], 6.5),
        ({"start": 1.0, "slow": 0.5, "fast": 2.0, "end": 0.5}, ["start", "fast", "end"], 3.5),
        ({"start": 0.1, "slow": 3.0, "fast": 3.0, "end": 0.1}, ["start", "fast", "end"], 3.2),
    ],
    ids=["slow-branch", "fast-branch-measured-slower", "tie-goes-to-first-id"],
)
def test_longest_chain_of_a_diamond_follows_the_measured_durations(
    durations: dict[str, float], chain: list[str], total: float
) -> None:
    found, length = longest_chain(DIAMOND, durations)
    assert found == chain
    assert length == pytest.approx(total)


def test_critical_path_weighs_recorded_durations_over_end_times() -> None:
    """The recorded duration of a step is its weight, so a long step that ended early
    (it started first) still lies on the critical path."""
    run = diamond()
    plan = [{"id": sid, "dependencies": deps} for sid, deps in DIAMOND.items()]
    spans = {"start": (1.0, 1.1), "slow": (1.1, 1.9), "fast": (1.1, 1.3), "end": (2.5, 2.6)}
    steps = {sid: step(sid, a, b) for sid, (a, b) in spans.items()}
    steps["fast"]["duration_s"] = 0.2
    steps["slow"]["duration_s"] = 0.8
    assert critical_path({**run, "plan": plan, "steps": steps}) == ["start", "slow", "end"]


def test_critical_path_leaves_out_steps_that_never_ran() -> None:
    run = diamond()
    run["steps"]["c"] = step("c", 1.4, None, status="skipped")
    run["steps"]["c"]["started_ts"] = None
    assert critical_path(run) == ["b"]


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
