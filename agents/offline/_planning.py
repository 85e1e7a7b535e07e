"""The offline model's planner: a goal cut into clauses, each matched to a tool.

It plans by pattern and keyword matching over the tools it is given (names,
descriptions, keywords, parameter schemas): ticker symbols, arithmetic, the time in a
city, dates in plain English, and clauses joined by "and" or "then". A step that reads
waits for the step that writes in the same goal. What it cannot plan it says plainly,
naming what it can do.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.llm import ToolSpec
from agents.offline import _dates as dates
from agents.offline import _entities as entities

SYMBOL_PARAMS = ("symbol", "ticker", "stock", "symbols", "tickers")
EXPRESSION_PARAMS = ("expression", "expr", "formula", "equation")
TIMEZONE_PARAMS = ("timezone", "tz", "time_zone", "zone")
INPUT_PARAMS = ("sources", "inputs", "data", "results", "content", "items", "context")
TEXT_PARAMS = ("query", "topic", "text", "prompt", "question", "goal", "body", "message")
MIN_KEYWORD_SCORE = 2
# Steps that read what another tool writes: in one goal, a reader waits for every earlier
# writer step even when the clauses are joined by "and" (search after indexing).
READS_AFTER_WRITES: dict[str, tuple[str, ...]] = {
    "documents.search": ("documents.index",),
    "documents.list": ("documents.index",),
    "memory.recall": ("memory.remember",),
    "files.read": ("files.write",),
    "files.list": ("files.write",),
    "calendar.list_events": ("calendar.create_event",),
}
OFFSET_PARAMS = ("weeks", "days", "hours", "minutes")

_VERBS = (
    "write|summarise|summarize|create|make|draft|compose|send|email|save|store|calculate|"
    "compute|tell|get|fetch|look|find|check|convert|show|give|list|remember|search|"
    "schedule|add|put|what|what's|whats|how|report|notify|index|reindex|recall|forget|read|open"
)
_CLAUSE_SEPARATOR = re.compile(
    r"\s*(?:(?P<then>,?\s*\b(?:and\s+then|then|after\s+that|afterwards)\b,?)"
    r"|(?P<stop>;|\.\s+)"
    rf"|(?P<and>,?\s+and\s+(?=(?:{_VERBS})\b)|,\s+(?=(?:{_VERBS})\b)))\s*",
    re.IGNORECASE,
)


# --- planning -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clause:
    """One part of a goal; `joined_by` is how it follows the previous one."""

    text: str
    joined_by: str  # "start" | "and" | "then"


def split_clauses(goal: str) -> list[Clause]:
    """Split at "then", sentence ends, and "and" / commas followed by a new verb."""
    clauses: list[Clause] = []
    start, joined = 0, "start"
    for match in _CLAUSE_SEPARATOR.finditer(goal):
        if _ends_in_abbreviation(goal, match):
            continue
        _add_clause(clauses, goal[start : match.start()], joined)
        joined = "then" if match.group("then") else "and"
        start = match.end()
    _add_clause(clauses, goal[start:], joined)
    return clauses


# A period that ends a title or an abbreviation, not a sentence: "Dr. Lee", "e.g. X",
# "the U.S. market", an initial ("J. Smith").
_ABBREVIATION = re.compile(
    r"(?:\b(?:dr|mr|mrs|ms|mx|prof|st|jr|sr|mt|vs|approx|inc|ltd|co|fig)"
    r"|\b(?:[a-z]\.)+[a-z]|(?-i:\b[A-Z]))\Z",
    re.IGNORECASE,
)


def _ends_in_abbreviation(goal: str, match: re.Match[str]) -> bool:
    stop = match.group("stop")
    return (
        stop is not None
        and stop.startswith(".")
        and bool(_ABBREVIATION.search(goal, 0, match.start("stop")))
    )


def _add_clause(clauses: list[Clause], text: str, joined: str) -> None:
    text = text.strip(" ,.;?!")
    if text:
        clauses.append(Clause(text, joined if clauses else "start"))


@dataclass
class _Draft:
    """A plan being built: steps so far and the problems met."""

    goal: str
    tools: Sequence[ToolSpec]
    history_tickers: list[str]
    follows: str | None = None  # "prices" | "time": what the session last asked about
    steps: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def add(
        self, tool: ToolSpec, parameters: dict[str, Any], dependencies: Sequence[str], why: str
    ) -> str:
        step_id = f"s{len(self.steps) + 1}"
        step = {
            "id": step_id,
            "agent": tool.agent,
            "action": tool.action,
            "parameters": parameters,
            "dependencies": list(dependencies),
            "reasoning": why,
        }
        self.steps.append(step)
        return step_id


def plan(
    goal: str,
    tools: Sequence[ToolSpec],
    history: Sequence[Any] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """A plan `{"steps": [...]}` for `goal` over `tools`, or `{"steps": [], "error": ...}`.

    `history` (earlier goals or messages) lends ticker symbols to a goal that asks for
    prices without naming any ("and what is the price now?"); relative dates ("tomorrow
    at 9am", "the last 7 days") are read against `now` (default: the current UTC time).
    """
    if not goal.strip():
        return {"steps": [], "error": "the goal is empty; say what you want done"}
    texts = _history_texts(history)
    context = _session_context(history)
    history_tickers = entities.tickers(" ".join(texts)) or [
        str(t) for t in context.get("tickers") or () if isinstance(t, str)
    ]
    follows = _follows(texts) or _follows_context(context)
    draft = _Draft(goal, tools, history_tickers, follows, now=now or datetime.now(UTC))
    before: list[str] = []
    previous: list[str] = []
    for clause in split_clauses(goal):
        added = _plan_clause(draft, clause, before)
        if clause.joined_by == "then":
            _depend_on(draft, added, previous)
        before, previous = before + added, added or previous
    if draft.problems or not draft.steps:
        return {"steps": [], "error": _cannot_plan(draft), "detail": _cannot_plan_detail(draft)}
    _order_reads_after_writes(draft.steps)
    return {"steps": draft.steps}


def _order_reads_after_writes(steps: list[dict[str, Any]]) -> None:
    """Make each reader step depend on the earlier steps writing what it reads."""
    for index, step in enumerate(steps):
        writers = READS_AFTER_WRITES.get(f"{step['agent']}.{step['action']}", ())
        for earlier in steps[:index]:
            name = f"{earlier['agent']}.{earlier['action']}"
            if name in writers and earlier["id"] not in step["dependencies"]:
                step["dependencies"].append(earlier["id"])


def _history_texts(history: Sequence[Any]) -> list[str]:
    texts: list[str] = []
    for item in history:
        if isinstance(item, Mapping):
            texts.extend(str(item[k]) for k in ("goal", "text", "content") if k in item)
        else:
            texts.append(str(item))
    return texts


def _session_context(history: Sequence[Any]) -> Mapping[str, Any]:
    """The session's context (`ContextUpdated`: the tools that answered its last goal,
    the entities it named), which the orchestrator puts first in the history."""
    for item in history:
        if isinstance(item, Mapping) and item.get("role") == "context":
            context = item.get("context")
            if isinstance(context, Mapping):
                return context
    return {}


def _follows_context(context: Mapping[str, Any]) -> str | None:
    """What the session's last answered goal was about, from the tools that answered it."""
    tools = [str(t) for t in context.get("tools") or ()]
    if any(t.startswith("quotes.") for t in tools) or context.get("intent") == "quote":
        return "prices"
    if any(t.startswith("clock.") for t in tools) or context.get("intent") == "time":
        return "time"
    return None


