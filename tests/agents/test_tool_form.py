"""The compact form of the tools in a plan request (`features.compact_tool_catalog`):
fewer tokens, and exactly the same tools as the JSON schemas to whoever reads them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.llm import (
    PromptRepository,
    ToolSpec,
    compact_dict,
    estimate_prompt_tokens,
    parse_compact,
    plan_messages,
)
from agents.llm._tool_form import parse_parameter, render_parameter
from agents.offline import _model as model
from agents.tools._registry import AgentRegistry
from tests.agents.test_goldens import GOLDENS
from tests.agents.test_offline_phrasings import PHRASINGS

CATALOG = AgentRegistry.from_entry_points().catalog()
NOW = datetime(2026, 11, 27, 15, 40, tzinfo=UTC)


def read_back(spec: ToolSpec) -> ToolSpec:
    """The tool as the offline model reads it from the request: shown, sent as JSON."""
    read = model._tool(json.loads(json.dumps(compact_dict(spec))))
    assert read is not None
    return read


def planner_view(spec: ToolSpec) -> tuple[Any, ...]:
    props = json.loads(json.dumps(dict(spec.properties)))
    return (spec.name, spec.description, props, set(spec.required), spec.keywords, spec.acts_for)


@pytest.mark.parametrize("spec", CATALOG.specs, ids=[s.name for s in CATALOG.specs])
def test_every_shipped_tool_is_shown_compactly_and_read_back_the_same(spec: ToolSpec) -> None:
    shown = compact_dict(spec)
    assert shown["tool"] == spec.name
    assert all(isinstance(text, str) for text in shown["parameters"].values())
    assert planner_view(read_back(spec)) == planner_view(spec)


def test_the_compact_plan_request_takes_at_least_a_fifth_fewer_tokens() -> None:
    compact, schemas = (
        estimate_prompt_tokens(plan_messages(PromptRepository(), "hi", CATALOG, compact_tools=c))
        for c in (True, False)
    )
    assert compact <= 0.8 * schemas, (compact, schemas)


GOALS = sorted({*PHRASINGS.values(), *(goal for golden in GOLDENS for goal in golden.goals)})


@pytest.mark.parametrize("goal", GOALS)
def test_the_offline_model_plans_the_same_from_either_form(goal: str) -> None:
    compact, schemas = (
        model.respond(plan_messages(PromptRepository(), goal, CATALOG, now=NOW, compact_tools=form))
        for form in (True, False)
    )
    assert compact == schemas


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        ({"type": "string"}, "string"),
        ({"type": "integer", "description": "1-50: default 5"}, "integer: 1-50: default 5"),
        ({"description": "what to remember"}, "any: what to remember"),
        ({"type": "array", "items": {"type": "string"}}, "array of string"),
        ({"type": "array", "items": {}, "description": "results"}, "array: results"),
        (
            {"type": "string", "enum": ["a", "b"], "default": "a", "description": "d"},
            'a|b, default "a": d',
        ),
    ],
)
def test_a_parameter_reads_as_its_text_and_back(schema: dict[str, Any], text: str) -> None:
    assert render_parameter(schema) == text
    assert parse_parameter(text) == schema


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "enum": ["only"]},  # one value would read as a type
        {"type": "string", "enum": ["a|b", "c"]},
        {"type": "integer", "minimum": 1},
        {"type": "array"},
        {"type": "array", "items": {"type": "string", "minLength": 1}},
        {"type": "string", "default": "x: y"},
        {"type": ["string", "null"]},
        {"enum": ["a", "b"]},
        {"type": "string", "enum": ["true", "false"]},  # a model would read booleans
        {"type": "string", "enum": ["1", "2.5"]},
        {"type": "string", "enum": ["string", "integer"]},  # or types
        {"type": "string", "enum": ["any", "all"]},
        {"type": "string", "enum": ["array of x", "y"]},
    ],
)
def test_a_parameter_the_text_cannot_say_is_shown_as_its_schema(schema: dict[str, Any]) -> None:
    assert render_parameter(schema) == schema


def test_a_parameter_shown_as_its_schema_is_plain_json() -> None:
    nested = {"type": "array", "items": MappingProxyType({"type": "string", "minLength": 1})}
    shown = render_parameter(nested)
    assert shown == {"type": "array", "items": {"type": "string", "minLength": 1}}
    assert type(shown["items"]) is dict  # a proxy would be sent as its repr


def _spec(**changes: Any) -> ToolSpec:
    fields: dict[str, Any] = {
        "agent": "notes",
        "action": "add",
        "description": "Add a note.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        "keywords": ("note",),
    }
    return ToolSpec(**(fields | changes))


@pytest.mark.parametrize(
    "spec",
    [
        _spec(keywords=("two words",)),
        _spec(parameters={"type": "object", "properties": {"x?": {"type": "string"}}}),
        _spec(parameters={"type": "object", "properties": {}, "additionalProperties": False}),
        _spec(parameters={"type": "object", "properties": {}, "required": ["missing"]}),
        _spec(agent="my.notes"),
        _spec(
            parameters={
                "type": "object",
                "properties": {"at": {"type": "string", "default": {1, 2}}},
            }
        ),
        _spec(parameters={"type": "object", "properties": {1: {"type": "string"}}}),
        _spec(keywords=(1, "note")),
        _spec(parameters={"type": "object", "properties": {}, "required": ["a", ["b"]]}),
    ],
    ids=[
        "keyword-with-space",
        "name-ending-in-mark",
        "more-schema",
        "required-unknown",
        "dot",
        "default-not-json",
        "key-not-text",
        "keyword-not-text",
        "required-not-names",
    ],
)
def test_a_tool_the_compact_form_cannot_say_is_shown_as_its_schema(spec: ToolSpec) -> None:
    assert compact_dict(spec) == spec.prompt_dict()
    system, user = plan_messages(PromptRepository(), "hi", [_spec(), spec])
    assert "A tool this form cannot describe is shown instead" in system["content"]
    assert [t.get("tool") for t in json.loads(user["content"])["tools"]] == ["notes.add", None]


def test_the_plan_prompt_tells_of_schemas_only_when_a_tool_is_shown_as_one() -> None:
    system, _ = plan_messages(PromptRepository(), "hi", CATALOG)
    assert "A tool this form cannot describe" not in system["content"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
PARAMETER = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "number", "integer", "boolean", "array", "object"]),
        "description": st.text(max_size=40),
        "default": JSON_VALUES,
        "enum": st.lists(st.text(max_size=6), max_size=3),
        "items": st.sampled_from([{}, {"type": "string"}, {"type": "x y"}]),
        "minimum": st.integers(),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=8), PARAMETER, max_size=4),
    st.lists(st.text(min_size=1, max_size=8), max_size=4),
    st.lists(st.text(max_size=8), max_size=3),
)
def test_whatever_the_tool_a_model_reads_back_what_it_is(
    properties: dict[str, Any], required: list[str], keywords: list[str]
) -> None:
    spec = _spec(
        parameters={"type": "object", "properties": properties, "required": required},
        keywords=tuple(keywords),
    )
    assert planner_view(read_back(spec)) == planner_view(spec)


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["tool", "agent", "action", "description", "parameters", "keywords", "acts_for"]
        ),
        ANY_JSON,
    )
)
def test_the_offline_model_reads_any_tool_entry_without_failing(entry: dict[str, Any]) -> None:
    read = model._tool(entry)
    assert read is None or isinstance(read, ToolSpec)


def test_a_deeply_nested_default_is_read_as_no_default() -> None:
    deep = "[" * 5000 + "]" * 5000
    spec = parse_compact({"tool": "a.b", "parameters": {"x": f"string, default {deep}"}})
    assert spec.properties == {"x": {"type": "string"}}
    assert model._tool({"agent": "a", "action": "b", "description": [[[]]] * 3}) is not None
