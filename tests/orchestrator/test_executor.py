"""The executor: steps start as their own dependencies finish, bounded, with batching;
failures, timeouts and unstorable results fail one step and the rest goes on.

Timing tests run under `jump_clock` with sleeping steps: virtual time, so the start
of each step and the total are exact, and the tests take milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from agents.runs._executor import Executor, ExecutorOptions
from agents.runs._outcomes import StepOutcome
from agents.runs._plan import Plan, validate_plan
from agents.tools._registry import AgentRegistry
from events import EventStore, MemoryEventLog, StoreOptions, open_event_store

from .conftest import TIMEOUT_S, first, lab_registry, run_events, step_events
from .lab import Probe, sleep_step, step

DIAMOND = [
    sleep_step("a", 1),
    sleep_step("b", 2, ["a"]),
    sleep_step("c", 0.5, ["a"]),
    sleep_step("d", 1, ["b", "c"]),
]
FAN = [sleep_step(f"f{i}", 1) for i in range(5)] + [sleep_step("join", 0.5, ["f0", "f4"])]
CHAIN = [sleep_step("c0", 0.5)] + [sleep_step(f"c{i}", 0.5, [f"c{i - 1}"]) for i in range(1, 5)]
SHAPES = {
    # plan, expected start of each step, critical path, sum of all sleeps
    "diamond": (DIAMOND, {"a": 0, "b": 1, "c": 1, "d": 3}, 4.0, 4.5),
    "fan": (FAN, {**{f"f{i}": 0 for i in range(5)}, "join": 1}, 1.5, 5.5),
    "chain": (CHAIN, {f"c{i}": 0.5 * i for i in range(5)}, 2.5, 2.5),
}


async def execute(
    store: EventStore,
    registry: AgentRegistry,
    steps: list[dict[str, Any]],
    run_id: str = "r1",
    **options: Any,
) -> tuple[dict[str, StepOutcome], float]:
    """Run the plan; the outcomes and the elapsed (virtual) time."""
    plan = validate_plan(Plan.from_data(steps), registry.catalog())
    executor = Executor(store, registry, run_id, ExecutorOptions(**options))
    with trio.fail_after(TIMEOUT_S * 10):
        started = trio.current_time()
        outcomes = await executor.execute(plan)
        elapsed = trio.current_time() - started
        await executor.durable()  # its events are queued, not awaited, as it runs
        return outcomes, elapsed


def relative(times: dict[str, float], origin: float = 0.0) -> dict[str, float]:
    return {label: pytest.approx(t - origin, abs=1e-9) for label, t in times.items()}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
async def test_each_step_starts_when_its_own_dependencies_finish(
    shape: str, store: EventStore, registry: AgentRegistry, probe: Probe, jump_clock: MockClock
) -> None:
    steps, starts, critical_path, _ = SHAPES[shape]
    origin = trio.current_time()
    outcomes, elapsed = await execute(store, registry, steps)
    assert {o.status for o in outcomes.values()} == {"completed"}
    assert probe.times("start") == relative(starts, -origin)
    assert elapsed == pytest.approx(critical_path, abs=1e-9)


async def test_long_branch_does_not_hold_back_the_next_level_of_another(
    store: EventStore, registry: AgentRegistry, probe: Probe, jump_clock: MockClock
) -> None:
    # Level barriers would start "after_short" at 3 s, when the whole first level is done.
    steps = [sleep_step("short", 1), sleep_step("long", 3), sleep_step("after_short", 1, ["short"])]
    origin = trio.current_time()
    _, elapsed = await execute(store, registry, steps)
    assert probe.times("start")["after_short"] - origin == pytest.approx(1.0)
    assert probe.times("end")["after_short"] - origin == pytest.approx(2.0)
    assert elapsed == pytest.approx(3.0)


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
async def test_sequential_mode_takes_the_sum_of_the_steps(
    shape: str, store: EventStore, registry: AgentRegistry, probe: Probe, jump_clock: MockClock
) -> None:
    steps, _, _, total = SHAPES[shape]
    _, elapsed = await execute(store, registry, steps, parallel=False)
    assert elapsed == pytest.approx(total, abs=1e-9)
    assert probe.max_overlap() == 1


@pytest.mark.parametrize("limit", [1, 2, 3, 8], ids=lambda n: f"max-{n}")
async def test_parallel_steps_are_bounded_by_max_parallel_steps(
    limit: int, store: EventStore, registry: AgentRegistry, probe: Probe, jump_clock: MockClock
) -> None:
    steps = [sleep_step(f"f{i}", 1) for i in range(6)]
    _, elapsed = await execute(store, registry, steps, max_parallel_steps=limit)
    assert probe.max_overlap() == min(limit, 6)
    assert elapsed == pytest.approx(-(-6 // limit))


async def test_failed_step_skips_its_dependents_while_an_independent_branch_completes(
    store: EventStore, registry: AgentRegistry, probe: Probe, jump_clock: MockClock
) -> None:
    steps = [
        step("bad", "fail", message="the disk is on fire"),
        sleep_step("child", 1, ["bad"]),
        sleep_step("grandchild", 1, ["child"]),
        sleep_step("other", 2),
        sleep_step("after_other", 1, ["other"]),
    ]
    outcomes, elapsed = await execute(store, registry, steps)
    statuses = {sid: o.status for sid, o in outcomes.items()}
    assert statuses == {
        "bad": "failed",
        "child": "skipped",
        "grandchild": "skipped",
        "other": "completed",
        "after_other": "completed",
    }
    assert (outcomes["bad"].error_type, outcomes["bad"].message) == (
        "ToolError",
        "the disk is on fire",
    )
    assert outcomes["child"].message == "dependency bad did not complete"
    assert outcomes["grandchild"].message == "dependency child did not complete"
    assert "child" not in probe.times("start")
    assert elapsed == pytest.approx(3.0)


async def test_a_tool_with_effects_starts_only_once_its_start_is_on_disk(
    store: EventStore, tmp_path: Path
) -> None:
    """Pipelined appends: an idempotent step's events are queued without waiting, but a
    step whose tool is not idempotent acts only after its `StepStarted` (and everything
    queued before it) is durable, and its end is durable before its dependents start."""
    probe = Probe(tmp_path / "effects.log", head=lambda: store.head_position)
    steps = [
        step("t1", "touch", label="t1"),
        step("a1", "append", ["t1"], label="a1"),
        step("t2", "touch", ["a1"], label="t2"),
    ]
    await execute(store, lab_registry(probe), steps, run_id="fx")
    records = await run_events(store, "fx")
    started_a1 = first(records, "StepStarted", "a1")
    assert probe.head_at_effect["a1"] >= started_a1
    assert probe.head_at_effect["t2"] >= first(records, "StepCompleted", "a1")


async def test_step_events_are_appended_in_order_per_step(
    store: EventStore, registry: AgentRegistry, jump_clock: MockClock
) -> None:
    steps = [
        sleep_step("ok", 1),
        step("bad", "fail", ["ok"], message="no"),
        sleep_step("skipped", 1, ["bad"]),
    ]
    await execute(store, registry, steps, run_id="order")
    records = await run_events(store, "order")
    assert step_events(records) == {
        "ok": ["StepStarted", "StepCompleted"],
        "bad": ["StepStarted", "StepFailed"],
        "skipped": ["StepSkipped"],
    }
    by_type = {(r.type, r.data["step_id"]): r.data for r in records}
    assert by_type[("StepStarted", "ok")]["attempt"] == 1
    assert by_type[("StepCompleted", "ok")]["result"] == {"label": "ok", "slept": 1}
    assert by_type[("StepFailed", "bad")] | {"run_id": ""} == {
        "run_id": "",
        "step_id": "bad",
        "error_type": "ToolError",
        "message": "no",
        "retryable": False,
    }
    assert by_type[("StepSkipped", "skipped")]["reason"] == "dependency bad did not complete"
    assert all(r.correlation == "order" for r in records)


async def test_step_past_its_timeout_fails_and_other_branches_go_on(
    store: EventStore, registry: AgentRegistry, probe: Probe, jump_clock: MockClock
) -> None:
    steps = [
        step("stuck", "hang", label="stuck"),
        sleep_step("one", 3),
        sleep_step("two", 3, ["one"]),
    ]
    outcomes, elapsed = await execute(store, registry, steps, run_id="t", step_timeout_s=5)
    stuck = outcomes["stuck"]
    assert (stuck.status, stuck.error_type, stuck.message, stuck.retryable) == (
        "failed",
        "StepTimeout",
        "timed out after 5 s",
        True,
    )
    assert outcomes["one"].status == outcomes["two"].status == "completed"
    assert elapsed == pytest.approx(6.0)
    records = await run_events(store, "t")
    # At 5 s, while "two" still ran.
    assert first(records, "StepStarted", "two") < first(records, "StepFailed", "stuck")
    assert first(records, "StepFailed", "stuck") < first(records, "StepCompleted", "two")


async def test_unserialisable_result_fails_the_step_and_others_go_on(
    store: EventStore, registry: AgentRegistry, jump_clock: MockClock
) -> None:
    steps = [step("weird", "odd", kind="object"), sleep_step("fine", 1)]
    outcomes, _ = await execute(store, registry, steps, run_id="u")
    weird = outcomes["weird"]
    assert (weird.status, weird.error_type) == ("failed", "UnserialisableResult")
    assert weird.message is not None and weird.message.startswith("tool returned object: ")
    assert outcomes["fine"].status == "completed"
    assert step_events(await run_events(store, "u"))["weird"] == ["StepStarted", "StepFailed"]


async def test_result_with_integer_keys_is_stored_and_reads_back(
    store: EventStore, registry: AgentRegistry, jump_clock: MockClock
) -> None:
    # msgpack packs {2024: ...}; the log must read such a map back, not call it corrupt.
    outcomes, _ = await execute(store, registry, [step("years", "odd", kind="int_keys")], "k")
    records = await run_events(store, "k")
    assert outcomes["years"].status == "completed"
    assert records[-1].type == "StepCompleted"
    assert records[-1].data["result"] == {2024: 1.5, 2025: 2.5}


async def test_result_too_large_for_the_log_fails_only_its_step(
    registry: AgentRegistry, jump_clock: MockClock
) -> None:
    options = StoreOptions(max_event_bytes=100_000)
    async with open_event_store(log=MemoryEventLog(), options=options) as store:
        steps = [step("big", "odd", kind="huge"), sleep_step("fine", 1)]
        outcomes, _ = await execute(store, registry, steps, run_id="big")
        big = outcomes["big"]
        assert (big.status, big.error_type) == ("failed", "UnstorableResult")
        assert big.message is not None and "store.max_event_bytes" in big.message
        assert outcomes["fine"].status == "completed"
        assert step_events(await run_events(store, "big"))["big"] == ["StepStarted", "StepFailed"]


async def test_parameters_resolve_references_to_dependencies_results(
    store: EventStore, registry: AgentRegistry, jump_clock: MockClock
) -> None:
    steps = [
        sleep_step("s1", 2),
        step("whole", "echo", value="${s1}"),
        step("field", "echo", value="${s1.slept}"),
        step("text", "echo", value="${s1.label} slept ${s1.slept} s"),
        step("broken", "echo", value="${s1.snored}"),
    ]
    outcomes, _ = await execute(store, registry, steps)
    assert outcomes["whole"].result == {"value": {"label": "s1", "slept": 2}}
    assert outcomes["field"].result == {"value": 2}
    assert outcomes["text"].result == {"value": "s1 slept 2 s"}
    broken = outcomes["broken"]
    assert (broken.status, broken.error_type, broken.message) == (
        "failed",
        "ToolError",
        "step 's1' result has no field 'snored'",
    )


async def test_independent_batchable_steps_are_merged_into_one_batch_call(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    steps = [step("k1", "lookup", key="a"), step("k2", "lookup", key="bbb")]
    outcomes, _ = await execute(store, registry, steps, run_id="b")
    assert probe.calls == {"lookup_many": 1}
    assert outcomes["k1"].result == {"key": "a", "value": 1}
    assert outcomes["k2"].result == {"key": "bbb", "value": 3}
    records = await run_events(store, "b")
    assert step_events(records) == {
        "k1": ["StepStarted", "StepCompleted"],
        "k2": ["StepStarted", "StepCompleted"],
    }
    results = {r.data["step_id"]: r.data["result"] for r in records if r.type == "StepCompleted"}
    assert results == {"k1": {"key": "a", "value": 1}, "k2": {"key": "bbb", "value": 3}}


async def execute_streamed(
    store: EventStore, registry: AgentRegistry, steps: list[dict[str, Any]], **options: Any
) -> dict[str, StepOutcome]:
    """Run the plan's steps as a streamed plan hands them over, one at a time."""
    plan = validate_plan(Plan.from_data(steps), registry.catalog())
    executor = Executor(store, registry, "s", ExecutorOptions(**options))
    send, receive = trio.open_memory_channel[Any](0)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.execute_stream, receive)
            async with send:
                for planned in plan.steps:
                    await send.send(planned)
        await executor.durable()
    return executor.outcomes


