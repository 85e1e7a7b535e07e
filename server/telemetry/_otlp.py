"""Runs' spans on the wire: an OTLP `ExportTraceServiceRequest` (protobuf), its OTLP/JSON
form, and a short listing for people.

One request holds one resource (`service.name` autoagent) and one instrumentation scope;
each run's spans share the run's trace id, so a batch of runs is one request.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from server._render import table
from server.telemetry._spans import AttributeValue, RunSpan

SERVICE_NAME = "autoagent"
SCOPE_NAME = "autoagent.runs"
# OTLP/JSON writes these ids as hex, not as the base64 of the protobuf JSON mapping.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})

_KINDS = {"internal": Span.SPAN_KIND_INTERNAL, "client": Span.SPAN_KIND_CLIENT}
_CODES = {
    "ok": Status.STATUS_CODE_OK,
    "error": Status.STATUS_CODE_ERROR,
    "unset": Status.STATUS_CODE_UNSET,
}


def _version() -> str:
    try:
        return importlib.metadata.version("autoagent")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def trace_request(traces: Iterable[Sequence[RunSpan]]) -> ExportTraceServiceRequest:
    """One OTLP request carrying every span of every given run."""
    version = _version()
    scope = ScopeSpans(scope=InstrumentationScope(name=SCOPE_NAME, version=version))
    for spans in traces:
        scope.spans.extend(_span(span) for span in spans)
    resource = Resource(
        attributes=_attributes({"service.name": SERVICE_NAME, "service.version": version})
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
    )


def _span(span: RunSpan) -> Span:
    message = Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_id,
        name=span.name,
        kind=_KINDS[span.kind],
        start_time_unix_nano=span.start_ns,
        end_time_unix_nano=max(span.end_ns, span.start_ns),
        attributes=_attributes(span.attributes),
        status=Status(code=_CODES[span.outcome]),
    )
    if span.outcome == "error":
        message.status.message = span.status
    for event in span.events:
        message.events.add(
            time_unix_nano=event.ts, name=event.name, attributes=_attributes(event.attributes)
        )
    for linked in span.links:
        message.links.add(trace_id=span.trace_id, span_id=linked)
    return message


def _attributes(values: Mapping[str, AttributeValue]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_value(value)) for key, value in values.items()]


def _value(value: AttributeValue) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def otlp_json(request: ExportTraceServiceRequest, *, indent: int | None = 2) -> str:
    """The request in the OTLP/JSON encoding: the protobuf JSON mapping (camelCase keys,
    64-bit integers as strings) with trace and span ids in hex and enums as integers."""
    as_dict = MessageToDict(request, use_integers_for_enums=True)
    return json.dumps(_hex_ids(as_dict), indent=indent)


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _b64_to_hex(item) if key in _HEX_ID_KEYS else _hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def span_listing(spans: Sequence[RunSpan]) -> str:
    """A table of the spans: name (children indented), start offset from the run's start,
    duration and status, in seconds."""
    if not spans:
        return ""
    origin = spans[0].start_ns
    rows = [
        (
            ("  " if span.parent_id else "") + span.name,
            f"{(span.start_ns - origin) / 1e9:.3f}",
            f"{max(0, span.end_ns - span.start_ns) / 1e9:.3f}",
            span.status,
        )
        for span in spans
    ]
    return table(["span", "start s", "duration s", "status"], rows)
