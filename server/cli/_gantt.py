"""`runs show ID --gantt out.svg`: a run's steps as a timeline.

One bar per step (coloured by status), its verification as a thin bar beside it, and
the critical path (the dependency chain with the longest measured durations, found with
networkx) outlined, so a reader sees at a glance what ran in parallel and what waited.
Plain SVG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    import networkx as nx

COLOURS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "skipped": "#9e9e9e",
    "running": "#f9a825",
    "pending": "#bdbdbd",
}
ROW, LEFT, WIDTH, TOP = 28, 140, 640, 40


def critical_path(run: dict[str, Any]) -> list[str]:
    """Step ids of the run's critical path: the dependency chain of steps that ran whose
    measured durations add up to the most (what no amount of parallelism could shorten)."""
    durations = {sid: d for sid, s in run["steps"].items() if (d := _measured(s)) is not None}
    dependencies = {
        str(p.get("id")): [str(d) for d in p.get("dependencies") or () if str(d) in durations]
        for p in run.get("plan") or ()
        if isinstance(p, dict) and str(p.get("id")) in durations
    }
    for sid in durations:
        dependencies.setdefault(sid, [])
    return longest_chain(dependencies, durations)[0]


def longest_chain(
    dependencies: Mapping[str, Sequence[str]], durations: Mapping[str, float]
) -> tuple[list[str], float]:
    """The chain through a DAG of steps (step -> the steps it depends on) with the
    largest sum of durations (missing: 0), first step first, and that sum.

    Step durations are node weights; `dag_longest_path` weighs edges, so each edge into a
    step carries that step's duration, and a source before every step carries the first
    one's. A graph with a cycle raises `networkx.NetworkXUnfeasible`. networkx is
    imported here, when a command asks for a run's critical path, not with the server.
    """
    import networkx as nx

    graph: nx.DiGraph[object] = nx.DiGraph()
    graph.add_node(_SOURCE)
    for step in dependencies:
        graph.add_edge(_SOURCE, step, weight=durations.get(step, 0.0))
    for step, needs in dependencies.items():
        for dependency in sorted(needs):  # equal chains: the first id wins (edge order)
            graph.add_edge(dependency, step, weight=durations.get(step, 0.0))
    path = nx.dag_longest_path(graph, weight="weight", topo_order=_ordered(graph))
    chain = [str(node) for node in path if node is not _SOURCE]
    return chain, float(sum(durations.get(step, 0.0) for step in chain))


# The virtual first node of `longest_chain`'s graph; no step id is this object.
_SOURCE = object()


def _ordered(graph: nx.DiGraph[object]) -> list[object]:
    """A topological order that breaks ties by step id (the source first), so equal
    chains resolve the same way on every run."""
    import networkx as nx

    return list(
        nx.lexicographical_topological_sort(graph, key=lambda n: "" if n is _SOURCE else str(n))
    )


def _measured(step: Mapping[str, Any]) -> float | None:
    """How long a step that ran took, in seconds: its recorded duration, else the span
    from start to end; None for a step that never ran (or has not ended)."""
    if step.get("duration_s") is not None:
        return float(step["duration_s"])
    if step.get("started_ts") is None or step.get("ended_ts") is None:
        return None
    return max(0.0, float(step["ended_ts"] - step["started_ts"]) / 1e9)


def render_gantt(run: dict[str, Any]) -> str:
    steps = [(sid, s) for sid, s in run["steps"].items() if s.get("started_ts")]
    steps.sort(key=lambda item: item[1]["started_ts"])
    origin = run["requested_ts"]
    end = max([run.get("ended_ts") or 0, *[_end(s) for _, s in steps], origin + 1])
    scale = WIDTH / (end - origin)
    critical = set(critical_path(run))
    height = TOP + ROW * max(1, len(steps)) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 20}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f"<title>run {escape(run['run_id'])}</title>",
        f'<text x="10" y="20">run {escape(run["run_id"])} ({escape(run["status"])}), '
        f"{(end - origin) / 1e9:.3f} s</text>",
    ]
    for row, (sid, step) in enumerate(steps):
        parts.extend(_row(row, sid, step, origin, scale, sid in critical))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _end(step: dict[str, Any]) -> int:
    verification = step.get("verification") or {}
    ended: int = step.get("ended_ts") or step["started_ts"]
    verified: int = verification.get("ts") or 0
    return max(ended, verified)


def _row(
    row: int, sid: str, step: dict[str, Any], origin: int, scale: float, critical: bool
) -> list[str]:
    y = TOP + row * ROW
    x0 = LEFT + (step["started_ts"] - origin) * scale
    x1 = LEFT + ((step.get("ended_ts") or step["started_ts"]) - origin) * scale
    colour = COLOURS.get(step["status"], "#bdbdbd")
    outline = ' stroke="#000" stroke-width="2"' if critical else ""
    out = [
        f'<text x="10" y="{y + 14}">{escape(sid)}</text>',
        f'<rect class="step" data-step="{escape(sid)}" data-status="{escape(step["status"])}" '
        f'data-critical="{str(critical).lower()}" x="{x0:.1f}" y="{y}" '
        f'width="{max(1.0, x1 - x0):.1f}" height="16" fill="{colour}"{outline}/>',
    ]
    verification = step.get("verification")
    if verification and verification.get("ts"):
        v1 = LEFT + (verification["ts"] - origin) * scale
        fill = "#1565c0" if verification.get("passed") else "#ef6c00"
        out.append(
            f'<rect class="verification" data-step="{escape(sid)}" x="{x1:.1f}" y="{y + 17}" '
            f'width="{max(1.0, v1 - x1):.1f}" height="5" fill="{fill}"/>'
        )
    return out
