"""The tool interface: a `Tool` is a `ToolSpec` (cheap metadata) plus an async call.

An `Agent` groups tools (the `quotes` agent has `get_stock_price` and its batch form).
Agents are registered as classes whose `tool_specs()` is cheap and static, so the
catalog never builds an agent; the registry constructs one on first use with an
`AgentContext` (configuration, the shared HTTP client, the LLM).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from agents.errors import InvalidParameters, ToolError
from agents.llm import ToolSpec

ToolResult = Any

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
}


class Tool(abc.ABC):
    """One action of an agent."""

    spec: ToolSpec

    @abc.abstractmethod
    async def call(self, parameters: Mapping[str, Any]) -> ToolResult:
        """Run the tool; raise `ToolError` (or a subclass) for a reported failure."""

    async def call_batch(self, batch: Sequence[Mapping[str, Any]]) -> list[ToolResult]:
        """Run several calls of a batchable tool at once; results in the same order."""
        raise ToolError(f"{self.spec.name} has no batch form")


class Agent(abc.ABC):
    """A named group of tools, built lazily by the registry."""

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        """The tools' metadata; must be cheap (no I/O, no construction)."""

    @abc.abstractmethod
    def tools(self) -> Mapping[str, Tool]:
        """Action name -> tool."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the agent holds."""


def check_parameters(spec: ToolSpec, parameters: Mapping[str, Any]) -> list[str]:
    """Problems of `parameters` against the spec's JSON schema (required, types, extras)."""
    problems = [f"missing parameter {name!r}" for name in spec.required if name not in parameters]
    properties = spec.properties
    for name, value in parameters.items():
        schema = properties.get(name)
        if schema is None:
            if properties and not spec.parameters.get("additionalProperties", False):
                problems.append(f"unknown parameter {name!r}")
            continue
        problems.extend(_check_value(name, value, schema))
    return problems


def _check_value(name: str, value: Any, schema: Mapping[str, Any]) -> list[str]:
    if isinstance(value, str):
        try:  # JSON escapes can smuggle in lone surrogates, which no file or API takes
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [f"parameter {name!r} is not valid Unicode text"]
    if isinstance(value, str) and value.startswith("${"):
        return []  # a reference to an earlier step's output, checked after resolution
    expected = _JSON_TYPES.get(str(schema.get("type", "")))
    if expected is None:
        return []
    if isinstance(value, bool) and bool not in expected:
        return [f"parameter {name!r} should be {schema['type']}, got boolean"]
    if not isinstance(value, expected):
        return [f"parameter {name!r} should be {schema['type']}, got {type(value).__name__}"]
    enum = schema.get("enum")
    if enum and value not in enum:
        return [f"parameter {name!r} must be one of {', '.join(map(str, enum))}"]
    return []


def require_valid(spec: ToolSpec, parameters: Mapping[str, Any]) -> None:
    problems = check_parameters(spec, parameters)
    if problems:
        raise InvalidParameters(f"{spec.name}: " + "; ".join(problems))
