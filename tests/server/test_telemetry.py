"""Runs' traces exported live to an OTLP/HTTP collector, and again from the log.

The application is the one `autoagent serve` runs (`open_application`, the offline
model, the LMDB log with sealing); only the embedder is the tests' hash embedder. The
collector is `otlp_receiver`: a real HTTP server on 127.0.0.1 port 0 that decodes each
request with opentelemetry-proto. Nothing waits on the clock: the tests wait for the
requests to arrive, bounded by `fail_after`.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from events import EventStore, RecordedEvent
from projections import MemoryStateStore
from server.app import open_application
from server.cli._main import main
from server.config import Config, load_config
from tests.security.principal_server import hash_embedder, running_server
from tests.server.otlp_receiver import closed_port, open_receiver
from tests.server.ws_helpers import open_client

TIMEOUT_S = 60
SECRET = "zebra-4417"
GOALS = (
    "what is 17 * 23 + 4 and what time is it in Tokyo",
    f"remember that my locker code is {SECRET}",
)
# Words of the goals and answers that must never reach a span.
PERSONAL_WORDS = ("17 * 23", "Tokyo", SECRET, "locker")


def telemetry_config(tmp_path: Path, endpoint: str) -> Config:
    return load_config(
        env={
            "AUTOAGENT_AGENTS__WORKSPACE_ROOTS": json.dumps([str(tmp_path / "workspace")]),
            "AUTOAGENT_STORE__SYNC": "false",
            "AUTOAGENT_STORE__MAP_SIZE_MB": "64",
            "AUTOAGENT_TELEMETRY__OTLP_ENDPOINT": endpoint,
        },
        data_dir=tmp_path / "data",
    )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


def _json_value(value: dict[str, Any]) -> Any:
    ((kind, item),) = value.items()
    return int(item) if kind == "intValue" else item


def _normalized_pb(span: Span) -> tuple[Any, ...]:
    return (
        span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        span.name,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.status.code,
        tuple(sorted(attributes(span.attributes).items())),
    )


def _normalized_json(span: dict[str, Any]) -> tuple[Any, ...]:
    return (
        span["traceId"],
        span["spanId"],
        span.get("parentSpanId", ""),
        span["name"],
        int(span["startTimeUnixNano"]),
        int(span["endTimeUnixNano"]),
        span["status"].get("code", 0),
        tuple(sorted((a["key"], _json_value(a["value"])) for a in span.get("attributes", []))),
    )


async def run_records(store: EventStore, run_id: str) -> list[RecordedEvent]:
    return await store.read_stream(f"run-{run_id}", 0, 10_000)


def _strings(span: Span) -> list[str]:
    """Every text a span carries: its name, attribute and event values."""
    texts = [span.name, span.status.message]
    pairs: list[KeyValue] = [*span.attributes]
    for event in span.events:
        texts.append(event.name)
        pairs.extend(event.attributes)
    texts += [str(_value(kv.value)) for kv in pairs]
    return texts


async def test_each_run_is_one_trace_of_its_steps_and_llm_calls(tmp_path: Path) -> None:
    async with open_receiver() as receiver:
        config = telemetry_config(tmp_path, receiver.endpoint)
        with trio.fail_after(TIMEOUT_S):
            async with open_application(
                config, state=MemoryStateStore(), embedder_factory=hash_embedder
            ) as app:
                results = [await app.orchestrator.run_goal(goal) for goal in GOALS]
                traces = await receiver.wait_for_traces(len(GOALS))
                records = {r.run_id: await run_records(app.store, r.run_id) for r in results}
    assert [r.status for r in results] == ["completed", "completed"], results
    assert {r.path for r in receiver.received} == {"/v1/traces"}
    assert {r.content_type for r in receiver.received} == {"application/x-protobuf"}

    by_run = {}
    for spans in traces.values():
        roots = [s for s in spans if not s.parent_span_id]
        assert len(roots) == 1
        by_run[attributes(roots[0].attributes)["autoagent.run.id"]] = (roots[0], spans)
    assert sorted(by_run) == sorted(r.run_id for r in results)  # one trace per run

    for result in results:
        root, spans = by_run[result.run_id]
        events = records[result.run_id]
        run_attributes = attributes(root.attributes)
        assert root.name == "invoke_agent autoagent"
        assert run_attributes["autoagent.session.id"] == result.session_id
        assert run_attributes["autoagent.run.status"] == "completed"
        assert root.start_time_unix_nano == events[0].ts  # RunRequested
        children = [s for s in spans if s is not root]
        assert {s.parent_span_id for s in children} == {root.span_id}
        assert {s.trace_id for s in spans} == {root.trace_id}

        steps = [s for s in children if s.name.startswith("execute_tool ")]
        started = [r for r in events if r.type == "StepStarted"]
        assert sorted(s.start_time_unix_nano for s in steps) == sorted(r.ts for r in started)
        for step in steps:
            step_attributes = attributes(step.attributes)
            assert step.name == "execute_tool " + step_attributes["gen_ai.tool.name"]
            assert step_attributes["autoagent.step.status"] == "completed"
            assert step_attributes["autoagent.step.attempt"] == 1

        calls = [s for s in children if s.kind == Span.SPAN_KIND_CLIENT]
        logged = [r.data for r in events if r.type == "LLMCallCompleted"]
        assert logged  # the offline model's calls are events too
        assert Counter(
            (
                attributes(c.attributes)["gen_ai.request.model"],
                attributes(c.attributes)["gen_ai.usage.input_tokens"],
                attributes(c.attributes)["gen_ai.usage.output_tokens"],
            )
            for c in calls
        ) == Counter((d["model"], d["prompt_tokens"], d["completion_tokens"]) for d in logged)
        assert all(attributes(c.attributes)["gen_ai.operation.name"] == "chat" for c in calls)
        assert run_attributes["gen_ai.usage.input_tokens"] == sum(
            d["prompt_tokens"] for d in logged
        )
        assert len(children) == len(steps) + len(calls)

    tools = {attributes(s.attributes).get("gen_ai.tool.name") for s in receiver.spans()}
    assert {"math.calculate", "clock.now", "memory.remember"} <= tools

    # No goal, result or answer in any span, nor anywhere in the requests' bytes.
    texts = [text for span in receiver.spans() for text in _strings(span)]
    answers = [r.answer for r in results if r.answer]
    for word in (*PERSONAL_WORDS, *GOALS, *answers):
        assert not any(word in text for text in texts), word
        assert all(word.encode() not in r.body for r in receiver.received), word

    # From the log, after the fact: the same trace, ids and times included.
    for result in results:
        out = io.StringIO()
        data_dir = str(tmp_path / "data")
        assert (
            main(["runs", "trace", result.run_id, "--otlp-json", "--data-dir", data_dir], out) == 0
        )
        exported = json.loads(out.getvalue())
        (resource,) = exported["resourceSpans"]
        (scope,) = resource["scopeSpans"]
        again = sorted(_normalized_json(span) for span in scope["spans"])
        assert again == sorted(_normalized_pb(span) for span in by_run[result.run_id][1])


async def test_runs_trace_lists_the_spans_of_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = telemetry_config(tmp_path, "")  # no collector: the log alone is enough
    with trio.fail_after(TIMEOUT_S):
        async with open_application(
            config, state=MemoryStateStore(), embedder_factory=hash_embedder
        ) as app:
            assert app.traces is None
            result = await app.orchestrator.run_goal(GOALS[0])
    out = io.StringIO()
    assert main(["runs", "trace", result.run_id, "--data-dir", str(tmp_path / "data")], out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trace ") and f"run {result.run_id}" in lines[0]
    assert lines[1].split() == ["span", "start", "s", "duration", "s", "status"]
    names = [re.split(r"\s{2,}", line.strip())[0] for line in lines[3:]]
    assert names[0] == "invoke_agent autoagent"
    assert "execute_tool math.calculate" in names and "execute_tool clock.now" in names
    assert any(name.startswith("chat ") for name in names)
    assert lines[3].split()[-1] == "completed"
    data_dir = str(tmp_path / "data")
    assert main(["runs", "trace", "nope", "--data-dir", data_dir], io.StringIO()) == 2
    assert capsys.readouterr().err == "autoagent: error: no run with id 'nope'\n"


async def test_a_collector_that_refuses_at_first_gets_the_trace_on_a_retry(
    tmp_path: Path,
) -> None:
    async with open_receiver(answers=[503]) as receiver:
        config = telemetry_config(tmp_path, receiver.endpoint)
        with trio.fail_after(TIMEOUT_S):
            async with open_application(
                config, state=MemoryStateStore(), embedder_factory=hash_embedder
            ) as app:
                result = await app.orchestrator.run_goal(GOALS[0])
                traces = await receiver.wait_for_traces(1)
                assert app.traces is not None
    assert [r.status for r in receiver.received] == [503, 200]
    assert receiver.received[0].body == receiver.received[1].body
    (spans,) = traces.values()
    root = next(s for s in spans if not s.parent_span_id)
    assert attributes(root.attributes)["autoagent.run.id"] == result.run_id
    assert app.traces.statistics().exported_runs == 1


async def test_with_the_collector_down_runs_complete_and_the_server_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = telemetry_config(tmp_path, f"http://127.0.0.1:{await closed_port()}")
    caplog.set_level(logging.WARNING, logger="server.telemetry")
    with trio.fail_after(TIMEOUT_S):
        async with running_server(config) as running, open_client(running.url) as client:
            for index, goal in enumerate(GOALS):
                accepted = await client.request(
                    {"type": "message", "id": f"m{index}", "text": goal}
                )
                assert accepted["type"] == "accepted", accepted
                events = await client.events_until()
                assert events[-1]["event_type"] == "RunCompleted"
            assert (await client.request({"type": "ping", "id": "p"}))["type"] == "pong"
            traces = running.app.traces
    assert traces is not None
    statistics = traces.statistics()  # at shutdown the last batches get one attempt each
    assert (statistics.exported_runs, statistics.failed_runs) == (0, 2)
    assert statistics.pending_runs == 0
    assert "ConnectError" in statistics.last_problem
    assert any("traces not exported to" in r.getMessage() for r in caplog.records)
