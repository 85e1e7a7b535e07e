"""Human approval of risky steps: requested in the log, decided by a client, durable.

A step whose tool requires approval appends `ApprovalRequested` and waits - outside
the step limiter, so other branches keep running. A client's decision appends
`ApprovalGranted` or `ApprovalDenied` and wakes the waiting step; a denied step is
skipped (and so are its dependents). Because request and decision are events, the wait
survives a restart: a resumed run waits again for a pending request, or applies a
decision made while the server was down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from agents.errors import ApprovalNotPending
from agents.runs._outcomes import Decision
from agents.runs._run_state import RunState, load_run
from events import ApprovalDenied, ApprovalGranted, EventStore, WrongExpectedVersion

MAX_DECISION_ATTEMPTS = 20


class ApprovalBook:
    """Waiting steps of the runs in this process, by (run id, step id)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], trio.Event] = {}
        self._decisions: dict[tuple[str, str], Decision] = {}

    async def wait(
        self,
        run_id: str,
        step_id: str,
        recheck: Callable[[], Awaitable[Decision | None]] | None = None,
    ) -> Decision:
        """The decision, once made. `recheck` reads the log after the waiter is
        registered: a decision another node's client recorded before then (which that
        node could not hand to this book) is found there; one recorded later wakes the
        waiter through `resolve_if_waiting`."""
        key = (run_id, step_id)
        if key not in self._decisions:
            event = self._waiting.setdefault(key, trio.Event())
            try:
                if recheck is not None:
                    found = await recheck()
                    if found is not None:
                        self.resolve_if_waiting(run_id, step_id, found)
                await event.wait()
            finally:
                if self._waiting.get(key) is event:  # cancelled, or the recheck failed
                    del self._waiting[key]
        return self._decisions.pop(key)

    def resolve(self, run_id: str, step_id: str, decision: Decision) -> None:
        key = (run_id, step_id)
        self._decisions[key] = decision
        event = self._waiting.pop(key, None)
        if event is not None:
            event.set()

    def resolve_if_waiting(self, run_id: str, step_id: str, decision: Decision) -> bool:
        """Wake a step waiting here (a decision read from the log); nothing otherwise, so
        reading the same decision twice never leaves one behind."""
        if (run_id, step_id) not in self._waiting:
            return False
        self.resolve(run_id, step_id, decision)
        return True

    def pending(self) -> list[tuple[str, str]]:
        return sorted(self._waiting)


async def record_decision(
    store: EventStore, book: ApprovalBook, run_id: str, step_id: str, decision: Decision
) -> None:
    """Append the decision if the step's approval is pending; `ApprovalNotPending` if not.

    The append expects the run stream's version it checked, so two clients deciding at
    once cannot both succeed; other events moving the stream just cause a re-check.
    """
    for _ in range(MAX_DECISION_ATTEMPTS):
        state = await load_run(store, run_id)
        _check_pending(state, run_id, step_id)
        event_type = ApprovalGranted if decision.granted else ApprovalDenied
        event = event_type(run_id, step_id, decision.note, decision.by)
        try:
            await store.append(f"run-{run_id}", [event], state.version, correlation=run_id)
        except WrongExpectedVersion:
            continue
        # Wakes a step waiting in this process; one about to wait finds the decision
        # in the log (its recheck), so nothing is left behind for a step elsewhere.
        book.resolve_if_waiting(run_id, step_id, decision)
        return
    raise ApprovalNotPending(run_id, step_id, "the run keeps changing; try again")


def _check_pending(state: RunState, run_id: str, step_id: str) -> None:
    if state.status == "missing":
        raise ApprovalNotPending(run_id, step_id, "no such run")
    if state.finished:
        raise ApprovalNotPending(run_id, step_id, f"the run is {state.status}")
    if step_id not in state.approvals_requested:
        raise ApprovalNotPending(run_id, step_id, "no approval was requested for it")
    if step_id in state.decisions:
        raise ApprovalNotPending(run_id, step_id, "it was already decided")
