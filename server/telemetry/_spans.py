"""A run's trace, folded from its stream: one span for the run, one per step attempt,
one per LLM call, following the OpenTelemetry GenAI semantic conventions.

Everything comes from the records themselves: the times are the records' `ts`, the ids
are hashes of the run id (trace, run span) and of event ids (step and call spans), so
folding the same stream again - live, from a replayed log, from a copy of the data dir -
gives the same trace. Only ids, tool names, statuses, token counts and timings go into a
span: the personal fields (`events.PERSONAL_FIELDS`: goals, results, answers, notes,
failure messages) are never read here, so a sealed stub and an opened value look alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from events import TERMINAL_RUN_STATUS, RecordedEvent

RUN_STREAM = "run-"
AGENT_NAME = "autoagent"

Kind = Literal["internal", "client"]
Outcome = Literal["ok", "error", "unset"]
AttributeValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """A point in time inside a span (a verdict, a resume), with its attributes."""

    name: str
    ts: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunSpan:
    """One span of a run's trace, independent of the wire format (see `_otlp`)."""

    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    start_ns: int
    end_ns: int
    kind: Kind
    outcome: Outcome
    status: str  # ours: completed, failed, skipped, reused, cancelled, unfinished...
    attributes: Mapping[str, AttributeValue]
    events: tuple[SpanEvent, ...] = ()
    links: tuple[bytes, ...] = ()  # span ids in the same trace (a step's dependencies)


def trace_id_of(run_id: str) -> bytes:
    """The run's 16-byte trace id, the same every time the run is exported."""
    return _digest(b"autoagent-trace\0" + run_id.encode(), 16)


def run_span_id(run_id: str) -> bytes:
    return _digest(b"autoagent-run\0" + run_id.encode(), 8)


def event_span_id(record: RecordedEvent) -> bytes:
    """The span id of the span a record opens (a step attempt, an LLM call)."""
    return _digest(b"autoagent-event\0" + record.id_bytes, 8)


def _digest(data: bytes, size: int) -> bytes:
    value = hashlib.blake2b(data, digest_size=size).digest()
    return value if any(value) else value[:-1] + b"\1"  # all-zero ids are invalid in OTLP


def run_id_of(stream: str) -> str | None:
    """`run-<id>` -> `<id>`; None for any other stream."""
    return stream.removeprefix(RUN_STREAM) if stream.startswith(RUN_STREAM) else None


@dataclass(slots=True)
class _Attempt:
    """A step attempt between its start and its outcome."""

    step_id: str
    span_id: bytes
    start_ns: int
    attempt: int
    end_ns: int | None = None
    status: str = "unfinished"
    outcome: Outcome = "unset"
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)


