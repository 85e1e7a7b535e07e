"""The executor: runs a plan's steps as soon as their own dependencies are done.

Every step (or batch of merged steps) is a task in the executor's nursery that waits
for the `done` events of exactly its dependencies: no level barriers, so a long step
in one branch never holds back another branch. A `CapacityLimiter` bounds how many
run at once. Independent steps of the same batchable action with the same
dependencies are merged into one call of the tool's batch form; their events stay
per step. A failed step skips its dependents; other branches go on.

Each transition is appended as it happens (`StepStarted`, `StepCompleted`,
`StepFailed`, `StepSkipped`); `on_completed` hands finished steps to background
verification.

Durability is awaited only where something depends on it (pipelined appends,
`EventStore.submit`; the writer commits in queue order, so whatever is awaited later
makes every earlier transition durable with it):
- `StepStarted` of a step whose tool is not idempotent is awaited before the tool is
  called: after a crash, resume must find that it may have acted and fail it clearly
  instead of calling it a second time. For an idempotent tool it is not awaited: if a
  crash loses it, resume runs the step again, which is what it would do anyway.
- `StepCompleted` / `StepFailed` / `StepSkipped` of an idempotent step are not awaited.
  A dependent may read a result before it is on disk, but nothing the dependent writes
  can be durable without it (commit order), and a dependent with effects awaits its own
  `StepStarted`, which makes its inputs durable first. A completion a crash loses is a
  step resume runs again, as it is idempotent.
- The end of a step that is not idempotent is awaited: its effect happened, and a
  crash must not leave it looking interrupted (resume would report it as such).
- `ApprovalRequested` is awaited: a person is asked to act on it.
- The run's terminal event and the reply are awaited by the orchestrator before the
  answer is sent, which makes every transition of the run durable.

What is not awaited may also wait up to `store.commit_linger_ms` for company (the
writer holds a batch nobody awaits, so a step's start and end share a commit); an
awaited append, or awaiting a queued one, ends that wait at once. The crash semantics
above do not change: until committed, a queued transition may be lost either way.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from agents.errors import AgentError, ToolError
from agents.runs._approvals import ApprovalBook
from agents.runs._outcomes import Decision, PriorState, StepOutcome
from agents.runs._plan import Plan, PlanStep, resolve
from agents.runs._run_state import load_run
from agents.runs._verifier import Verdict
from agents.tools import AgentRegistry
from events import (
    ANY,
    AppendTicket,
    ApprovalRequested,
    Event,
    EventEncodingError,
    EventStore,
    EventStoreError,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    prepare_append,
)


@dataclass(frozen=True, slots=True)
class ExecutorOptions:
    max_parallel_steps: int = 16
    parallel: bool = True
    batching: bool = True
    step_timeout_s: float = 60.0
    verify_before_dependents: bool = False
    approval_tools: frozenset[str] = frozenset()


# Called with each completed step; a verdict returned (inline verification) is acted
# on before the step counts as done: see `_settle`.
OnCompleted = Callable[[PlanStep, Any], Awaitable[Verdict | None]]
Decide = Callable[[PlanStep], str | None]
# More than sealing adds to an event (a 29-byte nonce and tag, the owner and key id, the
# box's keys): checked against before the append, so an unstorable result fails its step.
SEALING_OVERHEAD_BYTES = 512  # resume policy: a reason to fail, or None


class Executor:
    """Runs one plan for one run; see the module docstring."""

    def __init__(
        self,
        store: EventStore,
        registry: AgentRegistry,
        run_id: str,
        options: ExecutorOptions = ExecutorOptions(),
        on_completed: OnCompleted | None = None,
        prior: PriorState | None = None,
        refuse_restart: Decide | None = None,
        approvals: ApprovalBook | None = None,
        principal: str = "",
    ) -> None:
        self._store = store
        # Tools that act for someone (`ToolSpec.acts_for`) act for this principal.
        self._principal = principal
        self._registry = registry
        self._run_id = run_id
        self._options = options
        self._on_completed = on_completed
        self._prior = prior or PriorState()
        self._refuse_restart = refuse_restart
        self._approvals = approvals or ApprovalBook()
        self._limiter = trio.CapacityLimiter(options.max_parallel_steps if options.parallel else 1)
        self.outcomes: dict[str, StepOutcome] = {}
        self.started: set[str] = set()
        self._done: dict[str, trio.Event] = {}
        self._last: AppendTicket | None = None

    async def execute(self, plan: Plan) -> dict[str, StepOutcome]:
        self._done = {s.id: trio.Event() for s in plan.steps}
        for step_id, outcome in self._prior.outcomes.items():
            if step_id in self._done:
                self.outcomes[step_id] = outcome
                self._done[step_id].set()
        pending = [s for s in plan.steps if s.id not in self.outcomes]
        async with trio.open_nursery() as nursery:
            for group in self._groups(pending):
                nursery.start_soon(self._run_group, group)
        return self.outcomes

    async def execute_stream(
        self, steps: trio.MemoryReceiveChannel[PlanStep]
    ) -> dict[str, StepOutcome]:
        """Start each step as it arrives from a streamed plan (dependencies come first).

        A batchable step waits for its siblings (same tool, same dependencies) until the
        next streamed step is not one of them, or the stream ends; then the held steps
        run as one batch call. A sibling that streams in later than that runs alone.
        """
        held: list[PlanStep] = []
        async with trio.open_nursery() as nursery, steps:
            async for step in steps:
                self._done[step.id] = trio.Event()
                prior = self._prior.outcomes.get(step.id)
                if prior is not None:  # done before a restart: keep its result
                    self.outcomes[step.id] = prior
                    self._done[step.id].set()
                    continue
                self.started.add(step.id)
                if held and not _same_batch(held[0], step):
                    nursery.start_soon(self._run_group, held)
                    held = []
                if self._batchable(step):
                    held.append(step)
                else:
                    nursery.start_soon(self._run_group, [step])
            if held:
                nursery.start_soon(self._run_group, held)
        return self.outcomes

    def _batchable(self, step: PlanStep) -> bool:
        spec = self._registry.spec(step.agent, step.action)
        return (
            self._options.batching
            and spec is not None
            and spec.batchable
            and step.id not in self._prior.attempts
            and not self._needs_approval(step)
        )

    def _groups(self, steps: Sequence[PlanStep]) -> list[list[PlanStep]]:
        """Single steps, or batches of same-action batchable steps with equal dependencies."""
        groups: dict[tuple[str, tuple[str, ...]], list[PlanStep]] = {}
        singles: list[list[PlanStep]] = []
        for step in steps:
            if self._batchable(step):
                groups.setdefault(_batch_key(step), []).append(step)
            else:
                singles.append([step])
        return singles + list(groups.values())

    async def _run_group(self, group: list[PlanStep]) -> None:
        for dependency in group[0].dependencies:
            await self._done[dependency].wait()
        blocked = self._blocked_by(group[0])
        if blocked:
            await self._finish(
                group, [StepOutcome("skipped", message=f"dependency {blocked} did not complete")]
            )
            return
        if self._needs_approval(group[0]):
            decision = await self._approval(group[0])
            if not decision.granted:
                reason = "approval denied" + (f": {decision.note}" if decision.note else "")
                await self._finish(group, [StepOutcome("skipped", message=reason)])
                return
        async with self._limiter:
            outcomes = await self._attempt(group)
            await self._finish(group, outcomes)

    def _needs_approval(self, step: PlanStep) -> bool:
        spec = self._registry.spec(step.agent, step.action)
        return step.tool in self._options.approval_tools or bool(spec and spec.requires_approval)

    async def _approval(self, step: PlanStep) -> Decision:
        """The decision on `step`: from the log (resume), or requested and awaited.

        Waiting happens outside the step limiter, so other branches keep running.
        """
        if step.id in self._prior.decisions:
            return self._prior.decisions[step.id]
        if step.id not in self._prior.approvals_requested:
            try:
                shown = resolve(dict(step.parameters), self._results())
            except ToolError:
                shown = dict(step.parameters)
            reason = f"{step.tool} requires approval before it runs"
            await self._append([ApprovalRequested(self._run_id, step.id, step.tool, shown, reason)])
        return await self._approvals.wait(
            self._run_id, step.id, functools.partial(self._recorded_decision, step.id)
        )

    async def _recorded_decision(self, step_id: str) -> Decision | None:
        """The decision on `step_id` in the run's stream, if one was recorded (by a
        client of another node, or since this run's state was read)."""
        return (await load_run(self._store, self._run_id)).decisions.get(step_id)

    def _blocked_by(self, step: PlanStep) -> str | None:
        for dependency in step.dependencies:
            if self.outcomes[dependency].status != "completed":
                return dependency
        return None

    async def _attempt(self, group: list[PlanStep]) -> list[StepOutcome]:
        refusals = [self._refusal(s) for s in group]
        if any(refusals):
            return [
                StepOutcome(
                    "failed", error_type="NotRetried", message=r or "batched with a refused step"
                )
                for r in refusals
            ]
        attempts = [self._prior.attempts.get(s.id, 0) + 1 for s in group]
        started = await self._submit(
            [StepStarted(self._run_id, s.id, a) for s, a in zip(group, attempts, strict=True)]
        )
        if not self._idempotent(group[0]):
            await started.durable()  # see the module docstring
        started_at = time.perf_counter()
        outcomes = await self._call(group)
        duration = time.perf_counter() - started_at
        for outcome, attempt in zip(outcomes, attempts, strict=True):
            outcome.duration_s, outcome.attempt = duration, attempt
        return outcomes

    def _refusal(self, step: PlanStep) -> str | None:
        if step.id not in self._prior.attempts or self._refuse_restart is None:
            return None
        return self._refuse_restart(step)

    async def _call(self, group: list[PlanStep]) -> list[StepOutcome]:
        with trio.move_on_after(self._options.step_timeout_s) as scope:
            try:
                results = await self._invoke(group)
            except (AgentError, Exception) as exc:
                return [_failure(exc)] * len(group)
        if scope.cancelled_caught:
            message = f"timed out after {self._options.step_timeout_s:g} s"
            return [
                StepOutcome("failed", error_type="StepTimeout", message=message, retryable=True)
                for _ in group
            ]
        return [_failure(r) if isinstance(r, BaseException) else _completed(r) for r in results]

    async def _invoke(self, group: list[PlanStep]) -> list[Any]:
        first = group[0]
        tool = await self._registry.tool(first.agent, first.action)
        params = [resolve(dict(s.parameters), self._results()) for s in group]
        acts_for = tool.spec.acts_for
        if acts_for is not None and self._principal:
            params = [{**p, acts_for: self._principal} for p in params]
        if len(group) == 1:
            return [await tool.call(params[0])]
        return await tool.call_batch(params)

    def _results(self) -> dict[str, Any]:
        return {sid: o.result for sid, o in self.outcomes.items() if o.status == "completed"}

    async def _finish(self, group: list[PlanStep], outcomes: list[StepOutcome]) -> None:
        outcomes = self._storable(group, outcomes)
        if len(outcomes) == 1 and len(group) > 1:
            outcomes = [
                StepOutcome(**{f: getattr(outcomes[0], f) for f in StepOutcome.__slots__})
                for _ in group
            ]
        ended = await self._submit(
            [self._event(s, o) for s, o in zip(group, outcomes, strict=True)]
        )
        if not self._idempotent(group[0]) and outcomes[0].status != "skipped":
            await ended.durable()  # see the module docstring
        for step, outcome in zip(group, outcomes, strict=True):
            self.outcomes[step.id] = outcome
        for step, outcome in zip(group, outcomes, strict=True):
            if outcome.status == "completed" and self._on_completed is not None:
                verdict = await self._on_completed(step, outcome.result)
                if verdict is not None and verdict.failed:
                    await self._settle(step, outcome, verdict)
            self._done[step.id].set()

    async def _settle(self, step: PlanStep, outcome: StepOutcome, verdict: Verdict) -> None:
        """A step verified inline failed its verdict, and its dependents wait: run it
        once more when its tool is idempotent (the new result verified again); when it
        is not, or fails again, it counts as failed, so nothing builds on a bad result."""
        if self._idempotent(step) and outcome.attempt <= 1:
            self._prior.attempts[step.id] = outcome.attempt
            (again,) = await self._attempt([step])
            (again,) = self._storable([step], [again])
            await self._submit([self._event(step, again)])
            self.outcomes[step.id] = again
            if again.status != "completed" or self._on_completed is None:
                return
            verdict_again = await self._on_completed(step, again.result)
            if verdict_again is None or not verdict_again.failed:
                return
            verdict = verdict_again
        failed = StepOutcome(
            "failed",
            error_type="VerificationFailed",
            message=f"its result did not pass verification: {verdict.notes}",
            attempt=self.outcomes[step.id].attempt,
        )
        await self._submit([self._event(step, failed)])
        self.outcomes[step.id] = failed

    def _storable(self, group: list[PlanStep], outcomes: list[StepOutcome]) -> list[StepOutcome]:
        """Outcomes whose events the log accepts: a result msgpack cannot encode, or one
        over the size cap, fails its step instead of the run."""
        checked = []
        for step, outcome in zip(group, outcomes, strict=False):
            try:
                if outcome.status == "completed":
                    prepare_append(
                        f"run-{self._run_id}",
                        [self._event(step, outcome)],
                        ANY,
                        self._max_result_bytes(),
                    )
                checked.append(outcome)
            except EventStoreError as exc:
                unencodable = isinstance(exc, EventEncodingError)
                checked.append(
                    StepOutcome(
                        "failed",
                        error_type="UnserialisableResult" if unencodable else "UnstorableResult",
                        message=(
                            f"tool returned {type(outcome.result).__name__}: {exc}"
                            if unencodable
                            else str(exc)
                        ),
                        attempt=outcome.attempt,
                        duration_s=outcome.duration_s,
                    )
                )
        return checked if len(outcomes) == len(group) else outcomes

    def _max_result_bytes(self) -> int:
        """The size a completed step's event may have here: the store's cap, less what
        sealing adds (the box's nonce, tag, owner and key id) when the store seals."""
        cap = self._store.options.max_event_bytes
        return cap - SEALING_OVERHEAD_BYTES if self._store.sealer is not None else cap

    def _event(self, step: PlanStep, outcome: StepOutcome) -> Event:
        if outcome.status == "completed":
            return StepCompleted(
                self._run_id, step.id, outcome.result, round(outcome.duration_s, 6)
            )
        if outcome.status == "skipped":
            return StepSkipped(self._run_id, step.id, outcome.message or "")
        return StepFailed(
            self._run_id,
            step.id,
            outcome.error_type or "Error",
            outcome.message or "",
            outcome.retryable,
        )

    def _idempotent(self, step: PlanStep) -> bool:
        spec = self._registry.spec(step.agent, step.action)
        return spec is not None and spec.idempotent

    async def _append(self, events: Sequence[Event]) -> None:
        await self._store.append(f"run-{self._run_id}", events, correlation=self._run_id)

    async def _submit(self, events: Sequence[Event]) -> AppendTicket:
        """Queue the run's events without waiting for the disk (module docstring)."""
        ticket = await self._store.submit(f"run-{self._run_id}", events, correlation=self._run_id)
        self._last = ticket
        return ticket

    async def durable(self) -> None:
        """Wait until every transition this executor queued is on disk (the last one
        is committed after all the others)."""
        if self._last is not None:
            await self._last.durable()


def _failure(exc: BaseException) -> StepOutcome:
    retryable = bool(getattr(exc, "retryable", False))
    message = str(exc) or type(exc).__name__
    return StepOutcome(
        "failed", error_type=type(exc).__name__, message=message, retryable=retryable
    )


def _completed(result: Any) -> StepOutcome:
    """A tool's result; whether the log can store it is checked once, in `_storable`."""
    return StepOutcome("completed", result=result)


def results_of(outcomes: Mapping[str, StepOutcome]) -> dict[str, Any]:
    return {sid: o.result for sid, o in outcomes.items() if o.status == "completed"}


__all__ = ["Executor", "ExecutorOptions", "PriorState", "StepOutcome", "ToolError", "results_of"]


def _batch_key(step: PlanStep) -> tuple[str, tuple[str, ...]]:
    """Steps with equal keys may run as one batch call: same tool, same dependencies."""
    return step.tool, tuple(sorted(step.dependencies))


def _same_batch(a: PlanStep, b: PlanStep) -> bool:
    return _batch_key(a) == _batch_key(b)
