"""Prompt templates from package files through an LRU cache, and the message convention.

Every request to a model has the same shape, which the offline model and a real model
both understand: a system message from `agents/prompts/<task>.txt` explains the task,
and the last user message is a JSON document `{"task": "<task>", ...}` carrying the
data. Templates are read once per process (per cache size) instead of on every call.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.errors import AgentError, PromptUnreadable, UnknownPrompt
from agents.llm._catalog import ToolCatalog
from agents.llm._tool_form import compact_dict
from agents.llm._tool_spec import ToolSpec

Message = dict[str, str]

TASKS = ("plan", "verify", "verify_batch", "answer", "intent", "step", "chat", "report")


@dataclass(frozen=True, slots=True)
class PromptStatistics:
    hits: int
    misses: int
    size: int
    maxsize: int


class PromptRepository:
    """Prompt templates by name, loaded from `agents/prompts/*.txt` through an LRU cache.

    Templates use `$name` placeholders (string.Template), so JSON braces in a prompt
    need no escaping. `maxsize` 0 disables caching (every get reads the file).
    """

    def __init__(self, maxsize: int = 128) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be at least 0, got {maxsize}")
        self._maxsize = maxsize
        self._load = functools.lru_cache(maxsize=maxsize)(_read_template)

    def get(self, name: str) -> string.Template:
        return self._load(name)

    def load(self, names: Iterable[str] | None = None) -> None:
        """Read the templates `names` (default: every one the package holds) into the
        cache now (blocking: a worker thread's job), so that no run reads a template
        file on the event loop. With the cache off (`maxsize` 0) nothing is kept.

        Every readable one is read; then the first that was not raises its error
        (`UnknownPrompt`, `PromptUnreadable`)."""
        problems: list[AgentError] = []
        for name in template_names() if names is None else names:
            try:
                self.get(name)
            except (UnknownPrompt, PromptUnreadable) as exc:
                problems.append(exc)
        if problems:
            raise problems[0]

    def render(self, name: str, **values: object) -> str:
        """The template with `values` substituted; a missing value is an error."""
        return self.get(name).substitute({k: str(v) for k, v in values.items()})

    def statistics(self) -> PromptStatistics:
        info = self._load.cache_info()
        return PromptStatistics(info.hits, info.misses, info.currsize, self._maxsize)


def template_names() -> list[str]:
    """The name of every template in `agents/prompts` (blocking: lists a directory); a
    file whose name is no template name (`get` would refuse it) is left out.
    `PromptUnreadable` when the folder itself cannot be listed."""
    folder = importlib.resources.files("agents") / "prompts"
    try:
        entries = [entry.name for entry in folder.iterdir()]
    except OSError as exc:
        raise PromptUnreadable("prompts/", str(exc)) from exc
    names = (entry[:-4] for entry in entries if entry.endswith(".txt"))
    return sorted(name for name in names if name.isidentifier())


def _read_template(name: str) -> string.Template:
    if not name.isidentifier():
        raise UnknownPrompt(name)
    resource = importlib.resources.files("agents") / "prompts" / f"{name}.txt"
    try:
        return string.Template(resource.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise UnknownPrompt(name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptUnreadable(name, str(exc)) from exc


def task_messages(
    prompts: PromptRepository,
    task: str,
    payload: Mapping[str, Any],
    **values: object,
) -> list[Message]:
    """The two messages of a task request: the system prompt (the task's template, with
    `values` substituted) and the JSON document."""
    document = {"task": task, **payload}
    return [
        {"role": "system", "content": prompts.render(task, **values)},
        {"role": "user", "content": json.dumps(document, ensure_ascii=False, default=str)},
    ]


def plan_messages(
    prompts: PromptRepository,
    goal: str,
    tools: ToolCatalog | Sequence[ToolSpec],
    history: Sequence[Any] = (),
    now: datetime | None = None,
    *,
    compact_tools: bool = True,
    compact_history: bool = True,
    compact_steps: bool = True,
    with_intent: bool = False,
) -> list[Message]:
    """Ask for a plan of `goal` over `tools`; `history` is earlier turns, most recent last.

    `now` (default: the current UTC time, to the minute) lets the model turn "tomorrow
    at 9am" or "the last 7 days" into dates. `compact_tools`: the tools in their compact
    form (`agents.llm._tool_form`, about a quarter fewer tokens), else as JSON schemas;
    the system prompt says which. `compact_history`: each earlier message as one string,
    "user: <text>" (`compact_turns`), the same words in fewer tokens than its JSON
    object. `compact_steps`: the reply names each step's tool as "<agent>.<action>"
    and leaves out the dependencies its parameters' references ("${s1}") already say
    (the planner adds those): fewer output tokens, which a reply's time follows; the
    document says `"step_form": "compact"`. `with_intent`: the reply also classifies
    the goal and names its entities (`intent_of`), what an intent request would
    answer, so a run needs no such call.
    """
    if isinstance(tools, ToolCatalog):
        specs: Sequence[Mapping[str, Any]] = (
            tools.compact_json if compact_tools else tools.prompt_json
        )
    else:
        specs = [compact_dict(t) if compact_tools else t.prompt_dict() for t in tools]
    moment = (now or datetime.now(UTC)).isoformat(timespec="minutes")
    turns = compact_turns(history) if compact_history else list(history)
    payload: dict[str, Any] = {"goal": goal, "now": moment, "tools": list(specs), "history": turns}
    if with_intent:
        payload["also"] = list(PLAN_ALSO)
    if not compact_tools:
        explained = prompts.render("tools_schema")
    elif all("tool" in spec for spec in specs):
        explained = prompts.render("tools_compact")
    else:  # some tool is shown as its schema (`compact_dict`): say how to read it
        explained = prompts.render("tools_compact") + "\n" + prompts.render("tools_mixed")
    if any("acts_for" in spec for spec in specs):  # only then is the key explained
        explained += "\n" + prompts.render("tools_acts_for")
    if compact_steps:
        payload["step_form"] = "compact"
    return task_messages(
        prompts,
        "plan",
        payload,
        tools_explained=explained,
        steps_explained=prompts.render("plan_steps_compact" if compact_steps else "plan_steps"),
        reference_rule=COMPACT_REFERENCE_RULE if compact_steps else REFERENCE_RULE,
        also_explained="\n" + prompts.render("plan_intent") if with_intent else "",
    )


# A reference to an earlier step's output in a plan's parameter, as the plan prompt
# describes it: "${s1}", "${s1.field}" (group 1: the step's id, group 2: the path).
STEP_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_\-]+)(?:\.([A-Za-z0-9_\-.]+))?\}")
# How a step that uses an earlier step's output says so, in each form of the reply.
REFERENCE_RULE = ', and\n  the step must then list that id in "dependencies".'
COMPACT_REFERENCE_RULE = ":\n  the step then depends on it."


# What a plan request with `with_intent` asks for besides the steps.
PLAN_ALSO = ("intent", "entities")


def compact_turns(history: Sequence[Any]) -> list[Any]:
    """Each message of `history` (`{"role": ..., "text": ...}` and nothing else) as the
    string "<role>: <text>"; anything else (the session's context) unchanged."""
    turns: list[Any] = []
    for item in history:
        if (
            isinstance(item, Mapping)
            and item.keys() == {"role", "text"}
            and isinstance(item["role"], str)
            and isinstance(item["text"], str)
        ):
            turns.append(f"{item['role']}: {item['text']}")
        else:
            turns.append(item)
    return turns


def intent_of(reply: Mapping[str, Any]) -> dict[str, Any] | None:
    """The goal's intent and entities from a plan reply asked `with_intent`, in the
    shape an intent request answers; None when the reply has no intent (a model that
    left it out) or it is no string."""
    intent = reply.get("intent")
    if not isinstance(intent, str) or not intent.strip():
        return None
    entities = reply.get("entities")
    found = dict(entities) if isinstance(entities, Mapping) else {}
    return {"intent": intent.strip(), "entities": found}


def verify_messages(
    prompts: PromptRepository, goal: str, step: Mapping[str, Any], result: Any
) -> list[Message]:
    return task_messages(prompts, "verify", {"goal": goal, "step": dict(step), "result": result})


def answer_messages(
    prompts: PromptRepository,
    goal: str,
    results: Sequence[Mapping[str, Any]],
    verify: Sequence[Mapping[str, Any]] = (),
) -> list[Message]:
    """`results`: one dict per step with id, agent, action and `result` or `error`;
    `verify`: the steps of `results` (`{"id": ...}`) to judge in the same call, whose
    reply lists under `verified` only those that fail."""
    payload: dict[str, Any] = {"goal": goal, "results": [dict(r) for r in results]}
    if verify:
        payload["verify"] = [dict(item) for item in verify]
    return task_messages(prompts, "answer", payload)


def intent_messages(prompts: PromptRepository, goal: str) -> list[Message]:
    return task_messages(prompts, "intent", {"goal": goal})
