"""Folding a run's stream into spans: the cases a plain run does not show (a step
interrupted by a crash and run again, a failure, a skip, a reused result, records after
the end, a run still going), deterministic ids, and the collector URL.

The records are built as the log returns them (`RecordedEvent`, with sealed stubs where
the content would be), one nanosecond clock per test.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from events import RecordedEvent
from server.errors import ConfigError
from server.telemetry import RunSpan, run_span_id, run_spans, trace_id_of, traces_url

RUN = "r1"
START = 1_000_000_000_000


class Stream:
    """Records of `run-r1`, one millisecond apart, each with a fresh event id."""

    def __init__(self) -> None:
        self.records: list[RecordedEvent] = []

    def add(self, type_name: str, **data: Any) -> RecordedEvent:
        version = len(self.records) + 1
        record = RecordedEvent(
            position=version,
            stream=f"run-{RUN}",
            version=version,
            type=type_name,
            schema=1,
            id_bytes=uuid.uuid4().bytes,
            ts=START + version * 1_000_000,
            correlation=RUN,
            causation=None,
            data={"run_id": RUN, **data},
            prev_hash=b"",
            hash=b"",
        )
        self.records.append(record)
        return record


def _plan(stream: Stream) -> None:
    stream.add("RunRequested", session_id="s1", goal="[forgotten]", sealed=b"box")
    steps = [
        {"id": "a", "agent": "web", "action": "fetch", "dependencies": []},
        {"id": "b", "agent": "writer", "action": "write", "dependencies": ["a"]},
        {"id": "c", "agent": "math", "action": "calculate", "dependencies": []},
    ]
    stream.add("PlanCreated", steps=steps)


def _by_step(spans: list[RunSpan]) -> dict[str, list[RunSpan]]:
    found: dict[str, list[RunSpan]] = {}
    for span in spans:
        if "autoagent.step.id" in span.attributes:
            found.setdefault(str(span.attributes["autoagent.step.id"]), []).append(span)
    return found


def test_a_step_interrupted_by_a_crash_has_one_span_per_attempt() -> None:
    stream = Stream()
    _plan(stream)
    first = stream.add("StepStarted", step_id="a", attempt=1)
    stream.add("RunResumed", reason="restart")
    second = stream.add("StepStarted", step_id="a", attempt=2)
    done = stream.add("StepCompleted", step_id="a", result={}, duration_s=0.5)
    stream.add("RunCompleted", answer="[forgotten]")
    spans = _by_step(run_spans(RUN, stream.records))["a"]
    assert [(s.attributes["autoagent.step.attempt"], s.status) for s in spans] == [
        (1, "interrupted"),
        (2, "completed"),
    ]
    assert (spans[0].start_ns, spans[0].end_ns) == (first.ts, second.ts)
    assert (spans[1].start_ns, spans[1].end_ns) == (second.ts, done.ts)
    assert spans[1].attributes["gen_ai.tool.name"] == "web.fetch"
    assert spans[1].name == "execute_tool web.fetch"


def test_failed_skipped_and_reused_steps_say_so() -> None:
    stream = Stream()
    _plan(stream)
    stream.add("StepStarted", step_id="a")
    stream.add("StepFailed", step_id="a", error_type="Timeout", message="secret", retryable=True)
    stream.add("StepSkipped", step_id="b", reason="a failed")
    stream.add("StepReused", step_id="c", from_run_id="r0", result=None)
    stream.add("RunFailed", reason="[forgotten]")
    spans = run_spans(RUN, stream.records)
    steps = {sid: found[-1] for sid, found in _by_step(spans).items()}
    assert steps["a"].outcome == "error" and steps["a"].attributes["error.type"] == "Timeout"
    assert steps["b"].status == "skipped" and steps["b"].start_ns == steps["b"].end_ns
    assert steps["c"].status == "reused"
    assert steps["c"].attributes["autoagent.step.reused_from"] == "r0"
    assert steps["b"].links == (steps["a"].span_id,)  # b depends on a
    root = spans[0]
    assert (root.status, root.outcome) == ("failed", "error")
    texts = [str(v) for s in spans for v in s.attributes.values()]
    assert not any("secret" in text or "a failed" in text for text in texts)


def test_records_after_the_end_are_left_out() -> None:
    stream = Stream()
    _plan(stream)
    end = stream.add("RunCancelled", reason="user")
    stream.add("LLMCallCompleted", purpose="answer", model="m", prompt_tokens=5,
               completion_tokens=1, latency_s=0.001)  # fmt: skip
    spans = run_spans(RUN, stream.records)
    assert len(spans) == 1 and spans[0].end_ns == end.ts and spans[0].status == "cancelled"


def test_an_unfinished_run_ends_at_its_last_record_with_its_steps_still_open() -> None:
    stream = Stream()
    _plan(stream)
    started = stream.add("StepStarted", step_id="c")
    call = stream.add("LLMCallCompleted", purpose="verify", model="m", prompt_tokens=7,
                      completion_tokens=3, latency_s=0.0005)  # fmt: skip
    spans = run_spans(RUN, stream.records)
    root, *children = spans
    assert (root.status, root.end_ns) == ("running", call.ts)
    (step,) = [s for s in children if s.kind == "internal"]
    assert (step.status, step.start_ns, step.end_ns) == ("unfinished", started.ts, call.ts)
    (llm,) = [s for s in children if s.kind == "client"]
    assert (llm.start_ns, llm.end_ns) == (call.ts - 500_000, call.ts)
    assert llm.attributes["gen_ai.usage.input_tokens"] == 7
    assert root.attributes["gen_ai.usage.output_tokens"] == 3


def test_ids_depend_on_the_run_and_the_records_only() -> None:
    stream = Stream()
    _plan(stream)
    stream.add("StepStarted", step_id="c")
    stream.add("RunCompleted", answer="[forgotten]")
    once, again = run_spans(RUN, stream.records), run_spans(RUN, list(stream.records))
    assert once == again
    assert once[0].trace_id == trace_id_of(RUN) and len(trace_id_of(RUN)) == 16
    assert once[0].span_id == run_span_id(RUN) and len(run_span_id(RUN)) == 8
    assert trace_id_of("r2") != trace_id_of(RUN)
    assert len({span.span_id for span in once}) == len(once)


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ],
    ids=["base", "trailing-slash", "full-path"],
)
def test_traces_url_appends_the_standard_path(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


def test_an_endpoint_that_is_not_an_http_url_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        traces_url("127.0.0.1:4318")
    assert str(caught.value) == (
        "config: telemetry.otlp_endpoint: expected an http(s) URL such as "
        "'http://127.0.0.1:4318', got '127.0.0.1:4318'"
    )
