"""What a run does when verification says a step did not do what it was for.

Once per run, after the steps ran and were judged (the answer call judges the steps
held for it): steps whose verdict failed (`Verdict.failed`: a real judgement, not a
verifier outage) are run once more when their tools are idempotent, together with their
idempotent dependents, which built on the bad result; each new result is judged inline.
What still fails - or could not run again, its tool not being idempotent - makes the run
replan once (`ReplanRequested` with the verdicts' notes): the planner sees what went
wrong, the new plan's steps get fresh ids (`r1-<id>`, so the fold of the run never
mixes them with the first plan's), and a new step identical to a completed, passing one
(same tool, same parameters) takes its result (`StepReused`) instead of running again.
If that still leaves failures, the answer says which part was not done and why.

Coverage: the answer call also lists the parts of the goal that no result covers
(`missing`). When it names any, and the run has not replanned yet, the run plans once
more for just those parts; their steps (`c1-<id>`) join the plan and run, and the
answer is written again - saying plainly what still is not done.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from agents.runs._outcomes import StepOutcome
from agents.runs._plan import MAX_ID_CHARS, REFERENCE, Plan, PlanStep
from agents.runs._verifier import Verdict

REPLAN_PREFIX = "r1-"
COVER_PREFIX = "c1-"  # steps planned for parts of the goal the first answer found uncovered


def failed_steps(
    plan: Plan, outcomes: Mapping[str, StepOutcome], verdicts: Mapping[str, Verdict]
) -> list[PlanStep]:
    """Completed steps whose (real) verdict failed, in plan order."""
    return [
        step
        for step in plan.steps
        if outcomes.get(step.id) is not None
        and outcomes[step.id].status == "completed"
        and (verdict := verdicts.get(step.id)) is not None
        and verdict.failed
    ]


def with_dependents(plan: Plan, roots: Iterable[str]) -> list[str]:
    """`roots` and every step that depends on one of them, directly or not, in plan order."""
    tainted = set(roots)
    for step in plan.steps:  # a plan lists dependencies before dependents
        if tainted.intersection(step.dependencies):
            tainted.add(step.id)
    return [s.id for s in plan.steps if s.id in tainted]


def renamed(plan: Plan, prefix: str = REPLAN_PREFIX) -> Plan:
    """The plan with every step id prefixed, dependencies and `${id...}` references too
    (an id that would grow past MAX_ID_CHARS becomes `<prefix><n>` instead)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for n, step in enumerate(plan.steps, 1):
        name = prefix + step.id
        if len(name) > MAX_ID_CHARS or name in taken:
            name = next(f"{prefix}{m}" for m in itertools.count(n) if f"{prefix}{m}" not in taken)
        names[step.id] = name
        taken.add(name)

    def rename(value: Any) -> Any:
        if isinstance(value, str):
            return REFERENCE.sub(
                lambda m: (
                    m.group(0).replace(m.group(1), names[m.group(1)], 1)
                    if m.group(1) in names
                    else m.group(0)
                ),
                value,
            )
        if isinstance(value, Mapping):
            return {k: rename(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [rename(v) for v in value]
        return value

    return Plan(
        tuple(
            PlanStep(
                id=names[step.id],
                agent=step.agent,
                action=step.action,
                parameters=rename(dict(step.parameters)),
                dependencies=tuple(names.get(d, d) for d in step.dependencies),
                reasoning=step.reasoning,
            )
            for step in plan.steps
        )
    )


def reusable(
    new_plan: Plan,
    old_plan: Plan,
    outcomes: Mapping[str, StepOutcome],
    verdicts: Mapping[str, Verdict],
    new_parameters: Mapping[str, Mapping[str, Any]],
) -> dict[str, StepOutcome]:
    """New step id -> the outcome of an identical old step that completed and passed.

    `new_parameters` are the new steps' parameters before renaming, so references
    compare as the planner wrote them."""
    passing = {
        (s.agent, s.action, _key(s.parameters)): outcomes[s.id]
        for s in old_plan.steps
        if s.id in outcomes
        and outcomes[s.id].status == "completed"
        and not (s.id in verdicts and verdicts[s.id].failed)
    }
    found: dict[str, StepOutcome] = {}
    for step in new_plan.steps:  # dependencies come first in a plan
        if any(d not in found for d in step.dependencies):
            continue  # its inputs are new: the old result was built on other ones
        key = (step.agent, step.action, _key(new_parameters.get(step.id, step.parameters)))
        if key in passing:
            found[step.id] = passing[key]
    return found


def _key(parameters: Mapping[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True, default=str)


def replan_note(failed: Iterable[PlanStep], verdicts: Mapping[str, Verdict]) -> str:
    """The reason recorded in `ReplanRequested` and shown to the planner."""
    parts = [f"{s.id} ({s.tool}): {verdicts[s.id].notes}" for s in failed if s.id in verdicts]
    return "results that did not pass verification: " + "; ".join(parts)
