"""The compact form of a tool spec, as the planner is shown it by default.

A JSON schema spends most of its characters on its own syntax: `{"type": "string",
"description": ...}` around every parameter, `"properties"` and `"required"` around
every tool. The compact form says the same in one string per parameter, the way
function signatures are usually shown to models:

    {"tool": "files.write",
     "description": "Write text to a file in the workspace ...",
     "parameters": {"path": "string: relative to the workspace root ...",
                    "mode?": "overwrite|append|create, default \\"overwrite\\": ..."},
     "keywords": "write save file"}

A parameter's name ends in "?" when it is optional; its text is
`<type>[, default <JSON value>][: <description>]`, where the type is a JSON-schema type,
`array`, `array of <type>`, `any`, or the allowed string values joined by "|"
(`agents/prompts/tools_compact.txt` tells the model so). The plan request for the 25
shipped tools takes about a quarter fewer tokens this way (the project's estimate, four
characters a token), on every plan call.

Nothing is lost: a parameter (or a whole tool) is shown compactly only when its text,
sent as JSON and parsed back (`parse_compact`, what the offline model does), gives
exactly what the planner reads from the schema, and when no allowed value could be
read as something other than a string (`true`, `1`, a type name); otherwise the schema
itself is shown. A spec that is not plain JSON data is shown as its schema, as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agents.llm._tool_spec import ToolSpec, plain_data

OPTIONAL_MARK = "?"
_DEFAULT = ", default "
_DESCRIBED = ": "
_ARRAY = "array"
_ARRAY_OF = "array of "
_ANY = "any"
_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "null"})
# Characters that would make an allowed value ambiguous in its "|"-joined form.
_ENUM_UNSAFE = ("|", ",", ":", '"')
# What a spec may raise on the way when it is not plain JSON data (a set as a default,
# a key that is not a string): such a spec is shown as its schema.
_NOT_PLAIN = (TypeError, ValueError, AttributeError, RecursionError)


def compact_dict(spec: ToolSpec) -> dict[str, Any]:
    """What the planner is shown of `spec`: the compact form, or `spec.prompt_dict()`
    when the compact form could not say exactly the same."""
    try:
        shown = _compact(spec)
        if shown is not None and _planner_view(_sent(shown)) == _planner_view(spec):
            return shown
    except _NOT_PLAIN:
        pass
    return spec.prompt_dict()


def parse_compact(data: Mapping[str, Any]) -> ToolSpec:
    """The tool a compact entry describes (what a planner needs of it): the inverse of
    `compact_dict`. Total: whatever JSON arrives, a spec of what could be read."""
    agent, _, action = _text(data.get("tool")).partition(".")
    parameters = data.get("parameters")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for key, value in (parameters if isinstance(parameters, Mapping) else {}).items():
        name = str(key)
        if name.endswith(OPTIONAL_MARK):
            name = name[: -len(OPTIONAL_MARK)]
        else:
            required.append(name)
        properties[name] = parse_parameter(value)
    keywords, acts_for = data.get("keywords"), data.get("acts_for")
    return ToolSpec(
        agent=agent,
        action=action,
        description=_text(data.get("description")),
        parameters={"type": "object", "properties": properties, "required": required},
        keywords=tuple(keywords.split()) if isinstance(keywords, str) else (),
        acts_for=acts_for if isinstance(acts_for, str) else None,
    )


def parse_parameter(value: Any) -> dict[str, Any]:
    """The JSON schema of one compact parameter text (a schema shown as is stays one;
    anything else is read as `any`)."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        return {}
    head, _, description = value.partition(_DESCRIBED)
    kind, has_default, default_text = head.partition(_DEFAULT)
    schema = _schema_of_type(kind)
    if has_default:
        try:
            schema["default"] = json.loads(default_text)
        except (ValueError, RecursionError):
            pass
    if description:
        schema["description"] = description
    return schema


def render_parameter(schema: Mapping[str, Any]) -> str | dict[str, Any]:
    """One parameter's compact text, or its schema (as plain data) when the text could
    not say it all."""
    plain: dict[str, Any] = plain_data(schema)
    kind = _type_text(schema)
    if kind is None:
        return plain
    text = kind
    if "default" in schema:
        text += _DEFAULT + json.dumps(schema["default"], ensure_ascii=False)
    description = schema.get("description")
    if description:
        text += _DESCRIBED + str(description)
    return text if parse_parameter(text) == json.loads(json.dumps(plain)) else plain


def _compact(spec: ToolSpec) -> dict[str, Any] | None:
    if set(spec.parameters) - {"type", "properties", "required"}:
        return None  # a schema saying more than its fields and which are required
    if any(k.endswith(OPTIONAL_MARK) for k in spec.properties):
        return None
    parameters = {
        name + ("" if name in spec.required else OPTIONAL_MARK): render_parameter(schema)
        for name, schema in spec.properties.items()
        if isinstance(schema, Mapping)
    }
    shown: dict[str, Any] = {
        "tool": spec.name,
        "description": spec.description,
        "parameters": parameters,
        "keywords": " ".join(spec.keywords),
    }
    if spec.acts_for is not None:
        shown["acts_for"] = spec.acts_for
    return shown


def _sent(shown: Mapping[str, Any]) -> ToolSpec:
    """The tool as a model reads it back: sent as JSON, parsed."""
    return parse_compact(json.loads(json.dumps(shown, ensure_ascii=False)))


def _planner_view(spec: ToolSpec) -> tuple[Any, ...]:
    """What a planner reads of a tool: names, texts, parameters as JSON, which required."""
    required = list(spec.required)
    return (
        spec.agent,
        spec.action,
        spec.description,
        spec.keywords,
        spec.acts_for,
        json.loads(json.dumps(plain_data(spec.properties))),
        sorted(required),
        len(required) == len(set(required)),
    )


def _type_text(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if "enum" in schema:
        values = schema["enum"]
        if kind != "string" or not isinstance(values, list) or not values:
            return None
        if not all(isinstance(v, str) and _plain_word(v) for v in values):
            return None
        return "|".join(values)
    if kind is None:
        return _ANY
    if kind == _ARRAY:
        items = schema.get("items")
        if items == {}:
            return _ARRAY
        if isinstance(items, Mapping) and set(items) == {"type"} and _is_type(items["type"]):
            return _ARRAY_OF + str(items["type"])
        return None
    return kind if _is_type(kind) else None


def _schema_of_type(kind: str) -> dict[str, Any]:
    if kind == _ANY:
        return {}
    if kind == _ARRAY:
        return {"type": _ARRAY, "items": {}}
    if kind.startswith(_ARRAY_OF):
        return {"type": _ARRAY, "items": {"type": kind[len(_ARRAY_OF) :]}}
    if "|" in kind:
        return {"type": "string", "enum": kind.split("|")}
    return {"type": kind}


def _is_type(kind: Any) -> bool:
    return isinstance(kind, str) and kind in _TYPES


def _plain_word(value: str) -> bool:
    """Whether an allowed value reads as nothing but a string among "|"-joined ones:
    not empty, no separator, and not a JSON literal, number or type name."""
    if not value or value != value.strip() or any(c in value for c in _ENUM_UNSAFE):
        return False
    if value in _TYPES or value in ("true", "false", _ANY) or value.startswith(_ARRAY):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
