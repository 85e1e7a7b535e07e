"""Test agents whose tools behave on purpose: they sleep, fail, hang, return what the log
cannot hold, count their side effects in a file, and count how often their batch form
is called. Real `Agent` subclasses, registered in a real `AgentRegistry`.

Every tool reports to the `Probe` passed in the agent context (`settings.extras["probe"]`):
when each labelled call started and ended (on Trio's clock, so a `MockClock` makes
them exact), how many times each tool was called, and side effects appended to a file
so they survive a "restart" (a new registry over the same file).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from agents.errors import ToolError
from agents.llm import ToolSpec
from agents.tools import AgentContext
from agents.tools._base import Agent, Tool

HUGE_RESULT_CHARS = 200_000


class Probe:
    """What the lab tools did: a timeline, call counts, side effects in a file."""

    def __init__(self, effects: Path, head: Callable[[], int] | None = None) -> None:
        self.effects = effects
        self.timeline: list[tuple[str, str, float]] = []  # (label, "start" | "end", time)
        self.calls: collections.Counter[str] = collections.Counter()
        # With `head` (a store's durable head position): the head when each effect ran.
        self._head = head
        self.head_at_effect: dict[str, int] = {}

    def mark(self, label: str, what: str) -> None:
        self.timeline.append((label, what, trio.current_time()))

    def times(self, what: str) -> dict[str, float]:
        return {label: t for label, kind, t in self.timeline if kind == what}

    def max_overlap(self) -> int:
        """The most calls that were running at one moment."""
        running = peak = 0
        # Ends sort before starts at the same instant: a slot freed can be taken at once.
        for _, kind, _ in sorted(self.timeline, key=lambda e: (e[2], e[1] == "start")):
            running += 1 if kind == "start" else -1
            peak = max(peak, running)
        return peak

    def effect(self, label: str) -> int:
        """Record one side effect of `label`; the number of its effects so far."""
        if self._head is not None:
            self.head_at_effect[label] = self._head()
        with self.effects.open("a") as file:
            file.write(label + "\n")
        return self.effect_count(label)

    def effect_count(self, label: str) -> int:
        if not self.effects.exists():
            return 0
        return self.effects.read_text().splitlines().count(label)


def _schema(properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


TEXT = {"type": "string"}

LAB_SPECS = (
    ToolSpec(
        "lab",
        "sleep",
        "Sleep for some seconds, then return.",
        _schema({"label": TEXT, "seconds": {"type": "number"}}, ["label", "seconds"]),
    ),
    ToolSpec("lab", "fail", "Always fails.", _schema({"message": TEXT}, ["message"])),
    ToolSpec("lab", "hang", "Never returns.", _schema({"label": TEXT}, [])),
    ToolSpec(
        "lab",
        "odd",
        "Returns a value the event log cannot store as it is.",
        _schema({"kind": {"type": "string", "enum": ["object", "int_keys", "huge"]}}, ["kind"]),
    ),
    ToolSpec(
        "lab",
        "append",
        "Appends a line to a file (not idempotent).",
        _schema({"label": TEXT}, ["label"]),
        idempotent=False,
    ),
    ToolSpec(
        "lab",
        "touch",
        "Records that it ran (idempotent).",
        _schema({"label": TEXT}, ["label"]),
        idempotent=True,
    ),
    ToolSpec(
        "lab",
        "lookup",
        "Looks up one key; batchable.",
        _schema({"key": TEXT}, ["key"]),
        batchable=True,
        batch_action="lookup_many",
    ),
    ToolSpec("lab", "echo", "Returns its value.", _schema({"value": {}}, ["value"])),
    ToolSpec(
        "lab",
        "flaky",
        "Returns an empty result for the first `empty_calls` calls with a label (default 1),"
        " a value afterwards (idempotent).",
        _schema({"label": TEXT, "empty_calls": {"type": "integer"}}, ["label"]),
        idempotent=True,
    ),
    ToolSpec(
        "lab",
        "hollow",
        "Records a side effect and returns an empty result (not idempotent).",
        _schema({"label": TEXT}, ["label"]),
        idempotent=False,
    ),
)

Call = Callable[[Mapping[str, Any]], Awaitable[Any]]
BatchCall = Callable[[Sequence[Mapping[str, Any]]], Awaitable[list[Any]]]


class LabTool(Tool):
    def __init__(self, spec: ToolSpec, call: Call, batch: BatchCall | None = None) -> None:
        self.spec = spec
        self._call = call
        self._batch = batch

    async def call(self, parameters: Mapping[str, Any]) -> Any:
        return await self._call(parameters)

    async def call_batch(self, batch: Sequence[Mapping[str, Any]]) -> list[Any]:
        if self._batch is None:
            return await super().call_batch(batch)
        return await self._batch(batch)


class LabAgent(Agent):
    """The `lab` agent: one tool per behaviour a test needs."""

    name = "lab"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return LAB_SPECS

    def __init__(self, context: AgentContext) -> None:
        self.probe: Probe = context.settings.extras["probe"]
        calls: dict[str, Call] = {
            "sleep": self._sleep,
            "fail": self._fail,
            "hang": self._hang,
            "odd": self._odd,
            "append": self._append,
            "touch": self._touch,
            "lookup": self._lookup,
            "echo": self._echo,
            "flaky": self._flaky,
            "hollow": self._hollow,
        }
        self._tools = {
            spec.action: LabTool(
                spec, calls[spec.action], self._lookup_many if spec.action == "lookup" else None
            )
            for spec in LAB_SPECS
        }

    def tools(self) -> Mapping[str, Tool]:
        return self._tools

    async def _sleep(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        label = str(parameters["label"])
        self.probe.calls["sleep"] += 1
        self.probe.mark(label, "start")
        await trio.sleep(parameters["seconds"])
        self.probe.mark(label, "end")
        return {"label": label, "slept": parameters["seconds"]}

    async def _fail(self, parameters: Mapping[str, Any]) -> Any:
        await trio.lowlevel.checkpoint()
        raise ToolError(str(parameters["message"]))

    async def _hang(self, parameters: Mapping[str, Any]) -> Any:
        self.probe.mark(str(parameters.get("label", "hang")), "start")
        await trio.sleep_forever()

    async def _odd(self, parameters: Mapping[str, Any]) -> Any:
        await trio.lowlevel.checkpoint()
        kind = parameters["kind"]
        if kind == "object":
            return object()
        if kind == "int_keys":
            return {2024: 1.5, 2025: 2.5}
        return "x" * HUGE_RESULT_CHARS

    async def _append(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        label = str(parameters["label"])
        return {"label": label, "count": self.probe.effect(label)}

    async def _flaky(self, parameters: Mapping[str, Any]) -> Any:
        await trio.lowlevel.checkpoint()
        label = str(parameters["label"])
        count = self.probe.effect(label)
        if count <= int(parameters.get("empty_calls", 1)):
            return ""
        return {"label": label, "value": f"ready after {count} calls"}

    async def _hollow(self, parameters: Mapping[str, Any]) -> Any:
        await trio.lowlevel.checkpoint()
        self.probe.effect(str(parameters["label"]))
        return ""

    async def _touch(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        label = str(parameters["label"])
        return {"label": label, "count": self.probe.effect(label)}

    async def _lookup(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        self.probe.calls["lookup"] += 1
        return _looked_up(str(parameters["key"]))

    async def _lookup_many(self, batch: Sequence[Mapping[str, Any]]) -> list[Any]:
        await trio.lowlevel.checkpoint()
        self.probe.calls["lookup_many"] += 1
        results: list[Any] = []
        for parameters in batch:
            try:
                results.append(_looked_up(str(parameters["key"])))
            except ToolError as exc:
                results.append(exc)
        return results

    async def _echo(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {"value": parameters["value"]}


def _looked_up(key: str) -> dict[str, Any]:
    if key == "missing":
        raise ToolError("no value for 'missing'")
    return {"key": key, "value": len(key)}


# A calculator whose schema the offline planner cannot satisfy: it fills `expression`
# from the goal but has no value for the required `precision`, so its plan is invalid.
EVALUATE = ToolSpec(
    "calc",
    "evaluate",
    "Evaluate an arithmetic expression to a given precision.",
    _schema({"expression": TEXT, "precision": {"type": "integer"}}, ["expression", "precision"]),
    keywords=("calculate", "compute", "arithmetic"),
)


class CalcAgent(Agent):
    name = "calc"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (EVALUATE,)

    def __init__(self, context: AgentContext) -> None:
        self._tools = {"evaluate": LabTool(EVALUATE, self._evaluate)}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools

    async def _evaluate(self, parameters: Mapping[str, Any]) -> Any:
        await trio.lowlevel.checkpoint()
        raise ToolError("never planned validly, so never called")


def step(
    step_id: str, action: str, dependencies: Sequence[str] = (), **parameters: Any
) -> dict[str, Any]:
    """One `lab` step as a plan's JSON has it."""
    return {
        "id": step_id,
        "agent": "lab",
        "action": action,
        "parameters": parameters,
        "dependencies": list(dependencies),
        "reasoning": f"test step {step_id}",
    }


def sleep_step(step_id: str, seconds: float, dependencies: Sequence[str] = ()) -> dict[str, Any]:
    return step(step_id, "sleep", dependencies, label=step_id, seconds=seconds)
