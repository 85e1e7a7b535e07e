"""Tool metadata the planner plans over: what one tool does and takes.

A `ToolSpec` is cheap metadata: agents register it without being built, and the
planner (offline or a real model) sees only specs (`agents.llm._tool_form` shows them
compactly; `agents.llm._catalog` caches the views of a set of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What one tool does and takes; `parameters` is a JSON-schema object.

    `idempotent` tells resume whether an interrupted step may run again; `batchable`
    and `batch_action` tell the executor that independent same-action steps may be
    merged into one call of `batch_action`. `keywords` help keyword planners.
    `acts_for` names the parameter the executor sets to the run's principal, whatever
    the plan says (the memory tools act for whoever asked, never for a planned name).
    """

    agent: str
    action: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    idempotent: bool = True
    batchable: bool = False
    batch_action: str | None = None
    keywords: tuple[str, ...] = ()
    requires_approval: bool = False
    acts_for: str | None = None

    def __hash__(self) -> int:
        """Hashable despite the `parameters` dict: equal specs share name and description."""
        return hash((self.agent, self.action, self.description))

    @property
    def name(self) -> str:
        """`agent.action`, how plans and prompts name the tool."""
        return f"{self.agent}.{self.action}"

    @property
    def properties(self) -> Mapping[str, Any]:
        props = self.parameters.get("properties", {})
        return props if isinstance(props, Mapping) else {}

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.parameters.get("required", ()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, the canonical form the catalog hash covers (`acts_for`
        only when set: it says the executor fills that parameter); models are shown
        `prompt_dict`."""
        data: dict[str, Any] = {
            "agent": self.agent,
            "action": self.action,
            "description": self.description,
            "parameters": plain_data(self.parameters),
            "idempotent": self.idempotent,
            "batchable": self.batchable,
            "batch_action": self.batch_action,
            "keywords": list(self.keywords),
            "requires_approval": self.requires_approval,
        }
        if self.acts_for is not None:
            data["acts_for"] = self.acts_for
        return data

    def prompt_dict(self) -> dict[str, Any]:
        """What a planner is shown: `to_dict` without what only the executor acts on
        (`idempotent`, `batchable`, `batch_action`, `requires_approval`), which the
        executor reads from the registry: 15 % of the catalog's characters, sent with
        every plan call."""
        data = self.to_dict()
        for executor_only in ("idempotent", "batchable", "batch_action", "requires_approval"):
            del data[executor_only]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolSpec:
        """The inverse of `to_dict`, tolerant of missing optional fields."""
        return cls(
            agent=str(data["agent"]),
            action=str(data["action"]),
            description=str(data.get("description", "")),
            parameters=dict(data.get("parameters") or {}),
            idempotent=bool(data.get("idempotent", True)),
            batchable=bool(data.get("batchable", False)),
            batch_action=data.get("batch_action"),
            keywords=tuple(data.get("keywords") or ()),
            requires_approval=bool(data.get("requires_approval", False)),
            acts_for=data.get("acts_for"),
        )


def plain_data(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, so JSON and hashes see one form."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    return value
