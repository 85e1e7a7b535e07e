"""Which tools the planner is shown for one goal (`[features] tool_selection`).

The whole catalog is most of a plan request: the 25 shipped tools are ~2,100 of its
~3,000 prompt tokens (the project's estimate, four characters a token), on every plan
call, while a goal uses one to four of them. Under a provider's tokens-per-minute
budget, those tokens are what a busy server waits for.

`ToolSelector` reads the goal's clauses (cut at "and", "then", commas and the like) and
scores every tool against each by the words they share: a tool's keywords and names
weigh most, then its description, then its parameters; a word found in many tools
counts less (inverse document frequency over the catalog); words are compared after a
light stemming ("prices" = "price"). A few signals read off the text count as words
too: an arithmetic expression, a ticker-like symbol in capitals, a URL, an e-mail
address, a file name. Each clause shows the tools scoring at least half of its best,
and, for each of its words that points at a tool, the tools it points at most: a clause
asking two things ("save the result of 17 * 23 to a file") keeps both tools even when
one of them scores far higher. A word the clause's best tool already scores the most for
brings no tool of another agent ("write a report": not the e-mail draft too). A clause of
capitalised names only ("Tokyo, London and New York") that matches nothing is taken as
more of the clause before it.

It shows the whole catalog whenever it cannot judge: a clause whose words match no
tool well enough, a goal with no words it can read, a goal longer than
`MAX_GOAL_CHARS` (pasted text), a catalog too small to be worth cutting. Leaving a tool
out can cost a goal; showing one too many costs a few tokens, so every rule leans to
showing. Behind it: a plan refused over a part is asked again over the whole catalog
(the orchestrator does it), a plan is validated and repaired against the whole catalog
(a step naming a tool that was not shown still runs), and the answer's check for parts
of the goal left undone plans them over the whole catalog. What is left: a model that
plans only what the tools shown allow, where that check does not see the gap; and a
streamed plan whose later step names a tool not shown with wrong parameters after
earlier steps started, which fails the run as any invalid streamed step does. Words
of another language rarely match the tools' English ones, so such a goal mostly gets
the whole catalog, but its clauses are cut at English joints only. Over the goals of
the benchmarks, the golden suite and two reviews (565 goals, among them
tests/agents/selection_goals.txt; tests/agents/test_tool_selection.py), the offline
planner makes the same plan over the part as over the whole, but for three goals the
test lists: two where the part's plan has a step the goal asks for that the whole's
leaves out, and one refused over the part (asked again over the whole).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from agents.llm._catalog import ToolCatalog
from agents.llm._tool_spec import ToolSpec

# A catalog of this many tools or fewer is shown whole: too little to save.
MIN_CATALOG = 8
# A clause's best tool must score this much (one keyword or name word that few tools
# share scores ~5-10; one description word shared by many, ~1-2), else the clause is
# not understood and the whole catalog is shown.
MIN_MATCH = 4.0
# A goal longer than this (pasted text: "remember this: <an article>") is shown the whole
# catalog: its commas and full stops are not where its tasks part.
MAX_GOAL_CHARS = 500
# A word points at a tool when it scores this much for it (a keyword or name word that
# about half the tools share still does).
WORD_MATCH = 3.0
# A clause shows every tool scoring at least this share of its best, at most MAX_PER_CLAUSE.
SHARE_OF_BEST = 0.5
MAX_PER_CLAUSE = 4

_WEIGHT_NAME = 3.0
_WEIGHT_KEYWORD = 3.0
_WEIGHT_DESCRIPTION = 2.0
_WEIGHT_PARAMETER = 1.0

_WORD = re.compile(r"[a-z0-9]+")
_NAME_WORD = re.compile(r"[^\W\d_][\w'-]*")
_CLAUSE_BREAK = re.compile(
    r"\band\s+then\b|\bthen\b|\band\b|\balso\b|\bafter\s+that\b|[;,]|\.\s|\?|!|\n", re.IGNORECASE
)
_STOPWORDS = frozenset(
    """a an the of to in on at for from by with into onto about as is are was were be been
    it its it's this that these those there here me my mine i you your we our us they
    them their he she his her what whats what's which who whom how when where why please
    can could would should will shall do does did done just also some any all each every
    one ones and or then than so if but not no yes too very much many more most less
    tell give show let make get got need want like know use using up out over""".split()
)
# Signals: patterns of the goal's text that stand for words a tool is described by.
_SIGNALS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (
        re.compile(
            r"\d\s*(?:[-+*/%^x\u00d7\u00f7]|\*\*)\s*\(?\s*\d|\bsqrt\b|\d\s*%"
            r"|\d\s+(?:plus|minus|times|over|mod|divided\s+by|multiplied\s+by"
            r"|to\s+the\s+power\s+of)\s+\d|\d\s+(?:squared|cubed)\b",
            re.IGNORECASE,
        ),
        ("arithmetic", "calculate", "expression"),
    ),
    (
        re.compile(r"(?<![\w.$])\$?(?!(?:I|A)\b)[A-Z]{1,5}(?:\.[A-Z])?(?![\w.])"),
        ("ticker", "symbol", "stock"),
    ),
    (re.compile(r"https?://|\bwww\.", re.IGNORECASE), ("url", "web", "page")),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"), ("email",)),
    (re.compile(r"\b[\w-]+\.(?:md|txt|csv|json|html?|pdf|ics|log)\b", re.IGNORECASE), ("file",)),
)


def stem(word: str) -> str:
    """A light suffix strip, so that a word's forms meet: "prices"/"price",
    "memories"/"memory", "meetings"/"meeting", "divided"/"divide",
    "multiplied"/"multiply", "summarize"/"summarise". Not a linguist's stemmer: both
    sides (goal and tools) go through it, so only agreement matters."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ied"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 4 and word.endswith("iz"):
        word = word[:-2] + "is"
    return word


