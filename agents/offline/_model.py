"""The offline model: a deterministic planner, verifier and answerer that needs no network.

It reads the same requests a real model gets (the last user message is a JSON document
`{"task": ..., ...}`, see `agents.llm`'s prompting) and answers with the same JSON
shapes, so the server works on a fresh machine and tests need no service. This module
routes a request to its task and verifies, answers, reads intents; the planner is
`_planning.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from agents.llm import STEP_REFERENCE, ToolSpec, parse_compact
from agents.offline import _entities as entities
from agents.offline._planning import plan, split_clauses, statement

MODEL_NAME = "autoagent-offline"

# --- requests -----------------------------------------------------------------------


def request_document(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The JSON task document of the last user message, or None for free text."""
    text = last_user_text(messages)
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) and "task" in document else None


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def task_of(messages: Sequence[Mapping[str, Any]]) -> str:
    """The purpose of a request: its JSON task, or "chat" for free text."""
    document = request_document(messages)
    return str(document["task"]) if document else "chat"


def respond(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The model's answer to a request, as the JSON object a real model would return."""
    document = request_document(messages)
    if document is None:
        return chat(last_user_text(messages))
    handler = _HANDLERS.get(str(document["task"]))
    if handler is None:
        known = ", ".join(sorted(_HANDLERS))
        task = document["task"]
        return {"error": f"the offline model does not know task {task!r}; it knows {known}"}
    return handler(document)


def complete(messages: Sequence[Mapping[str, Any]], *, json_mode: bool) -> str:
    """The assistant message text: the JSON answer, or in text mode its prose if it has one."""
    result = respond(messages)
    if not json_mode:
        for key in ("answer", "reply", "text"):
            if isinstance(result.get(key), str):
                return str(result[key])
    return json.dumps(result, ensure_ascii=False)


def _plan_document(document: Mapping[str, Any]) -> dict[str, Any]:
    shown = document.get("tools")
    read = (_tool(t) for t in (shown if isinstance(shown, list) else ()) if isinstance(t, Mapping))
    tools = [tool for tool in read if tool is not None]
    now = _moment(document.get("now"))
    goal = str(document.get("goal", ""))
    reply = plan(goal, tools, document.get("history") or (), now)
    if document.get("step_form") == "compact":
        reply["steps"] = [_compact_step(step) for step in reply["steps"]]
    also = document.get("also")
    if isinstance(also, list) and "intent" in also:  # after the steps, as asked
        reply.update(intent(goal))
    return reply


def _compact_step(step: Mapping[str, Any]) -> dict[str, Any]:
    """A step in the reply's compact form: "tool" for agent and action, and no
    "dependencies" when they are empty or only the steps its parameters refer to."""
    compact: dict[str, Any] = {"id": step["id"], "tool": f"{step['agent']}.{step['action']}"}
    compact["parameters"] = step["parameters"]
    used = {m.group(1) for m in STEP_REFERENCE.finditer(json.dumps(step["parameters"]))}
    if not set(step["dependencies"]) <= used:
        compact["dependencies"] = step["dependencies"]
    compact["reasoning"] = step["reasoning"]
    return compact


def _tool(shown: Mapping[str, Any]) -> ToolSpec | None:
    """A tool as the plan request shows it: in the compact form, or as a JSON schema;
    None for an entry that is neither (a model ignores what it cannot read)."""
    if "tool" in shown:
        return parse_compact(shown)
    if not isinstance(shown.get("agent"), str) or not isinstance(shown.get("action"), str):
        return None
    try:
        spec = ToolSpec.from_dict(shown)
        _ = spec.required  # a "required" that is no list fails here, not in the planner
    except (TypeError, ValueError, RecursionError):
        return None
    return spec


def _moment(value: Any) -> datetime | None:
    """The request's "now", if it is an ISO date-time (naive ones are taken as UTC)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _verify_document(document: Mapping[str, Any]) -> dict[str, Any]:
    return verify(document.get("step") or {}, document.get("result"))


def _verify_batch_document(document: Mapping[str, Any]) -> dict[str, Any]:
    items = [i for i in document.get("items") or () if isinstance(i, Mapping)]
    return {"verdicts": [verify(i.get("step") or {}, i.get("result")) for i in items]}


def _answer_document(document: Mapping[str, Any]) -> dict[str, Any]:
    results = document.get("results") or ()
    goal = str(document.get("goal", ""))
    reply = answer(goal, results)
    missing = missing_parts(goal, results)
    if missing:
        reply["missing"] = missing
        said = "; ".join(f"{m['part']} ({m['why']})" for m in missing)
        reply["answer"] = f"{reply['answer']}\nNot done: {said}."
    asked = document.get("verify")
    if asked and isinstance(asked, list):
        reply["verified"] = _verified(results, asked)
    return reply


def _verified(results: Any, asked: list[Any]) -> dict[str, Any]:
    """The answer's judgement of the steps under "verify": only those that fail are
    listed (with why), so a run whose steps all passed costs a few tokens, not a
    sentence per step; "confidence" is the least of the passes'."""
    by_id = {r["id"]: r for r in results if isinstance(r, Mapping) and _is_id(r.get("id"))}
    failed: list[dict[str, Any]] = []
    passed: list[float] = []
    for entry in asked:
        if not isinstance(entry, Mapping) or not _is_id(entry.get("id")):
            continue
        item = by_id.get(entry["id"], {})
        verdict = verify(item, item.get("result"))
        if verdict["passed"]:
            passed.append(verdict["confidence"])
        else:
            notes = {"confidence": verdict["confidence"], "notes": verdict["notes"]}
            failed.append({"id": entry.get("id"), **notes})
    return {"confidence": min(passed, default=1.0), "failed": failed}


def _is_id(value: Any) -> bool:
    return isinstance(value, str)


def _intent_document(document: Mapping[str, Any]) -> dict[str, Any]:
    return intent(str(document.get("goal", "")))


def _step_document(document: Mapping[str, Any]) -> dict[str, Any]:
    return step_text(
        str(document.get("agent", "")),
        str(document.get("action", "")),
        document.get("parameters") or {},
    )


def _chat_document(document: Mapping[str, Any]) -> dict[str, Any]:
    return chat(str(document.get("text", "")))


def _report_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A markdown report listing each source as the final answer would render it."""
    sources = document.get("sources") or []
    items = sources if isinstance(sources, list) else [sources]
    lines = [f"- {_render_result(s, f'source {n}')}" for n, s in enumerate(items, 1)]
    title = str(document.get("title") or "Report")
    return {"markdown": "\n".join([f"# {title}", "", *lines]) + "\n"}


_HANDLERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "plan": _plan_document,
    "verify": _verify_document,
    "verify_batch": _verify_batch_document,
    "answer": _answer_document,
    "intent": _intent_document,
    "step": _step_document,
    "chat": _chat_document,
    "report": _report_document,
}


# --- verification, answers, intent ----------------------------------------------------


def verify(step: Mapping[str, Any], result: Any) -> dict[str, Any]:
    """A verdict on one step's result: errors, nothing and empty results fail."""
    name = f"{step.get('agent', '?')}.{step.get('action', '?')}"
    problem = _result_problem(result)
    if problem is not None:
        return {"passed": False, "confidence": 0.95, "notes": f"{name}: {problem}."}
    confidence = 0.9 if _substantial(result) else 0.6
    return {"passed": True, "confidence": confidence, "notes": f"{name} returned {_brief(result)}."}


def _result_problem(result: Any) -> str | None:
    if result is None:
        return "the step returned nothing"
    if result in ("", [], {}):
        return "the step returned an empty result"
    if isinstance(result, Mapping):
        return _mapping_problem(result)
    if isinstance(result, str) and result.lower().startswith(("error", "failed", "exception")):
        return f"the step reported an error: {result[:200]}"
    return None


def _mapping_problem(result: Mapping[str, Any]) -> str | None:
    if result.get("error"):
        return f"the step reported an error: {str(result['error'])[:200]}"
    if result.get("ok") is False or str(result.get("status", "")).lower() in ("error", "failed"):
        return "the step reported that it failed"
    return None


def _substantial(result: Any) -> bool:
    return not isinstance(result, str) or len(result.strip()) >= 3


def _brief(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def missing_parts(goal: str, results: Any) -> list[dict[str, str]]:
    """Parts of the goal no completed result covers: each ticker of a price question and
    each place of a time question must appear in some step's result (the coverage
    check; a plan that dropped "and in New York" leaves New York without a result)."""
    covered = json.dumps(
        [r.get("result") for r in _result_items(results) if "result" in r],
        ensure_ascii=False,
        default=str,
    )
    missing: list[dict[str, str]] = []
    if entities.has_finance_context(goal):
        for symbol in entities.tickers(goal):
            if symbol not in covered:
                missing.append({"part": f"the price of {symbol}", "why": "no step looked it up"})
    if entities.has_time_context(goal):
        for zone in entities.timezones(goal):
            if zone not in covered:
                place = entities.place_of(goal, zone) or zone
                missing.append({"part": f"the time in {place}", "why": "no step looked it up"})
    return missing


def answer(goal: str, results: Any) -> dict[str, Any]:
    """A final answer composed from the steps' results, failures said plainly."""
    items = _result_items(results)
    if not items:
        return {"answer": f"Nothing was run for {goal!r}, so there is no result to report."}
    lines = [_render_item(item, goal, _Said(goal)) for item in items]
    if len(lines) == 1:
        return {"answer": lines[0]}
    return {"answer": "\n".join(["Results:", *(f"- {line}" for line in lines)])}


def _result_items(results: Any) -> list[Mapping[str, Any]]:
    if isinstance(results, Mapping):
        return [{"id": key, "result": value} for key, value in results.items()]
    return [r if isinstance(r, Mapping) else {"result": r} for r in results]


class _Said:
    """What the goal asked to remember, clause by clause, handed out in order: a
    memory.remember result carries only an id (the content is sealed), so the answer
    takes the words from the goal, which the run already holds."""

    def __init__(self, goal: str) -> None:
        statements = (statement(c.text) for c in split_clauses(goal))
        self._left = [s for s in statements if s]

    def next(self) -> str | None:
        return self._left.pop(0) if self._left else None


def _render_item(item: Mapping[str, Any], goal: str = "", said: _Said | None = None) -> str:
    label = ".".join(str(item[k]) for k in ("agent", "action") if item.get(k)) or str(
        item.get("id", "step")
    )
    if item.get("error"):
        return f"{label} failed: {item['error']}"
    result = item.get("result")
    if label == "memory.remember" and isinstance(result, Mapping):
        content = (said or _Said(goal)).next()
        return _render_remembered(content, known=bool(result.get("already_known")))
    render = _TOOL_RENDERS.get(label)
    line = render(result) if render is not None and isinstance(result, Mapping) else None
    if line is None and isinstance(result, Mapping):
        line = _render_time(result, goal)
    return line if line is not None else _render_result(result, label)


def _render_result(result: Any, label: str) -> str:
    if isinstance(result, Mapping):
        renders: tuple[Callable[[Mapping[str, Any]], str | None], ...] = (
            _render_price,
            _render_calculation,
            _render_time,
            *_DOCUMENT_RENDERS,
            *_SHAPE_RENDERS,
        )
        for render in (*renders, _render_text):
            line = render(result)
            if line is not None:
                return line
    if result is None:
        return f"{label} returned nothing"
    return f"{label}: {_brief(result, 300)}"


def _render_price(result: Mapping[str, Any]) -> str | None:
    if "symbol" in result and "price" in result:
        currency = f" {result['currency']}" if result.get("currency") else ""
        return f"{result['symbol']}: {result['price']}{currency}"
    return None


def _render_calculation(result: Mapping[str, Any]) -> str | None:
    if "expression" in result and ("result" in result or "value" in result):
        return f"{result['expression']} = {result.get('result', result.get('value'))}"
    return None


def _render_time(result: Mapping[str, Any], goal: str = "") -> str | None:
    """A clock reading with the place as the goal named it: "The time in Tokyo
    (Asia/Tokyo) is 04:01:18 on Monday"."""
    when = result.get("time") or result.get("datetime") or result.get("iso")
    if not (when and "timezone" in result):
        return None
    zone = str(result["timezone"])
    place = entities.place_of(goal, zone)
    where = f"{place} ({zone})" if place else zone
    day = f" on {result['weekday']}" if result.get("weekday") else ""
    date = f", {result['date']}" if result.get("date") and day else ""
    return f"The time in {where} is {when}{day}{date}"


def _render_text(result: Mapping[str, Any]) -> str | None:
    for key in ("path", "report", "text", "content", "summary"):
        if isinstance(result.get(key), str):
            what = "Written to" if key == "path" else key.capitalize()
            return f"{what}: {_brief(result[key], 300)}"
    return None


def _render_indexing(result: Mapping[str, Any]) -> str | None:
    counts = result.get("counts")
    if not isinstance(counts, Mapping) or "target" not in result or "indexed" not in counts:
        return None
    return (
        f"Indexed {counts['indexed']} document(s) from {result['target']} into collection "
        f"{result.get('collection')!r} ({counts.get('chunks', 0)} chunks; "
        f"{counts.get('unchanged', 0)} unchanged, {counts.get('removed', 0)} removed, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('unreadable', 0)} unreadable)"
    )


def _render_passages(result: Mapping[str, Any]) -> str | None:
    passages = result.get("passages")
    if not isinstance(passages, list) or "query" not in result:
        return None
    if not passages:
        message = result.get("message")
        return str(message) if message else f"No indexed document matches {result['query']!r}"
    found = "; ".join(_passage_line(p) for p in passages[:3] if isinstance(p, Mapping))
    return f"{len(passages)} passage(s) match {result['query']!r}: {found}"


def _passage_line(passage: Mapping[str, Any]) -> str:
    quote = _brief(" ".join(str(passage.get("quote")).split()), 160)
    return f'{passage.get("path")} ({passage.get("score")}): "{quote}"'


def _render_listing(result: Mapping[str, Any]) -> str | None:
    documents = result.get("documents")
    if not isinstance(documents, list) or "count" not in result:
        return None
    paths = ", ".join(str(d.get("path")) for d in documents[:10] if isinstance(d, Mapping))
    more = "..." if result["count"] > 10 else ""
    return f"{result['count']} indexed document(s){': ' + paths + more if paths else ''}"


_DOCUMENT_RENDERS = (_render_indexing, _render_passages, _render_listing)


# --- plain renderings of the built-in tools' results ----------------------------------


def _render_remembered(content: str | None, known: bool = False) -> str:
    """ "Remembered: X." or, when memory already held X word for word, "Already known"."""
    if known:
        return f"Already known: {content.rstrip('.')}." if content else "That was already known."
    return f"Remembered: {content.rstrip('.')}." if content else "Remembered it."


def _render_recalled(result: Mapping[str, Any]) -> str | None:
    memories = [m for m in result.get("memories") or () if isinstance(m, Mapping)]
    if "memories" not in result:
        return None
    if not memories:
        return f"I have no memory about {result.get('query')!r}."
    return "I remember: " + "; ".join(str(m.get("content")) for m in memories[:5])


def _render_forgotten(result: Mapping[str, Any]) -> str | None:
    if "key_destroyed" in result:
        return f"Forgot all {result.get('forgotten', 0)} memories of {result.get('user')}."
    if result.get("forgotten") is True:
        return f"Forgot memory {result.get('memory_id')}."
    return None


def _render_added_time(result: Mapping[str, Any]) -> str | None:
    if "start" not in result or "result" not in result:
        return None
    day = f" ({result['weekday']})" if result.get("weekday") else ""
    return f"The result is {result['result']}{day}, counted from {result['start']}."


def _render_span(result: Mapping[str, Any]) -> str | None:
    if not {"start", "end", "text"} <= result.keys():
        return None
    return f"From {result['start']} to {result['end']} is {result['text']}."


def _render_event_created(result: Mapping[str, Any]) -> str | None:
    if not {"title", "start"} <= result.keys():
        return None
    end = f" to {result['end']}" if result.get("end") else ""
    where = f" in {result['calendar']}" if result.get("calendar") else ""
    return f"Added {result['title']!r} from {result['start']}{end}{where}."


def _render_events(result: Mapping[str, Any]) -> str | None:
    events = [e for e in result.get("events") or () if isinstance(e, Mapping)]
    if "events" not in result:
        return None
    span = f" from {result.get('start')} to {result.get('end')}"
    if not events:
        return f"No events{span}."
    listed = "; ".join(f"{e.get('title')} ({e.get('start')})" for e in events[:10])
    return f"{len(events)} event(s){span}: {listed}"


def _render_folder(result: Mapping[str, Any]) -> str | None:
    entries = [e for e in result.get("entries") or () if isinstance(e, Mapping)]
    if "entries" not in result:
        return None
    names = ", ".join(str(e.get("path")) for e in entries[:20])
    more = ", ..." if len(entries) > 20 or result.get("truncated") else ""
    return (
        f"{len(entries)} entries in {result.get('folder')}: {names}{more}"
        if entries
        else (f"{result.get('folder')} is empty.")
    )


def _render_file_matches(result: Mapping[str, Any]) -> str | None:
    found = [r for r in result.get("results") or () if isinstance(r, Mapping)]
    if "results" not in result or "scanned" not in result:
        return None
    if not found:
        return f"No file matches (searched {result['scanned']} files)."
    lines = ", ".join(f"{r.get('path')} ({len(r.get('matches') or ())})" for r in found[:10])
    return f"{len(found)} file(s) match: {lines}"


def _render_emails(result: Mapping[str, Any]) -> str | None:
    emails = [e for e in result.get("emails") or () if isinstance(e, Mapping)]
    if "emails" not in result:
        return None
    if not emails:
        return "No emails match."
    listed = "; ".join(f"{e.get('subject')!r} from {e.get('from')}" for e in emails[:10])
    return f"{len(emails)} email(s): {listed}"


def _render_mailed(result: Mapping[str, Any]) -> str | None:
    """A drafted or sent email: to whom, its subject, and where a draft lies."""
    if "to" not in result or "subject" not in result:
        return None
    if result.get("status") == "drafted":
        where = f" (in {result['outbox']})" if result.get("outbox") else ""
        return f"Drafted an email to {result['to']}: {result['subject']!r}{where}."
    refused = result.get("refused") or ()
    unsent = f"; refused: {', '.join(map(str, refused))}" if refused else ""
    return f"Sent an email to {result['to']}: {result['subject']!r}{unsent}."


def _render_quotes(result: Mapping[str, Any]) -> str | None:
    quotes = [q for q in result.get("quotes") or () if isinstance(q, Mapping)]
    lines = [line for line in map(_render_price, quotes) if line]
    return "; ".join(lines) if lines else None


_TOOL_RENDERS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "memory.recall": _render_recalled,
    "memory.forget": _render_forgotten,
    "memory.forget_all": _render_forgotten,
    "clock.add": _render_added_time,
    "clock.difference": _render_span,
    "calendar.create_event": _render_event_created,
    "email.draft": _render_mailed,
    "email.send": _render_mailed,
}
# Recognised by their shape wherever they come from (a report's sources, say).
_SHAPE_RENDERS = (
    _render_recalled,
    _render_events,
    _render_folder,
    _render_file_matches,
    _render_emails,
    _render_quotes,
)


def intent(goal: str) -> dict[str, Any]:
    """What kind of goal this is, and the entities a planner needs."""
    found = _goal_entities(goal)
    kinds = [k for k in ("quote", "calculation", "time", "report") if k in found["_kinds"]]
    del found["_kinds"]
    if re.match(r"\s*(hi|hello|hey|good (morning|afternoon|evening))\b", goal, re.I) and not kinds:
        return {"intent": "greeting", "entities": found}
    label = kinds[0] if len(kinds) == 1 else ("report" if "report" in kinds else "task")
    label = label if kinds else "unknown"
    return {"intent": label, "entities": found}


def _goal_entities(goal: str) -> dict[str, Any]:
    found: dict[str, Any] = {"_kinds": set()}
    symbols = entities.tickers(goal)
    if symbols and entities.has_finance_context(goal):
        found["tickers"], found["_kinds"] = symbols, found["_kinds"] | {"quote"}
    expression = entities.expression(goal)
    if expression:
        found["expression"], found["_kinds"] = expression, found["_kinds"] | {"calculation"}
    zone = entities.timezone(goal)
    if entities.has_time_context(goal):
        found["_kinds"] = found["_kinds"] | {"time"}
        found.update({"timezone": zone} if zone else {})
    if {"report", "summary", "summarise", "write"} & set(entities.words(goal)):
        found["_kinds"] = found["_kinds"] | {"report"}
    return found


def step_text(agent: str, action: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The text an LLM-backed tool step produces offline: its inputs, laid out plainly."""
    title = str(parameters.get("title") or f"{agent}.{action}")
    body = [f"- {k}: {_brief(v, 200)}" for k, v in parameters.items() if k != "title"]
    return {"text": "\n".join([title, "", *body]) if body else title}


def chat(text: str) -> dict[str, Any]:
    return {
        "reply": (
            "I am autoagent's offline model. I can plan goals about stock prices, arithmetic "
            "and the time in a city, check results and summarise them; for open conversation "
            'configure a real model (llm.provider = "openai").'
        )
    }
