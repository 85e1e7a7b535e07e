"""The planner: one model call turns a goal, the session's recent messages and the tool
catalog into a validated plan; an invalid plan gets one re-ask with the problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.errors import InvalidModelOutput, InvalidPlan, PlanRefused
from agents.llm import LLMProvider, PromptRepository, ToolCatalog, intent_of, plan_messages
from agents.runs._plan import Plan, parse_plan, validate_plan

PLAN_SCHEMA = {"type": "object", "properties": {"steps": {"type": "array"}}, "required": ["steps"]}


class Planner:
    """Plan calls for one run (`calls` counts them); `compact_tools`, `compact_history`,
    `compact_steps`: the tools and the earlier messages are shown, and the steps asked
    for, in their compact forms; `with_intent`:
    plan calls also ask for the goal's intent and entities until a reply has them, kept
    in `intent` (see `plan_messages`)."""

    def __init__(
        self,
        provider: LLMProvider,
        prompts: PromptRepository,
        *,
        compact_tools: bool = True,
        compact_history: bool = True,
        compact_steps: bool = True,
        with_intent: bool = False,
    ) -> None:
        self._provider = provider
        self._prompts = prompts
        self._compact_tools = compact_tools
        self._compact_history = compact_history
        self._compact_steps = compact_steps
        self._with_intent = with_intent
        self.calls = 0
        self.intent: dict[str, Any] | None = None

    async def plan(
        self,
        goal: str,
        catalog: ToolCatalog,
        history: Sequence[Any],
        run_id: str,
        *,
        shown: ToolCatalog | None = None,
    ) -> Plan:
        """A valid plan, or `InvalidPlan` / `PlanRefused` with the reason.

        `shown`: the part of `catalog` the planner is shown (`ToolSelector`); a plan
        refused over it is asked for again over the whole catalog. A plan is validated
        against the whole catalog, and repaired over it.
        """
        messages = self._messages(goal, shown or catalog, history)
        try:
            return await self._ask(messages, catalog, run_id)
        except PlanRefused:
            if shown is None or shown.hash == catalog.hash:
                raise
            return await self.plan(goal, catalog, history, run_id)
        except (InvalidPlan, InvalidModelOutput) as first:
            return await self.repair(goal, catalog, history, run_id, first)

    async def repair(
        self,
        goal: str,
        catalog: ToolCatalog,
        history: Sequence[Any],
        run_id: str,
        error: Exception,
    ) -> Plan:
        """One re-ask naming what was wrong with the previous plan."""
        messages = self._messages(goal, catalog, history)
        repair = [*messages, {"role": "assistant", "content": _problem_text(error)}]
        repair.append(messages[-1] | {"content": _repair_request(messages[-1]["content"], error)})
        return await self._ask(repair, catalog, run_id)

    def _messages(
        self, goal: str, catalog: ToolCatalog, history: Sequence[Any]
    ) -> list[dict[str, str]]:
        return plan_messages(
            self._prompts,
            goal,
            catalog,
            history,
            compact_tools=self._compact_tools,
            compact_history=self._compact_history,
            compact_steps=self._compact_steps,
            with_intent=self._with_intent and self.intent is None,
        )

    async def _ask(self, messages: list[dict[str, str]], catalog: ToolCatalog, run_id: str) -> Plan:
        self.calls += 1
        answer = await self._provider.chat_json(
            messages, purpose="plan", run_id=run_id, schema_hint=PLAN_SCHEMA
        )
        if self._with_intent and self.intent is None:
            self.intent = intent_of(answer.data)
        if answer.data.get("steps") == [] and answer.data.get("error"):
            raise PlanRefused([str(answer.data["error"])])
        return validate_plan(parse_plan(answer.data), catalog)


def _problem_text(error: Exception) -> str:
    return f"(previous answer rejected: {error})"


def _repair_request(document: str, error: Exception) -> str:
    """The same task document, with the validation problems to fix."""
    import json

    data = json.loads(document)
    problems = error.problems if isinstance(error, InvalidPlan) else [str(error)]
    data["problems"] = problems
    data["instruction"] = "The previous plan was invalid; return a corrected plan."
    return json.dumps(data, ensure_ascii=False)
