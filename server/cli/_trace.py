"""`runs trace ID [--otlp-json]`: a run's trace as the live export sends it, rebuilt from
the log (read-only, like `runs show`), as a short listing of its spans or as OTLP/JSON.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

from events import EventLog, RecordedEvent
from server.cli._admin import open_readonly
from server.config import Config
from server.errors import InputError
from server.telemetry import otlp_json, run_spans, span_listing, trace_request

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

READ_BATCH = 1000


def add_trace_parser(runs: SubParsers, common: argparse.ArgumentParser) -> None:
    """`trace` under `runs`."""
    trace = runs.add_parser(
        "trace",
        parents=[common],
        help="one run's trace (a span per run, step and LLM call), from the log",
    )
    trace.add_argument("id", help="the run's id")
    trace.add_argument(
        "--otlp-json",
        action="store_true",
        help="print the trace as OTLP/JSON (what the live export sends to the collector)",
    )


def runs_trace(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    log = open_readonly(config)
    try:
        records = _run_records(log, args.id)
    finally:
        log.close()
    if not records:
        raise InputError(f"no run with id {args.id!r}")
    spans = run_spans(args.id, records)
    if args.otlp_json:
        out.write(otlp_json(trace_request([spans])) + "\n")
        return 0
    out.write(f"trace {spans[0].trace_id.hex()}  run {args.id}  status {spans[0].status}\n")
    out.write(span_listing(spans) + "\n")
    return 0


def _run_records(log: EventLog, run_id: str) -> list[RecordedEvent]:
    """Every record of `run-<id>` (the stream's sealed stubs: spans need no content)."""
    records: list[RecordedEvent] = []
    stream = f"run-{run_id}"
    while batch := log.read_stream(stream, records[-1].version if records else 0, READ_BATCH):
        records.extend(batch)
    return records
