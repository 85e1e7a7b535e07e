"""Value types of a run's steps: how a step ended, a human's decision, and what the log
says about an interrupted run's steps. The run fold, approvals and the executor all
build on these, so they sit below all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

StepStatus = Literal["completed", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class Decision:
    """A human's answer to an approval request."""

    granted: bool
    note: str = ""
    by: str = ""


@dataclass(slots=True)
class StepOutcome:
    """How a step ended (or that it was already done before a resume)."""

    status: StepStatus
    result: Any = None
    error_type: str | None = None
    message: str | None = None
    retryable: bool = False
    duration_s: float = 0.0
    attempt: int = 1


@dataclass(slots=True)
class PriorState:
    """What the log says about steps of an interrupted run (for resume)."""

    outcomes: dict[str, StepOutcome] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # started, not finished
    approvals_requested: set[str] = field(default_factory=set)
    decisions: dict[str, Decision] = field(default_factory=dict)
