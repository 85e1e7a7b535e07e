"""Traces of runs for OpenTelemetry, derived from the log.

Each run is a trace: a span for the run, one per step attempt and one per LLM call
(GenAI semantic conventions), folded from the run's stream with the records' own times
and ids, so the log exports the same trace live (`open_trace_export`, when
`telemetry.otlp_endpoint` is set) and later (`autoagent runs trace ID --otlp-json`).
Public API; every other module in this package is private.
"""

from server.telemetry._export import (
    ExportStatistics,
    OtlpHttpExporter,
    TraceExport,
    open_trace_export,
    traces_url,
)
from server.telemetry._otlp import otlp_json, span_listing, trace_request
from server.telemetry._spans import RunSpan, SpanEvent, run_span_id, run_spans, trace_id_of
from server.telemetry.errors import TraceExportFailed

__all__ = [
    "ExportStatistics",
    "OtlpHttpExporter",
    "RunSpan",
    "SpanEvent",
    "TraceExport",
    "TraceExportFailed",
    "open_trace_export",
    "otlp_json",
    "run_span_id",
    "run_spans",
    "span_listing",
    "trace_id_of",
    "trace_request",
    "traces_url",
]
