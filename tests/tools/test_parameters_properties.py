"""Property (hypothesis): a tool called with parameters a plan may hold (anything its
schema check lets through: any JSON value of the declared type, NaN and infinities
included, as Python's json reads them from a model) returns a result, or raises
`ToolError` with a message; never a `TypeError`, `OverflowError` or `ValueError` from
inside. Its result then goes to the log or is refused there by name (the executor fails
the step then). Run over the tools that need no network: math, clock and files (in a
scratch workspace).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.errors import ToolError
from agents.llm import ToolSpec
from agents.tools import AgentContext, ClockAgent, FilesAgent, MathAgent, check_parameters
from agents.tools._base import Agent
from events import ANY, EventStoreError, StepCompleted
from events._store import prepare_append

from .conftest import TIMEOUT_S

AGENTS: list[type[Agent]] = [MathAgent, ClockAgent, FilesAgent]
SPECS = [spec for agent in AGENTS for spec in agent.tool_specs()]

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3)
    ),
    max_leaves=8,
)
TYPED: dict[str, st.SearchStrategy[Any]] = {
    "string": any_text
    | st.sampled_from(["2024-02-29", "2024-03-01T09:30:00+01:00", "notes.txt", "*.md", "a/b"])
    | st.sampled_from(["17 * 23 + 4", "2 ** 10000", "10 ** 10 ** 10", "1 / 0", "(" * 500])
    | st.sampled_from(["../outside.txt", "/etc/passwd", "a\x00b", "~", ".", ""]),
    "number": st.floats() | st.integers(-(2**80), 2**80),
    "integer": st.integers(-(2**80), 2**80),
    "boolean": st.booleans(),
    "array": st.lists(json_values, max_size=3),
    "object": st.dictionaries(any_text, json_values, max_size=3),
}


def value_for(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, Mapping) and schema.get("enum"):
        return st.sampled_from(list(schema["enum"]))
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return TYPED.get(str(kind), json_values)


def parameters_for(spec: ToolSpec) -> st.SearchStrategy[dict[str, Any]]:
    properties = spec.properties
    required = {name: value_for(properties.get(name, {})) for name in spec.required}
    optional = {n: value_for(s) for n, s in properties.items() if n not in spec.required}
    return st.fixed_dictionaries(required, optional=optional)


async def call(spec: ToolSpec, parameters: dict[str, Any], workspace: Path) -> Any:
    agent_class = next(a for a in AGENTS if a.name == spec.agent)
    agent = agent_class(AgentContext(workspace_roots=(workspace,)))  # type: ignore[call-arg]
    try:
        with trio.fail_after(TIMEOUT_S):
            return await agent.tools()[spec.action].call(parameters)
    finally:
        await agent.aclose()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_a_tool_given_parameters_its_check_accepts_returns_or_raises_tool_error(
    spec: ToolSpec, data: st.DataObject
) -> None:
    parameters = data.draw(parameters_for(spec))
    if check_parameters(spec, parameters):
        return  # the plan validator refuses these before any tool sees them
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        (workspace / "notes.txt").write_text("some notes\n")
        try:
            result = await call(spec, parameters, workspace)
        except ToolError as exc:
            assert str(exc)
            return
    try:
        prepare_append("run-r", [StepCompleted("r", "s", result, 0.1)], ANY, 1 << 22)
    except EventStoreError as exc:  # refused by name: the executor fails the step
        assert str(exc)
