"""A run as its own stream tells it: what resume, approvals and the orchestrator start from.

Reading `run-<id>` directly (not a projection) keeps resume independent of how far the
projections have caught up: the log is the truth. This is the one fold of a run stream
in `agents`: one `_on_<EventType>` method per event it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agents.runs._outcomes import Decision, PriorState, StepOutcome
from agents.runs._plan import Plan
from agents.runs._verifier import Verdict, recorded_verdict
from events import FORGOTTEN_KEY, TERMINAL_RUN_STATUS, EventStore, RecordedEvent

RunStatus = Literal["missing", "requested", "running", "completed", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset(TERMINAL_RUN_STATUS.values())


@dataclass(slots=True)
class RunState:
    run_id: str
    session_id: str = ""
    goal: str = ""
    plan: Plan | None = None
    status: str = "missing"  # a RunStatus
    prior: PriorState = field(default_factory=PriorState)
    verified: set[str] = field(default_factory=set)
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # the latest per step
    version: int = 0
    principal: str = ""
    retry_of: str = ""  # the run this one tries again
    retried_by: str = ""  # the run that tries this one again
    replanned: bool = False  # verification made it replan once already
    # Some record's personal content no longer opens (its session or principal was
    # forgotten): the fields hold stubs, so the run cannot go on.
    forgotten: bool = False
    # A client asked a node to cancel it (`RunCancelRequested`): whoever executes or
    # resumes it cancels it.
    cancel_requested: bool = False

    @property
    def approvals_requested(self) -> set[str]:
        return self.prior.approvals_requested

    @property
    def decisions(self) -> dict[str, Decision]:
        return self.prior.decisions

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def apply(self, record: RecordedEvent) -> None:
        self.version = record.version
        if FORGOTTEN_KEY in record.data:
            self.forgotten = True
        handler = _HANDLERS.get(record.type)
        if handler is not None:
            handler(self, record.data)
        elif record.type in TERMINAL_RUN_STATUS:
            self.status = TERMINAL_RUN_STATUS[record.type]

    def _on_RunRequested(self, data: dict[str, Any]) -> None:
        self.session_id, self.goal, self.status = data["session_id"], data["goal"], "requested"
        self.principal = data.get("principal", "")
        self.retry_of = data.get("retry_of", "")

    def _on_PlanCreated(self, data: dict[str, Any]) -> None:
        self.plan, self.status = Plan.from_data(data["steps"]), "running"

    def _on_StepStarted(self, data: dict[str, Any]) -> None:
        self.prior.attempts[data["step_id"]] = data.get("attempt", 1)

    def _on_StepCompleted(self, data: dict[str, Any]) -> None:
        attempt = self.prior.attempts.pop(str(data["step_id"]), 1)
        outcome = StepOutcome("completed", result=data["result"], attempt=attempt)
        self.prior.outcomes[str(data["step_id"])] = outcome

    def _on_RunCancelRequested(self, data: dict[str, Any]) -> None:
        self.cancel_requested = True

    def _on_ReplanRequested(self, data: dict[str, Any]) -> None:
        self.replanned = True

    def _on_RunRetried(self, data: dict[str, Any]) -> None:
        self.retried_by = str(data["new_run_id"])

    def _on_StepReused(self, data: dict[str, Any]) -> None:
        outcome = StepOutcome("completed", result=data["result"], attempt=0)
        self.prior.outcomes[str(data["step_id"])] = outcome
        self.verified.add(str(data["step_id"]))  # verified in the run it comes from

    def _on_StepFailed(self, data: dict[str, Any]) -> None:
        self.prior.attempts.pop(str(data["step_id"]), None)
        outcome = StepOutcome(
            "failed", error_type=str(data["error_type"]), message=str(data["message"])
        )
        self.prior.outcomes[str(data["step_id"])] = outcome

    def _on_StepSkipped(self, data: dict[str, Any]) -> None:
        self.prior.attempts.pop(str(data["step_id"]), None)
        outcome = StepOutcome("skipped", message=str(data["reason"]))
        self.prior.outcomes[str(data["step_id"])] = outcome

    def _on_ApprovalRequested(self, data: dict[str, Any]) -> None:
        self.prior.approvals_requested.add(data["step_id"])

    def _on_ApprovalGranted(self, data: dict[str, Any]) -> None:
        self.prior.decisions[data["step_id"]] = _decision(True, data)

    def _on_ApprovalDenied(self, data: dict[str, Any]) -> None:
        self.prior.decisions[data["step_id"]] = _decision(False, data)

    def _on_VerificationCompleted(self, data: dict[str, Any]) -> None:
        self.verified.add(data["step_id"])
        self.verdicts[str(data["step_id"])] = recorded_verdict(data)


def _decision(granted: bool, data: dict[str, Any]) -> Decision:
    return Decision(granted, data.get("note", ""), data.get("by", ""))


_HANDLERS: dict[str, Callable[[RunState, dict[str, Any]], None]] = {
    name.removeprefix("_on_"): method
    for name, method in vars(RunState).items()
    if name.startswith("_on_")
}


async def load_run(store: EventStore, run_id: str) -> RunState:
    """Fold the run's stream into a `RunState` (status "missing" when there is none)."""
    state = RunState(run_id)
    for record in await store.open(await store.read_whole_stream(f"run-{run_id}")):
        state.apply(record)
    return state
