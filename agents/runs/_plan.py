"""Plans: steps with dependencies, their validation, and references between steps.

A plan is valid when its step ids are unique, every tool is in the catalog, every
dependency names a step of the plan, the dependencies form a DAG (a cycle is named step
by step, found with networkx), parameters match each tool's schema, and every `${step}`
/ `${step.field}` reference names a step the referencing step depends on (a reference
to a step not listed as a dependency is added as one: models often forget to list it).

Reading a plan is total: whatever JSON a model answers, or a `PlanCreated` read back from
the log holds (wrong types, nesting deep enough to exhaust recursion, thousands of
steps), ends as a `Plan` or as `InvalidPlan` listing every problem it found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.errors import InvalidPlan, ToolError
from agents.llm import STEP_REFERENCE, ToolCatalog, nesting_depth
from agents.tools import check_parameters

MAX_STEPS = 50
MAX_ID_CHARS = 100
# Deeper parameters than any tool takes; the bound keeps every walk over them (references,
# resolution, msgpack) far from the recursion limit.
MAX_PARAMETER_DEPTH = 32
MAX_REASON_CHARS = 1000
REFERENCE = STEP_REFERENCE  # the syntax the plan prompt describes (agents.llm)


@dataclass(frozen=True, slots=True)
class PlanStep:
    id: str
    agent: str
    action: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    dependencies: tuple[str, ...] = ()
    reasoning: str = ""

    @property
    def tool(self) -> str:
        return f"{self.agent}.{self.action}"

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": self.agent,
            "action": self.action,
            "parameters": dict(self.parameters),
            "dependencies": list(self.dependencies),
            "reasoning": self.reasoning,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[PlanStep, ...]

    def step(self, step_id: str) -> PlanStep:
        return next(s for s in self.steps if s.id == step_id)

    def to_data(self) -> list[dict[str, Any]]:
        return [s.to_data() for s in self.steps]

    @classmethod
    def from_data(cls, steps: Iterable[Mapping[str, Any]] | object) -> Plan:
        """The plan in plain data; `InvalidPlan` naming every problem of any other value."""
        if not isinstance(steps, list | tuple):
            raise InvalidPlan([f"the steps must be a list, got {_kind(steps)}"])
        if len(steps) > MAX_STEPS:
            raise InvalidPlan([f"{len(steps)} steps, more than {MAX_STEPS}"])
        parsed: list[PlanStep] = []
        problems: list[str] = []
        for index, data in enumerate(steps):
            try:
                parsed.append(_step_from(index, data))
            except InvalidPlan as exc:
                problems.extend(exc.problems)
        if problems:
            raise InvalidPlan(problems)
        return cls(tuple(parsed))


def _step_from(index: int, data: Any) -> PlanStep:
    """One step; lenient where models are sloppy (an integer id, a null list), strict
    about everything that would make it mean something else."""
    where = f"step {index + 1}"
    if not isinstance(data, Mapping):
        raise InvalidPlan([f"{where} is not an object"])
    problems: list[str] = []
    step_id = _name(data.get("id"), f"{where}: id", problems) or f"s{index + 1}"
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        problems.append(f"{where}: parameters must be an object, got {_kind(parameters)}")
    elif nesting_depth(parameters, MAX_PARAMETER_DEPTH) > MAX_PARAMETER_DEPTH:
        problems.append(f"{where}: parameters nested deeper than {MAX_PARAMETER_DEPTH} levels")
    dependencies = data.get("dependencies") or []
    if not isinstance(dependencies, list | tuple):
        problems.append(f"{where}: dependencies must be a list, got {_kind(dependencies)}")
        dependencies = []
    names = [_name(d, f"{where}: dependency", problems) for d in dependencies]
    agent, action = _tool_name(data, where, problems)
    step = PlanStep(
        id=step_id,
        agent=agent,
        action=action,
        parameters=dict(parameters) if isinstance(parameters, Mapping) else {},
        dependencies=tuple(n for n in names if n),
        reasoning=_reasoning(data.get("reasoning"), where, problems),
    )
    if problems:
        raise InvalidPlan(problems)
    return step


def _tool_name(data: Mapping[str, Any], where: str, problems: list[str]) -> tuple[str, str]:
    """A step's agent and action: given apart, or as "tool": "<agent>.<action>" (the
    compact form of a plan reply), split at its first "."; both, they must agree."""
    agent = _string(data.get("agent"), f"{where}: agent", problems)
    action = _string(data.get("action"), f"{where}: action", problems)
    if data.get("tool") is None:
        return agent, action
    tool = _string(data.get("tool"), f"{where}: tool", problems)
    named, dot, called = tool.partition(".")
    if tool and not (named and dot and called):
        problems.append(f'{where}: tool must be "<agent>.<action>", got {tool[:80]!r}')
    elif (agent or action) and (agent, action) != (named, called):
        problems.append(f"{where}: tool {tool[:80]!r} is not agent {agent!r}, action {action!r}")
    return named, called


def _name(value: object, what: str, problems: list[str]) -> str:
    """A step id: a string (or an integer, which models often write) of bounded length."""
    if value is None or value == "":
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return str(value)
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
        return value
    problems.append(f"{what} must be a string of at most {MAX_ID_CHARS} characters")
    return ""


def _string(value: object, what: str, problems: list[str]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    problems.append(f"{what} must be a string, got {_kind(value)}")
    return ""


def _reasoning(value: object, where: str, problems: list[str]) -> str:
    """Free text, so any scalar is taken as text; a list or object is a mistake."""
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return str(value)
    problems.append(f"{where}: reasoning must be a string, got {_kind(value)}")
    return ""


def _kind(value: object) -> str:
    """The JSON word for a value's type; the value itself may be huge or deeply nested."""
    if value is None:
        return "null"
    for kind, word in ((bool, "boolean"), (int | float, "number"), (str, "string")):
        if isinstance(value, kind):
            return word
    if isinstance(value, list | tuple):
        return "array"
    return "object" if isinstance(value, Mapping) else type(value).__name__


