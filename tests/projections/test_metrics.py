"""The metrics projection (latency per phase from event timestamps, LLM calls and
tokens per run, cache hit rate) and the latency histogram behind it."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import msgpack
import pytest
import trio

from events import (
    LLMCallCompleted,
    LmdbEventLog,
    PlanCreated,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    StepCompleted,
    StepFailed,
    StepSkipped,
    VerificationCompleted,
)
from projections import LatencyHistogram, MetricsProjection, ProjectionRunner, StateStore

from .helpers import TIMEOUT_S, EventWriter, in_thread


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def close_to(measured: float, exact: float) -> bool:
    return abs(measured - exact) <= 0.02 * exact


def llm_call(run_id: str | None, tokens: tuple[int, int], outcome: str = "ok") -> LLMCallCompleted:
    return LLMCallCompleted(
        run_id=run_id,
        purpose="plan",
        model="m",
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        latency_s=0.5,
        outcome=outcome,
    )


async def metrics_of(log: LmdbEventLog, state: StateStore) -> MetricsProjection:
    projection = MetricsProjection()
    runner = ProjectionRunner(log, state, [projection], snapshot_every=1000)
    runner.prepare()
    await in_thread(runner.catch_up)
    return projection


# --- the projection ---------------------------------------------------------------------


async def test_phase_latencies_come_from_event_timestamps(
    log: LmdbEventLog, writer: EventWriter, state: StateStore
) -> None:
    # 100 runs: run k plans in k*0.1 s, its step takes k*0.01 s, is verified k*0.02 s
    # after completion, and the run ends k s after its request.
    with trio.fail_after(TIMEOUT_S):
        w = writer
        for k in range(1, 101):
            run, start = f"r{k}", k * 1000.0
            w.add(f"run-{run}", RunRequested(run_id=run, session_id="s", goal="g"), at=start)
            w.add(f"run-{run}", PlanCreated(run_id=run, steps=[]), at=start + k * 0.1)
            done = StepCompleted(run_id=run, step_id="a", result=None, duration_s=k * 0.01)
            w.add(f"run-{run}", done, at=start + k * 0.5)
            verified = VerificationCompleted(
                run_id=run, step_id="a", passed=k % 10 != 0, confidence=1.0
            )
            w.add(f"run-{run}", verified, at=start + k * 0.5 + k * 0.02)
            w.add(f"run-{run}", RunCompleted(run_id=run, answer="x"), at=start + k)
        summary = (await metrics_of(log, state)).summary()
        latency = summary["latency_s"]
        for phase, unit in (("plan", 0.1), ("step", 0.01), ("verify", 0.02), ("run", 1.0)):
            assert latency[phase]["count"] == 100, phase
            for q in (50, 95, 99):
                assert close_to(latency[phase][f"p{q}"], q * unit), (phase, q, latency[phase])
            assert latency[phase]["max"] == pytest.approx(100 * unit)
            assert latency[phase]["mean"] == pytest.approx(50.5 * unit)
        assert summary["counters"]["runs_completed"] == 100
        assert summary["counters"]["verifications_failed"] == 10
        assert summary["counters"]["verifications_passed"] == 90
        assert summary["open_runs"] == 0


async def test_llm_calls_and_tokens_per_run_and_cache_hit_rate(
    log: LmdbEventLog, writer: EventWriter, state: StateStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        writer.add("run-a", llm_call("a", (100, 50)))
        writer.add("run-a", llm_call("a", (10, 0), outcome="cached"))
        writer.add("run-b", llm_call("b", (200, 100)))
        writer.add("run-b", llm_call("b", (0, 0), outcome="error"))
        writer.add("run-x", llm_call(None, (1, 1), outcome="cached"))  # not in a run
        metrics = await metrics_of(log, state)
        assert metrics.llm_by_run == {"a": [2, 160], "b": [2, 300]}
        summary = metrics.summary()
        assert summary["llm_calls_per_run"] == 2.0
        assert summary["llm_tokens_per_run"] == 230.0
        assert summary["cache_hit_rate"] == pytest.approx(2 / 5)
        counters = summary["counters"]
        assert (counters["llm_calls"], counters["llm_tokens"]) == (5, 462)
        assert (counters["llm_cache_hits"], counters["llm_cache_misses"]) == (2, 3)
        assert counters["llm_errors"] == 1
        assert summary["latency_s"]["llm_call"]["count"] == 5


async def test_run_outcomes_and_step_failures_are_counted(
    log: LmdbEventLog, writer: EventWriter, state: StateStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        for run in ("ok", "bad", "stop", "open"):
            writer.add(f"run-{run}", RunRequested(run_id=run, session_id="s", goal="g"))
        writer.add("run-ok", RunCompleted(run_id="ok", answer="y"))
        writer.add(
            "run-bad",
            StepFailed(run_id="bad", step_id="a", error_type="E", message="m", retryable=False),
        )
        writer.add("run-bad", StepSkipped(run_id="bad", step_id="b", reason="a failed"))
        writer.add("run-bad", RunFailed(run_id="bad", reason="a failed"))
        writer.add("run-stop", RunCancelled(run_id="stop"))
        summary = (await metrics_of(log, state)).summary()
        counters = summary["counters"]
        assert {k: counters[k] for k in counters if k.startswith(("runs_", "steps_"))} == {
            "runs_requested": 4,
            "runs_completed": 1,
            "runs_failed": 1,
            "runs_cancelled": 1,
            "steps_failed": 1,
            "steps_skipped": 1,
        }
        assert summary["open_runs"] == 1
        assert summary["latency_s"]["run"]["count"] == 3


async def test_metrics_snapshot_restores_the_same_summary(
    log: LmdbEventLog, writer: EventWriter, state: StateStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        for k in range(1, 30):
            writer.add(f"run-{k}", RunRequested(run_id=str(k), session_id="s", goal="g"), at=k)
            writer.add(f"run-{k}", llm_call(str(k), (k, k), "cached" if k % 3 else "ok"))
            writer.add(f"run-{k}", RunCompleted(run_id=str(k), answer="a"), at=k + k / 10)
        first = MetricsProjection()
        runner = ProjectionRunner(log, state, [first], snapshot_every=1000)
        runner.prepare()
        await in_thread(runner.catch_up)
        runner.flush_snapshots()
        second = MetricsProjection()
        restarted = ProjectionRunner(log, state, [second], snapshot_every=1000)
        restarted.prepare()
        assert second.summary() == first.summary()
        assert second.snapshot_state() == first.snapshot_state()


# --- the histogram ----------------------------------------------------------------------


DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "uniform": lambda rng: rng.uniform(0.001, 10.0),
    "exponential": lambda rng: rng.expovariate(5.0),
    "lognormal": lambda rng: rng.lognormvariate(-1.0, 1.5),
    "bimodal": lambda rng: rng.gauss(0.05, 0.005) if rng.random() < 0.9 else rng.gauss(3, 0.3),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS), ids=sorted(DISTRIBUTIONS))
def test_histogram_percentiles_within_2_percent(name: str) -> None:
    rng = random.Random(name)
    values = [max(2e-4, DISTRIBUTIONS[name](rng)) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.observe(value)
    for q in (50, 90, 95, 99, 99.9):
        exact = nearest_rank(values, q)
        assert close_to(histogram.percentile(q), exact), (q, histogram.percentile(q), exact)
    summary = histogram.summary()
    assert summary["count"] == len(values)
    assert summary["max"] == max(values)
    assert summary["mean"] == pytest.approx(sum(values) / len(values))
    assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]


def test_histogram_of_one_value_reports_that_value() -> None:
    histogram = LatencyHistogram()
    histogram.observe(0.123)
    assert [histogram.percentile(q) for q in (1, 50, 100)] == [0.123] * 3


def test_empty_histogram_reports_zeros() -> None:
    summary = LatencyHistogram().summary()
    assert summary == {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}


def test_negative_and_tiny_latencies_are_clamped_into_the_first_bucket() -> None:
    histogram = LatencyHistogram()
    for value in (-1.0, 0.0, 1e-6):
        histogram.observe(value)
    assert histogram.summary()["max"] == 1e-6
    assert histogram.percentile(100) <= 1e-4


def test_histogram_round_trips_through_msgpack() -> None:
    rng = random.Random(1)
    histogram = LatencyHistogram()
    for _ in range(1000):
        histogram.observe(rng.expovariate(2.0))
    packed = msgpack.packb(histogram.to_data(), use_bin_type=True)
    restored = LatencyHistogram.from_data(msgpack.unpackb(packed, strict_map_key=False))
    assert restored.summary() == histogram.summary()
    assert restored.to_data() == histogram.to_data()
