"""Background verification: completed steps are checked without holding up later steps.

Completed steps are queued as they finish. Without batching, each is verified at once
in its own call. With batching, a completed step is held until the run's steps have all
finished (`drain()`) or for `hold_s`, whichever comes first: steps held past `hold_s`
(a long run) are verified in the background, together with every step completed
meanwhile; those still held at the end are handed to the run's answer call, which
verifies them while it writes the answer (`record_folded`). A chain or a fan of
steps then costs no verification call of its own, and the critical path loses one
model round trip: the last verification happened after the last step either way.
The answer names only the steps that fail: a reply waits for its output tokens, and
a sentence per passing step was most of the answer's.
Dependents never wait for a verification (unless `verify_before_dependents`, which
verifies inline instead). `VerificationCompleted` is appended per step, always before
the run's terminal event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from agents.errors import LLMError
from agents.llm import LLMProvider, PromptRepository, task_messages
from agents.runs._plan import MAX_STEPS, PlanStep
from events import EventStore, VerificationCompleted

DEFAULT_HOLD_S = 5.0
MAX_NOTES_CHARS = 2000
UNAVAILABLE = "verification unavailable"
# The notes of a step the answer call passed: it names only the steps that fail.
PASSED_WITH_ANSWER = "passed: the answer call found no problem with it"
FAILED_WITHOUT_NOTES = "failed: the answer call gave no reason"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judgement of one step's result. `judged` is False when no verifier could be
    asked (the model failed): such a verdict is recorded as not passed, but nothing is
    retried or replanned because of it."""

    passed: bool
    confidence: float
    notes: str
    judged: bool = True

    @property
    def failed(self) -> bool:
        """A real judgement that the step did not do what it was for: act on it."""
        return self.judged and not self.passed


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
        hold_s: float = DEFAULT_HOLD_S,
        prior: Mapping[str, Verdict] | None = None,
    ) -> None:
        """`prior`: the verdicts the run's log already holds (a resumed run acts on
        them as on its own)."""
        self._store = store
        self._provider = provider
        self._prompts = prompts
        self._run_id = run_id
        self._goal = goal
        self._batching = batching
        self._hold_s = hold_s
        self._draining = trio.Event()
        self._held: list[tuple[PlanStep, Any]] = []
        # A plan has at most MAX_STEPS steps and each completes once, so a full buffer
        # is never reached in practice; bounded all the same (backpressure, not growth).
        self._send, self._receive = trio.open_memory_channel[tuple[PlanStep, Any]](MAX_STEPS)
        self.verdicts: dict[str, Verdict] = dict(prior or {})
        self.calls = 0

    async def submit(self, step: PlanStep, result: Any) -> None:
        """Queue a completed step (blocks only if a run completed more than MAX_STEPS
        steps that are all still waiting for verification)."""
        await self._send.send((step, result))

    async def verify_now(self, step: PlanStep, result: Any) -> Verdict:
        """Verify one step inline (sequential mode and verify-before-dependents)."""
        await self._verify([(step, result)])
        return self.verdicts[step.id]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                if not self._batching:
                    await self._verify([first])
                    continue
                with trio.move_on_after(self._hold_s):
                    await self._draining.wait()
                batch = [first, *self._queued()]
                if self._draining.is_set():
                    self._held.extend(batch)  # for the answer call
                else:
                    await self._verify(batch)

    def _queued(self) -> list[tuple[PlanStep, Any]]:
        queued = []
        while True:
            try:
                queued.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return queued

    async def drain(self) -> None:
        """No more submissions; `run` returns once every queued step is verified or held
        for the answer (`unverified`)."""
        self._draining.set()
        await self._send.aclose()

    @property
    def unverified(self) -> list[tuple[PlanStep, Any]]:
        """Steps held for the answer call, once `run` has returned."""
        return list(self._held)

    async def record_folded(
        self, batch: Sequence[tuple[PlanStep, Any]], reply: Mapping[str, Any]
    ) -> None:
        """Record the verdicts an answer call gave for `batch`; verify in a call of its
        own when the reply has no usable verdict per step."""
        if not batch:
            await trio.lowlevel.checkpoint()
            return
        verdicts = folded_verdicts(reply, [step.id for step, _ in batch])
        if verdicts is None:
            await self._verify(batch)
        else:
            await self._record(batch, verdicts)
        held = {step.id for step, _ in batch}
        self._held = [(step, result) for step, result in self._held if step.id not in held]

    async def _verify(self, batch: Sequence[tuple[PlanStep, Any]]) -> None:
        await self._record(batch, await self._ask(batch))

    async def _record(self, batch: Sequence[tuple[PlanStep, Any]], verdicts: list[Verdict]) -> None:
        events = [
            VerificationCompleted(self._run_id, step.id, v.passed, v.confidence, v.notes)
            for (step, _), v in zip(batch, verdicts, strict=True)
        ]
        for (step, _), verdict in zip(batch, verdicts, strict=True):
            self.verdicts[step.id] = verdict
        # Queued, not awaited: a verdict a crash loses is asked for again on resume.
        await self._store.submit(f"run-{self._run_id}", events, correlation=self._run_id)

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
            note = f"{UNAVAILABLE}: {type(exc).__name__}: {exc}"
            return [Verdict(False, 0.0, note, judged=False) for _ in items]

    async def _chat(self, task: str, payload: Mapping[str, Any]) -> Any:
        messages = task_messages(self._prompts, task, payload)
        return await self._provider.chat_json(messages, purpose="verify", run_id=self._run_id)


