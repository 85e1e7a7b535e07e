"""Reading a plan while the model is still writing it.

`StepStreamParser` is fed the streamed text and hands back each step object of the
`"steps"` array as soon as its closing brace arrives (a small scanner that tracks
strings, escapes and nesting depth; no full JSON parse until a step is complete).
The planner validates each step on arrival (known tool, parameters, dependencies on
steps already received), so the executor can start it at once: LLMCompiler's idea.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio

from agents.errors import InvalidModelOutput, InvalidPlan, LLMError, PlanRefused
from agents.llm import (
    LLMProvider,
    PromptRepository,
    ToolCatalog,
    intent_of,
    parse_json_object,
    plan_messages,
)
from agents.runs._plan import MAX_REASON_CHARS, Plan, PlanStep, _step_from, validate_plan

_STEPS_KEY = '"steps"'


class StepStreamParser:
    """Incremental extraction of the step objects of `{"steps": [ {...}, {...} ]}`."""

    def __init__(self) -> None:
        self._text = ""
        self._cursor = -1  # index just after the '[' of the steps array, once found
        self._depth = 0
        self._start = -1
        self._in_string = False
        self._escape = False
        self.finished = False

    def feed(self, chunk: str) -> list[dict[str, Any]]:
        self._text += chunk
        if self._cursor < 0 and not self._find_array():
            return []
        return self._scan()

    def _find_array(self) -> bool:
        key = self._text.find(_STEPS_KEY)
        bracket = self._text.find("[", key + len(_STEPS_KEY)) if key >= 0 else -1
        if bracket < 0:
            return False
        self._cursor = bracket + 1
        return True

    def _scan(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        text = self._text
        while self._cursor < len(text) and not self.finished:
            char = text[self._cursor]
            self._step_char(char, found)
            self._cursor += 1
        return found

    def _step_char(self, char: str, found: list[dict[str, Any]]) -> None:
        if self._in_string:
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._in_string = False
        elif char == '"':
            self._in_string = True
        elif char == "{":
            if self._depth == 0:
                self._start = self._cursor
            self._depth += 1
        elif char == "}":
            self._depth -= 1
            if self._depth == 0:
                found.append(_object(self._text[self._start : self._cursor + 1]))
        elif char == "]" and self._depth == 0:
            self.finished = True


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidPlan([f"a streamed step is not JSON ({exc})"]) from exc
    except RecursionError:
        raise InvalidPlan(["a streamed step is nested too deeply to read"]) from None
    if not isinstance(value, dict):
        raise InvalidPlan(["a streamed step is not an object"])
    return value


def check_streamed_step(
    step: PlanStep, earlier: Sequence[PlanStep], catalog: ToolCatalog
) -> PlanStep:
    """Validate one step against the catalog and the steps before it.

    In a streamed plan a step may only depend on steps already received, so it can
    start the moment they are done.
    """
    known = {s.id for s in earlier}
    if step.id in known:
        raise InvalidPlan([f"step id {step.id!r} appears twice"])
    missing = [d for d in step.dependencies if d not in known]
    if missing:
        raise InvalidPlan(
            [f"step {step.id} depends on {', '.join(missing)}, not received before it"]
        )
    partial = validate_plan(Plan((*earlier, step)), catalog)
    return partial.steps[-1]


async def stream_plan(
    provider: LLMProvider,
    prompts: PromptRepository,
    goal: str,
    catalog: ToolCatalog,
    history: Sequence[Any],
    run_id: str,
    on_step: Callable[[PlanStep], Awaitable[None]],
    *,
    compact_tools: bool = True,
    compact_history: bool = True,
    compact_steps: bool = True,
    shown: ToolCatalog | None = None,
    on_intent: Callable[[dict[str, Any] | None], Awaitable[None]] | None = None,
    tail: trio.Nursery | None = None,
) -> Plan:
    """Stream the plan, handing each validated step to `on_step` as it arrives
    (`compact_tools`, `compact_history`, `compact_steps`: see `plan_messages`; `shown`:
    the tools the planner is shown, default the whole `catalog`, which steps are
    validated against).
    `on_intent`: the request also asks for the goal's intent and entities, which come
    after the steps; once a plan is made, `on_intent` is awaited with them (`intent_of`),
    or with None when the reply has none or broke off after its last step. With `tail`,
    the plan is returned as soon as its steps' array has closed, and a task in `tail`
    reads the rest of the reply (the intent) and awaits `on_intent`, also when cancelled:
    nothing of the run waits for the reply's last tokens but what needs the intent.

    Returns the whole plan; `InvalidPlan` on a bad step, or with the model's
    explanation when it produced no steps (then `on_intent` is awaited only if the
    refusal named an intent). A stream that breaks once the steps' array has closed
    still gives its plan. (A callback rather than an async generator, so no yield
    crosses the stream's context.)
    """
    messages = plan_messages(
        prompts,
        goal,
        shown or catalog,
        history,
        compact_tools=compact_tools,
        compact_history=compact_history,
        compact_steps=compact_steps,
        with_intent=on_intent is not None,
    )
    read = partial(_read_plan, provider, messages, run_id, catalog, on_step, on_intent)
    if tail is not None and on_intent is not None:
        plan: Plan = await tail.start(read)
        return plan
    return await read()


async def _read_plan(
    provider: LLMProvider,
    messages: list[dict[str, str]],
    run_id: str,
    catalog: ToolCatalog,
    on_step: Callable[[PlanStep], Awaitable[None]],
    on_intent: Callable[[dict[str, Any] | None], Awaitable[None]] | None,
    task_status: trio.TaskStatus[Plan] = trio.TASK_STATUS_IGNORED,
) -> Plan:
    """The streamed reply: steps to `on_step`, the plan through `task_status` the moment
    its steps' array closes (run in a nursery with `start`, the rest is read after),
    then the intent to `on_intent`."""
    parser = StepStreamParser()
    steps: list[PlanStep] = []
    planned = False
    found: dict[str, Any] | None = None
    try:
        async with provider.stream_chat(
            messages, purpose="plan", run_id=run_id, json_mode=True
        ) as stream:
            async for chunk in stream:
                for data in parser.feed(chunk):
                    step = check_streamed_step(_step_from(len(steps), data), steps, catalog)
                    steps.append(step)
                    await on_step(step)
                if parser.finished and steps and not planned:
                    planned = True
                    task_status.started(Plan(tuple(steps)))
            text = stream.text
        found = _intent_in(text)
        if not steps:
            if found is not None and on_intent is not None:
                await on_intent(found)  # a refusal still read the goal
            raise PlanRefused([_refusal(text)])
        if not planned:  # the reply ended without closing its steps' array
            planned = True
            task_status.started(Plan(tuple(steps)))
    except LLMError:
        if not planned:
            raise
        # After the last step: the plan stands; only the intent is lost.
    finally:
        if planned and on_intent is not None:
            await on_intent(found)
    return Plan(tuple(steps))


def _refusal(text: str) -> str:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return "the planner's streamed answer is not JSON"
    if isinstance(document, dict) and isinstance(document.get("error"), str) and document["error"]:
        return str(document["error"])[:MAX_REASON_CHARS]
    return "the planner produced no steps"


def _intent_in(text: str) -> dict[str, Any] | None:
    """The intent and entities of a whole streamed plan reply (`intent_of`), or None; a
    reply the provider would refuse as a JSON answer (not an object, nested too deeply)
    has none."""
    try:
        return intent_of(parse_json_object(text))
    except InvalidModelOutput:
        return None
