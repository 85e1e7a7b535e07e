"""`runs show ID --gantt out.svg`: a run's steps as a timeline.

One bar per step (coloured by status), its verification as a thin bar beside it, and
the critical path (the dependency chain that ended last) outlined, so a reader sees at
a glance what ran in parallel and what waited. Plain SVG, no dependencies.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

COLOURS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "skipped": "#9e9e9e",
    "running": "#f9a825",
    "pending": "#bdbdbd",
}
ROW, LEFT, WIDTH, TOP = 28, 140, 640, 40


def critical_path(run: dict[str, Any]) -> list[str]:
    """Step ids of the chain ending with the last-ending step, following dependencies."""
    steps = run["steps"]
    ended = {sid: s["ended_ts"] for sid, s in steps.items() if s.get("ended_ts")}
    if not ended:
        return []
    deps = {str(p.get("id")): list(p.get("dependencies") or []) for p in run.get("plan") or []}
    path = [max(ended, key=lambda sid: ended[sid])]
    while True:
        previous = [d for d in deps.get(path[-1], []) if d in ended]
        if not previous:
            return list(reversed(path))
        path.append(max(previous, key=lambda sid: ended[sid]))


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
