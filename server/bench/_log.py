"""The server's side of the scorecard, read from its event log once it has stopped.

Why the log after the stop, and not GET /metrics during the run: /metrics renders the
run-latency histogram in Prometheus' coarse buckets (..., 2.5, 5, 10, 30 s), too coarse
for a P95 to compare with the client's within 5 %, and it cannot tell the workload's
runs from the document-indexing run that follows it. A stopped server's log is
complete (every acknowledged append is on disk) and can be read without racing the
writer. The bench folds it with the product's own `MetricsProjection`, the same code
the server's /metrics and `autoagent stats` use, up to the first event of the indexing
run; so the figures are the server's own, from its own events.

The documents.index step's `StepCompleted.duration_s` (the server's clock around the
tool call) and the `DocumentIndexed` events come from the indexing run's part of the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events import LmdbEventLog, RecordedEvent
from projections import MetricsProjection

READ_BATCH = 1000


@dataclass
class LogFigures:
    """What the log says: the workload's metrics, and the indexing run's figures."""

    metrics: dict[str, Any]
    index_step_s: float | None = None
    index_result: Any = None
    documents_indexed: int = 0
    index_run_events: list[str] = field(default_factory=list)


def records(log: LmdbEventLog) -> Iterator[RecordedEvent]:
    after = 0
    while batch := log.read(after, READ_BATCH):
        yield from batch
        after = batch[-1].position


def read_figures(data_dir: Path, index_run: str | None, index_step: str | None) -> LogFigures:
    """Fold the workload (everything before `index_run` began) and pick the run's figures."""
    metrics = MetricsProjection()
    figures = LogFigures(metrics={})
    in_workload = True
    log = LmdbEventLog.open(data_dir, readonly=True)
    try:
        for record in records(log):
            if index_run is not None and record.stream == f"run-{index_run}":
                in_workload = False
                _index_record(figures, record, index_step)
            elif record.type == "DocumentIndexed" and not in_workload:
                figures.documents_indexed += 1
            elif in_workload:
                metrics.apply(record)
    finally:
        log.close()
    figures.metrics = metrics.summary()
    return figures


def _index_record(figures: LogFigures, record: RecordedEvent, step: str | None) -> None:
    figures.index_run_events.append(record.type)
    if record.type == "StepCompleted" and record.data.get("step_id") == step:
        figures.index_step_s = float(record.data["duration_s"])
        figures.index_result = record.data.get("result")