def parse_plan(document: Mapping[str, Any]) -> Plan:
    """The plan in a planner's JSON answer; an empty plan carries the model's reason."""
    steps = document.get("steps")
    if not isinstance(steps, list):
        raise InvalidPlan(["the answer has no 'steps' list"])
    if not steps:
        reason = document.get("error")
        if not isinstance(reason, str) or not reason:
            reason = "the planner produced no steps"
        raise InvalidPlan([reason[:MAX_REASON_CHARS]])
    return Plan.from_data(steps)


def references(value: Any) -> set[str]:
    """Step ids referenced anywhere inside a parameter value."""
    if isinstance(value, str):
        return {m.group(1) for m in REFERENCE.finditer(value)}
    if isinstance(value, Mapping):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(references(v) for v in value)) if value else set()
    return set()


def validate_plan(plan: Plan, catalog: ToolCatalog) -> Plan:
    """The plan with implied dependencies added; `InvalidPlan` listing every problem."""
    problems: list[str] = []
    ids = [s.id for s in plan.steps]
    if len(plan.steps) > MAX_STEPS:
        problems.append(f"{len(plan.steps)} steps, more than {MAX_STEPS}")
    if len(set(ids)) != len(ids):
        problems.append("step ids are not unique")
    steps = tuple(_with_implied_dependencies(s) for s in plan.steps)
    for step in steps:
        problems.extend(_step_problems(step, set(ids), catalog))
    if not problems:
        problems.extend(_cycle_problems(steps))
    if problems:
        raise InvalidPlan(problems)
    return Plan(steps)


def _with_implied_dependencies(step: PlanStep) -> PlanStep:
    implied = references(step.parameters) - set(step.dependencies) - {step.id}
    if not implied:
        return step
    return PlanStep(
        step.id,
        step.agent,
        step.action,
        step.parameters,
        step.dependencies + tuple(sorted(implied)),
        step.reasoning,
    )


def _step_problems(step: PlanStep, ids: set[str], catalog: ToolCatalog) -> list[str]:
    spec = catalog.get(step.tool)
    if spec is None:
        return [f"step {step.id}: unknown tool {step.tool!r}"]
    problems = [f"step {step.id}: {p}" for p in check_parameters(spec, step.parameters)]
    for dependency in step.dependencies:
        if dependency == step.id:
            problems.append(f"step {step.id} depends on itself")
        elif dependency not in ids:
            problems.append(f"step {step.id}: dependency {dependency!r} is not a step of the plan")
    return problems


def _cycle_problems(steps: Sequence[PlanStep]) -> list[str]:
    """Each dependency cycle, named step by step ("a -> b -> c -> a": a depends on b...).

    A plan without a cycle (nearly every plan) is told apart by a topological sort
    here. Only a plan with one imports networkx (~12 MB, not held by a server that never
    sees a cycle), whose `find_cycle` names one cycle; its first edge is then cut and
    the search repeated, so a plan with several cycles lists each (at most one per step,
    as each cut removes an edge). Steps are added in plan order, so the same plan names
    the same cycles.
    """
    if _acyclic(steps):
        return []
    import networkx as nx

    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(s.id for s in steps)
    graph.add_edges_from((s.id, d) for s in steps for d in s.dependencies)
    problems: list[str] = []
    while True:
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return problems
        names = [str(edge[0]) for edge in cycle] + [str(cycle[0][0])]
        problems.append(f"dependency cycle: {' -> '.join(names)} (each step depends on the next)")
        graph.remove_edge(cycle[0][0], cycle[0][1])


def _acyclic(steps: Sequence[PlanStep]) -> bool:
    """Whether the steps' dependencies form no cycle (Kahn's topological sort). The ids
    are unique: `validate_plan` checks the cycles only once they are."""
    if any(s.id in s.dependencies for s in steps):
        return False  # named by find_cycle as "a -> a"
    ids = {s.id for s in steps}  # an unknown dependency is a problem of its own, not a cycle
    waiting = {s.id: {d for d in s.dependencies if d in ids} for s in steps}
    dependents: dict[str, list[str]] = {}
    for step_id, dependencies in waiting.items():
        for dependency in dependencies:
            dependents.setdefault(dependency, []).append(step_id)
    ready = [step_id for step_id, dependencies in waiting.items() if not dependencies]
    done = 0
    while ready:
        step_id = ready.pop()
        done += 1
        for dependent in dependents.get(step_id, ()):
            waiting[dependent].discard(step_id)
            if not waiting[dependent]:
                ready.append(dependent)
    return done == len(waiting)


def resolve(value: Any, results: Mapping[str, Any]) -> Any:
    """`value` with `${step}` / `${step.field}` replaced by earlier steps' results.

    A string that is exactly one reference becomes the referenced value itself (a dict,
    a number); references inside longer text are formatted into it.
    """
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return _lookup(results, whole.group(1), whole.group(2))
        return REFERENCE.sub(lambda m: _text(_lookup(results, m.group(1), m.group(2))), value)
    if isinstance(value, Mapping):
        return {k: resolve(v, results) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, results) for v in value]
    return value


def _lookup(results: Mapping[str, Any], step_id: str, path: str | None) -> Any:
    if step_id not in results:
        raise ToolError(f"reference to step {step_id!r}, which has no result")
    value = results[step_id]
    for part in path.split(".") if path else ():
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise ToolError(f"step {step_id!r} result has no field {path!r}")
    return value


def _text(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else repr(value)
        if not isinstance(value, int | float)
        else str(value)
    )
