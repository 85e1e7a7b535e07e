"""The scorecard of `autoagent bench`: its rows, the maths, and its text, Markdown and JSON.

Each row is measured twice on each server where two independent witnesses exist:
- "server": the server's own events, folded by the metrics projection (run latency
  from RunRequested to the terminal event, LLM calls and tokens per request), or the
  documents.index step's `StepCompleted.duration_s`;
- "client": what the bench itself saw: its clock from sending a goal to the terminal
  frame (or from the StepStarted frame to the StepCompleted frame), and for LLM calls
  and tokens the simulator's own request and token counters.
The row's value is the server figure (the client's when the server has none). The two
must agree within `AGREEMENT_TOLERANCE` of the client figure; a pair that does not is
flagged. Peak RSS has one witness only, the kernel's VmHWM.

Percentiles are nearest-rank (the smallest value with at least q % of the values at or
below it), the definition the metrics projection's histogram uses, so both witnesses
compute the same statistic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server._render import table

AGREEMENT_TOLERANCE = 0.05
PHASES = ("baseline", "optimized")


@dataclass(frozen=True, slots=True)
class RowSpec:
    key: str
    label: str
    unit: str
    seed_baseline: float | None = None
    seed_optimized: float | None = None

    @property
    def target_ratio(self) -> float | None:
        """The seed's optimized / baseline: the ratio this row must reach or beat."""
        if self.seed_baseline is None or self.seed_optimized is None:
            return None
        return self.seed_optimized / self.seed_baseline


ROWS: tuple[RowSpec, ...] = (
    RowSpec("avg_response_s", "average response time", "s", 8.0, 2.4),
    RowSpec("p95_response_s", "P95 response time", "s", 15.0, 4.5),
    RowSpec("p99_response_s", "P99 response time", "s"),
    RowSpec("llm_calls_per_request", "LLM calls per request", "", 10.0, 4.0),
    RowSpec("tokens_per_request", "tokens per request", ""),
    RowSpec("embedding_100_docs_s", "embedding time, 100 documents", "s", 60.0, 5.0),
    RowSpec("peak_rss_mb", "server peak RSS", "MB", 500.0, 320.0),
)


@dataclass(frozen=True, slots=True)
class Witnessed:
    """One row's figure on one server, as each witness measured it (None: not measured)."""

    server: float | None = None
    client: float | None = None

    @property
    def value(self) -> float | None:
        return self.server if self.server is not None else self.client

    @property
    def difference(self) -> float | None:
        return relative_difference(self.server, self.client)

    @property
    def agrees(self) -> bool | None:
        return agrees(self.server, self.client)

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": _finite(self.value),
            "server": _finite(self.server),
            "client": _finite(self.client),
            "difference": _finite(self.difference),
            "agree": self.agrees,
        }


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 < q <= 100) by nearest rank; None for no values."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def per_request(total: float | None, requests: int) -> float | None:
    return None if total is None or requests <= 0 else total / requests


def ratio(optimized: float | None, baseline: float | None) -> float | None:
    """optimized / baseline; None when either is missing or the baseline is zero."""
    if optimized is None or baseline is None or baseline == 0:
        return None
    return optimized / baseline


def relative_difference(server: float | None, client: float | None) -> float | None:
    """(server - client) / client; None when either is missing or the client figure is 0."""
    if server is None or client is None or client == 0:
        return None
    return (server - client) / client


def agrees(server: float | None, client: float | None) -> bool | None:
    """Whether the two witnesses agree within the tolerance; None with fewer than two."""
    if server is None or client is None:
        return None
    if server == client:
        return True
    difference = relative_difference(server, client)
    return difference is not None and abs(difference) <= AGREEMENT_TOLERANCE


def met(spec: RowSpec, row_ratio: float | None) -> bool | None:
    """At or better (lower) than the seed's target ratio; None without a target or ratio."""
    target = spec.target_ratio
    if target is None or row_ratio is None:
        return None
    return row_ratio <= target + 1e-9


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def build_rows(figures: Mapping[str, Mapping[str, Witnessed]]) -> list[dict[str, Any]]:
    """The scorecard rows from `figures[phase][row key]` (missing rows stay None)."""
    rows = []
    for spec in ROWS:
        by_phase = {phase: figures.get(phase, {}).get(spec.key, Witnessed()) for phase in PHASES}
        row_ratio = ratio(by_phase["optimized"].value, by_phase["baseline"].value)
        rows.append(
            {
                "key": spec.key,
                "label": spec.label,
                "unit": spec.unit,
                **{phase: by_phase[phase].as_dict() for phase in PHASES},
                "ratio": _finite(row_ratio),
                "seed": {
                    "baseline": spec.seed_baseline,
                    "optimized": spec.seed_optimized,
                    "ratio": spec.target_ratio,
                },
                "met": met(spec, row_ratio),
            }
        )
    return rows


def disagreements(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """'row key/phase' of every pair of witnesses that differ by more than the tolerance."""
    return [
        f"{row['key']}/{phase}" for row in rows for phase in PHASES if row[phase]["agree"] is False
    ]


# --- rendering -------------------------------------------------------------------------


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
    return f"{value:,.{digits}f}" + (f" {unit}" if unit else "")


def _seed(row: Mapping[str, Any]) -> str:
    seed = row["seed"]
    if seed["ratio"] is None:
        return "—"
    unit = f" {row['unit']}" if row["unit"] else ""
    return f"{seed['baseline']:g}{unit} -> {seed['optimized']:g}{unit}"


def _met(value: bool | None) -> str:
    return "—" if value is None else "yes" if value else "NO"


def _with_flag(figure: Mapping[str, Any], unit: str) -> str:
    text = _number(figure["value"], unit)
    return text + (" (!)" if figure["agree"] is False else "")


def scorecard_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["", "baseline", "optimized", "ratio", "seed target", "target ratio", "met"]
    cells = [
        [
            row["label"],
            _with_flag(row["baseline"], row["unit"]),
            _with_flag(row["optimized"], row["unit"]),
            _number(row["ratio"]),
            _seed(row),
            _number(row["seed"]["ratio"]),
            _met(row["met"]),
        ]
        for row in rows
    ]
    return headers, cells


def _difference(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f} %"


def _agree(value: bool | None) -> str:
    return "—" if value is None else "ok" if value else "DIFFER"


def agreement_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["", "phase", "server (events)", "client (clock / simulator)", "diff", "agree"]
    cells = [
        [
            row["label"],
            phase,
            _number(row[phase]["server"], row["unit"]),
            _number(row[phase]["client"], row["unit"]),
            _difference(row[phase]["difference"]),
            _agree(row[phase]["agree"]),
        ]
        for row in rows
        for phase in PHASES
    ]
    return headers, cells


def markdown_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(":---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def render(rows: Sequence[Mapping[str, Any]], *, markdown: bool = False) -> str:
    """The scorecard, then the agreement of the witnesses, as text or Markdown tables."""
    draw = markdown_table if markdown else table
    note = (
        f"(!) server and client figures differ by more than {AGREEMENT_TOLERANCE:.0%}: "
        + ", ".join(disagreements(rows))
        if disagreements(rows)
        else f"server and client figures agree within {AGREEMENT_TOLERANCE:.0%}"
    )
    return "\n\n".join((draw(*scorecard_cells(rows)), note, draw(*agreement_cells(rows))))
