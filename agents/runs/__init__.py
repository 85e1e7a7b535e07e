"""Runs: plans, the planner, the executor, the verifier, approvals, the fold of a run
stream, and the orchestrator that drives a goal from request to answer.

Public API; every other module in this package is private.
"""

from agents.errors import ApprovalNotPending
from agents.runs._orchestrator import (
    History,
    Orchestrator,
    OrchestratorOptions,
    RunResult,
    Submitted,
)
from agents.runs._run_state import (
    load_run,
)

__all__ = [
    "ApprovalNotPending",
    "History",
    "Orchestrator",
    "OrchestratorOptions",
    "RunResult",
    "Submitted",
    "load_run",
]
