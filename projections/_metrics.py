"""The `metrics` projection: latency per phase (p50/p95/p99), LLM calls and tokens per
run, outcome counters and cache hit rates, all derived from event timestamps and
payloads. Its state lives in memory and is persisted by snapshots.

LLM usage per run is kept only for runs in progress; a finished run's usage is folded
into totals, so the snapshot does not grow with the length of the log.

Phases: plan (RunRequested -> PlanCreated), step (StepCompleted.duration_s), verify
(StepCompleted -> VerificationCompleted), llm_call (LLMCallCompleted.latency_s), run
(RunRequested -> RunCompleted/RunFailed/RunCancelled).
A cache hit is an `LLMCallCompleted` whose outcome is "cached".
"""

from __future__ import annotations

from typing import Any

from events import RecordedEvent
from projections._base import SnapshottingProjection
from projections._histogram import LatencyHistogram

PHASES = ("plan", "step", "verify", "llm_call", "run")
MAX_RUNS_TRACKED = 100_000


class MetricsProjection(SnapshottingProjection):
    name = "metrics"
    version = 3  # 3: 2 % histogram buckets

    def __init__(self) -> None:
        super().__init__()
        self.restore_state(None)

    def restore_state(self, state: Any) -> None:
        state = state or {}
        self.latency = {
            phase: LatencyHistogram.from_data(state["latency"][phase])
            if state
            else LatencyHistogram()
            for phase in PHASES
        }
        self.counters: dict[str, int] = dict(state.get("counters", {}))
        self.open_runs: dict[str, int] = dict(state.get("open_runs", {}))
        self.completed_steps: dict[str, int] = dict(state.get("completed_steps", {}))
        self.llm_by_run: dict[str, list[int]] = {
            k: list(v) for k, v in state.get("llm_by_run", {}).items()
        }

    def snapshot_state(self) -> Any:
        return {
            "latency": {phase: h.to_data() for phase, h in self.latency.items()},
            "counters": self.counters,
            "open_runs": self.open_runs,
            "completed_steps": self.completed_steps,
            "llm_by_run": self.llm_by_run,
        }

    def _count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def _on_RunRequested(self, record: RecordedEvent) -> None:
        self.open_runs[record.data["run_id"]] = record.ts
        self._count("runs_requested")

    def _on_PlanCreated(self, record: RecordedEvent) -> None:
        started = self.open_runs.get(record.data["run_id"])
        if started is not None:
            self.latency["plan"].observe((record.ts - started) / 1e9)
        self._count("plans")

    def _on_StepCompleted(self, record: RecordedEvent) -> None:
        self.latency["step"].observe(record.data["duration_s"])
        self.completed_steps[f"{record.data['run_id']}/{record.data['step_id']}"] = record.ts
        self._count("steps_completed")

    def _on_StepFailed(self, record: RecordedEvent) -> None:
        self._count("steps_failed")

    def _on_StepSkipped(self, record: RecordedEvent) -> None:
        self._count("steps_skipped")

    def _on_VerificationCompleted(self, record: RecordedEvent) -> None:
        done = self.completed_steps.pop(f"{record.data['run_id']}/{record.data['step_id']}", None)
        if done is not None:
            self.latency["verify"].observe((record.ts - done) / 1e9)
        self._count("verifications_passed" if record.data["passed"] else "verifications_failed")

    def _on_LLMCallCompleted(self, record: RecordedEvent) -> None:
        data = record.data
        self.latency["llm_call"].observe(data["latency_s"])
        tokens = data["prompt_tokens"] + data["completion_tokens"]
        self._count("llm_calls")
        self._count("llm_tokens", tokens)
        self._count("llm_retries", data.get("retries", 0))
        self._count("llm_cache_hits" if data.get("outcome") == "cached" else "llm_cache_misses")
        if data.get("outcome") not in ("ok", "cached"):
            self._count("llm_errors")
        if data.get("run_id"):
            calls = self.llm_by_run.setdefault(data["run_id"], [0, 0])
            calls[0] += 1
            calls[1] += tokens
            if len(self.llm_by_run) > MAX_RUNS_TRACKED:
                self.llm_by_run.pop(next(iter(self.llm_by_run)))

    def _end_run(self, record: RecordedEvent, outcome: str) -> None:
        # Fold the finished run's LLM usage into totals: the state stays bounded by the
        # runs in progress, however many runs the log holds.
        usage = self.llm_by_run.pop(record.data["run_id"], None)
        if usage is not None:
            self._count("llm_runs_finished")
            self._count("llm_calls_finished_runs", usage[0])
            self._count("llm_tokens_finished_runs", usage[1])
        started = self.open_runs.pop(record.data["run_id"], None)
        if started is not None:
            self.latency["run"].observe((record.ts - started) / 1e9)
        prefix = record.data["run_id"] + "/"
        for key in [k for k in self.completed_steps if k.startswith(prefix)]:
            del self.completed_steps[key]
        self._count(f"runs_{outcome}")

    def _on_RunCompleted(self, record: RecordedEvent) -> None:
        self._end_run(record, "completed")

    def _on_RunFailed(self, record: RecordedEvent) -> None:
        self._end_run(record, "failed")

    def _on_RunCancelled(self, record: RecordedEvent) -> None:
        self._end_run(record, "cancelled")

    def summary(self) -> dict[str, Any]:
        """Everything `stats` and `/metrics` show, as plain data."""
        with self.lock:
            calls = self.counters.get("llm_calls", 0)
            runs = len(self.llm_by_run) + self.counters.get("llm_runs_finished", 0)
            run_calls = sum(c for c, _ in self.llm_by_run.values())
            run_tokens = sum(t for _, t in self.llm_by_run.values())
            run_calls += self.counters.get("llm_calls_finished_runs", 0)
            run_tokens += self.counters.get("llm_tokens_finished_runs", 0)
            return {
                "latency_s": {phase: h.summary() for phase, h in self.latency.items()},
                "counters": dict(sorted(self.counters.items())),
                "llm_calls_per_run": run_calls / runs if runs else 0.0,
                "llm_tokens_per_run": run_tokens / runs if runs else 0.0,
                "cache_hit_rate": self.counters.get("llm_cache_hits", 0) / calls if calls else 0.0,
                "open_runs": len(self.open_runs),
            }