@dataclass(slots=True)
class _RunFold:
    """The fold of one run stream into spans: one `_on_<EventType>` per event it reads."""

    run_id: str
    trace_id: bytes = b""
    session_id: str = ""
    retry_of: str = ""
    start_ns: int | None = None
    end_ns: int | None = None
    last_ns: int = 0
    status: str = "requested"
    tools: dict[str, str] = field(default_factory=dict)
    dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    attempts: list[_Attempt] = field(default_factory=list)
    open: dict[str, _Attempt] = field(default_factory=dict)  # step id -> running attempt
    calls: list[RunSpan] = field(default_factory=list)
    run_events: list[SpanEvent] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.end_ns is not None

    def apply(self, record: RecordedEvent) -> None:
        self.last_ns = max(self.last_ns, record.ts)
        if self.start_ns is None:
            self.start_ns = record.ts
        handler = _HANDLERS.get(record.type)
        if handler is not None:
            handler(self, record)
        elif record.type in TERMINAL_RUN_STATUS:
            self.status, self.end_ns = TERMINAL_RUN_STATUS[record.type], record.ts

    def _on_RunRequested(self, record: RecordedEvent) -> None:
        self.start_ns = record.ts
        self.session_id = _text(record.data.get("session_id"))
        self.retry_of = _text(record.data.get("retry_of"))

    def _on_PlanCreated(self, record: RecordedEvent) -> None:
        self.status = "running"
        steps = record.data.get("steps")
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict):
                sid = _text(step.get("id"))
                self.tools[sid] = f"{_text(step.get('agent'))}.{_text(step.get('action'))}"
                deps = step.get("dependencies")
                self.dependencies[sid] = tuple(_text(d) for d in deps or () if isinstance(d, str))

    def _on_StepStarted(self, record: RecordedEvent) -> None:
        sid = _text(record.data.get("step_id"))
        self._close(sid, record.ts, "interrupted", "unset")  # a resume starts it again
        attempt = record.data.get("attempt", 1)
        started = _Attempt(sid, event_span_id(record), record.ts, _int(attempt, 1))
        self.attempts.append(started)
        self.open[sid] = started

    def _on_StepCompleted(self, record: RecordedEvent) -> None:
        step = self._ending(record)
        step.attributes["autoagent.step.duration_s"] = _float(record.data.get("duration_s"))
        self._close(step.step_id, record.ts, "completed", "ok")

    def _on_StepFailed(self, record: RecordedEvent) -> None:
        step = self._ending(record)
        step.attributes["error.type"] = _text(record.data.get("error_type")) or "error"
        step.attributes["autoagent.step.retryable"] = bool(record.data.get("retryable"))
        self._close(step.step_id, record.ts, "failed", "error")

    def _on_StepSkipped(self, record: RecordedEvent) -> None:
        step = self._ending(record)
        self._close(step.step_id, record.ts, "skipped", "unset")

    def _on_StepReused(self, record: RecordedEvent) -> None:
        step = self._ending(record)
        step.attempt = 0
        step.attributes["autoagent.step.reused_from"] = _text(record.data.get("from_run_id"))
        self._close(step.step_id, record.ts, "reused", "ok")

    def _on_VerificationCompleted(self, record: RecordedEvent) -> None:
        sid = _text(record.data.get("step_id"))
        verdict: dict[str, AttributeValue] = {
            "autoagent.verification.passed": bool(record.data.get("passed")),
            "autoagent.verification.confidence": _float(record.data.get("confidence")),
        }
        for step in reversed(self.attempts):
            if step.step_id == sid:
                step.attributes.update(verdict)
                step.events.append(SpanEvent("verification", record.ts, verdict))
                return

    def _on_ApprovalRequested(self, record: RecordedEvent) -> None:
        self._step_event(record, "approval.requested")

    def _on_ApprovalGranted(self, record: RecordedEvent) -> None:
        self._step_event(record, "approval.granted")

    def _on_ApprovalDenied(self, record: RecordedEvent) -> None:
        self._step_event(record, "approval.denied")

    def _on_RunResumed(self, record: RecordedEvent) -> None:
        self.run_events.append(SpanEvent("run.resumed", record.ts))

    def _on_ReplanRequested(self, record: RecordedEvent) -> None:
        self.run_events.append(SpanEvent("run.replanned", record.ts))

    def _on_LLMCallCompleted(self, record: RecordedEvent) -> None:
        data = record.data
        model = _text(data.get("model"))
        inputs, outputs = _int(data.get("prompt_tokens"), 0), _int(data.get("completion_tokens"), 0)
        latency = _float(data.get("latency_s"))
        outcome = _text(data.get("outcome")) or "ok"
        self.input_tokens += inputs
        self.output_tokens += outputs
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": inputs,
            "gen_ai.usage.output_tokens": outputs,
            "autoagent.llm.purpose": _text(data.get("purpose")),
            "autoagent.llm.latency_s": latency,
            "autoagent.llm.retries": _int(data.get("retries"), 0),
            "autoagent.llm.outcome": outcome,
        }
        if outcome != "ok":
            attributes["error.type"] = outcome
        self.calls.append(
            RunSpan(
                name=f"chat {model}",
                trace_id=self.trace_id,
                span_id=event_span_id(record),
                parent_id=run_span_id(self.run_id),
                start_ns=record.ts - max(0, round(latency * 1e9)),
                end_ns=record.ts,
                kind="client",
                outcome="ok" if outcome == "ok" else "error",
                status=outcome,
                attributes=attributes,
            )
        )

    def _ending(self, record: RecordedEvent) -> _Attempt:
        """The running attempt of the record's step; a step that never started (skipped,
        reused) gets a zero-length span of its own."""
        sid = _text(record.data.get("step_id"))
        step = self.open.get(sid)
        if step is None:
            step = _Attempt(sid, event_span_id(record), record.ts, 0)
            self.attempts.append(step)
            self.open[sid] = step
        return step

    def _close(self, sid: str, ts: int, status: str, outcome: Outcome) -> None:
        step = self.open.pop(sid, None)
        if step is not None:
            step.end_ns, step.status, step.outcome = ts, status, outcome

    def _step_event(self, record: RecordedEvent, name: str) -> None:
        sid = _text(record.data.get("step_id"))
        step = self.open.get(sid)
        if step is not None:
            step.events.append(SpanEvent(name, record.ts))
        else:
            self.run_events.append(SpanEvent(name, record.ts, {"autoagent.step.id": sid}))

    # -- output ---------------------------------------------------------------------------

    def spans(self) -> list[RunSpan]:
        """The run span first, then steps and calls by start time."""
        end = self.end_ns if self.end_ns is not None else self.last_ns
        children = [*(self._step_span(a, end) for a in self.attempts), *self.calls]
        children.sort(key=lambda span: (span.start_ns, span.span_id))
        return [self._run_span(end), *children]

    def _run_span(self, end: int) -> RunSpan:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": AGENT_NAME,
            "gen_ai.conversation.id": self.session_id,
            "autoagent.run.id": self.run_id,
            "autoagent.session.id": self.session_id,
            "autoagent.run.status": self.status,
            "autoagent.run.steps": len(self.tools),
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
        }
        if self.retry_of:
            attributes["autoagent.run.retry_of"] = self.retry_of
        outcome: Outcome = "unset"
        if self.status in ("completed", "failed"):
            outcome = "ok" if self.status == "completed" else "error"
        return RunSpan(
            name=f"invoke_agent {AGENT_NAME}",
            trace_id=self.trace_id,
            span_id=run_span_id(self.run_id),
            parent_id=b"",
            start_ns=self.start_ns or end,
            end_ns=end,
            kind="internal",
            outcome=outcome,
            status=self.status,
            attributes=attributes,
            events=tuple(self.run_events),
        )

    def _step_span(self, step: _Attempt, run_end: int) -> RunSpan:
        tool = self.tools.get(step.step_id, "unknown")
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "autoagent.step.id": step.step_id,
            "autoagent.step.attempt": step.attempt,
            "autoagent.step.status": step.status,
            **step.attributes,
        }
        return RunSpan(
            name=f"execute_tool {tool}",
            trace_id=self.trace_id,
            span_id=step.span_id,
            parent_id=run_span_id(self.run_id),
            start_ns=step.start_ns,
            end_ns=step.end_ns if step.end_ns is not None else max(run_end, step.start_ns),
            kind="internal",
            outcome=step.outcome,
            status=step.status,
            attributes=attributes,
            events=tuple(step.events),
            links=self._dependency_links(step.step_id),
        )

    def _dependency_links(self, sid: str) -> tuple[bytes, ...]:
        """The last attempt of each step this one depends on."""
        last = {a.step_id: a.span_id for a in self.attempts}
        return tuple(last[dep] for dep in self.dependencies.get(sid, ()) if dep in last)


_HANDLERS: dict[str, Callable[[_RunFold, RecordedEvent], None]] = {
    name.removeprefix("_on_"): method
    for name, method in vars(_RunFold).items()
    if name.startswith("_on_")
}


def run_spans(run_id: str, records: Iterable[RecordedEvent]) -> list[RunSpan]:
    """The spans of one run from its stream's records, up to its terminal event.

    Records after the run ended (a late reply) are left out, so a trace exported live
    when the run ended and one exported from the log later are the same. An unfinished
    run ends at its last record, with its current status.
    """
    fold = _RunFold(run_id, trace_id_of(run_id))
    for record in records:
        fold.apply(record)
        if fold.finished:
            break
    return fold.spans()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)
