"""Every LLM call becomes an `LLMCallCompleted` event: the record metrics and audits read.

A call that belongs to a run goes to that run's stream (`run-<id>`), so replaying a run
shows what its model calls cost; calls outside any run go to `llm-calls`. Failed calls
are recorded too, with the error's class name as the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from events import EventStore, LLMCallCompleted

UNATTACHED_STREAM = "llm-calls"


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    calls: int
    failures: int
    retries: int
    prompt_tokens: int
    completion_tokens: int


class CallRecorder:
    """Appends each call's event to the store (when given) and keeps running totals."""

    def __init__(self, store: EventStore | None = None) -> None:
        self._store = store
        self._calls = self._failures = self._retries = 0
        self._prompt_tokens = self._completion_tokens = 0

    @staticmethod
    def stream_for(run_id: str | None) -> str:
        return f"run-{run_id}" if run_id else UNATTACHED_STREAM

    async def record(self, call: LLMCallCompleted) -> None:
        self._count(call)
        if self._store is None:
            await trio.lowlevel.checkpoint()
            return
        # Queued, not awaited (a pipelined append): nothing acts on the record, and the
        # run's own awaited events after it make it durable with them.
        await self._store.submit(self.stream_for(call.run_id), [call], correlation=call.run_id)

    def _count(self, call: LLMCallCompleted) -> None:
        self._calls += 1
        self._failures += call.outcome != "ok"
        self._retries += call.retries
        self._prompt_tokens += call.prompt_tokens
        self._completion_tokens += call.completion_tokens

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            self._calls, self._failures, self._retries, self._prompt_tokens, self._completion_tokens
        )
