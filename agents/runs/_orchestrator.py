"""The orchestrator: a goal in, a verified answer out, every transition an event.

submit: `SessionStarted` (new session), `UserMessageReceived`, `RunRequested`.
execute: intent analysis and tool-catalog preparation run concurrently (or, with
`intent_in_plan`, the first plan call reads the intent too); the planner makes a
validated `PlanCreated`; the executor runs steps as their dependencies finish
while the verifier checks finished steps in the background (with batching, it holds
them for the answer call, which verifies them as it writes the answer); every
`VerificationCompleted` comes before `RunCompleted` and the session's
`AssistantMessageSent`.

Resume reads the run's own stream: completed steps keep their results, a step that
started but did not finish runs again (attempt + 1) when its tool is idempotent, and
fails with a clear reason otherwise (unless `retry_non_idempotent`). A cancel
appends `RunCancelled`; a shutdown leaves the run unfinished, for resume.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from agents.errors import (
    AgentError,
    InvalidGoal,
    InvalidPlan,
    LLMError,
    PlanRefused,
    RunAlreadyFinished,
    RunAlreadyRunning,
    RunNotFound,
    RunNotRetryable,
    SessionNotYours,
)
from agents.llm import (
    LLMProvider,
    PromptRepository,
    ToolCatalog,
    ToolSelectorCache,
    answer_messages,
    intent_messages,
)
from agents.offline import OfflineProvider, offline_intent
from agents.runs._approvals import ApprovalBook, record_decision
from agents.runs._executor import Executor, ExecutorOptions
from agents.runs._outcomes import Decision, PriorState, StepOutcome
from agents.runs._plan import MAX_STEPS, Plan, PlanStep
from agents.runs._plan_intent import PlanIntent
from agents.runs._plan_stream import stream_plan
from agents.runs._planner import Planner
from agents.runs._repair import (
    COVER_PREFIX,
    failed_steps,
    renamed,
    replan_note,
    reusable,
    with_dependents,
)
from agents.runs._run_state import RunState, load_run
from agents.runs._verifier import Verdict, Verifier
from agents.tools import AgentRegistry
from events import (
    FORGOTTEN_KEY,
    LOCAL_PRINCIPAL,
    NO_STREAM,
    TERMINAL_RUN_TYPES,
    AssistantMessageSent,
    ContextUpdated,
    Event,
    EventEncodingError,
    EventStore,
    EventTooLarge,
    IntentAnalyzed,
    InvalidStreamName,
    PlanCreated,
    ReplanRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunResumed,
    RunRetried,
    SessionStarted,
    StepReused,
    UserMessageReceived,
    WrongExpectedVersion,
    validate_stream,
)

History = Callable[[str], Awaitable[list[dict[str, Any]]]]
# What a run's intent analysis found that a later goal of its session may lean on.
CONTEXT_ENTITIES = ("intent", "tickers", "timezone", "city", "cities")
CONTEXT_LOOKBACK = 8  # session records read beyond the message window, for the context


@dataclass(frozen=True, slots=True)
class OrchestratorOptions:
    max_parallel_steps: int = 16
    parallel_execution: bool = True
    async_planner: bool = True
    background_verification: bool = True
    step_batching: bool = True
    verify_before_dependents: bool = False
    streaming_plan: bool = True
    compact_tool_catalog: bool = True
    tool_selection: bool = True
    compact_history: bool = True
    compact_plan_steps: bool = True
    intent_in_plan: bool = True
    approval_tools: tuple[str, ...] = ()
    retry_non_idempotent: bool = False
    step_timeout_s: float = 60.0
    max_goal_chars: int = 4000
    session_window: int = 20


@dataclass(frozen=True, slots=True)
class Submitted:
    run_id: str
    session_id: str
    position: int


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    session_id: str
    status: str
    answer: str | None
    reason: str | None = None
    llm_calls: int = 0


class Orchestrator:
    """Runs goals against one store, provider and agent registry."""

    def __init__(
        self,
        store: EventStore,
        provider: LLMProvider,
        registry: AgentRegistry,
        *,
        prompts: PromptRepository | None = None,
        options: OrchestratorOptions = OrchestratorOptions(),
        history: History | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.registry = registry
        self.prompts = prompts or PromptRepository()
        self.options = options
        self._history = history or self._history_from_log
        # Per running run: the nursery of its background work (a model's intent
        # analysis), and what that analysis found (for the session's context).
        self._background: dict[str, trio.Nursery] = {}
        self._intent_done: dict[str, trio.Event] = {}
        self._intents: dict[str, dict[str, Any]] = {}
        self.approvals = ApprovalBook()
        self._scopes: dict[str, trio.CancelScope] = {}
        self._cancelled: set[str] = set()
        # Runs writing their terminal event: too late to cancel, and never cut short.
        self._finishing: set[str] = set()
        self._selector = ToolSelectorCache()

    # --- submitting -------------------------------------------------------------------

    def check_goal(self, goal: object) -> str:
        if not isinstance(goal, str) or not goal.strip():
            raise InvalidGoal("the goal must be non-empty text")
        try:
            goal.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidGoal("the goal is not valid Unicode text") from None
        if len(goal) > self.options.max_goal_chars:
            limit = self.options.max_goal_chars
            raise InvalidGoal(f"the goal is {len(goal)} characters, over the limit of {limit}")
        return goal.strip()

    async def submit(
        self,
        goal: str,
        session_id: str | None = None,
        *,
        client: str = "",
        principal: str = LOCAL_PRINCIPAL,
        only_own_session: bool = False,
    ) -> Submitted:
        """Record the user's message and the run request; the run itself starts later.

        `principal` is who asks: a new session belongs to it, the run records it, and
        the memory tools act for it. With `only_own_session` (a `user` principal), a
        session that belongs to someone else - also one created by another principal
        a moment ago - is refused (`SessionNotYours`) before anything is appended.
        """
        goal = self.check_goal(goal)
        session_id = session_id or uuid.uuid4().hex[:12]
        try:
            validate_stream(f"session-{session_id}")
        except InvalidStreamName as exc:
            raise InvalidGoal(f"unusable session id: {exc}") from None
        run_id = uuid.uuid4().hex[:12]
        session_stream = f"session-{session_id}"
        if not await self.store.stream_exists(session_stream):
            started = SessionStarted(session_id, user=principal, client=client)
            # Awaited, not queued: the message below is sealed with the session's key,
            # made on first use for the owner the log names, so the owner must be there.
            with contextlib.suppress(WrongExpectedVersion):  # created meanwhile: checked below
                await self.store.append(session_stream, [started], NO_STREAM)
        if only_own_session:
            first = await self.store.read_stream(session_stream, 0, 1)
            if not first or first[0].data.get("user") != principal:
                raise SessionNotYours(session_id)
        # Queued, not awaited: the awaited RunRequested right after makes it durable,
        # in the same commit.
        await self.store.submit(session_stream, [UserMessageReceived(session_id, run_id, goal)])
        result = await self.store.append(
            f"run-{run_id}",
            [RunRequested(run_id, session_id, goal, principal)],
            NO_STREAM,
            correlation=run_id,
        )
        return Submitted(run_id, session_id, result.last_position)

    async def retry(self, run_id: str, *, principal: str = "", by: str = "") -> Submitted:
        """Ask for a failed or cancelled run again, as a new run linked to it.

        `RunRetried` goes on the old stream first, at the version just read, so of two
        retries of one run only one is recorded (the other is refused before it appends
        anything); then the new run (`RunRequested.retry_of`). A retry interrupted
        between the two is completed by the next one, with the recorded id. When it
        executes, the new run takes the old plan and reuses the results of its completed steps whose
        tools are idempotent (`StepReused`); the others run again.
        """
        old = await load_run(self.store, run_id)
        if old.status == "missing":
            raise RunNotFound(run_id)
        if old.status not in ("failed", "cancelled"):
            raise RunNotRetryable(run_id, f"it is {old.status}; only failed or cancelled runs")
        if old.forgotten:
            raise RunNotRetryable(run_id, "its content was forgotten")
        who = principal or old.principal
        if old.retried_by:
            if await self.store.stream_version(f"run-{old.retried_by}") > 0:
                raise RunNotRetryable(run_id, f"it was retried already, as run {old.retried_by}")
            new_id = old.retried_by  # a retry interrupted between its two appends
        else:
            new_id = uuid.uuid4().hex[:12]
            retried = RunRetried(run_id, new_id, by or who)
            try:
                await self.store.append(f"run-{run_id}", [retried], old.version, correlation=run_id)
            except WrongExpectedVersion:
                raise RunNotRetryable(run_id, "it is being retried already") from None
        requested = RunRequested(new_id, old.session_id, old.goal, who, retry_of=run_id)
        try:
            result = await self.store.append(
                f"run-{new_id}", [requested], NO_STREAM, correlation=new_id
            )
        except WrongExpectedVersion:
            raise RunNotRetryable(run_id, f"it was retried already, as run {new_id}") from None
        return Submitted(new_id, old.session_id, result.last_position)

    async def run_goal(self, goal: str, session_id: str | None = None) -> RunResult:
        submitted = await self.submit(goal, session_id)
        return await self.execute(submitted.run_id)

    # --- running --------------------------------------------------------------------------

    async def execute(self, run_id: str, *, resume: bool = False) -> RunResult:
        """Take the run from wherever its stream says it is to a terminal event.

        The cancel scope is registered before the first await, so a cancel arriving at
        any point after this call started reaches the run.
        """
        if run_id in self._scopes:
            raise RunAlreadyRunning(run_id)
        with trio.CancelScope() as scope:
            self._scopes[run_id] = scope
            state: RunState | None = None
            try:
                state = await load_run(self.store, run_id)
                if state.status == "missing":
                    raise RunNotFound(run_id)
                if state.finished:
                    if resume:
                        raise RunAlreadyFinished(run_id, state.status)
                    return RunResult(run_id, state.session_id, state.status, None)
                if state.forgotten:  # its goal and plan no longer open: nothing to run
                    return await self._fail(state, "its content was forgotten")
                if state.cancel_requested:  # asked while no node executed it
                    self._cancelled.add(run_id)
                    return RunResult(
                        run_id, state.session_id, "cancelled", None, "cancelled by request"
                    )
                if state.version > 1 or resume:
                    await self._queue(run_id, [RunResumed(run_id, "resumed from the log")])
                return await self._drive(state)
            finally:
                del self._scopes[run_id]
                self._finishing.discard(run_id)
                if run_id in self._cancelled:
                    self._cancelled.discard(run_id)
                    with trio.CancelScope(shield=True):
                        await self._record_cancel(run_id, state)
        session = state.session_id if state is not None else ""
        return RunResult(run_id, session, "cancelled", None, "cancelled by request")

    async def _record_cancel(self, run_id: str, state: RunState | None) -> None:
        """`RunCancelled`, unless the run is missing or already ended."""
        if state is None:
            state = await load_run(self.store, run_id)
        if state.status != "missing" and not state.finished:
            await self._append(run_id, [RunCancelled(run_id, "cancelled by request")])

    async def decide(
        self, run_id: str, step_id: str, granted: bool, note: str = "", by: str = ""
    ) -> None:
        """Record a human's decision on a pending approval (`ApprovalNotPending` if none)."""
        await record_decision(
            self.store, self.approvals, run_id, step_id, Decision(granted, note, by)
        )

    def cancel(self, run_id: str) -> bool:
        """Cancel a run executing in this process; False when it is not running here."""
        scope = self._scopes.get(run_id)
        if scope is None or run_id in self._finishing:
            return False
        self._cancelled.add(run_id)
        scope.cancel()
        return True

    def running(self) -> list[str]:
        return sorted(self._scopes)

    async def _adopt_retried(self, state: RunState) -> RunState:
        """A retry's first step: the old run's plan, and the results of its completed
        idempotent steps, recorded in the new run; then the run as the log now says."""
        old = await load_run(self.store, state.retry_of)
        if old.plan is None or old.forgotten:
            return state  # nothing to take over: plan afresh
        events: list[Event] = [PlanCreated(state.run_id, old.plan.to_data())]
        for step in old.plan.steps:
            outcome = old.prior.outcomes.get(step.id)
            spec = self.registry.spec(step.agent, step.action)
            verdict = old.verdicts.get(step.id)
            if verdict is not None and verdict.failed:
                continue  # judged bad: run it again rather than answer from it
            if outcome is not None and outcome.status == "completed" and spec and spec.idempotent:
                events.append(StepReused(state.run_id, step.id, old.run_id, outcome.result))
        await self._append(state.run_id, events)
        return await load_run(self.store, state.run_id)

    async def _drive(self, state: RunState) -> RunResult:
        """The run to its end; its background work (intent analysis, the end of a
        streamed plan's reply) in a nursery of its own. What that work records about
        the run is dropped only once it has ended too."""
        try:
            async with trio.open_nursery() as background:
                self._background[state.run_id] = background
                try:
                    return await self._drive_plan(state)
                finally:
                    del self._background[state.run_id]
        finally:
            self._intents.pop(state.run_id, None)
            self._intent_done.pop(state.run_id, None)

    async def _drive_plan(self, state: RunState) -> RunResult:
        calls_before = 0
        if state.plan is None and state.retry_of:
            state = await self._adopt_retried(state)
        plan = state.plan
        if plan is None and self.options.streaming_plan:
            return await self._drive_streaming(state)
        if plan is None:
            try:
                plan, calls_before = await self._make_plan(state)
            except (InvalidPlan, LLMError) as exc:
                return await self._fail(state, f"no usable plan: {exc}")
        outcomes, verifier = await self._run_plan(state, plan)
        return await self._conclude(state, plan, outcomes, verifier, calls_before)

    async def _drive_streaming(self, state: RunState) -> RunResult:
        """Plan and execute at once: each streamed step starts as soon as it can."""
        catalog = await self._prepare(state)
        history = await self._history(state.session_id)
        verifier, executor, background = self._workers(state)
        send, receive = trio.open_memory_channel[PlanStep](MAX_STEPS)
        failure: list[str] = []
        retry: list[InvalidPlan] = []
        calls = [0]  # plan calls: two when refused over a part of the catalog
        intent = self._plan_intent(state)

        async def on_step(step: PlanStep) -> None:
            await send.send(step)  # the executor takes steps as they come: backpressure only

        async with trio.open_nursery() as nursery:
            if background:
                await nursery.start(verifier.run)
            async with trio.open_nursery() as steps:
                steps.start_soon(executor.execute_stream, receive)
                try:
                    async with send:
                        plan = await self._stream_plan(
                            state, catalog, history, on_step, calls, intent
                        )
                    await self._queue(state.run_id, [PlanCreated(state.run_id, plan.to_data())])
                except InvalidPlan as exc:
                    if isinstance(exc, PlanRefused) or executor.started:
                        failure.append(f"no usable plan: {exc}")
                    else:
                        retry.append(exc)
                except LLMError as exc:
                    failure.append(f"no usable plan: {exc}")
            if not failure and not retry:
                await self._reverify(state, plan, executor.outcomes, verifier)
            await verifier.drain()
        if failure:
            if intent is not None:
                await intent(None)
            await verifier.record_folded(verifier.unverified, {})
            return await self._fail(state, failure[0])
        if retry:
            return await self._repair_streamed(state, catalog, retry[0], calls[0], intent)
        return await self._conclude(state, plan, executor.outcomes, verifier, calls[0])

    async def _stream_plan(
        self,
        state: RunState,
        catalog: ToolCatalog,
        history: Sequence[Any],
        on_step: Callable[[PlanStep], Awaitable[None]],
        calls: list[int],
        intent: PlanIntent | None,
    ) -> Plan:
        """Stream the plan over the tools the goal is shown (`_shown`); refused over a
        part of the catalog, stream it again over the whole. `calls` counts plan calls.
        `intent` (`intent_in_plan`): the plan call reads the goal's intent too, after
        its steps, in the run's background; refused or failed, the offline reading is
        recorded. An invalid plan is left to `_drive_streaming` (repaired or failed)."""
        shown = self._shown(catalog, state.goal)
        try:
            while True:
                calls[0] += 1
                try:
                    return await stream_plan(
                        self.provider,
                        self.prompts,
                        state.goal,
                        catalog,
                        history,
                        state.run_id,
                        on_step,
                        compact_tools=self.options.compact_tool_catalog,
                        compact_history=self.options.compact_history,
                        compact_steps=self.options.compact_plan_steps,
                        shown=shown,
                        on_intent=intent if intent is not None and not intent.started else None,
                        tail=self._background.get(state.run_id),
                    )
                except PlanRefused:
                    if shown.hash == catalog.hash:
                        raise
                    shown = catalog  # no step came: nothing has started
        except (PlanRefused, LLMError):
            if intent is not None:
                await intent(None)
            raise

    @property
    def selector_builds(self) -> int:
        """Tool-selector indexes built so far (one per tool change, at warm-up)."""
        return self._selector.builds

    def _shown(self, catalog: ToolCatalog, goal: str) -> ToolCatalog:
        """The tools a run's first plan call shows: those matching the goal with
        `tool_selection` (`agents.llm.ToolSelector`), else all."""
        if not self.options.tool_selection:
            return catalog
        return self._selector.select(catalog, goal).catalog

    async def _repair_streamed(
        self,
        state: RunState,
        catalog: ToolCatalog,
        error: InvalidPlan,
        calls_before: int,
        intent: PlanIntent | None,
    ) -> RunResult:
        """A streamed plan went wrong before any step started: plan again, with repair.
        `calls_before`: the plan calls streamed so far (two when the first was refused
        over a part of the catalog). `intent`: the streamed reply was cut at its bad
        step, before its intent, so the repair asks for it."""
        planner = self._planner(with_intent=intent is not None and not intent.started)
        try:
            plan = await planner.repair(
                state.goal, catalog, await self._history(state.session_id), state.run_id, error
            )
        except (InvalidPlan, LLMError) as exc:
            if intent is not None:
                await intent(planner.intent)
            return await self._fail(state, f"no usable plan: {exc}")
        if intent is not None:
            await intent(planner.intent)
        await self._queue(state.run_id, [PlanCreated(state.run_id, plan.to_data())])
        outcomes, verifier = await self._run_plan(state, plan)
        return await self._conclude(state, plan, outcomes, verifier, calls_before + planner.calls)

    async def _prepare(self, state: RunState) -> ToolCatalog:
        """The tool catalog, and the goal's intent (`IntentAnalyzed`).

        With the offline model, intent analysis is its regex reading of the goal: done
        at once. With a real model and `intent_in_plan`, the plan call answers it
        (`_plan_intent`). Else it is a model call (`intent` prompt): with
        `async_planner` it runs in the background, concurrently with the catalog, the
        plan and the steps (nothing waits for it; the run's context records it when it
        has come), without it the plan waits for it.
        """
        if isinstance(self.provider, OfflineProvider):
            catalog = await self._catalog()
            await self._record_intent(state, offline_intent(state.goal))
            return catalog
        if self._folds_intent:
            return await self._catalog()  # the plan call reads it (`_plan_intent`)
        background = self._background.get(state.run_id)
        if self.options.async_planner and background is not None:
            done = self._intent_done[state.run_id] = trio.Event()
            background.start_soon(self._analyse_intent, state, done)
        else:
            await self._analyse_intent(state)
        return await self._catalog()

    async def _catalog(self) -> ToolCatalog:
        """The tool catalog: the one built last while the tools are the same (no hashing
        on the event loop), else built in a worker thread."""
        cached = self.registry.cached_catalog()
        return (
            cached if cached is not None else await trio.to_thread.run_sync(self.registry.catalog)
        )

    async def warm_up(self) -> dict[str, str]:
        """What a run would otherwise do on its path the first time: read the prompt
        templates and build the tool catalog and its selector's index (in worker
        threads), and build every agent, in parallel. The server runs it in the
        background at start; a goal that comes first shares an agent's build in progress
        instead of starting a second.
        Returns what failed (an agent's name, or "prompts" or "catalog"), with why; each
        part is tried whatever failed before it. A goal that needs a failed part tries
        again and reports the error, as it would have without the warm-up."""
        failed: dict[str, str] = {}
        try:
            await trio.to_thread.run_sync(self.prompts.load)
        except AgentError as exc:  # UnknownPrompt, PromptUnreadable: the runs will say it too
            failed["prompts"] = str(exc)
        try:
            catalog = await trio.to_thread.run_sync(self.registry.catalog)
            if self.options.tool_selection:
                await trio.to_thread.run_sync(self._selector.prepare, catalog)
        except Exception as exc:  # an agent's tool_specs() is plugin code: its run fails too
            failed["catalog"] = repr(exc)

        async def build(name: str) -> None:
            try:
                await self.registry.agent(name)
            except AgentError as exc:
                failed[name] = str(exc)

        async with trio.open_nursery() as nursery:
            for name in self.registry.names:
                nursery.start_soon(build, name)
        return failed

    async def _analyse_intent(self, state: RunState, done: trio.Event | None = None) -> None:
        """The model's reading of the goal; the offline one when the model fails.
        `done` is set when `IntentAnalyzed` is in the log: the run's terminal event
        waits for it, so nothing of a run comes after its end."""
        try:
            try:
                reply = await self.provider.chat_json(
                    intent_messages(self.prompts, state.goal),
                    purpose="intent",
                    run_id=state.run_id,
                )
                found = dict(reply.data)
            except LLMError:
                found = offline_intent(state.goal)
            await self._record_intent(state, found)
        finally:
            if done is not None:
                done.set()

    async def _record_intent(self, state: RunState, found: Mapping[str, Any]) -> None:
        """`IntentAnalyzed`; a model's reading the log cannot hold (an integer past 64
        bits, an entity too large) is replaced by the offline reading of the goal,
        rather than failing the run over what only feeds its context."""
        entities = found.get("entities")
        entities = dict(entities) if isinstance(entities, Mapping) else {}
        event = IntentAnalyzed(state.run_id, str(found.get("intent", "")), entities)
        try:
            await self._queue(state.run_id, [event])
        except (EventEncodingError, EventTooLarge):
            reading = offline_intent(state.goal)
            if dict(found) == reading:
                raise
            await self._record_intent(state, reading)
            return
        self._intents[state.run_id] = {"intent": event.intent, **entities}

    def _planner(self, *, with_intent: bool = False) -> Planner:
        return Planner(
            self.provider,
            self.prompts,
            compact_tools=self.options.compact_tool_catalog,
            compact_history=self.options.compact_history,
            compact_steps=self.options.compact_plan_steps,
            with_intent=with_intent,
        )

    @property
    def _folds_intent(self) -> bool:
        """A run's intent comes with its first plan call (`intent_in_plan`), not from a
        call of its own; the offline model's is read at once whatever the option."""
        return self.options.intent_in_plan and not isinstance(self.provider, OfflineProvider)

    def _plan_intent(self, state: RunState) -> PlanIntent | None:
        """With `intent_in_plan`, what the run's plan calls read of its intent
        (`PlanIntent`); the run's end waits until it is recorded."""
        if not self._folds_intent:
            return None

        async def record(found: Mapping[str, Any]) -> None:
            await self._record_intent(state, found)

        intent = PlanIntent(state.goal, record)
        self._intent_done[state.run_id] = intent.done
        return intent

    async def _make_plan(self, state: RunState) -> tuple[Plan, int]:
        catalog = await self._prepare(state)
        intent = self._plan_intent(state)
        planner = self._planner(with_intent=intent is not None)
        try:
            plan = await planner.plan(
                state.goal,
                catalog,
                await self._history(state.session_id),
                state.run_id,
                shown=self._shown(catalog, state.goal),
            )
        finally:
            calls = planner.calls
            if intent is not None:
                await intent(planner.intent)
        await self._queue(state.run_id, [PlanCreated(state.run_id, plan.to_data())])
        return plan, calls

    def _workers(self, state: RunState) -> tuple[Verifier, Executor, bool]:
        """The run's verifier and executor, wired for background or inline verification."""
        verifier = Verifier(
            self.store,
            self.provider,
            self.prompts,
            state.run_id,
            state.goal,
            batching=self.options.step_batching,
            prior=state.verdicts,
        )
        background = (
            self.options.background_verification and not self.options.verify_before_dependents
        )
        executor = Executor(
            self.store,
            self.registry,
            state.run_id,
            self._executor_options(),
            on_completed=verifier.submit if background else verifier.verify_now,
            prior=state.prior,
            refuse_restart=self._refuse_restart,
            approvals=self.approvals,
            principal=state.principal,
        )
        return verifier, executor, background

    async def _run_plan(
        self, state: RunState, plan: Plan
    ) -> tuple[dict[str, StepOutcome], Verifier]:
        verifier, executor, background = self._workers(state)
        async with trio.open_nursery() as nursery:
            if background:
                await nursery.start(verifier.run)
            outcomes = await executor.execute(plan)
            await self._reverify(state, plan, outcomes, verifier)
            await verifier.drain()
        return outcomes, verifier

    async def _reverify(
        self, state: RunState, plan: Plan, outcomes: dict[str, StepOutcome], verifier: Verifier
    ) -> None:
        """After a resume: steps completed before the crash but never verified."""
        for step_id in state.prior.outcomes:
            outcome = outcomes.get(step_id)
            if outcome and outcome.status == "completed" and step_id not in state.verified:
                await verifier.submit(plan.step(step_id), outcome.result)

    def _executor_options(self) -> ExecutorOptions:
        o = self.options
        return ExecutorOptions(
            o.max_parallel_steps,
            o.parallel_execution,
            o.step_batching,
            o.step_timeout_s,
            o.verify_before_dependents,
            frozenset(o.approval_tools),
        )

    def _refuse_restart(self, step: PlanStep) -> str | None:
        spec = self.registry.spec(step.agent, step.action)
        if self.options.retry_non_idempotent or (spec is not None and spec.idempotent):
            return None
        return (
            f"interrupted by a restart; {step.tool} is not idempotent, so it is not run "
            "again (set resume.retry_non_idempotent to allow it)"
        )

    async def _conclude(
        self,
        state: RunState,
        plan: Plan,
        outcomes: dict[str, StepOutcome],
        verifier: Verifier,
        calls: int,
    ) -> RunResult:
        """The answer, which also verifies the steps the verifier held for it."""
        completed = [s for s in plan.steps if outcomes[s.id].status == "completed"]
        if not completed:
            reasons = "; ".join(f"{sid}: {o.message}" for sid, o in outcomes.items())
            return await self._fail(state, f"no step completed ({reasons})")
        held = verifier.unverified
        try:
            reply = await self._answer(state, plan, outcomes, held, verifier.verdicts)
        except LLMError as exc:
            await verifier.record_folded(held, {})  # no verdicts: a call of their own
            return await self._fail(state, f"could not compose the answer: {exc}")
        if held:
            await verifier.record_folded(held, reply)
        failed = failed_steps(plan, outcomes, verifier.verdicts)
        if failed and not state.replanned:
            plan, outcomes, repair_calls = await self._repair(
                state, plan, outcomes, verifier, failed
            )
            calls += repair_calls
            try:
                reply = await self._answer(state, plan, outcomes, [], verifier.verdicts)
            except LLMError as exc:
                return await self._fail(state, f"could not compose the answer: {exc}")
            calls += 1
            state.replanned = True
        missing = _missing(reply)
        if missing and not state.replanned:
            covered = await self._cover(state, plan, outcomes, verifier, missing)
            if covered is not None:
                plan, outcomes, cover_calls = covered
                calls += cover_calls
                try:
                    reply = await self._answer(state, plan, outcomes, [], verifier.verdicts)
                except LLMError as exc:
                    return await self._fail(state, f"could not compose the answer: {exc}")
                calls += 1
        answer = str(reply.get("answer", ""))
        await self._finish(
            state,
            RunCompleted(state.run_id, answer),
            answer,
            lambda: self._context(state, plan, outcomes),
        )
        calls += 1 + verifier.calls
        return RunResult(state.run_id, state.session_id, "completed", answer, llm_calls=calls)

    async def _repair(
        self,
        state: RunState,
        plan: Plan,
        outcomes: dict[str, StepOutcome],
        verifier: Verifier,
        failed: list[PlanStep],
    ) -> tuple[Plan, dict[str, StepOutcome], int]:
        """Act on failed verdicts, once per run (see `agents.runs._repair`): run the
        idempotent ones again with their dependents, then replan what still fails.
        Returns the plan and outcomes the answer is written from, and the LLM calls."""
        outcomes = dict(outcomes)
        failed_ids = {s.id for s in failed}
        roots = [s.id for s in failed if self._idempotent(s) and outcomes[s.id].attempt <= 1]
        rerun = [sid for sid in with_dependents(plan, roots) if self._idempotent(plan.step(sid))]
        if rerun:
            prior = PriorState(
                outcomes={sid: o for sid, o in outcomes.items() if sid not in rerun},
                attempts={sid: max(1, outcomes[sid].attempt) for sid in rerun if sid in outcomes},
            )
            executor = self._repair_executor(state, verifier, prior)
            outcomes = dict(await executor.execute(plan))
        still_bad = {s.id for s in failed_steps(plan, outcomes, verifier.verdicts)}
        still = [
            s
            for s in plan.steps
            if (s.id in failed_ids and s.id not in rerun)
            or (s.id in rerun and outcomes[s.id].status != "completed")
            or s.id in still_bad
        ]
        if not still:
            return plan, outcomes, 0
        note = replan_note(still, verifier.verdicts)
        await self._queue(state.run_id, [ReplanRequested(state.run_id, note)])
        catalog = await self._catalog()
        told = {"role": "assistant", "text": f"(an earlier plan for this goal ran; {note})"}
        history = [*await self._history(state.session_id), told]
        planner = self._planner()
        try:
            fresh = await planner.plan(state.goal, catalog, history, state.run_id)
        except (InvalidPlan, LLMError):
            return plan, outcomes, planner.calls  # the answer says what failed
        new_plan = renamed(fresh)
        originals = {
            new.id: old.parameters for old, new in zip(fresh.steps, new_plan.steps, strict=True)
        }
        reused = reusable(new_plan, plan, outcomes, verifier.verdicts, originals)
        events: list[Event] = [PlanCreated(state.run_id, new_plan.to_data())]
        events += [
            StepReused(state.run_id, sid, state.run_id, outcome.result)
            for sid, outcome in reused.items()
        ]
        await self._queue(state.run_id, events)
        executor = self._repair_executor(state, verifier, PriorState(outcomes=dict(reused)))
        return new_plan, dict(await executor.execute(new_plan)), planner.calls

    async def _cover(
        self,
        state: RunState,
        plan: Plan,
        outcomes: dict[str, StepOutcome],
        verifier: Verifier,
        missing: list[str],
    ) -> tuple[Plan, dict[str, StepOutcome], int] | None:
        """Plan once more for the parts of the goal the answer found no result for
        (`missing`): `ReplanRequested`, a plan of just those parts whose steps (ids
        prefixed `c1-`) join the run's plan, run with the completed ones kept. None when
        no plan comes of it: the answer then says which part was not done."""
        note = "parts of the goal not done: " + "; ".join(missing)
        await self._queue(state.run_id, [ReplanRequested(state.run_id, note)])
        state.replanned = True
        catalog = await self._catalog()
        told = {"role": "assistant", "text": f"(the goal was {state.goal!r}; {note})"}
        history = [*await self._history(state.session_id), told]
        planner = self._planner()
        try:
            extra = await planner.plan("; ".join(missing), catalog, history, state.run_id)
        except (InvalidPlan, LLMError):
            return None
        if len(plan.steps) + len(extra.steps) > MAX_STEPS:
            return None  # a plan the log could not give back whole
        merged = Plan((*plan.steps, *renamed(extra, COVER_PREFIX).steps))
        await self._queue(state.run_id, [PlanCreated(state.run_id, merged.to_data())])
        executor = self._repair_executor(state, verifier, PriorState(outcomes=dict(outcomes)))
        return merged, dict(await executor.execute(merged)), planner.calls

    def _repair_executor(self, state: RunState, verifier: Verifier, prior: PriorState) -> Executor:
        """An executor for a repair round: results judged inline, acted on at once."""
        return Executor(
            self.store,
            self.registry,
            state.run_id,
            self._executor_options(),
            on_completed=verifier.verify_now,
            prior=prior,
            refuse_restart=self._refuse_restart,
            approvals=self.approvals,
            principal=state.principal,
        )

    def _idempotent(self, step: PlanStep) -> bool:
        spec = self.registry.spec(step.agent, step.action)
        return spec is not None and spec.idempotent

    async def _answer(
        self,
        state: RunState,
        plan: Plan,
        outcomes: dict[str, StepOutcome],
        held: Sequence[tuple[PlanStep, Any]],
        verdicts: Mapping[str, Verdict],
    ) -> Mapping[str, Any]:
        results = [_result_entry(step, outcomes[step.id], verdicts) for step in plan.steps]
        verify = [{"id": step.id} for step, _ in held]  # their results are in `results`
        messages = answer_messages(self.prompts, state.goal, results, verify)
        reply = await self.provider.chat_json(messages, purpose="answer", run_id=state.run_id)
        return reply.data

    async def _fail(self, state: RunState, reason: str) -> RunResult:
        await self._finish(
            state, RunFailed(state.run_id, reason), f"I could not complete this: {reason}"
        )
        return RunResult(state.run_id, state.session_id, "failed", None, reason)

    async def _finish(
        self,
        state: RunState,
        terminal: Event,
        reply: str,
        context: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """The terminal event and the session's reply, written whole: no cancel cuts them.

        A model's intent analysis still running in the background is waited for first
        (its `IntentAnalyzed` belongs before the end; it also feeds the context)."""
        intent_done = self._intent_done.get(state.run_id)
        if intent_done is not None:
            await intent_done.wait()
        self._finishing.add(state.run_id)
        if state.run_id in self._cancelled:
            return  # a cancel got in first; execute() appends RunCancelled
        with trio.CancelScope(shield=True):
            # One commit for both: the reply's append is awaited, the terminal event
            # queued just before it is durable with it.
            await self.store.submit(f"run-{state.run_id}", [terminal], correlation=state.run_id)
            await self._say(state, reply, context() if context is not None else None)

    async def _say(
        self, state: RunState, text: str, context: Mapping[str, Any] | None = None
    ) -> None:
        """The reply, and (a completed run) what it established for the next plans."""
        events: list[Event] = [AssistantMessageSent(state.session_id, text, state.run_id)]
        if context:
            events.append(ContextUpdated(state.session_id, dict(context)))
        await self.store.append(f"session-{state.session_id}", events, correlation=state.run_id)

    def _context(
        self, state: RunState, plan: Plan, outcomes: Mapping[str, StepOutcome]
    ) -> dict[str, Any]:
        """What a completed run established for the session: the tools that answered,
        and the entities its goal named (intent analysis), for follow-ups such as "and
        what about AAPL?" - the next plan gets it (`_history_from_log`)."""
        tools = sorted(
            {
                s.tool
                for s in plan.steps
                if outcomes.get(s.id, StepOutcome("failed")).status == "completed"
            }
        )
        found = self._intents.get(state.run_id, {})
        context = {k: v for k, v in found.items() if k in CONTEXT_ENTITIES and v}
        return {"tools": tools, **context} if tools or context else {}

    async def _append(self, run_id: str, events: Sequence[Event]) -> None:
        await self.store.append(f"run-{run_id}", events, correlation=run_id)

    async def _queue(self, run_id: str, events: Sequence[Event]) -> None:
        """Append without waiting for the disk: nothing outside the log acts on these
        events, and a crash that loses them loses everything after them too (commits
        are in order), which resume redoes. What is awaited, and why: the executor's
        module docstring."""
        await self.store.submit(f"run-{run_id}", events, correlation=run_id)

    async def _history_from_log(self, session_id: str) -> list[dict[str, Any]]:
        """The session's last messages, read from its stream (used without projections)."""
        # Each run adds up to four records (message, reply, context, forget): the
        # window's messages and the latest context are among the last ones.
        last = 2 * self.options.session_window + CONTEXT_LOOKBACK
        records = await self.store.read_stream_end(f"session-{session_id}", last)
        messages = [
            {
                "role": "user" if r.type == "UserMessageReceived" else "assistant",
                "text": r.data["text"],
            }
            for r in records
            if r.type in ("UserMessageReceived", "AssistantMessageSent")
            and FORGOTTEN_KEY not in r.data  # a forgotten message tells the planner nothing
        ]
        window = (
            messages[-self.options.session_window - 1 : -1] if self.options.session_window else []
        )
        contexts = [
            r.data["values"]
            for r in records
            if r.type == "ContextUpdated" and FORGOTTEN_KEY not in r.data
        ]
        if contexts and isinstance(contexts[-1], dict) and contexts[-1]:
            # The session's latest context first: it outlives the message window.
            return [{"role": "context", "context": contexts[-1]}, *window]
        return window

    # --- resume -----------------------------------------------------------------------------

    async def unfinished_runs(self) -> list[str]:
        """Runs whose stream has no terminal event, oldest first."""
        streams = await trio.to_thread.run_sync(self.store.log.streams, "run-")
        unfinished = []
        for stream, version in streams:
            last = await self.store.read_stream(stream, version - 1, 1)
            if last and last[0].type not in TERMINAL_RUN_TYPES | {"RunRetried"}:
                unfinished.append((last[0].position, stream[len("run-") :]))
        return [run_id for _, run_id in sorted(unfinished)]

    async def resume_unfinished(self) -> list[RunResult]:
        """Resume every unfinished run concurrently; returns their results."""
        results: list[RunResult] = []

        async def resume_one(run_id: str) -> None:
            results.append(await self.execute(run_id, resume=True))

        async with trio.open_nursery() as nursery:
            for run_id in await self.unfinished_runs():
                nursery.start_soon(resume_one, run_id)
        return results


def _missing(reply: Mapping[str, Any]) -> list[str]:
    """The parts of the goal an answer says no result covers, as short texts."""
    found = reply.get("missing")
    if not isinstance(found, list):
        return []
    parts = []
    for item in found[:MAX_STEPS]:
        part = item.get("part") if isinstance(item, Mapping) else item
        if isinstance(part, str) and part.strip():
            parts.append(part.strip()[:500])
    return parts


def _result_entry(
    step: PlanStep, outcome: StepOutcome, verdicts: Mapping[str, Verdict]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": step.id, "agent": step.agent, "action": step.action}
    verdict = verdicts.get(step.id)
    if outcome.status == "completed" and verdict is not None and verdict.failed:
        entry["error"] = f"its result did not pass verification: {verdict.notes}"
    elif outcome.status == "completed":
        entry["result"] = outcome.result
    else:
        entry["error"] = f"{outcome.status}: {outcome.message}"
    return entry