def words(text: str) -> list[str]:
    """The stemmed content words of `text`, in order (stop words left out)."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def clauses(goal: str) -> list[str]:
    return [part for part in _CLAUSE_BREAK.split(goal) if part.strip()]


def clause_words(clause: str) -> set[str]:
    """A clause's words and the words its signals stand for."""
    found = set(words(clause))
    for pattern, meaning in _SIGNALS:
        if pattern.search(clause):
            found.update(meaning)
    return found


def only_names(clause: str) -> bool:
    """Whether every content word of `clause` is capitalised: a list's next names
    ("London", "New York", "AMD"), which belong to the clause before them."""
    found = [w for w in _NAME_WORD.findall(clause) if w.lower() not in _STOPWORDS]
    return bool(found) and all(w[0].isupper() for w in found)


def _tool_weights(spec: ToolSpec) -> dict[str, float]:
    weights: dict[str, float] = {}

    def add(text: str, weight: float) -> None:
        for word in words(text):
            weights[word] = max(weight, weights.get(word, 0.0))

    add(spec.description, _WEIGHT_DESCRIPTION)
    for name, schema in spec.properties.items():
        add(name.replace("_", " "), _WEIGHT_PARAMETER)
        description = schema.get("description") if isinstance(schema, Mapping) else None
        if isinstance(description, str):
            add(description, _WEIGHT_PARAMETER)
    add(" ".join(spec.keywords), _WEIGHT_KEYWORD)
    add(f"{spec.agent} {spec.action.replace('_', ' ')}", _WEIGHT_NAME)
    return weights


@dataclass(frozen=True, slots=True)
class ToolSelection:
    """What the planner is shown: `catalog` (whole or a part) and why."""

    catalog: ToolCatalog
    whole: bool
    reason: str