async def test_streamed_siblings_are_merged_into_one_batch_call(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    steps = [step("k1", "lookup", key="a"), step("k2", "lookup", key="bbb")]
    outcomes = await execute_streamed(store, registry, steps)
    assert probe.calls == {"lookup_many": 1}
    assert outcomes["k1"].result == {"key": "a", "value": 1}
    assert outcomes["k2"].result == {"key": "bbb", "value": 3}


async def test_a_streamed_step_of_another_tool_releases_the_held_batch(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    steps = [
        step("k1", "lookup", key="a"),
        step("k2", "lookup", key="bbb"),
        step("e", "echo", value="x"),
        step("k3", "lookup", key="cc"),
    ]
    outcomes = await execute_streamed(store, registry, steps)
    assert probe.calls == {"lookup_many": 1, "lookup": 1}  # k1+k2 together, k3 alone
    assert {o.status for o in outcomes.values()} == {"completed"}


async def test_streamed_steps_with_batching_off_call_the_tool_each(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    steps = [step("k1", "lookup", key="a"), step("k2", "lookup", key="bbb")]
    await execute_streamed(store, registry, steps, batching=False)
    assert probe.calls == {"lookup": 2}


async def test_with_batching_off_each_step_calls_the_tool(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    steps = [step("k1", "lookup", key="a"), step("k2", "lookup", key="bbb")]
    outcomes, _ = await execute(store, registry, steps, batching=False)
    assert probe.calls == {"lookup": 2}
    assert {o.status for o in outcomes.values()} == {"completed"}


async def test_batchable_steps_with_different_dependencies_are_not_merged(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    steps = [step("k1", "lookup", key="a"), step("k2", "lookup", ["k1"], key="b")]
    await execute(store, registry, steps)
    assert probe.calls == {"lookup": 2}


async def test_failed_item_of_a_batch_fails_only_its_own_step(
    store: EventStore, registry: AgentRegistry, probe: Probe
) -> None:
    steps = [
        step("k1", "lookup", key="a"),
        step("k2", "lookup", key="missing"),
        step("after", "echo", ["k2"], value="${k2}"),
    ]
    outcomes, _ = await execute(store, registry, steps, run_id="bf")
    assert probe.calls == {"lookup_many": 1}
    assert outcomes["k1"].status == "completed"
    assert (outcomes["k2"].status, outcomes["k2"].message) == ("failed", "no value for 'missing'")
    assert outcomes["after"].status == "skipped"
