"""Background verification: completed steps are checked without holding up later steps.

Completed steps are queued; the verifier task takes everything pending at that moment
and, when batching is on and more than one is waiting, asks the model about all of
them in one call (fewer, larger calls). `VerificationCompleted` is appended per step.
The run's answer waits for `drain()`, i.e. for every verification.

With batching on and a `StepActivity` given, a completed step is held while other
steps of the run are still unfinished (up to `hold_s`), then verified together with
every step completed meanwhile. This costs no latency: the last step's verification
is on the critical path either way, and dependents never wait for a verification
(unless `verify_before_dependents`, which verifies inline instead). A chain or fan of
steps then takes one verification call instead of one per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from events import EventStore, VerificationCompleted

from .errors import LLMError
from .llm import LLMProvider
from .plan import PlanStep
from .prompting import PromptRepository, task_messages

DEFAULT_HOLD_S = 5.0


class StepActivity:
    """How many steps of a run are unfinished: waiting for dependencies, ready or running.

    The executor counts a step in when it is scheduled and out once its outcome is
    recorded (after it was handed to the verifier), so "idle" never flickers between a
    step finishing and its dependents starting. Steps waiting for a human's approval are
    counted out while they wait.
    """

    def __init__(self) -> None:
        self._unfinished = 0
        self._idle = trio.Event()
        self._idle.set()

    @property
    def unfinished(self) -> int:
        return self._unfinished

    def begin(self, count: int = 1) -> None:
        if count <= 0:
            return
        if self._unfinished == 0:
            self._idle = trio.Event()
        self._unfinished += count

    def end(self, count: int = 1) -> None:
        if count <= 0:
            return
        self._unfinished = max(0, self._unfinished - count)
        if self._unfinished == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    confidence: float
    notes: str


class Verifier:
    """Verifies completed steps of one run; see the module docstring."""

    def __init__(
        self,
        store: EventStore,
        provider: LLMProvider,
        prompts: PromptRepository,
        run_id: str,
        goal: str,
        *,
        batching: bool = True,
        activity: StepActivity | None = None,
        hold_s: float = DEFAULT_HOLD_S,
    ) -> None:
        self._store = store
        self._provider = provider
        self._prompts = prompts
        self._run_id = run_id
        self._goal = goal
        self._batching = batching
        self._activity = activity
        self._hold_s = hold_s
        self._send, self._receive = trio.open_memory_channel[tuple[PlanStep, Any]](math.inf)
        self.verdicts: dict[str, Verdict] = {}
        self.calls = 0

    async def submit(self, step: PlanStep, result: Any) -> None:
        """Queue a completed step (never blocks the executor)."""
        self._send.send_nowait((step, result))
        await trio.lowlevel.checkpoint()

    async def verify_now(self, step: PlanStep, result: Any) -> None:
        """Verify one step inline (sequential mode and verify-before-dependents)."""
        await self._verify([(step, result)])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                await self._hold()
                batch = [first]
                while self._batching:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._verify(batch)

    async def _hold(self) -> None:
        """Let steps still running finish first, so their verifications share one call."""
        if self._batching and self._activity is not None:
            with trio.move_on_after(self._hold_s):
                await self._activity.wait_idle()

    async def drain(self) -> None:
        """No more submissions; `run` returns once every queued step is verified."""
        await self._send.aclose()

    async def _verify(self, batch: Sequence[tuple[PlanStep, Any]]) -> None:
        verdicts = await self._ask(batch)
        events = [
            VerificationCompleted(self._run_id, step.id, v.passed, v.confidence, v.notes)
            for (step, _), v in zip(batch, verdicts, strict=True)
        ]
        for (step, _), verdict in zip(batch, verdicts, strict=True):
            self.verdicts[step.id] = verdict
        await self._store.append(f"run-{self._run_id}", events, correlation=self._run_id)

    async def _ask(self, batch: Sequence[tuple[PlanStep, Any]]) -> list[Verdict]:
        self.calls += 1
        items = [{"step": step.to_data(), "result": result} for step, result in batch]
        try:
            if len(items) == 1:
                payload: dict[str, Any] = {"goal": self._goal, **items[0]}
                answer = await self._chat("verify", payload)
                return [_verdict(answer.data)]
            answer = await self._chat("verify_batch", {"goal": self._goal, "items": items})
            return _batch_verdicts(answer.data, len(items))
        except LLMError as exc:
            note = f"verification unavailable: {type(exc).__name__}: {exc}"
            return [Verdict(False, 0.0, note) for _ in items]

    async def _chat(self, task: str, payload: Mapping[str, Any]) -> Any:
        messages = task_messages(self._prompts, task, payload)
        return await self._provider.chat_json(messages, purpose="verify", run_id=self._run_id)


def _verdict(data: Mapping[str, Any]) -> Verdict:
    confidence = data.get("confidence", 0.0)
    return Verdict(
        bool(data.get("passed", False)),
        float(confidence) if isinstance(confidence, int | float) else 0.0,
        str(data.get("notes", "")),
    )


def _batch_verdicts(data: Mapping[str, Any], count: int) -> list[Verdict]:
    verdicts = data.get("verdicts")
    if not isinstance(verdicts, list) or len(verdicts) != count:
        note = "the model did not return one verdict per step"
        return [Verdict(False, 0.0, note) for _ in range(count)]
    return [_verdict(v if isinstance(v, Mapping) else {}) for v in verdicts]
