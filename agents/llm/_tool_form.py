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
`array of <type>`, `any`, or the allowed values joined by "|". The catalog's 25 built-in
tools take 2,088 tokens this way against 3,119 as schemas (the project's estimate, four
characters a token), on every plan call.

The form is lossless by construction: a parameter (or a whole tool) is rendered
compactly only when `parse_compact` gives back exactly what the planner would have read
from the schema; otherwise the schema itself is shown. So the offline model, which
plans from what it is shown, plans the same from either form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agents.llm._tool_spec import ToolSpec

OPTIONAL_MARK = "?"
_DEFAULT = ", default "
_DESCRIBED = ": "
_ARRAY_OF = "array of "
_ANY = "any"
_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "null"})
# Characters that would make an enum value or a keyword ambiguous in its joined form.
_ENUM_UNSAFE = ("|", ",", ":", '"')


def compact_dict(spec: ToolSpec) -> dict[str, Any]:
    """What the planner is shown of `spec`: the compact form, or `spec.prompt_dict()`
    when the compact form could not say the same."""
    shown = _compact(spec)
    if shown is None or not _same_for_planner(parse_compact(shown), spec):
        return spec.prompt_dict()
    return shown


def parse_compact(data: Mapping[str, Any]) -> ToolSpec:
    """The tool a compact entry describes (what a planner needs of it): the inverse of
    `compact_dict`. Total: a malformed entry gives a spec with what could be read."""
    agent, _, action = str(data.get("tool", "")).partition(".")
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
    keywords = data.get("keywords")
    acts_for = data.get("acts_for")
    return ToolSpec(
        agent=agent,
        action=action,
        description=str(data.get("description", "")),
        parameters={"type": "object", "properties": properties, "required": required},
        keywords=tuple(keywords.split()) if isinstance(keywords, str) else (),
        acts_for=acts_for if isinstance(acts_for, str) else None,
    )


def parse_parameter(value: Any) -> dict[str, Any]:
    """The JSON schema of one compact parameter text (a schema shown as is stays one)."""
    if isinstance(value, Mapping):
        return dict(value)
    head, _, description = str(value).partition(_DESCRIBED)
    kind, has_default, default_text = head.partition(_DEFAULT)
    schema = _schema_of_type(kind)
    if has_default:
        try:
            schema["default"] = json.loads(default_text)
        except ValueError:
            pass
    if description:
        schema["description"] = description
    return schema


def render_parameter(schema: Mapping[str, Any]) -> str | dict[str, Any]:
    """One parameter's compact text, or its schema when the text could not say it all."""
    kind = _type_text(schema)
    if kind is None:
        return dict(schema)
    text = kind
    if "default" in schema:
        text += _DEFAULT + json.dumps(schema["default"], ensure_ascii=False)
    description = schema.get("description")
    if description:
        text += _DESCRIBED + str(description)
    return text if parse_parameter(text) == dict(schema) else dict(schema)


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


def _same_for_planner(parsed: ToolSpec, spec: ToolSpec) -> bool:
    """Whether a planner reads the same tool from both: names, texts, parameters."""
    return (
        (parsed.agent, parsed.action, parsed.description, parsed.keywords, parsed.acts_for)
        == (spec.agent, spec.action, spec.description, spec.keywords, spec.acts_for)
        and dict(parsed.properties) == dict(spec.properties)
        and set(parsed.required) == set(spec.required)
        and len(spec.required) == len(set(spec.required))
    )


def _type_text(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if "enum" in schema:
        values = schema["enum"]
        if kind != "string" or not isinstance(values, list) or not values:
            return None
        if not all(isinstance(v, str) and v and not _unsafe(v) for v in values):
            return None
        return "|".join(values)
    if kind is None:
        return _ANY
    if kind == "array":
        items = schema.get("items")
        if items == {}:
            return "array"
        if isinstance(items, Mapping) and set(items) == {"type"} and _is_type(items["type"]):
            return _ARRAY_OF + str(items["type"])
        return None
    return kind if _is_type(kind) else None


def _schema_of_type(kind: str) -> dict[str, Any]:
    if kind == _ANY:
        return {}
    if kind == "array":
        return {"type": "array", "items": {}}
    if kind.startswith(_ARRAY_OF):
        return {"type": "array", "items": {"type": kind[len(_ARRAY_OF) :]}}
    if "|" in kind:
        return {"type": "string", "enum": kind.split("|")}
    return {"type": kind}


def _is_type(kind: Any) -> bool:
    return isinstance(kind, str) and kind in _TYPES


def _unsafe(value: str) -> bool:
    return any(c in value for c in _ENUM_UNSAFE) or value != value.strip()