def recorded_verdict(data: Mapping[str, Any]) -> Verdict:
    """A `VerificationCompleted` payload as a verdict; one recorded when no verifier
    could be asked (confidence 0, "verification unavailable") is not a judgement."""
    notes = str(data.get("notes", ""))
    confidence = float(data.get("confidence", 0.0))
    unjudged = confidence == 0.0 and notes.startswith(UNAVAILABLE)
    return Verdict(bool(data.get("passed")), confidence, notes, judged=not unjudged)


def _verdict(data: Mapping[str, Any]) -> Verdict:
    """A verdict from a model's answer, whatever its types (total): only `true` (or the
    text "true") passes, the confidence is a number clamped to 0..1, the notes text."""
    passed = data.get("passed")
    if isinstance(passed, str):
        passed = passed.strip().lower() == "true"
    return Verdict(passed is True, _confidence(data.get("confidence")), _notes(data.get("notes")))


def _confidence(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    if isinstance(value, int):  # an integer past float's range is still just "high"
        return 1.0 if value >= 1 else 0.0
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def _is_number(value: object) -> bool:
    """A finite number (JSON's NaN and Infinity are no confidence)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _notes(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return str(value)[:MAX_NOTES_CHARS]
    return "(the model's notes were not text)"


def folded_verdicts(data: Mapping[str, Any], ids: Sequence[str]) -> list[Verdict] | None:
    """One verdict per step of `ids` from an answer's `verified`, or None when it has
    no usable judgement (the steps are then verified in a call of their own).

    The answer lists only the steps that failed (`verified.failed`, by id); every other
    step passed, with `verified.confidence`. A failed entry that names no step of `ids`
    makes the whole judgement unusable: a misnamed failure must not pass its step.
    """
    verified = data.get("verified")
    if not isinstance(verified, Mapping):
        return None
    failed, confidence = verified.get("failed"), verified.get("confidence")
    if not isinstance(failed, list) or not _is_number(confidence):
        return None  # a lazy or cut-off judgement must not pass every step
    wanted = set(ids)
    by_id: dict[str, Verdict] = {}
    for entry in failed:
        step_id = entry.get("id") if isinstance(entry, Mapping) else None
        if not isinstance(step_id, str) or step_id not in wanted:
            return None
        notes = _notes(entry.get("notes")) or FAILED_WITHOUT_NOTES
        by_id[step_id] = Verdict(False, _confidence(entry.get("confidence")), notes)
    passed = Verdict(True, _confidence(confidence), PASSED_WITH_ANSWER)
    return [by_id.get(step_id, passed) for step_id in ids]


def _batch_verdicts(data: Mapping[str, Any], count: int) -> list[Verdict]:
    verdicts = _listed_verdicts(data, count)
    if verdicts is None:
        note = "the model did not return one verdict per step"
        return [Verdict(False, 0.0, note) for _ in range(count)]
    return verdicts


def _listed_verdicts(data: Mapping[str, Any], count: int) -> list[Verdict] | None:
    """One verdict per item from a `verify_batch` reply's `verdicts`, or None."""
    verdicts = data.get("verdicts")
    if not isinstance(verdicts, list) or len(verdicts) != count:
        return None
    if not all(isinstance(v, Mapping) and "passed" in v for v in verdicts):
        return None
    return [_verdict(v) for v in verdicts]
