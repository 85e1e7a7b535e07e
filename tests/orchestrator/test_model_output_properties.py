"""Total validation of what comes back from the model, and of tool parameters in plans.

Properties (hypothesis), over the catalog of the shipped agents:
- any JSON document (wrong types anywhere, nesting far past the recursion limit, huge
  lists) read as a plan is a valid `Plan` or an `InvalidPlan` whose problems are text;
  a valid plan really is a DAG over known tools with parameters their schemas accept;
- any text from a model is a JSON object or `InvalidModelOutput`;
- any verdict object becomes a `Verdict` of the right types (0 <= confidence <= 1);
- each tool's parameter check turns any JSON object into a list of problems (never an
  exception), and `require_valid` agrees with it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agents.errors import InvalidModelOutput, InvalidParameters, InvalidPlan
from agents.llm import ToolCatalog, ToolSpec, parse_json_object
from agents.runs._plan import MAX_STEPS, Plan, parse_plan, references, resolve, validate_plan
from agents.runs._verifier import (
    MAX_NOTES_CHARS,
    Verdict,
    _listed_verdicts,
    _verdict,
    folded_verdicts,
)
from agents.tools import AgentRegistry, check_parameters
from agents.tools._base import require_valid
from agents.tools._registry import discover_agents

CATALOG: ToolCatalog = AgentRegistry(discover_agents()).catalog()
SPECS = CATALOG.specs

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and infinities too: Python's json reads them from a model
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=16,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    """`leaf` inside `depth` alternating lists and objects (built without recursion)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


deep_values = st.integers(min_value=30, max_value=5000).map(nested)


def plausible_value(schema: Any) -> st.SearchStrategy[Any]:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(schema, dict) and schema.get("enum"):
        return st.sampled_from(schema["enum"]) | json_values
    typed = {
        "string": st.text(max_size=20),
        "number": st.floats() | st.integers(-1000, 1000),
        "integer": st.integers(-(2**70), 2**70),
        "boolean": st.booleans(),
        "array": st.lists(json_values, max_size=3),
        "object": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    }.get(str(kind), json_values)
    return typed | typed | typed | json_values | deep_values


@st.composite
def plausible_steps(draw: st.DrawFn) -> dict[str, Any]:
    spec: ToolSpec = draw(st.sampled_from(SPECS))
    parameters = {
        name: draw(plausible_value(schema))
        for name, schema in spec.properties.items()
        if draw(st.integers(0, 9)) > 0
    }
    step: dict[str, Any] = {
        "id": draw(st.sampled_from(["s1", "s2", "s3", 4]) | json_values),
        "agent": spec.agent if draw(st.integers(0, 9)) else draw(json_values),
        "action": spec.action,
        "parameters": parameters if draw(st.integers(0, 9)) else draw(json_values),
        "dependencies": draw(st.lists(st.sampled_from(["s1", "s2", "s3"]), max_size=2)),
    }
    if draw(st.booleans()):
        step["reasoning"] = draw(json_values)
    return step


plan_documents = (
    st.fixed_dictionaries({"steps": st.lists(plausible_steps(), max_size=4)})
    | st.fixed_dictionaries({"steps": st.lists(json_values, max_size=3)})
    | st.dictionaries(any_text, json_values, max_size=3)
    | st.fixed_dictionaries({"steps": st.just([]), "error": json_values})
    | st.fixed_dictionaries({"steps": deep_values.map(lambda v: [v])})
    | st.just({"steps": [{"id": f"s{i}"} for i in range(5000)]})
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_documents)
def test_any_plan_document_is_a_valid_plan_or_a_clear_reason(document: dict[str, Any]) -> None:
    try:
        plan = validate_plan(parse_plan(document), CATALOG)
    except InvalidPlan as exc:
        assert exc.problems
        assert all(isinstance(p, str) and p and len(p) <= 2000 for p in exc.problems)
        event("invalid plan")
        return
    event("valid plan")
    ids = [s.id for s in plan.steps]
    assert 0 < len(plan.steps) <= MAX_STEPS and len(set(ids)) == len(ids)
    for step in plan.steps:
        spec = CATALOG.get(step.tool)
        assert spec is not None
        assert check_parameters(spec, step.parameters) == []
        assert set(step.dependencies) <= set(ids) - {step.id}
        assert references(step.parameters) <= set(step.dependencies)
        resolve(dict(step.parameters), {i: {"x": 1} for i in ids})  # no RecursionError


@settings(max_examples=200, deadline=None)
@given(json_values | deep_values | st.integers(0, 5))
def test_plan_from_any_data_read_back_from_the_log_is_a_plan_or_invalid_plan(data: Any) -> None:
    """A `PlanCreated` read back from the log is plain data, checked like a model's."""
    try:
        plan = Plan.from_data(data)
    except InvalidPlan as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
        return
    assert all(isinstance(s.id, str) and s.id for s in plan.steps)
    assert all(all(isinstance(d, str) for d in s.dependencies) for s in plan.steps)


