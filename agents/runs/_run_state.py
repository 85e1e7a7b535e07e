"""A run as its own stream tells it: what resume and the orchestrator start from.

Reading `run-<id>` directly (not a projection) keeps resume independent of how far the
projections have caught up: the log is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.runs._approvals import Decision
from agents.runs._executor import PriorState, StepOutcome
from agents.runs._plan import Plan
from events import EventStore, RecordedEvent

TERMINAL = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})
READ_BATCH = 1000


@dataclass(slots=True)
class RunState:
    run_id: str
    session_id: str = ""
    goal: str = ""
    plan: Plan | None = None
    status: str = "missing"  # missing | requested | running | completed | failed | cancelled
    prior: PriorState = field(default_factory=PriorState)
    verified: set[str] = field(default_factory=set)
    version: int = 0

    @property
    def approvals_requested(self) -> set[str]:
        return self.prior.approvals_requested

    @property
    def decisions(self) -> dict[str, Decision]:
        return self.prior.decisions

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def apply(self, record: RecordedEvent) -> None:
        data, kind = record.data, record.type
        self.version = record.version
        if kind == "RunRequested":
            self.session_id, self.goal, self.status = data["session_id"], data["goal"], "requested"
        elif kind == "PlanCreated":
            self.plan, self.status = Plan.from_data(data["steps"]), "running"
        elif kind == "StepStarted":
            self.prior.attempts[data["step_id"]] = data.get("attempt", 1)
        elif kind in ("StepCompleted", "StepFailed", "StepSkipped"):
            self._finish_step(kind, data)
        elif kind == "ApprovalRequested":
            self.prior.approvals_requested.add(data["step_id"])
        elif kind in ("ApprovalGranted", "ApprovalDenied"):
            decision = Decision(kind == "ApprovalGranted", data.get("note", ""), data.get("by", ""))
            self.prior.decisions[data["step_id"]] = decision
        elif kind == "VerificationCompleted":
            self.verified.add(data["step_id"])
        elif kind in TERMINAL:
            self.status = {"RunCompleted": "completed", "RunFailed": "failed"}.get(
                kind, "cancelled"
            )

    def _finish_step(self, kind: str, data: dict[str, object]) -> None:
        step_id = str(data["step_id"])
        attempt = self.prior.attempts.pop(step_id, 1)
        if kind == "StepCompleted":
            outcome = StepOutcome("completed", result=data["result"], attempt=attempt)
        elif kind == "StepSkipped":
            outcome = StepOutcome("skipped", message=str(data["reason"]))
        else:
            outcome = StepOutcome(
                "failed", error_type=str(data["error_type"]), message=str(data["message"])
            )
        self.prior.outcomes[step_id] = outcome


async def load_run(store: EventStore, run_id: str) -> RunState:
    """Fold the run's stream into a `RunState` (status "missing" when there is none)."""
    state = RunState(run_id)
    after = 0
    while batch := await store.read_stream(f"run-{run_id}", after, READ_BATCH):
        for record in batch:
            state.apply(record)
        after = batch[-1].version
    return state