def _follows(texts: Sequence[str]) -> str | None:
    """What the latest earlier goal of the session asked about, when it was prices or
    the time: a follow-up ("and what about AAPL?", "and in London?") asks the same."""
    for text in reversed(texts):
        if entities.has_finance_context(text):
            return "prices"
        if entities.has_time_context(text):
            return "time"
    return None


def _depend_on(draft: _Draft, step_ids: Sequence[str], previous: Sequence[str]) -> None:
    """Make the clause's steps that depend on nothing wait for the previous clause."""
    for step in draft.steps:
        if step["id"] in step_ids and not step["dependencies"]:
            step["dependencies"] = list(previous)


def _plan_clause(draft: _Draft, clause: Clause, before: Sequence[str]) -> list[str]:
    """Steps for one clause: entity-driven tools, then a consumer or a keyword tool."""
    added = _entity_steps(draft, clause.text)
    used = {(s["agent"], s["action"]) for s in draft.steps if s["id"] in added}
    tool = _best_tool(draft.tools, clause.text, exclude=used)
    if tool is not None and not added and not _fillable(draft, tool, clause.text, bool(before)):
        # An equally worded tool may fit better ("write X to notes.txt": a file, not mail).
        best = keyword_score(tool, clause.text)
        ranked = _ranked_tools(draft.tools, clause.text, used)
        fits = [
            t
            for t in ranked
            if keyword_score(t, clause.text) == best
            and _fillable(draft, t, clause.text, bool(before))
        ]
        tool = fits[0] if fits else tool
    if tool is not None and _input_param(tool) is not None:
        sources = added or list(before)
        added.append(_add_consumer(draft, tool, clause.text, sources))
    elif tool is not None and not added:
        step_id = _add_keyword_step(draft, tool, clause.text)
        added.extend([step_id] if step_id else [])
    elif not added:
        added = _follow_up_steps(draft, clause.text)
        if not added:
            draft.problems.append(f"no available tool matches {_brief(clause.text, 60)!r}")
    return added