class ToolSelector:
    """The word index of one catalog; `select(goal)` gives the part to show."""

    def __init__(self, catalog: ToolCatalog) -> None:
        self.catalog = catalog
        raw = {spec.name: _tool_weights(spec) for spec in catalog.specs}
        frequency = Counter(word for weights in raw.values() for word in weights)
        count = len(catalog.specs)
        idf = {word: math.log(1 + count / n) for word, n in frequency.items()}
        self._scores: dict[str, dict[str, float]] = {}  # word -> tool -> score
        for tool, weights in raw.items():
            for word, weight in weights.items():
                self._scores.setdefault(word, {})[tool] = weight * idf[word]

    def score(self, found: set[str]) -> dict[str, float]:
        """Each tool's score for a clause's words (tools sharing none left out)."""
        totals: dict[str, float] = {}
        for word in found:
            for tool, score in self._scores.get(word, {}).items():
                totals[tool] = totals.get(tool, 0.0) + score
        return totals

    def word_leaders(self, found: set[str], covered: Collection[str] = ()) -> set[str]:
        """For each word that points at a tool (scores `WORD_MATCH` for some tool), the
        tools it points at most: a clause naming two things to do ("save the result of
        17 * 23 to a file") keeps the tool of each, however the other one scores. A word
        that a tool of `covered` (the clause's best) already scores the most for brings
        only the tools of that tool's agent: "write" in "write a report" is the report
        writer's, not also the e-mail draft's and the file writer's (~170 tokens of a
        plan request), while "email" in "forward my unread emails to bob" keeps every
        e-mail tool, sending among them, though reading scores best."""
        leaders: set[str] = set()
        for word in found:
            scores = self._scores.get(word)
            if not scores:
                continue
            top = max(scores.values())
            if top < WORD_MATCH:
                continue
            tools = {tool for tool, score in scores.items() if score >= top}
            leading = {_agent(tool) for tool in covered if scores.get(tool, 0.0) >= top}
            leaders.update(t for t in tools if not leading or _agent(t) in leading)
        return leaders

    def select(self, goal: str) -> ToolSelection:
        if len(self.catalog.specs) <= MIN_CATALOG:
            return ToolSelection(self.catalog, True, "few tools")
        if len(goal) > MAX_GOAL_CHARS:
            return ToolSelection(self.catalog, True, "a long goal")
        chosen: set[str] = set()
        judged = 0
        for clause in clauses(goal):
            found = clause_words(clause)
            if not found:
                continue  # "tell me", "please": nothing to match
            judged += 1
            totals = self.score(found)
            best = max(totals.values(), default=0.0)
            if best < MIN_MATCH and judged > 1 and only_names(clause):
                continue  # "Tokyo, London and New York": more of the clause before
            if best < MIN_MATCH:
                return ToolSelection(self.catalog, True, f"no tool matches {clause.strip()!r}")
            ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
            picked = {
                tool for tool, score in ranked[:MAX_PER_CLAUSE] if score >= SHARE_OF_BEST * best
            }
            tied = {tool for tool, score in ranked if score >= best}
            chosen.update(picked, self.word_leaders(found, tied))
        if not judged:
            return ToolSelection(self.catalog, True, "no words to match")
        if len(chosen) >= len(self.catalog.specs):
            return ToolSelection(self.catalog, True, "every tool matches")
        return ToolSelection(self.catalog.subset(chosen), False, f"{len(chosen)} matching tools")


def _agent(tool: str) -> str:
    return tool.partition(".")[0]


class ToolSelectorCache:
    """The selector of the catalog last asked for (a catalog is rebuilt only when a
    tool changes, so this is one index per tool change, not per goal)."""

    def __init__(self) -> None:
        self._last: ToolSelector | None = None
        self.builds = 0  # indexes built (~1 ms each for the shipped tools)

    def prepare(self, catalog: ToolCatalog) -> ToolSelector:
        """The selector of `catalog`, its index built unless it is the last one's (the
        orchestrator's warm-up calls this in a worker thread, so no goal builds it)."""
        selector = self._last
        if selector is None or selector.catalog.hash != catalog.hash:
            selector = self._last = ToolSelector(catalog)
            self.builds += 1
        return selector

    def select(self, catalog: ToolCatalog, goal: str) -> ToolSelection:
        return self.prepare(catalog).select(goal)
