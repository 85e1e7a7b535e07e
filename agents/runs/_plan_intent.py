"""The goal's intent read by the run's plan call (`[features] intent_in_plan`).

With a real model, the first plan call also asks for the goal's intent and entities,
after the steps, instead of an intent call of its own. `PlanIntent` records what it
found as `IntentAnalyzed` exactly once, whichever way planning goes: from the reply, or
from the offline reading of the goal when the reply had none, broke off, or planning
failed (the fallback a failed intent call took too). The run's terminal event waits
for `done`, so `IntentAnalyzed` is always before the run's end, also when a streamed
plan's reply is still being read after its last step (its intent comes last, and the
run does not wait for it to start its steps or its answer). Known gap: a run cancelled
(or a server stopped) while that end is read loses the plan call's `LLMCallCompleted`,
as every cancelled model call does (`agents.llm._calls.settling`), though its plan is
in the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from agents.offline import offline_intent

Record = Callable[[Mapping[str, Any]], Awaitable[None]]


class PlanIntent:
    """What one run's plan calls found of its goal's intent, recorded once."""

    def __init__(self, goal: str, record: Record) -> None:
        self._goal = goal
        self._record = record
        self.started = False  # recording begun: no later plan call needs to ask
        self.done = trio.Event()  # recorded, or its recording cut short by a cancel

    async def __call__(self, found: Mapping[str, Any] | None) -> None:
        """Record `found` (None: the offline reading of the goal); only the first call
        records, later ones do nothing."""
        if self.started:
            return
        self.started = True
        try:
            await self._record(found if found is not None else offline_intent(self._goal))
        finally:
            self.done.set()