def _follow_up_steps(draft: _Draft, text: str) -> list[str]:
    """A clause matching no tool that names a ticker or a place, read as the session's
    last question asked again about it ("and what about AAPL?" after a price)."""
    if draft.follows == "prices" and entities.tickers(text):
        return _ticker_steps(draft, text, finance=True)
    if draft.follows == "time" and entities.timezones(text):
        return _time_steps(draft, text, asked=True)
    return []


def _entity_steps(draft: _Draft, text: str) -> list[str]:
    return _ticker_steps(draft, text) + _expression_steps(draft, text) + _time_steps(draft, text)


def _ticker_steps(draft: _Draft, text: str, *, finance: bool = False) -> list[str]:
    finance = finance or entities.has_finance_context(text)
    symbols = entities.tickers(text) or (draft.history_tickers if finance else [])
    tool, param = _tool_with_param(draft.tools, SYMBOL_PARAMS, text)
    if not symbols or tool is None or param is None:
        return []
    if not (finance or entities.has_finance_context(draft.goal)):
        return []
    if len(symbols) > 1 and re.search(r"\b(prices|quotes)\b", text, re.IGNORECASE):
        tool, param = _array_symbol_tool(draft.tools, text) or (tool, param)
    if _param_type(tool, param) == "array":
        why = f"{', '.join(symbols)} are ticker symbols; {tool.name} looks them up at once."
        return [draft.add(tool, _fill(draft, tool, text, {param: symbols}), [], why)]
    return [
        draft.add(tool, _fill(draft, tool, text, {param: symbol}), [], _why_ticker(symbol, tool))
        for symbol in symbols
    ]


def _array_symbol_tool(tools: Sequence[ToolSpec], text: str) -> tuple[ToolSpec, str] | None:
    """The batch form of a lookup ("the stock prices of A and B"): one call for all."""
    candidates = [(t, p) for t in tools for p in SYMBOL_PARAMS if _param_type(t, p) == "array"]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (keyword_score(c[0], text), _tie_break(c[0].name)))


def _why_ticker(symbol: str, tool: ToolSpec) -> str:
    return f"{symbol} is a ticker symbol; {tool.name} looks up its latest price."


def _expression_steps(draft: _Draft, text: str) -> list[str]:
    expression = entities.expression(text)
    tool, param = _tool_with_param(draft.tools, EXPRESSION_PARAMS, text)
    if expression is None or tool is None or param is None:
        return []
    why = f"{expression!r} is arithmetic; {tool.name} evaluates it exactly."
    return [draft.add(tool, _fill(draft, tool, text, {param: expression}), [], why)]


def _time_steps(draft: _Draft, text: str, *, asked: bool = False) -> list[str]:
    if not (asked or entities.has_time_context(text)) or _is_date_arithmetic(text):
        return []
    tool, param = _tool_with_param(draft.tools, TIMEZONE_PARAMS, text)
    if tool is None or param is None:
        return []
    unknown = entities.unknown_places(text)
    if unknown:
        draft.problems.append(f"I don't know a time zone for {unknown[0]}")
        return []
    zones: list[str | None] = [*entities.timezones(text)] or [None]
    return [_add_time_step(draft, tool, param, text, zone) for zone in zones]