model_texts = (
    json_values.map(json.dumps)
    | any_text
    | st.integers(100, 200_000).map(lambda n: "[" * n)
    | st.integers(30, 900).map(lambda n: json.dumps(nested(n)))
    | st.just('{"steps": NaN}')
)


@settings(max_examples=300, deadline=None)
@given(model_texts)
def test_any_model_text_is_a_json_object_or_invalid_model_output(text: str) -> None:
    try:
        data = parse_json_object(text, {"required": ["steps"], "properties": {"steps": {}}})
    except InvalidModelOutput as exc:
        assert exc.reason
        return
    assert isinstance(data, dict) and "steps" in data


verdict_objects = st.dictionaries(
    st.sampled_from(["passed", "confidence", "notes", "other"]), json_values | deep_values
) | st.fixed_dictionaries(
    {
        "passed": json_values,
        "confidence": st.floats() | st.integers(-(2**2000), 2**2000) | json_values,
        "notes": json_values | st.text(min_size=3000, max_size=3000),
    }
)


@settings(max_examples=300, deadline=None)
@given(verdict_objects)
def test_any_verdict_object_becomes_a_verdict_of_the_right_types(data: dict[str, Any]) -> None:
    verdict = _verdict(data)
    assert isinstance(verdict, Verdict)
    assert type(verdict.passed) is bool
    assert verdict.passed == (
        data.get("passed") is True
        or (isinstance(data.get("passed"), str) and data["passed"].strip().lower() == "true")
    )
    assert type(verdict.confidence) is float and 0.0 <= verdict.confidence <= 1.0
    assert math.isfinite(verdict.confidence)
    assert isinstance(verdict.notes, str) and len(verdict.notes) <= MAX_NOTES_CHARS


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(any_text, json_values) | verdict_objects, st.integers(0, 4))
def test_batch_verdicts_are_one_per_item_or_none(data: dict[str, Any], count: int) -> None:
    verdicts = _listed_verdicts(data, count)
    assert verdicts is None or (
        len(verdicts) == count and all(isinstance(v, Verdict) for v in verdicts)
    )


STEP_IDS = ["s1", "s2", "s3", "s4"]
step_ids = st.lists(st.sampled_from(STEP_IDS), max_size=4, unique=True)
confidences = st.floats() | st.integers(-(2**2000), 2**2000) | json_values
failed_entry = st.fixed_dictionaries(
    {"id": st.sampled_from([*STEP_IDS, "x"]) | json_values},
    optional={
        "confidence": confidences,
        "notes": json_values | st.text(min_size=3000, max_size=3000),
    },
)
verified_objects = st.fixed_dictionaries(
    {
        "verified": st.fixed_dictionaries(
            {"failed": st.lists(failed_entry | json_values, max_size=4)},
            optional={"confidence": confidences},
        )
        | json_values
    }
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(any_text, json_values) | verified_objects, step_ids)
def test_folded_verdicts_are_one_per_step_or_none(data: dict[str, Any], ids: list[str]) -> None:
    verdicts = folded_verdicts(data, ids)
    if verdicts is None:
        return
    assert len(verdicts) == len(ids) and all(isinstance(v, Verdict) for v in verdicts)
    for verdict in verdicts:
        assert type(verdict.confidence) is float and 0.0 <= verdict.confidence <= 1.0
        assert isinstance(verdict.notes, str) and 0 < len(verdict.notes) <= MAX_NOTES_CHARS
    # Only a step the answer named as failed fails; a name it got wrong is no pass.
    named = {e["id"] for e in data["verified"]["failed"]}
    assert named <= set(ids)
    assert [not v.passed for v in verdicts] == [i in named for i in ids]


@settings(max_examples=200, deadline=None)
@given(step_ids, st.data())
def test_a_well_formed_judgement_is_always_used(ids: list[str], data: st.DataObject) -> None:
    failed = data.draw(st.lists(st.sampled_from(ids), unique=True) if ids else st.just([]))
    confidence = data.draw(st.floats(0.0, 1.0))
    reply = {"verified": {"confidence": confidence, "failed": [{"id": i} for i in failed]}}
    verdicts = folded_verdicts(reply, ids)
    assert verdicts is not None
    assert [v.passed for v in verdicts] == [i not in failed for i in ids]


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_tools_parameter_check_is_total(spec: ToolSpec, data: st.DataObject) -> None:
    plausible = st.fixed_dictionaries(
        {},
        optional={name: plausible_value(schema) for name, schema in spec.properties.items()},
    )
    parameters = data.draw(plausible | st.dictionaries(any_text, json_values, max_size=4))
    problems = check_parameters(spec, parameters)
    assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)
    try:
        require_valid(spec, parameters)
    except InvalidParameters as exc:
        assert problems and str(exc).startswith(f"{spec.name}: ")
    else:
        assert problems == []
