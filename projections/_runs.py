"""The `runs` projection: every run with its plan and each step's status, attempts,
timings, result and verification. It is what `runs list/show` print and what resume
reads to know which steps are done.
"""

from __future__ import annotations

from typing import Any

from events import TERMINAL_RUN_STATUS, RecordedEvent
from projections._base import Projection

TERMINAL = frozenset(TERMINAL_RUN_STATUS.values())


def run_key(run_id: str) -> bytes:
    return b"r/" + run_id.encode()


def _new_step(step_id: str) -> dict[str, Any]:
    return {
        "step_id": step_id,
        "status": "pending",
        "attempts": 0,
        "started_ts": None,
        "ended_ts": None,
        "duration_s": None,
        "result": None,
        "error": None,
        "verification": None,
    }


class RunsProjection(Projection):
    name = "runs"
    version = 2  # 2: principal, retry_of / retried_by, reused steps

    def _run(self, record: RecordedEvent) -> dict[str, Any]:
        run_id = record.data["run_id"]
        return self.load(run_key(run_id)) or {
            "run_id": run_id,
            "session_id": None,
            "goal": None,
            "status": "requested",
            "intent": None,
            "plan": [],
            "steps": {},
            "answer": None,
            "reason": None,
            "requested_ts": record.ts,
            "ended_ts": None,
            "last_ts": record.ts,
            "replans": 0,
            "resumes": 0,
            "last_position": record.position,
        }

    def _store(self, run: dict[str, Any], record: RecordedEvent) -> None:
        run["last_ts"] = record.ts
        run["last_position"] = record.position
        self.save(run_key(run["run_id"]), run)

    def _step(self, run: dict[str, Any], step_id: str) -> dict[str, Any]:
        steps: dict[str, Any] = run["steps"]
        if step_id not in steps:
            steps[step_id] = _new_step(step_id)
        step: dict[str, Any] = steps[step_id]
        return step

    def _finish(self, record: RecordedEvent, status: str, **fields: Any) -> None:
        run = self._run(record)
        run.update(status=status, ended_ts=record.ts, **fields)
        self._store(run, record)

    def _on_RunRequested(self, record: RecordedEvent) -> None:
        run = self._run(record)
        run.update(
            session_id=record.data["session_id"],
            goal=record.data["goal"],
            requested_ts=record.ts,
            principal=record.data.get("principal") or None,
            retry_of=record.data.get("retry_of") or None,
        )
        self._store(run, record)

    def _on_RunRetried(self, record: RecordedEvent) -> None:
        run = self._run(record)
        run["retried_by"] = record.data["new_run_id"]
        self._store(run, record)

    def _on_StepReused(self, record: RecordedEvent) -> None:
        run = self._run(record)
        step = self._step(run, record.data["step_id"])
        step.update(
            status="completed",
            started_ts=record.ts,
            ended_ts=record.ts,
            duration_s=0.0,
            result=record.data["result"],
            error=None,
            reused_from=record.data["from_run_id"],
        )
        self._store(run, record)

    def _on_IntentAnalyzed(self, record: RecordedEvent) -> None:
        run = self._run(record)
        run["intent"] = {"intent": record.data["intent"], "entities": record.data["entities"]}
        self._store(run, record)

    def _on_PlanCreated(self, record: RecordedEvent) -> None:
        run = self._run(record)
        run["plan"] = record.data["steps"]
        for planned in record.data["steps"]:
            self._step(run, str(planned.get("id")))
        if run["status"] not in TERMINAL:
            run["status"] = "running"
        self._store(run, record)

    def _on_StepStarted(self, record: RecordedEvent) -> None:
        run = self._run(record)
        step = self._step(run, record.data["step_id"])
        step.update(
            status="running",
            attempts=record.data.get("attempt", 1),
            started_ts=record.ts,
            ended_ts=None,
        )
        self._store(run, record)

    def _on_StepCompleted(self, record: RecordedEvent) -> None:
        run = self._run(record)
        step = self._step(run, record.data["step_id"])
        step.update(
            status="completed",
            ended_ts=record.ts,
            duration_s=record.data["duration_s"],
            result=record.data["result"],
            error=None,
        )
        self._store(run, record)

    def _on_StepFailed(self, record: RecordedEvent) -> None:
        run = self._run(record)
        step = self._step(run, record.data["step_id"])
        error = {k: record.data[k] for k in ("error_type", "message", "retryable")}
        step.update(status="failed", ended_ts=record.ts, error=error)
        self._store(run, record)

    def _on_StepSkipped(self, record: RecordedEvent) -> None:
        run = self._run(record)
        step = self._step(run, record.data["step_id"])
        step.update(status="skipped", ended_ts=record.ts, error={"reason": record.data["reason"]})
        self._store(run, record)

    def _on_VerificationCompleted(self, record: RecordedEvent) -> None:
        run = self._run(record)
        step = self._step(run, record.data["step_id"])
        step["verification"] = {
            "passed": record.data["passed"],
            "confidence": record.data["confidence"],
            "notes": record.data.get("notes", ""),
            "ts": record.ts,
        }
        self._store(run, record)

    def _on_ReplanRequested(self, record: RecordedEvent) -> None:
        run = self._run(record)
        run["replans"] += 1
        self._store(run, record)

    def _on_RunResumed(self, record: RecordedEvent) -> None:
        run = self._run(record)
        run["resumes"] += 1
        run["ended_ts"] = None
        run["reason"] = None
        run["status"] = "running" if run["plan"] else "requested"
        self._store(run, record)

    def _on_RunCompleted(self, record: RecordedEvent) -> None:
        self._finish(record, "completed", answer=record.data["answer"])

    def _on_RunFailed(self, record: RecordedEvent) -> None:
        self._finish(record, "failed", reason=record.data["reason"])

    def _on_RunCancelled(self, record: RecordedEvent) -> None:
        self._finish(record, "cancelled", reason=record.data.get("reason"))