def _add_time_step(draft: _Draft, tool: ToolSpec, param: str, text: str, zone: str | None) -> str:
    """One clock reading per place the clause names ("in Tokyo and in New York": two)."""
    overrides = {param: zone} if zone else {}
    where = f"in {zone}" if zone else "now"
    why = f"The goal asks for the time {where}; {tool.name} reads the clock."
    return draft.add(tool, _fill(draft, tool, text, overrides), [], why)


def _add_consumer(draft: _Draft, tool: ToolSpec, text: str, sources: Sequence[str]) -> str:
    param = _input_param(tool)
    assert param is not None
    overrides = {param: _references(_param_type(tool, param), sources)} if sources else {}
    why = (
        f"{tool.name} combines the results of {', '.join(sources)}."
        if sources
        else f"The goal asks to {text!r}; {tool.name} does that."
    )
    return draft.add(tool, _fill(draft, tool, text, overrides), list(sources), why)


def _references(kind: str | None, sources: Sequence[str]) -> Any:
    """Refer to earlier steps' outputs in the form the parameter's type allows."""
    refs = ["${" + s + "}" for s in sources]
    if kind == "array":
        return refs
    if kind == "object":
        return {s: ref for s, ref in zip(sources, refs, strict=True)}
    return refs[0] if len(refs) == 1 else "\n".join(refs)


def _add_keyword_step(draft: _Draft, tool: ToolSpec, text: str) -> str | None:
    parameters = _fill(draft, tool, text, {})
    missing = [p for p in tool.required if p not in parameters]
    if missing:
        draft.problems.append(
            f"{tool.name} needs a {missing[0]!r} that {_brief(text, 40)!r} does not give"
        )
        return None
    return draft.add(tool, parameters, [], f"{text!r} matches what {tool.name} does.")


# --- tool matching ------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _vocabulary(tool: ToolSpec) -> Mapping[str, int]:
    """Words that point at a tool, weighted: keywords 3, its names 2, description 1.

    Cached: every clause of every plan scores every tool of the catalog, and the
    catalog rarely changes (equal specs share an entry, `ToolSpec` is hashable).
    """
    vocab: dict[str, int] = {}
    weighted = (
        (1, entities.content_words(tool.description)),
        (1, entities.content_words(" ".join(tool.properties))),
        (2, entities.content_words(f"{tool.agent} {tool.action.replace('_', ' ')}")),
        (3, entities.words(" ".join(tool.keywords))),
    )
    for weight, found in weighted:
        vocab.update({w: max(weight, vocab.get(w, 0)) for w in found})
    return vocab


def keyword_score(tool: ToolSpec, text: str) -> int:
    vocab = _vocabulary(tool)
    return sum(vocab.get(w, 0) for w in set(entities.content_words(text)))


def _best_tool(
    tools: Sequence[ToolSpec], text: str, exclude: Collection[tuple[str, str]] = ()
) -> ToolSpec | None:
    ranked = _ranked_tools(tools, text, exclude)
    return ranked[0] if ranked else None


def _ranked_tools(
    tools: Sequence[ToolSpec], text: str, exclude: Collection[tuple[str, str]] = ()
) -> list[ToolSpec]:
    """Tools matching the text well enough, best first (ties: alphabetical)."""
    allowed = [t for t in tools if (t.agent, t.action) not in exclude]
    scored = [(keyword_score(t, text), t.name, t) for t in allowed]
    scored = [entry for entry in scored if entry[0] >= MIN_KEYWORD_SCORE]
    scored.sort(key=lambda entry: (entry[0], _tie_break(entry[1])), reverse=True)
    return [entry[2] for entry in scored]


def _fillable(draft: _Draft, tool: ToolSpec, text: str, has_sources: bool) -> bool:
    """Whether the clause gives every required parameter (an input one may come from
    earlier steps)."""
    given = _input_param(tool) if has_sources else None
    return all(
        name == given or _value_for(draft, tool, name, text) is not None for name in tool.required
    )


def _tie_break(name: str) -> str:
    """Equal scores go to the alphabetically first tool, so plans are deterministic."""
    return "".join(chr(0x10FFFF - ord(c)) for c in name)


def _tool_with_param(
    tools: Sequence[ToolSpec], names: Sequence[str], text: str
) -> tuple[ToolSpec | None, str | None]:
    """The best-matching tool that takes one of the parameters `names`, and which one."""
    candidates = [(t, p) for t in tools for p in names if p in t.properties]
    if not candidates:
        return None, None
    return max(candidates, key=lambda c: (keyword_score(c[0], text), _tie_break(c[0].name)))


def _input_param(tool: ToolSpec) -> str | None:
    """The parameter through which a tool consumes other steps' results, if it has one."""
    for name in tool.properties:
        if name in INPUT_PARAMS or _param_type(tool, name) in ("array", "object"):
            if name not in SYMBOL_PARAMS:
                return name
    return None


def _param_type(tool: ToolSpec, name: str) -> str | None:
    schema = tool.properties.get(name)
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return kind if isinstance(kind, str) else None


# --- parameters ---------------------------------------------------------------------


def _fill(draft: _Draft, tool: ToolSpec, text: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for `tool` from `overrides`, then from what the clause says."""
    parameters = dict(overrides)
    for name in tool.properties:
        if name not in parameters:
            value = _value_for(draft, tool, name, text)
            if value is not None:
                parameters[name] = value
    return parameters


def _value_for(draft: _Draft, tool: ToolSpec, name: str, text: str) -> Any:
    schema = tool.properties.get(name)
    schema = schema if isinstance(schema, Mapping) else {}
    if isinstance(schema.get("enum"), list):
        return _enum_value(schema, text, name in tool.required)
    about = _ABOUT.search(text) if name == "subject" else None
    if about:
        return _sentence_case(about.group(1))
    if name == "title" and "start" in tool.properties:
        return _event_title(draft, text)
    if name in ("title", "subject", "name"):
        return _title(draft, text)
    if name in ("start", "end", "since", "until", "duration_minutes", *OFFSET_PARAMS):
        return _date_value(draft, tool, name, text)
    if name in TEXT_PARAMS:
        return _text_value(tool, text)
    if name in ("city", "location"):
        return entities.city(text)
    return _pattern_value(name, text)


def _pattern_value(name: str, text: str) -> Any:
    patterns = {
        ("url", "link"): r"https?://\S+",
        ("to", "recipient", "email", "address"): r"[\w.+-]+@[\w-]+\.[\w.]+",
        ("path", "file", "filename"): r"[\w./-]+\.\w{1,5}\b",
        ("collection",): r"\bcollection\s+(?:named\s+|called\s+)?[\"']?([A-Za-z0-9][\w.-]*)",
        ("memory_id",): r"\b[0-9a-f]{32}\b",
        ("glob", "pattern"): _GLOB.pattern,
        ("user",): r"\buser\s+[\"']?([\w.@-]+)",
        ("content",): r"^\s*(?:write|save|put|append)\s+(?:the\s+text\s+)?[\"']?(.+?)[\"']?"
        r"\s+(?:to|into|in)\s+(?:the\s+file\s+)?[\w./-]+\.\w{1,5}\b",
    }
    for names, pattern in patterns.items():
        if name in names:
            match = re.search(pattern, text, re.IGNORECASE)
            if match:
                return match.group(match.lastindex or 0).rstrip(".,")
            return _folder(text) if name == "path" else None
    return None


# A file name pattern: a word with a wildcard ("*.md", "report-??.txt").
_GLOB = re.compile(r"(?<![\w*?])([\w.-]*[*?][\w.*?-]*)")
# What names a pattern rather than text to look for: "files named *.md".
_NAMING_WORDS = re.compile(r"\b(?:named|called|matching|like)\b", re.IGNORECASE)


def _text_value(tool: ToolSpec, text: str) -> str | None:
    """The clause's text for a query-like parameter; None when all it says is a file
    name pattern that the tool takes apart ("find files named *.md": a glob, no text)."""
    text = _without_collection(tool, text)
    if "glob" in tool.properties and _GLOB.search(text):
        rest = _NAMING_WORDS.sub(" ", _GLOB.sub(" ", text))
        remainder = _remainder(tool, rest)
        return None if not entities.content_words(remainder) or remainder == rest else remainder
    return _remainder(tool, text)


# Where a clause names a folder: "in docs", "from the reports folder", "the docs folder",
# or right after the verb ("index docs"); tried in this order.
_COLLECTION_PHRASE = re.compile(
    r"\s*\b(?:(?:in|from|into|of)\s+(?:the\s+)?)?collection\s+(?:named\s+|called\s+)?\S+",
    re.IGNORECASE,
)


def _without_collection(tool: ToolSpec, text: str) -> str:
    """The clause without "in collection X" when the tool takes the collection apart."""
    return _COLLECTION_PHRASE.sub(" ", text) if "collection" in tool.properties else text


_FOLDER_PATTERNS = (
    re.compile(
        r"\b(?:in|from|under|inside|within)\s+(?:(?:the|my|our)\s+)?"
        r"(?:(?:folder|directory)\s+)?[\"']?([\w~][\w./~-]*)"
    ),
    re.compile(r"([\w~][\w./~-]*)\s+(?:folder|directory)\b"),
    re.compile(r"^\s*(?:re)?index\s+(?:(?:the|my|our)\s+)?([\w~][\w./~-]*)", re.IGNORECASE),
)
_NOT_FOLDERS = frozenset({"document", "documents", "doc", "file", "files", "folder", "directory"})


def _folder(text: str) -> str | None:
    """A folder the clause names (see `_FOLDER_PATTERNS`); "the workspace" is its root."""
    for pattern in _FOLDER_PATTERNS:
        for match in pattern.finditer(text):
            word = match.group(1).rstrip(".,")
            if word.lower() in ("workspace", "root"):
                return "."
            if word.lower() not in entities.STOPWORDS | _NOT_FOLDERS:
                return word
    return None


def _enum_value(schema: Mapping[str, Any], text: str, required: bool) -> Any:
    said = set(entities.words(text))
    for option in schema["enum"]:
        if str(option).lower() in said:
            return option
    if "default" in schema:
        return schema["default"]
    return schema["enum"][0] if required and schema["enum"] else None


def _title(draft: _Draft, text: str) -> str:
    named = _NAMED.search(text)
    if named:
        return named.group(1).strip()
    symbols = entities.tickers(draft.goal)
    if symbols:
        return "Report: " + ", ".join(symbols)
    cleaned = text.strip()
    return (cleaned[:1].upper() + cleaned[1:])[:80]


# "an email to bob@example.com about lunch on Friday": what a message is about.
_ABOUT = re.compile(r"\babout\s+(.+?)\s*$", re.IGNORECASE)


def _sentence_case(text: str) -> str:
    return (text[:1].upper() + text[1:])[:80]


# The command and the when of "schedule a dentist appointment on 2026-12-07 at 10:00":
# what is left ("dentist appointment") is the event's title.
_EVENT_COMMAND = re.compile(
    r"^\s*(?:please\s+)?(?:schedule|add|create|make|book|put|set\s+up|plan)\s+"
    r"(?:(?:a|an|the|my|new)\s+)*",
    re.IGNORECASE,
)
_EVENT_WHEN = re.compile(
    r"\s+(?:(?:on|at|for|from|in|this|next|coming)\s+|tomorrow\b|today\b|tonight\b"
    r"|\d{4}-\d{2}-\d{2}).*$",
    re.IGNORECASE,
)


def _event_title(draft: _Draft, text: str) -> str:
    """A named title ("called X"), else the clause without its command and its when."""
    if _NAMED.search(text):
        return _title(draft, text)
    bare = _EVENT_WHEN.sub("", _EVENT_COMMAND.sub("", text)).strip(" ,.")
    return _sentence_case(bare) if bare else _title(draft, text)


_NAMED = re.compile(
    r"\b(?:called|named|titled)\s+[\"']?(.+?)[\"']?"
    r"(?=\s+(?:on|at|tomorrow|today|tonight|next|this|in|for|from|with)\b|[,.;]|$)",
    re.IGNORECASE,
)


def _is_date_arithmetic(text: str) -> bool:
    """A clause about dates to add or compare ("10 days after 2026-12-01", "days
    between A and B"), not one that only asks what time it is."""
    return bool(dates.offset(text)) or len(dates.iso_moments(text)) >= 2


def _date_value(draft: _Draft, tool: ToolSpec, name: str, text: str) -> Any:
    """Dates and amounts of time a clause names, in the form the tool's parameter takes:
    a moment to create an event at, a range to list or read in, an offset to add, or the
    two ends of a difference."""
    if name == "duration_minutes":
        return dates.duration_minutes(text)
    if name in OFFSET_PARAMS:
        return dates.offset(text).get(name)
    if name in ("since", "until") or (name in ("start", "end") and _lists_a_range(tool)):
        span = dates.date_range(text, draft.now)
        return None if span is None else span[0 if name in ("since", "start") else 1]
    written = dates.iso_moments(text)
    if any(p in tool.properties for p in OFFSET_PARAMS):  # start + offset
        return written[0] if written and name == "start" else None
    if "end" in tool.required:  # the two ends of a difference
        return _ends(written, text)[0 if name == "start" else 1]
    return dates.moment(text, draft.now) if name == "start" else None


def _lists_a_range(tool: ToolSpec) -> bool:
    """A tool taking an optional start and end: a period to list, not a moment."""
    return "start" not in tool.required and "end" in tool.properties


def _ends(written: Sequence[str], text: str) -> tuple[str | None, str | None]:
    """(start, end) of "between A and B", "until A" (from now), "since A" (to now)."""
    if len(written) >= 2:
        return written[0], written[1]
    if len(written) == 1:
        since = re.search(r"\b(since|from|after)\b", text, re.IGNORECASE)
        return (written[0], "now") if since else ("now", written[0])
    return None, None


def _remainder(tool: ToolSpec, text: str) -> str:
    """The clause without its leading command words ("search the web for X" -> "X")."""
    said = statement(text)
    if said is not None:
        return said
    vocab = _vocabulary(tool)
    tokens = text.split()
    while tokens and (
        entities.words(tokens[0]) == []
        or entities.words(tokens[0])[0] in entities.STOPWORDS
        or entities.words(tokens[0])[0] in vocab
    ):
        tokens.pop(0)
    return " ".join(tokens) or text


# What the user reads of a refusal; with the orchestrator's "I could not complete this:
# no usable plan: invalid plan: " in front it stays under 300 characters.
REFUSAL_LIMIT = 240


def _cannot_plan(draft: _Draft) -> str:
    """A short refusal (the first problem, the tool areas) for the user to read; every
    problem and the full list of tools are in `_cannot_plan_detail`."""
    problem = draft.problems[0] if draft.problems else "nothing in it matches a tool"
    areas = ", ".join(dict.fromkeys(t.agent for t in draft.tools)) or "no tools"
    head, tail = "Offline planner cannot plan this: ", f". I can use: {areas}"
    tail += '; or set llm.provider = "openai".'
    room = max(40, REFUSAL_LIMIT - len(head) - len(tail))
    return _brief(head + _brief(problem, room) + tail, REFUSAL_LIMIT)


# "remember that my dentist is Dr. Lee", "note: the door code is 4711", "remember my
# dentist is Dr. Lee": a statement to keep word for word, its subject included.
_STATEMENT = re.compile(
    r"^\s*(?:please\s+)?(?:remember|memori[sz]e|note(?:\s+down)?|keep\s+in\s+mind)\b"
    r"(?:(?:\s+that\b|\s*:)\s*(?P<said>.+)"
    r"|\s+(?P<owned>(?:my|our|your)\b.+?\b(?:is|are|was|were)\b.+))$",
    re.IGNORECASE,
)


def statement(text: str) -> str | None:
    """What a "remember (that) X" clause asks to keep, word for word."""
    match = _STATEMENT.match(text)
    return (match.group("said") or match.group("owned")).strip() if match else None


def _cannot_plan_detail(draft: _Draft) -> str:
    names = ", ".join(f"{t.name} ({t.description.rstrip('.')})" for t in draft.tools)
    offered = f"The available tools are: {names}." if names else "No tools are available."
    problems = "; ".join(draft.problems) or "nothing in the goal matches a tool"
    return (
        f"The offline planner cannot plan this goal: {problems}. It understands ticker "
        "symbols and prices, arithmetic, the time in a city, and requests that name what a "
        f"tool does, joined by 'and' or 'then'. {offered}"
    )


def _brief(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
